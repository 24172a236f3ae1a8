package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// RedisClient names the Go client the Redis design runs on; each is its own
// target.
type RedisClient string

// The Redis design's clients.
const (
	// GoRedis is github.com/redis/go-redis: each call takes a pooled
	// connection for its round trip. Target "redis-setnx".
	GoRedis RedisClient = "go-redis"
	// Rueidis is github.com/redis/rueidis with its auto-pipelining:
	// concurrent calls share a few connections, their commands written
	// together. Target "redis-rueidis".
	Rueidis RedisClient = "rueidis"
)

// RedisSetNXConfig configures the Redis baselines, redis-setnx and
// redis-rueidis.
type RedisSetNXConfig struct {
	// Client is the Redis client. If empty, GoRedis (redis-setnx).
	Client RedisClient
	// RedisAddr is the Redis server's host:port (required).
	RedisAddr string
	// DatabaseURL is the PostgreSQL URL (required), where bookings go.
	// The target creates its tables (rsn_shows, rsn_bookings,
	// rsn_booked_seats) there if they are absent.
	DatabaseURL string
	// PoolSize is go-redis's connection pool's size. If 0, go-redis's
	// default: 10 per GOMAXPROCS. Rueidis ignores it (it pipelines on
	// its own few connections).
	PoolSize int
	// PGMaxConns is the Postgres pool's size. If 0, as
	// PGStatusConfig.MaxConns.
	PGMaxConns int32
	// SeatMapMaxAge is as PGStatusConfig.SeatMapMaxAge: if 0, every
	// SeatMap reads every seat key.
	SeatMapMaxAge time.Duration
}

// RedisSetNX is the design the seeds recommend for speed: a hold is a set of
// Redis keys with a TTL, one per seat, claimed all or nothing by a Lua
// script (SET NX with an expiry, the multi-seat form of SET seat NX EX ttl),
// and Postgres is written only when the user pays.
//
// Holds are NOT durable in this design: they live only in Redis, which runs
// without persistence, so a Redis crash or restart loses every hold (and the
// booked markers of the seat map, though not the bookings, which Postgres
// keeps and guards with a unique (show, seat) key). That is the point of the
// comparison: the engine keeps every hold durable and must still be faster.
// HoldsDurable reports it to the verification.
//
// Keys are seat:{show}:seat, valued "holdID|user" while held (with the
// hold's TTL) and "booked|holdID" once booked (no TTL), and hold:{show}:id,
// a hash of the hold's user and seats with the hold's TTL. The show ID in
// braces is a Redis Cluster hash tag: every key a script touches is in one
// slot.
//
// The same design runs on two clients (RedisSetNXConfig.Client): go-redis,
// the usual choice (target redis-setnx), and rueidis with auto-pipelining,
// the fastest Go client (target redis-rueidis). Everything but the client
// is shared: the scripts, the keys, the Postgres bookings, the records.
//
// It is safe for concurrent use: Redis runs each script atomically, and the
// process keeps only caches: each show's seat keys (guarded by mu) and, if
// configured, recent seat maps.
type RedisSetNX struct {
	name     string
	rc       redisConn
	pool     *pgxpool.Pool
	seatMaps *seatMapCache

	mu      sync.RWMutex          // guards layouts
	layouts map[string]*rsnLayout // by show ID
}

var (
	_ Target          = (*RedisSetNX)(nil)
	_ HoldsDurabler   = (*RedisSetNX)(nil)
	_ FreshSeatMapper = (*RedisSetNX)(nil)
	_ LocalSeatMapper = (*RedisSetNX)(nil)
)

