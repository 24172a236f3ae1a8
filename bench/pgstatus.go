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
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"
)

// PGStatusConfig configures the pg-status baseline.
type PGStatusConfig struct {
	// DatabaseURL is the PostgreSQL URL (required). The target creates its
	// tables (pgs_seats, pgs_holds) there if they are absent.
	DatabaseURL string
	// MaxConns is the size of the connection pool. If 0, the URL's
	// pool_max_conns applies when it has one, else 32: pgxpool's own
	// default (4 on 2 cores) would starve the thousands of users a sale
	// runs, which no team would ship.
	MaxConns int32
	// ConfirmGrace is how long after a hold's expiry a confirm still
	// succeeds, if its seats were not held again meanwhile. If 0, 5 s, the
	// engine's grace (DESIGN.md); tests shorten it.
	ConfirmGrace time.Duration
	// SeatMapMaxAge, if positive, lets SeatMap answer with a map read at
	// most this long ago, one read at a time refreshing it: what a site
	// does when every user reads a 15,000-seat map. If 0, every SeatMap
	// runs its query.
	SeatMapMaxAge time.Duration
}

// defaultBaselineMaxConns is the Postgres pool size of the baselines when
// their config leaves it 0.
const defaultBaselineMaxConns = 32

// PGStatus is the design most teams build first: a seats table with a
// status column, and a hold is one transaction whose conditional
// UPDATE ... WHERE status = 'available' claims every seat or the hold rolls
// back. Every hold and confirm is durable when acknowledged.
//
// All of its state is in Postgres, so it is safe for concurrent use: each
// call is one transaction on a pooled connection, and concurrent holds of a
// seat serialize on the seat's row lock (the loser re-checks the row after
// the winner commits and finds it held). Statements touch seats through the
// primary key with seat_id = ANY(...), which Postgres walks in key order,
// so two holds lock their common seats in the same order and do not
// deadlock; should one be reported anyway, the hold counts as Taken.
type PGStatus struct {
	pool     *pgxpool.Pool
	grace    time.Duration
	seatMaps *seatMapCache
}

var (
	_ Target          = (*PGStatus)(nil)
	_ HoldsDurabler   = (*PGStatus)(nil)
	_ FreshSeatMapper = (*PGStatus)(nil)
	_ LocalSeatMapper = (*PGStatus)(nil)
)

// pgStatusSchema is the baseline's schema. status is text, as usually
// written; held_until of an expired hold is left in place, and such a seat
// counts as available everywhere.
const pgStatusSchema = `
CREATE TABLE IF NOT EXISTS pgs_seats (
	show_id    text NOT NULL,
	seat_id    text NOT NULL,
	idx        int NOT NULL, -- position in the layout, for the seat map
	status     text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'held', 'booked')),
	hold_id    text,
	held_until timestamptz,
	PRIMARY KEY (show_id, seat_id)
);
CREATE TABLE IF NOT EXISTS pgs_holds (
	hold_id      text PRIMARY KEY,
	show_id      text NOT NULL,
	user_id      text NOT NULL,
	seats        text[] NOT NULL,
	created_at   timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL,
	confirmed_at timestamptz,
	payment_ref  text
);
CREATE INDEX IF NOT EXISTS pgs_holds_show ON pgs_holds (show_id);
`

// NewPGStatus connects to cfg.DatabaseURL and creates the target's tables if
// they are absent.
func NewPGStatus(ctx context.Context, cfg PGStatusConfig) (*PGStatus, error) {
	pool, err := baselinePool(ctx, cfg.DatabaseURL, cfg.MaxConns)
	if err != nil {
		return nil, fmt.Errorf("bench: pg-status: %w", err)
	}
	if err := baselineSchema(ctx, pool, "pgs_schema", pgStatusSchema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: pg-status: %w", err)
	}
	grace := cfg.ConfirmGrace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	return &PGStatus{pool: pool, grace: grace, seatMaps: newSeatMapCache(cfg.SeatMapMaxAge)}, nil
}

// baselinePool opens a pool on url with maxConns connections (see
// PGStatusConfig.MaxConns for 0).
func baselinePool(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	if url == "" {
		return nil, errors.New("no database URL")
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	switch {
	case maxConns > 0:
		pc.MaxConns = maxConns
	case !strings.Contains(url, "pool_max_conns"):
		pc.MaxConns = defaultBaselineMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// baselineSchema runs schema under an advisory lock named by lock, so that
// two targets starting at once on one database don't race on CREATE ... IF
// NOT EXISTS.
func baselineSchema(ctx context.Context, pool *pgxpool.Pool, lock, schema string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext($1))", lock); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
}

// Name returns "pg-status".
func (p *PGStatus) Name() string { return "pg-status" }

// HoldsDurable returns true: a hold is committed before it is acknowledged.
func (p *PGStatus) HoldsDurable() bool { return true }

// CreateShow inserts every seat of show, available, in one COPY. It fails
// if the show exists.
func (p *PGStatus) CreateShow(ctx context.Context, show ShowSpec) error {
	ids := show.SeatIDs()
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"pgs_seats"}, []string{"show_id", "seat_id", "idx", "status"},
			pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
				return []any{show.ID, ids[i], int32(i), "available"}, nil
			}))
		return err
	})
	if pgErrCode(err) == "23505" { // unique_violation
		return fmt.Errorf("bench: pg-status: show %s already exists", show.ID)
	}
	return baselinePGError(err)
}

