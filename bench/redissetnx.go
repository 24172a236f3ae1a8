package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// RedisSetNXConfig configures the redis-setnx baseline.
type RedisSetNXConfig struct {
	// RedisAddr is the Redis server's host:port (required).
	RedisAddr string
	// DatabaseURL is the PostgreSQL URL (required), where bookings go.
	// The target creates its tables (rsn_shows, rsn_bookings,
	// rsn_booked_seats) there if they are absent.
	DatabaseURL string
	// PoolSize is the Redis connection pool's size. If 0, go-redis's
	// default: 10 per GOMAXPROCS.
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
// It is safe for concurrent use: Redis runs each script atomically, and the
// process keeps only caches: each show's seat keys (guarded by mu) and, if
// configured, recent seat maps.
type RedisSetNX struct {
	rdb      *redis.Client
	pool     *pgxpool.Pool
	seatMaps *seatMapCache

	mu      sync.RWMutex          // guards layouts
	layouts map[string]*rsnLayout // by show ID
}

var (
	_ Target          = (*RedisSetNX)(nil)
	_ HoldsDurabler   = (*RedisSetNX)(nil)
	_ FreshSeatMapper = (*RedisSetNX)(nil)
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

var (
	// rsnHoldScript claims every seat or none.
	// KEYS[1]: the hold's key; KEYS[2..]: the seats' keys.
	// ARGV: seat value "holdID|user", TTL in ms, user, seats joined by ",".
	// Returns 0, or the 1-based positions of the seats already taken.
	rsnHoldScript = redis.NewScript(`
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
return 0`)

	// rsnCheckScript checks that the hold is the user's, for these seats,
	// and still holds every one; if so it keeps the keys for at least
	// ARGV[4] ms more (confirmWindow) and returns 1, else 0.
	// KEYS as rsnHoldScript; ARGV: seat value, user, seats joined by ",",
	// window in ms.
	rsnCheckScript = redis.NewScript(`
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
return 1`)

	// rsnBookScript marks the seats booked (no TTL) and drops the hold.
	// KEYS as rsnHoldScript; ARGV: "booked|holdID".
	rsnBookScript = redis.NewScript(`
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[1]) end
redis.call('DEL', KEYS[1])
return 1`)

	// rsnReleaseScript frees the seats that still carry the hold, and the
	// hold. KEYS as rsnHoldScript; ARGV: seat value.
	rsnReleaseScript = redis.NewScript(`
for i = 2, #KEYS do
	if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('DEL', KEYS[1])
return 1`)
)

// NewRedisSetNX connects to Redis and Postgres and creates the target's
// tables if they are absent.
func NewRedisSetNX(ctx context.Context, cfg RedisSetNXConfig) (*RedisSetNX, error) {
	if cfg.RedisAddr == "" {
		return nil, errors.New("bench: redis-setnx: no Redis address")
	}
	pool, err := baselinePool(ctx, cfg.DatabaseURL, cfg.PGMaxConns)
	if err != nil {
		return nil, fmt.Errorf("bench: redis-setnx: %w", err)
	}
	if err := baselineSchema(ctx, pool, "rsn_schema", redisSetNXSchema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: redis-setnx: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{
		Addr:     cfg.RedisAddr,
		PoolSize: cfg.PoolSize,
		// Calls end at their context's deadline, as with Postgres.
		ContextTimeoutEnabled: true,
	})
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		pool.Close()
		return nil, fmt.Errorf("bench: redis-setnx: %w", err)
	}
	return &RedisSetNX{rdb: rdb, pool: pool, layouts: map[string]*rsnLayout{}, seatMaps: newSeatMapCache(cfg.SeatMapMaxAge)}, nil
}

// Name returns "redis-setnx".
func (r *RedisSetNX) Name() string { return "redis-setnx" }

// HoldsDurable returns false: holds live only in Redis, without
// persistence.
func (r *RedisSetNX) HoldsDurable() bool { return false }

// rsnSeatKey is the Redis key of a seat.
func rsnSeatKey(show, seat string) string { return "seat:{" + show + "}:" + seat }

// rsnHoldKey is the Redis key of a hold.
func rsnHoldKey(show, hold string) string { return "hold:{" + show + "}:" + hold }

// rsnLayout is what the target keeps of a show's layout: its seat keys in
// layout order, and the same keys as ready-made MGET commands of
// rsnMGetChunk keys, so that a seat map converts no key per call.
type rsnLayout struct {
	keys []string
	mget [][]any // "MGET", key, key, ...
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
		return fmt.Errorf("bench: redis-setnx: show %s already exists", show.ID)
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

// FreshSeatMap reads the seat map from Redis, bypassing the cache.
func (r *RedisSetNX) FreshSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	return r.readSeatMap(ctx, show)
}

func (r *RedisSetNX) readSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	l := r.layout(show)
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(l.mget))
	for i, args := range l.mget {
		cmds[i] = pipe.Do(ctx, args...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return SeatMap{}, baselineRedisError(err)
	}
	sm := SeatMap{Statuses: make([]SeatStatus, 0, len(l.keys))}
	for _, c := range cmds {
		vals, err := c.Slice()
		if err != nil {
			return SeatMap{}, baselineRedisError(err)
		}
		for _, v := range vals {
			switch s, _ := v.(string); {
			case v == nil:
				sm.Statuses = append(sm.Statuses, Available)
			case strings.HasPrefix(s, "booked|"):
				sm.Statuses = append(sm.Statuses, Booked)
			default:
				sm.Statuses = append(sm.Statuses, Held)
			}
		}
	}
	if len(sm.Statuses) != len(l.keys) {
		return SeatMap{}, &Error{Outcome: Failed, Err: fmt.Errorf("redis-setnx: MGET answered %d seats of %d", len(sm.Statuses), len(l.keys))}
	}
	return sm, nil
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
		return Hold{}, &Error{Outcome: Failed, Err: fmt.Errorf("redis-setnx: hold TTL %v is under a millisecond", show.HoldTTL)}
	}
	id := rand.Text()
	keys, value := rsnScriptArgs(show.ID, id, user, seats)
	start := time.Now()
	res, err := rsnHoldScript.Run(ctx, r.rdb, keys, value, show.HoldTTL.Milliseconds(), user, strings.Join(seats, ",")).Result()
	if err != nil {
		return Hold{}, baselineRedisError(err)
	}
	switch v := res.(type) {
	case int64:
		if v == 0 {
			return Hold{ID: id, User: user, Seats: slices.Clone(seats), ExpiresAt: start.Add(show.HoldTTL)}, nil
		}
	case []any:
		taken := make([]string, 0, len(v))
		for _, x := range v {
			if i, ok := x.(int64); ok && i >= 1 && int(i) <= len(seats) {
				taken = append(taken, seats[i-1])
			}
		}
		return Hold{}, &Error{Outcome: Taken, Seats: taken}
	}
	return Hold{}, &Error{Outcome: Failed, Err: fmt.Errorf("redis-setnx: hold script answered %#v", res)}
}