const redisSetNXSchema = `
CREATE TABLE IF NOT EXISTS rsn_shows (
	show_id    text PRIMARY KEY,
	seats      text[] NOT NULL, -- layout order
	hold_ttl   interval NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rsn_bookings (
	hold_id     text PRIMARY KEY,
	show_id     text NOT NULL,
	user_id     text NOT NULL,
	seats       text[] NOT NULL,
	payment_ref text NOT NULL,
	booked_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS rsn_bookings_show ON rsn_bookings (show_id);
CREATE TABLE IF NOT EXISTS rsn_booked_seats (
	show_id text NOT NULL,
	seat_id text NOT NULL,
	hold_id text NOT NULL REFERENCES rsn_bookings,
	PRIMARY KEY (show_id, seat_id) -- no seat is booked twice, whatever Redis says
);
`

// confirmWindow is how long Confirm keeps a hold's keys alive while it
// writes the booking to Postgres, so that the hold cannot expire and its
// seats be held by someone else between the check and the write.
const confirmWindow = 30 * time.Second

// rsnScript is one of the design's Lua scripts, run by redisConn.eval.
type rsnScript int

// The design's scripts; their source is rsnScripts[script].
const (
	// rsnHold claims every seat or none.
	// KEYS[1]: the hold's key; KEYS[2..]: the seats' keys.
	// ARGV: seat value "holdID|user", TTL in ms, user, seats joined by ",".
	// Returns 0, or the 1-based positions of the seats already taken.
	rsnHold rsnScript = iota
	// rsnCheck checks that the hold is the user's, for these seats, and
	// still holds every one; if so it keeps the keys for at least ARGV[4]
	// ms more (confirmWindow) and returns 1, else 0.
	// KEYS as rsnHold; ARGV: seat value, user, seats joined by ",",
	// window in ms.
	rsnCheck
	// rsnBook marks the seats booked (no TTL) and drops the hold.
	// KEYS as rsnHold; ARGV: "booked|holdID".
	rsnBook
	// rsnRelease frees the seats that still carry the hold, and the hold.
	// KEYS as rsnHold; ARGV: seat value.
	rsnRelease
	numRsnScripts
)

// rsnScripts holds the source of each rsnScript.
var rsnScripts = [numRsnScripts]string{
	rsnHold: `
local taken = {}
for i = 2, #KEYS do
	if redis.call('EXISTS', KEYS[i]) == 1 then taken[#taken + 1] = i - 1 end
end
if #taken > 0 then return taken end
for i = 2, #KEYS do
	redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2])
end
redis.call('HSET', KEYS[1], 'user', ARGV[3], 'seats', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0`,
	rsnCheck: `
if redis.call('HGET', KEYS[1], 'user') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'seats') ~= ARGV[3] then
	return 0
end
for i = 2, #KEYS do
	if redis.call('GET', KEYS[i]) ~= ARGV[1] then return 0 end
end
local window = tonumber(ARGV[4])
for i = 1, #KEYS do
	if redis.call('PTTL', KEYS[i]) < window then redis.call('PEXPIRE', KEYS[i], window) end
end
return 1`,
	rsnBook: `
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[1]) end
redis.call('DEL', KEYS[1])
return 1`,
	rsnRelease: `
for i = 2, #KEYS do
	if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('DEL', KEYS[1])
return 1`,
}

// redisConn is what the Redis design needs of a Redis client; goRedisConn
// and rueidisConn implement it. Its methods are safe for concurrent use and
// return errors classified as *Error (Timeout, Unavailable, Failed).
type redisConn interface {
	// eval runs one of the design's scripts: an integer reply is n, an
	// array of integers list.
	eval(ctx context.Context, s rsnScript, keys []string, args ...string) (n int64, list []int64, err error)
	// seatStatuses reads the layout's seat keys with MGETs of
	// rsnMGetChunk keys, pipelined, and classifies each value with
	// rsnStatus, in layout order.
	seatStatuses(ctx context.Context, l *rsnLayout) ([]SeatStatus, error)
	// scan returns the keys that match the SCAN pattern (some may be
	// listed twice).
	scan(ctx context.Context, match string) ([]string, error)
	// hgetall reads the hashes at keys, pipelined: an absent key gives an
	// empty map.
	hgetall(ctx context.Context, keys []string) ([]map[string]string, error)
	ping(ctx context.Context) error
	close() error
}