// pgStatusSeatMap returns, in one row, every seat's layout index and its
// status code as a character of one string: '1' (available, or held with
// the hold expired), '2' (held) and '3' (booked). The two aggregates see
// the rows in the same order, whatever it is, so no sort is needed: the
// caller places each code at its index. Measured for 15,000 seats on a
// loaded 2-core machine (a rough BenchmarkPGStatusSeatMap): ~7.5 ms per map
// (~3.5 ms each with 16 in parallel), against ~8.5 ms (~5.8) for
// string_agg(... ORDER BY idx), which sorts, and ~14 ms (~7.4) for a row
// per seat ordered by an index on (show_id, idx).
const pgStatusSeatMap = `
SELECT coalesce(array_agg(idx), '{}'), coalesce(string_agg(CASE
		WHEN status = 'booked' THEN '3'
		WHEN status = 'held' AND held_until >= now() THEN '2'
		ELSE '1' END, ''), '')
FROM pgs_seats WHERE show_id = $1`

// SeatMap reads the statuses of the show's seats in one query (or from the
// cache, see PGStatusConfig.SeatMapMaxAge); a seat whose hold expired is
// available.
func (p *PGStatus) SeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	return p.seatMaps.get(ctx, show, p.readSeatMap)
}

// LocalSeatMap answers from the cache when it is young enough.
func (p *PGStatus) LocalSeatMap(show ShowSpec) (SeatMap, bool) { return p.seatMaps.local(show) }

// FreshSeatMap reads the seat map from the database, bypassing the cache.
func (p *PGStatus) FreshSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	return p.readSeatMap(ctx, show)
}

func (p *PGStatus) readSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	var (
		idx   []int32
		codes string
	)
	if err := p.pool.QueryRow(ctx, pgStatusSeatMap, show.ID).Scan(&idx, &codes); err != nil {
		return SeatMap{}, baselinePGError(err)
	}
	n := show.Capacity()
	if len(idx) != n || len(codes) != n {
		return SeatMap{}, &Error{Outcome: Failed, Err: fmt.Errorf("pg-status: show %s has %d seats, want %d", show.ID, len(idx), n)}
	}
	sm := SeatMap{Statuses: make([]SeatStatus, n)}
	for i, x := range idx {
		if x < 0 || int(x) >= n || sm.Statuses[x] != 0 {
			return SeatMap{}, &Error{Outcome: Failed, Err: fmt.Errorf("pg-status: show %s has a bad layout index %d", show.ID, x)}
		}
		sm.Statuses[x] = SeatStatus(codes[i] - '0')
	}
	return sm, nil
}