// Confirm checks in Redis that the hold is the user's and still holds
// every seat (else Ended), inserts the booking into Postgres, and marks the
// seats booked in Redis. The booking is acknowledged once Postgres has it;
// marking the seats is then best effort (if it fails, the keys expire and a
// later hold of those seats fails at its confirm on Postgres's unique key).
func (r *RedisSetNX) Confirm(ctx context.Context, show ShowSpec, hold Hold, paymentRef string) error {
	keys, value := rsnScriptArgs(show.ID, hold.ID, hold.User, hold.Seats)
	ok, err := rsnCheckScript.Run(ctx, r.rdb, keys, value, hold.User, strings.Join(hold.Seats, ","), confirmWindow.Milliseconds()).Int()
	if err != nil {
		return baselineRedisError(err)
	}
	if ok != 1 {
		return &Error{Outcome: Ended, Err: fmt.Errorf("redis-setnx: hold %s of user %s is not live", hold.ID, hold.User)}
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
			return &Error{Outcome: Ended, Err: fmt.Errorf("redis-setnx: a seat of hold %s is booked already: %w", hold.ID, err)}
		}
		return baselinePGError(err)
	}
	// Not the call's context: the booking is done and must be marked even
	// if the caller's deadline is about to pass.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = rsnBookScript.Run(mctx, r.rdb, keys, "booked|"+hold.ID).Err()
	return nil
}

// release frees a hold whose confirm failed, best effort.
func (r *RedisSetNX) release(ctx context.Context, keys []string, value string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = rsnReleaseScript.Run(ctx, r.rdb, keys, value).Err()
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
	iter := r.rdb.Scan(ctx, 0, redisGlobEscape(prefix)+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, baselineRedisError(err)
	}
	slices.Sort(keys) // SCAN may return a key twice
	keys = slices.Compact(keys)
	for chunk := range slices.Chunk(keys, rsnMGetChunk) {
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(chunk))
		for i, k := range chunk {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, baselineRedisError(err)
		}
		for i, c := range cmds {
			h := c.Val()
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
	err := r.rdb.Close()
	r.pool.Close()
	return err
}

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