// rsnStatus is the status of a seat whose key has value v (present false:
// no key): absent is available, "booked|..." booked, anything else held.
func rsnStatus(v string, present bool) SeatStatus {
	switch {
	case !present:
		return Available
	case strings.HasPrefix(v, "booked|"):
		return Booked
	}
	return Held
}

// NewRedisSetNX connects to Redis with the configured client and to
// Postgres, and creates the target's tables if they are absent.
func NewRedisSetNX(ctx context.Context, cfg RedisSetNXConfig) (*RedisSetNX, error) {
	if cfg.Client == "" {
		cfg.Client = GoRedis
	}
	name := map[RedisClient]string{GoRedis: "redis-setnx", Rueidis: "redis-rueidis"}[cfg.Client]
	if name == "" {
		return nil, fmt.Errorf("bench: unknown Redis client %q (have %s, %s)", cfg.Client, GoRedis, Rueidis)
	}
	if cfg.RedisAddr == "" {
		return nil, fmt.Errorf("bench: %s: no Redis address", name)
	}
	pool, err := baselinePool(ctx, cfg.DatabaseURL, cfg.PGMaxConns)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	if err := baselineSchema(ctx, pool, "rsn_schema", redisSetNXSchema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	var rc redisConn
	switch cfg.Client {
	case GoRedis:
		rc = newGoRedisConn(cfg)
	case Rueidis:
		rc, err = newRueidisConn(cfg)
	}
	if err == nil {
		if err = rc.ping(ctx); err != nil {
			rc.close()
		}
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	return &RedisSetNX{name: name, rc: rc, pool: pool, layouts: map[string]*rsnLayout{}, seatMaps: newSeatMapCache(cfg.SeatMapMaxAge)}, nil
}

// Name returns "redis-setnx" on go-redis, "redis-rueidis" on rueidis.
func (r *RedisSetNX) Name() string { return r.name }

// HoldsDurable returns false: holds live only in Redis, without
// persistence.
func (r *RedisSetNX) HoldsDurable() bool { return false }

// rsnSeatKey is the Redis key of a seat.
func rsnSeatKey(show, seat string) string { return "seat:{" + show + "}:" + seat }

// rsnHoldKey is the Redis key of a hold.
func rsnHoldKey(show, hold string) string { return "hold:{" + show + "}:" + hold }

// rsnLayout is what the target keeps of a show's layout: its seat keys in
// layout order, in chunks of rsnMGetChunk keys (rueidis builds its MGETs
// from them), and the same chunks as ready-made go-redis MGET commands, so
// that a seat map converts no key per call.
type rsnLayout struct {
	keys   []string
	chunks [][]string // keys, rsnMGetChunk at a time
	mget   [][]any    // "MGET", key, key, ... for go-redis
}

// layout returns the show's layout, cached.
func (r *RedisSetNX) layout(show ShowSpec) *rsnLayout {
	r.mu.RLock()
	l, ok := r.layouts[show.ID]
	r.mu.RUnlock()
	if ok && len(l.keys) == show.Capacity() {
		return l
	}
	ids := show.SeatIDs()
	l = &rsnLayout{keys: make([]string, len(ids))}
	for i, id := range ids {
		l.keys[i] = rsnSeatKey(show.ID, id)
	}
	for chunk := range slices.Chunk(l.keys, rsnMGetChunk) {
		l.chunks = append(l.chunks, chunk)
		cmd := make([]any, 0, len(chunk)+1)
		cmd = append(cmd, "MGET")
		for _, k := range chunk {
			cmd = append(cmd, k)
		}
		l.mget = append(l.mget, cmd)
	}
	r.mu.Lock()
	r.layouts[show.ID] = l
	r.mu.Unlock()
	return l
}

// CreateShow records the show's layout in Postgres; no seat needs a key in
// Redis until it is held. It fails if the show exists.
func (r *RedisSetNX) CreateShow(ctx context.Context, show ShowSpec) error {
	_, err := r.pool.Exec(ctx, `INSERT INTO rsn_shows (show_id, seats, hold_ttl) VALUES ($1, $2, $3 * interval '1 microsecond')`,
		show.ID, show.SeatIDs(), show.HoldTTL.Microseconds())
	if pgErrCode(err) == "23505" { // unique_violation
		return fmt.Errorf("bench: %s: show %s already exists", r.name, show.ID)
	}
	if err != nil {
		return baselinePGError(err)
	}
	r.layout(show)
	return nil
}

// rsnMGetChunk is how many keys one MGET of SeatMap reads.
const rsnMGetChunk = 1000

// SeatMap reads every seat key with MGETs of rsnMGetChunk keys, pipelined
// (or from the cache, see RedisSetNXConfig.SeatMapMaxAge): absent is
// available, "booked|..." booked, anything else held.
func (r *RedisSetNX) SeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	return r.seatMaps.get(ctx, show, r.readSeatMap)
}

// LocalSeatMap answers from the cache when it is young enough.
func (r *RedisSetNX) LocalSeatMap(show ShowSpec) (SeatMap, bool) { return r.seatMaps.local(show) }

// FreshSeatMap reads the seat map from Redis, bypassing the cache.
func (r *RedisSetNX) FreshSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	return r.readSeatMap(ctx, show)
}