// Hold claims every seat with one conditional UPDATE in a transaction and
// records the hold; if any seat is held (unexpired) or booked, it rolls
// back and returns Taken naming those seats (the ones the UPDATE did not
// return).
func (p *PGStatus) Hold(ctx context.Context, show ShowSpec, user string, seats []string) (Hold, error) {
	if err := checkBaselineSeats(show, seats); err != nil {
		return Hold{}, err
	}
	id := rand.Text()
	conn, err := acquireBaseline(ctx, p.pool)
	if err != nil {
		return Hold{}, err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Hold{}, baselinePGError(err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	rows, _ := tx.Query(ctx, `
		UPDATE pgs_seats SET status = 'held', hold_id = $3, held_until = now() + $4 * interval '1 microsecond'
		WHERE show_id = $1 AND seat_id = ANY($2)
		  AND (status = 'available' OR (status = 'held' AND held_until < now()))
		RETURNING seat_id`,
		show.ID, seats, id, show.HoldTTL.Microseconds())
	claimed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return Hold{}, holdPGError(err)
	}
	if len(claimed) != len(seats) {
		taken := slices.DeleteFunc(slices.Clone(seats), func(s string) bool { return slices.Contains(claimed, s) })
		return Hold{}, &Error{Outcome: Taken, Seats: taken}
	}
	var expires time.Time
	err = tx.QueryRow(ctx, `
		INSERT INTO pgs_holds (hold_id, show_id, user_id, seats, created_at, expires_at)
		VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 microsecond')
		RETURNING expires_at`,
		id, show.ID, user, seats, show.HoldTTL.Microseconds()).Scan(&expires)
	if err != nil {
		return Hold{}, holdPGError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Hold{}, holdPGError(err)
	}
	return Hold{ID: id, User: user, Seats: slices.Clone(seats), ExpiresAt: expires}, nil
}

// Confirm books the hold in one transaction: it marks the hold confirmed
// (only the holder's, only once), then books its seats if they all still
// carry the hold and its expiry plus the grace has not passed. Otherwise
// it rolls back and returns Ended.
func (p *PGStatus) Confirm(ctx context.Context, show ShowSpec, hold Hold, paymentRef string) error {
	conn, err := acquireBaseline(ctx, p.pool)
	if err != nil {
		return err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return baselinePGError(err)
	}
	defer tx.Rollback(ctx) // a no-op after Commit
	var (
		showID string
		seats  []string
	)
	err = tx.QueryRow(ctx, `
		UPDATE pgs_holds SET confirmed_at = now(), payment_ref = $3
		WHERE hold_id = $1 AND user_id = $2 AND confirmed_at IS NULL
		RETURNING show_id, seats`,
		hold.ID, hold.User, paymentRef).Scan(&showID, &seats)
	if errors.Is(err, pgx.ErrNoRows) {
		return &Error{Outcome: Ended, Err: fmt.Errorf("pg-status: no unconfirmed hold %s of user %s", hold.ID, hold.User)}
	}
	if err != nil {
		return baselinePGError(err)
	}
	if showID != show.ID {
		return &Error{Outcome: Failed, Err: fmt.Errorf("pg-status: hold %s is of show %s, not %s", hold.ID, showID, show.ID)}
	}
	tag, err := tx.Exec(ctx, `
		UPDATE pgs_seats SET status = 'booked'
		WHERE show_id = $1 AND seat_id = ANY($2) AND hold_id = $3
		  AND status = 'held' AND held_until + $4 * interval '1 microsecond' >= now()`,
		show.ID, seats, hold.ID, p.grace.Microseconds())
	if err != nil {
		return baselinePGError(err)
	}
	if tag.RowsAffected() != int64(len(seats)) {
		return &Error{Outcome: Ended, Err: fmt.Errorf("pg-status: hold %s expired", hold.ID)}
	}
	return baselinePGError(tx.Commit(ctx))
}

// Records returns one record per hold of the show: booked if confirmed,
// held if unexpired and its seats still carry it, expired otherwise.
func (p *PGStatus) Records(ctx context.Context, show ShowSpec) ([]Record, error) {
	rows, _ := p.pool.Query(ctx, `
		SELECT h.hold_id, h.user_id, h.seats, coalesce(h.payment_ref, ''),
			CASE
				WHEN h.confirmed_at IS NOT NULL THEN 'booked'
				WHEN h.expires_at >= now() AND NOT EXISTS (
					SELECT 1 FROM unnest(h.seats) AS u(seat_id)
					LEFT JOIN pgs_seats s ON s.show_id = h.show_id AND s.seat_id = u.seat_id
					WHERE s.hold_id IS DISTINCT FROM h.hold_id OR s.status IS DISTINCT FROM 'held')
				THEN 'held'
				ELSE 'expired'
			END
		FROM pgs_holds h WHERE h.show_id = $1
		ORDER BY h.created_at, h.hold_id`, show.ID)
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		var r Record
		err := row.Scan(&r.ID, &r.User, &r.Seats, &r.PaymentRef, &r.State)
		return r, err
	})
	if err != nil {
		return nil, baselinePGError(err)
	}
	return recs, nil
}

// Close closes the connection pool.
func (p *PGStatus) Close() error {
	p.pool.Close()
	return nil
}

// seatMapCache shares seat maps among the SeatMap calls of a baseline
// (see PGStatusConfig.SeatMapMaxAge). A stale map only costs its users a
// Taken; holds are decided by the store. Safe for concurrent use.
type seatMapCache struct {
	maxAge time.Duration // 0: no cache
	group  singleflight.Group

	mu   sync.Mutex // guards maps
	maps map[string]cachedSeatMap
}

type cachedSeatMap struct {
	sm SeatMap
	at time.Time // when the read started
}

func newSeatMapCache(maxAge time.Duration) *seatMapCache {
	return &seatMapCache{maxAge: maxAge, maps: map[string]cachedSeatMap{}}
}

// seatMapReadTimeout bounds a shared seat map read, which outlives the
// call that started it when that call gives up.
const seatMapReadTimeout = 30 * time.Second

// local returns a copy of the show's cached map if it is young enough.
func (c *seatMapCache) local(show ShowSpec) (SeatMap, bool) {
	if c.maxAge <= 0 {
		return SeatMap{}, false
	}
	c.mu.Lock()
	m, ok := c.maps[show.ID]
	c.mu.Unlock()
	if !ok || time.Since(m.at) >= c.maxAge {
		return SeatMap{}, false
	}
	return SeatMap{Statuses: slices.Clone(m.sm.Statuses)}, true
}

// get returns a copy of the show's cached map if it is young enough, else
// reads it once for every caller waiting, each until its own deadline.
func (c *seatMapCache) get(ctx context.Context, show ShowSpec, read func(context.Context, ShowSpec) (SeatMap, error)) (SeatMap, error) {
	if c.maxAge <= 0 {
		return read(ctx, show)
	}
	if sm, ok := c.local(show); ok {
		return sm, nil
	}
	ch := c.group.DoChan(show.ID, func() (any, error) {
		// Not the caller's deadline: every waiter shares this read.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), seatMapReadTimeout)
		defer cancel()
		start := time.Now()
		sm, err := read(rctx, show)
		if err == nil {
			c.mu.Lock()
			c.maps[show.ID] = cachedSeatMap{sm: sm, at: start}
			c.mu.Unlock()
		}
		return sm, err
	})
	select {
	case <-ctx.Done():
		return SeatMap{}, &Error{Outcome: Timeout, Err: ctx.Err()}
	case res := <-ch:
		if res.Err != nil {
			return SeatMap{}, res.Err
		}
		return SeatMap{Statuses: slices.Clone(res.Val.(SeatMap).Statuses)}, nil
	}
}

// checkBaselineSeats refuses what the engine refuses as InvalidArgument
// or NotFound: no seats, more than 10, one asked for twice, or one not in
// the show's layout.
func checkBaselineSeats(show ShowSpec, seats []string) error {
	if len(seats) == 0 || len(seats) > 10 {
		return &Error{Outcome: Failed, Err: fmt.Errorf("a hold takes 1 to 10 seats, not %d", len(seats))}
	}
	for i, s := range seats {
		if slices.Contains(seats[:i], s) {
			return &Error{Outcome: Failed, Err: fmt.Errorf("seat %s asked for twice", s)}
		}
		if !seatInShow(show, s) {
			return &Error{Outcome: Failed, Err: fmt.Errorf("no seat %q in show %s", s, show.ID)}
		}
	}
	return nil
}

// seatInShow reports whether seat is "<row label>-<number>" of a row of
// show with at least that many seats.
func seatInShow(show ShowSpec, seat string) bool {
	i := strings.LastIndexByte(seat, '-')
	if i < 0 {
		return false
	}
	n, err := strconv.Atoi(seat[i+1:])
	if err != nil || n < 1 || seat[i+1] == '0' || seat[i+1] == '+' {
		return false
	}
	for _, r := range show.Rows {
		if r.Label == seat[:i] {
			return n <= r.Seats
		}
	}
	return false
}

// acquireBaseline takes a connection from pool. Failing to get one (the
// server refuses connections, or every connection stayed busy until the
// call's deadline) means the design is overloaded or down: Unavailable,
// not Timeout, as no statement was sent.
func acquireBaseline(ctx context.Context, pool *pgxpool.Pool) (*pgxpool.Conn, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, &Error{Outcome: Unavailable, Err: fmt.Errorf("acquiring a connection: %w", err)}
	}
	return conn, nil
}

// holdPGError is baselinePGError for Hold, where a deadlock or
// serialization failure means another hold wanted the same seats: Taken.
func holdPGError(err error) error {
	switch pgErrCode(err) {
	case "40P01", "40001": // deadlock_detected, serialization_failure
		return &Error{Outcome: Taken, Err: err}
	}
	return baselinePGError(err)
}

// baselinePGError classifies an error of pgx: nil stays nil, an *Error is
// kept, a passed deadline or a cancelled query is Timeout, a refused or
// lost connection or a server shutting down or out of resources is
// Unavailable, anything else Failed.
func baselinePGError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	out := Failed
	var (
		connErr *pgconn.ConnectError
		netErr  net.Error
	)
	code := pgErrCode(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), pgconn.Timeout(err),
		code == "57014": // query_canceled
		out = Timeout
	case errors.As(err, &connErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		strings.HasPrefix(code, "08"),    // connection_exception
		strings.HasPrefix(code, "53"),    // insufficient_resources, too_many_connections
		strings.HasPrefix(code, "57P"),   // admin_shutdown, crash_shutdown, cannot_connect_now
		code == "40P01", code == "40001": // deadlock, serialization failure: retry
		out = Unavailable
	case errors.As(err, &netErr):
		out = Unavailable
		if netErr.Timeout() {
			out = Timeout
		}
	}
	return &Error{Outcome: out, Err: err}
}

// pgErrCode returns the SQLSTATE of a Postgres error, or "".
func pgErrCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