func (r *RedisSetNX) readSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	l := r.layout(show)
	st, err := r.rc.seatStatuses(ctx, l)
	if err != nil {
		return SeatMap{}, err
	}
	if len(st) != len(l.keys) {
		return SeatMap{}, &Error{Outcome: Failed, Err: fmt.Errorf("%s: MGET answered %d seats of %d", r.name, len(st), len(l.keys))}
	}
	return SeatMap{Statuses: st}, nil
}

// rsnScriptArgs returns the keys of a hold's script (the hold's, then its
// seats') and the seats' value while held.
func rsnScriptArgs(show, hold, user string, seats []string) (keys []string, value string) {
	keys = make([]string, 0, len(seats)+1)
	keys = append(keys, rsnHoldKey(show, hold))
	for _, s := range seats {
		keys = append(keys, rsnSeatKey(show, s))
	}
	return keys, hold + "|" + user
}

// Hold runs one script that sets every seat's key unless one exists; on a
// conflict it sets nothing and returns Taken naming the seats whose keys
// exist. ExpiresAt is taken before the call, so it is never later than
// Redis's own expiry.
func (r *RedisSetNX) Hold(ctx context.Context, show ShowSpec, user string, seats []string) (Hold, error) {
	if err := checkBaselineSeats(show, seats); err != nil {
		return Hold{}, err
	}
	if show.HoldTTL < time.Millisecond {
		return Hold{}, &Error{Outcome: Failed, Err: fmt.Errorf("%s: hold TTL %v is under a millisecond", r.name, show.HoldTTL)}
	}
	id := rand.Text()
	keys, value := rsnScriptArgs(show.ID, id, user, seats)
	start := time.Now()
	n, taken, err := r.rc.eval(ctx, rsnHold, keys, value, strconv.FormatInt(show.HoldTTL.Milliseconds(), 10), user, strings.Join(seats, ","))
	switch {
	case err != nil:
		return Hold{}, err
	case taken != nil:
		names := make([]string, 0, len(taken))
		for _, i := range taken {
			if i >= 1 && int(i) <= len(seats) {
				names = append(names, seats[i-1])
			}
		}
		return Hold{}, &Error{Outcome: Taken, Seats: names}
	case n == 0:
		return Hold{ID: id, User: user, Seats: slices.Clone(seats), ExpiresAt: start.Add(show.HoldTTL)}, nil
	}
	return Hold{}, &Error{Outcome: Failed, Err: fmt.Errorf("%s: hold script answered %d", r.name, n)}
}

// Confirm checks in Redis that the hold is the user's and still holds
// every seat (else Ended), inserts the booking into Postgres, and marks the
// seats booked in Redis. The booking is acknowledged once Postgres has it;
// marking the seats is then best effort (if it fails, the keys expire and a
// later hold of those seats fails at its confirm on Postgres's unique key).
func (r *RedisSetNX) Confirm(ctx context.Context, show ShowSpec, hold Hold, paymentRef string) error {
	keys, value := rsnScriptArgs(show.ID, hold.ID, hold.User, hold.Seats)
	ok, _, err := r.rc.eval(ctx, rsnCheck, keys, value, hold.User, strings.Join(hold.Seats, ","), strconv.FormatInt(confirmWindow.Milliseconds(), 10))
	if err != nil {
		return err
	}
	if ok != 1 {
		return &Error{Outcome: Ended, Err: fmt.Errorf("%s: hold %s of user %s is not live", r.name, hold.ID, hold.User)}
	}
	_, err = r.pool.Exec(ctx, `
		WITH b AS (
			INSERT INTO rsn_bookings (hold_id, show_id, user_id, seats, payment_ref, booked_at)
			VALUES ($1, $2, $3, $4, $5, now())
			RETURNING hold_id
		)
		INSERT INTO rsn_booked_seats (show_id, seat_id, hold_id)
		SELECT $2, s, b.hold_id FROM b, unnest($4::text[]) AS s`,
		hold.ID, show.ID, hold.User, hold.Seats, paymentRef)
	if err != nil {
		if pgErrCode(err) == "23505" { // a seat booked already: Redis lost it
			r.release(ctx, keys, value)
			return &Error{Outcome: Ended, Err: fmt.Errorf("%s: a seat of hold %s is booked already: %w", r.name, hold.ID, err)}
		}
		return baselinePGError(err)
	}
	// Not the call's context: the booking is done and must be marked even
	// if the caller's deadline is about to pass.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _, _ = r.rc.eval(mctx, rsnBook, keys, "booked|"+hold.ID)
	return nil
}

// release frees a hold whose confirm failed, best effort.
func (r *RedisSetNX) release(ctx context.Context, keys []string, value string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _, _ = r.rc.eval(ctx, rsnRelease, keys, value)
}

// Records returns the show's bookings from Postgres (booked) and its live
// holds from Redis (held), found with SCAN. Holds that expired or were lost
// with Redis leave no record.
func (r *RedisSetNX) Records(ctx context.Context, show ShowSpec) ([]Record, error) {
	rows, _ := r.pool.Query(ctx, `
		SELECT hold_id, user_id, seats, payment_ref FROM rsn_bookings
		WHERE show_id = $1 ORDER BY booked_at, hold_id`, show.ID)
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		rec := Record{State: StateBooked}
		err := row.Scan(&rec.ID, &rec.User, &rec.Seats, &rec.PaymentRef)
		return rec, err
	})
	if err != nil {
		return nil, baselinePGError(err)
	}
	booked := make(map[string]bool, len(recs))
	for _, rec := range recs {
		booked[rec.ID] = true
	}

	prefix := rsnHoldKey(show.ID, "")
	keys, err := r.rc.scan(ctx, redisGlobEscape(prefix)+"*")
	if err != nil {
		return nil, err
	}
	slices.Sort(keys) // SCAN may return a key twice
	keys = slices.Compact(keys)
	for chunk := range slices.Chunk(keys, rsnMGetChunk) {
		hs, err := r.rc.hgetall(ctx, chunk)
		if err != nil {
			return nil, err
		}
		for i, h := range hs {
			id := strings.TrimPrefix(chunk[i], prefix)
			if len(h) == 0 || booked[id] { // expired since the scan, or confirmed
				continue
			}
			recs = append(recs, Record{ID: id, User: h["user"], Seats: strings.Split(h["seats"], ","), State: StateHeld})
		}
	}
	return recs, nil
}

// redisGlobEscape escapes the characters SCAN's MATCH treats as special.
func redisGlobEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Close closes the Redis client and the Postgres pool.
func (r *RedisSetNX) Close() error {
	err := r.rc.close()
	r.pool.Close()
	return err
}

// goRedisConn is the design on go-redis (redis-setnx).
type goRedisConn struct {
	rdb     *redis.Client
	scripts [numRsnScripts]*redis.Script
}

var _ redisConn = (*goRedisConn)(nil)

func newGoRedisConn(cfg RedisSetNXConfig) *goRedisConn {
	c := &goRedisConn{rdb: redis.NewClient(&redis.Options{
		Addr:     cfg.RedisAddr,
		PoolSize: cfg.PoolSize,
		// Calls end at their context's deadline, as with Postgres.
		ContextTimeoutEnabled: true,
	})}
	for i, src := range rsnScripts {
		c.scripts[i] = redis.NewScript(src)
	}
	return c
}

func (c *goRedisConn) eval(ctx context.Context, s rsnScript, keys []string, args ...string) (int64, []int64, error) {
	argv := make([]any, len(args))
	for i, a := range args {
		argv[i] = a
	}
	res, err := c.scripts[s].Run(ctx, c.rdb, keys, argv...).Result()
	if err != nil {
		return 0, nil, baselineRedisError(err)
	}
	switch v := res.(type) {
	case int64:
		return v, nil, nil
	case []any:
		list := make([]int64, 0, len(v))
		for _, x := range v {
			if i, ok := x.(int64); ok {
				list = append(list, i)
			}
		}
		return 0, list, nil
	}
	return 0, nil, &Error{Outcome: Failed, Err: fmt.Errorf("script answered %#v", res)}
}

func (c *goRedisConn) seatStatuses(ctx context.Context, l *rsnLayout) ([]SeatStatus, error) {
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(l.mget))
	for i, args := range l.mget {
		cmds[i] = pipe.Do(ctx, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, baselineRedisError(err)
	}
	st := make([]SeatStatus, 0, len(l.keys))
	for _, cmd := range cmds {
		vals, err := cmd.Slice()
		if err != nil {
			return nil, baselineRedisError(err)
		}
		for _, v := range vals {
			s, _ := v.(string)
			st = append(st, rsnStatus(s, v != nil))
		}
	}
	return st, nil
}

func (c *goRedisConn) scan(ctx context.Context, match string) ([]string, error) {
	iter := c.rdb.Scan(ctx, 0, match, 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, baselineRedisError(err)
	}
	return keys, nil
}

func (c *goRedisConn) hgetall(ctx context.Context, keys []string) ([]map[string]string, error) {
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HGetAll(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, baselineRedisError(err)
	}
	hs := make([]map[string]string, len(cmds))
	for i, cmd := range cmds {
		hs[i] = cmd.Val()
	}
	return hs, nil
}

func (c *goRedisConn) ping(ctx context.Context) error {
	return baselineRedisError(c.rdb.Ping(ctx).Err())
}

func (c *goRedisConn) close() error { return c.rdb.Close() }

// baselineRedisError classifies an error of go-redis: nil stays nil, a
// passed deadline is Timeout, no connection (refused, lost, pool timed out
// or full, server loading or busy) is Unavailable, anything else Failed.
func baselineRedisError(err error) error {
	if err == nil {
		return nil
	}
	out := Failed
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		out = Timeout
	case errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted), errors.Is(err, redis.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		redis.HasErrorPrefix(err, "LOADING"), redis.HasErrorPrefix(err, "BUSY"),
		redis.HasErrorPrefix(err, "MASTERDOWN"), redis.HasErrorPrefix(err, "TRYAGAIN"):
		out = Unavailable
	case errors.As(err, &netErr):
		out = Unavailable
		if netErr.Timeout() {
			out = Timeout
		}
	}
	return &Error{Outcome: out, Err: err}
}
