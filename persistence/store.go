// Package persistence keeps boxoffice's authoritative state in PostgreSQL:
// the schema and its migrations, the group-commit writer through which a
// node makes every change durable, show ownership with fencing epochs and
// leases, loading a show for replay, and the history and audit queries.
package persistence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures a Store.
type Config struct {
	// URL is the PostgreSQL connection URL. Required.
	URL string
	// NodeID names this node in ownership rows and audit events. Required.
	NodeID string
	// MaxConns is the size of the pool for reads, loads, ownership changes
	// and the pruner. Zero means 16. The writer has two connections of its
	// own besides (one per lane, see writer), so no flood of reads can keep
	// it from committing.
	MaxConns int32
	// QueueSize bounds the writer's queue; a full queue answers
	// ErrOverloaded. Zero means 16384.
	QueueSize int
	// MaxBatch is the most mutations committed in one transaction. Zero
	// means 1024.
	MaxBatch int
	// CommitTimeout bounds the time from Enqueue to the mutation's answer:
	// every transaction of the writer runs under the deadline of the oldest
	// mutation in it, so a dead or black-holed database fails writes
	// promptly. Zero means 5 s.
	CommitTimeout time.Duration
	// QueryTimeout bounds reads and ownership changes. Zero means 5 s.
	QueryTimeout time.Duration
	// LeaseDuration is how long a take (AcquireShow) or a renewal
	// (RenewLeases) keeps a show this node's, by the database's clock: until
	// then another node's AcquireShow fails with ErrLeased. Renew several
	// times per lease. It is also how long the shows of a node that died
	// without releasing them wait for a new owner. Zero means 1.5 s.
	LeaseDuration time.Duration
	// IdempotencyRetention is how long an idempotency record serves
	// retries, judged by the database's clock from the record's CreatedAt:
	// LoadShow returns only records younger than it, the writer lets a
	// mutation reuse the key of an older one, and the pruner deletes older
	// ones. Zero means 24 h.
	IdempotencyRetention time.Duration
	// PruneInterval is the pause between the pruner's rounds, each of which
	// deletes every idempotency record older than IdempotencyRetention; the
	// first round starts one interval after Open. Zero means 1 min.
	PruneInterval time.Duration
	// PruneBatch is the most idempotency records one of the pruner's
	// statements deletes. Zero means 1000.
	PruneBatch int
	// Logger receives the writer's and the pruner's errors. Nil means
	// slog.Default().
	Logger *slog.Logger
	// Observer, if set, is told about every committed batch.
	Observer func(BatchStats)
}

// BatchStats describes one writer transaction, for metrics.
type BatchStats struct {
	Mutations int
	Duration  time.Duration
	// Err is the error of the batch's transaction, nil if it committed.
	// When the database refused a statement of the batch, it was then
	// committed in parts: Failed says how many mutations failed.
	Err error
	// Failed counts the mutations answered with an error: those of a
	// failed batch, the culprits of a batch committed in parts, and the
	// mutations of shows whose epoch had moved on (ErrNotOwner).
	Failed int
	// Fenced counts, among Failed, the mutations of shows whose epoch had
	// moved on.
	Fenced int
	// Transactions counts the transactions tried: 1, plus those of the
	// parts of a refused batch. (A transaction rolled back because a show
	// moved, and run again without its mutations, counts once.)
	Transactions int
}

func (c *Config) setDefaults() {
	if c.MaxConns == 0 {
		c.MaxConns = 16
	}
	if c.QueueSize == 0 {
		c.QueueSize = 16384
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 1024
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 5 * time.Second
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = 5 * time.Second
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 1500 * time.Millisecond
	}
	if c.IdempotencyRetention == 0 {
		c.IdempotencyRetention = 24 * time.Hour
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = time.Minute
	}
	if c.PruneBatch == 0 {
		c.PruneBatch = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Store is the database of a node. Its methods are safe for concurrent use.
type Store struct {
	cfg    Config
	pool   *pgxpool.Pool
	wpool  *pgxpool.Pool // the connection of the writer's first lane (the second makes its own)
	writer *writer
	pruner *pruner
}

// Open connects to the database and starts the writer and the pruner of
// idempotency records. It does not wait for the database to be reachable: a
// node can start while it is down. Negative durations and sizes in cfg are
// an error.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, errors.New("persistence: no database URL")
	}
	if cfg.NodeID == "" {
		return nil, errors.New("persistence: no node ID")
	}
	if cfg.MaxConns < 0 || cfg.QueueSize < 0 || cfg.MaxBatch < 0 || cfg.CommitTimeout < 0 || cfg.QueryTimeout < 0 ||
		cfg.LeaseDuration < 0 || cfg.IdempotencyRetention < 0 || cfg.PruneInterval < 0 || cfg.PruneBatch < 0 {
		return nil, errors.New("persistence: a negative size or duration in Config")
	}
	cfg.setDefaults()
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("persistence: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	// A transaction whose client vanished without closing its connection (a
	// black-holed network) would keep its locks — the show's ownership row,
	// its new seat claims — until TCP gave up, hours later; the server ends
	// such a session instead. No transaction of this package idles between
	// statements for more than moments.
	idle := 2 * max(cfg.CommitTimeout, cfg.QueryTimeout)
	if _, set := pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(idle.Milliseconds(), 10)
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 || pcfg.ConnConfig.ConnectTimeout > cfg.QueryTimeout {
		pcfg.ConnConfig.ConnectTimeout = cfg.QueryTimeout
	}
	wcfg := pcfg.Copy()
	wcfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("persistence: %w", err)
	}
	wpool, err := pgxpool.NewWithConfig(ctx, wcfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("persistence: %w", err)
	}
	s := &Store{cfg: cfg, pool: pool, wpool: wpool}
	s.writer = newWriter(s)
	s.pruner = startPruner(s)
	return s, nil
}

// Close stops the pruner, cancelling a prune in progress, stops taking
// writes, commits what is queued within ctx — when ctx ends first, the
// transaction in flight is cancelled and the rest of the queue fails — and
// closes the pools. It is idempotent.
func (s *Store) Close(ctx context.Context) error {
	perr := s.pruner.stop(ctx)
	err := s.writer.close(ctx)
	s.wpool.Close()
	s.pool.Close()
	return errors.Join(perr, err)
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	return classify(s.pool.Ping(ctx))
}

// Pool returns the connection pool, for tests and tools that inspect the
// database directly.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Category is a price category of a show.
type Category struct {
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
}

// Row is a row of a show's layout.
type Row struct {
	Label     string `json:"label"`
	SeatCount int    `json:"seat_count"`
	Category  string `json:"category"`
}

// Show is a show's row.
type Show struct {
	ID       string
	Title    string
	City     string
	Venue    string
	StartsAt time.Time
	HoldTTL  time.Duration
	// OfferWindow is how long a waitlist turn's offer lasts, MaxWait how
	// long a user may wait. CreateShow stores zero as DefaultOfferWindow
	// and DefaultMaxWait. Like HoldTTL they are kept in milliseconds.
	OfferWindow time.Duration
	MaxWait     time.Duration
	Categories  []Category
	Rows        []Row
	Capacity    int
	CreatedAt   time.Time
	// Room is the show's waiting room; nil for none.
	Room *WaitingRoom
}

// WaitingRoom is a show's waiting room, as the engine validated it: when
// admissions begin, queued users admitted per second, the cap on shoppers
// (0: none) and how long an admission lasts (kept in milliseconds).
type WaitingRoom struct {
	OpensAt        time.Time
	AdmitPerSecond float64
	MaxActive      int
	ShoppingWindow time.Duration
}

// Reservation is a reservation's row. Status is HELD, BOOKED, RELEASED or
// EXPIRED.
type Reservation struct {
	ShowID     string
	ID         string
	UserID     string
	Status     string
	SeatIDs    []string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	BookedAt   time.Time
	EndedAt    time.Time
	PaymentRef string
}

// IdempotencyRecord remembers the answer to a request made with an
// idempotency key.
type IdempotencyRecord struct {
	Key           string
	Fingerprint   string
	ReservationID string
	// CreatedAt is when the record was written, or its expired key reused,
	// by the database's clock (the start of the writer's transaction). The
	// record serves retries until CreatedAt + Config.IdempotencyRetention.
	CreatedAt time.Time
}

// Snapshot is what a new owner needs to rebuild a show: the show, its live
// reservations (HELD ones by expiry, then BOOKED ones), its idempotency
// records younger than Config.IdempotencyRetention by the database's clock
// at the load, and its waitlist.
type Snapshot struct {
	Show        Show
	Live        []Reservation
	Idempotency []IdempotencyRecord
	// Waiting are the waitlist's entries by Seq, ascending.
	Waiting []WaitEntry
	// Aside are the seats set aside for the head of the queue; nil if none.
	Aside []string
	// Room are the waiting room's users, queued and admitted, by Seq;
	// RoomEnded is RoomSoldOut or RoomClosed once the room stopped, else "".
	Room      []RoomEntry
	RoomEnded string
}

// CreateShow inserts a show and returns it as stored: zero OfferWindow and
// MaxWait replaced by their defaults, CreatedAt set. ErrExists if its ID is
// taken; ErrConflict if the database refuses a value, such as a HoldTTL,
// OfferWindow or MaxWait under a millisecond.
func (s *Store) CreateShow(ctx context.Context, sh Show) (Show, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	if sh.OfferWindow == 0 {
		sh.OfferWindow = DefaultOfferWindow
	}
	if sh.MaxWait == 0 {
		sh.MaxWait = DefaultMaxWait
	}
	cats, err := json.Marshal(sh.Categories)
	if err != nil {
		return Show{}, err
	}
	rows, err := json.Marshal(sh.Rows)
	if err != nil {
		return Show{}, err
	}
	var room roomColumns
	if r := sh.Room; r != nil {
		ms := r.ShoppingWindow.Milliseconds()
		room = roomColumns{opensAt: &r.OpensAt, rate: &r.AdmitPerSecond, maxActive: &r.MaxActive, windowMS: &ms}
	}
	err = s.pool.QueryRow(ctx, `
		INSERT INTO shows (show_id, title, city, venue, starts_at, hold_ttl_ms, categories, rows, capacity,
			offer_window_ms, max_wait_ms, room_opens_at, room_admit_per_second, room_max_active, room_window_ms)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (show_id) DO NOTHING
		RETURNING created_at`,
		sh.ID, sh.Title, sh.City, sh.Venue, sh.StartsAt, sh.HoldTTL.Milliseconds(), cats, rows, sh.Capacity,
		sh.OfferWindow.Milliseconds(), sh.MaxWait.Milliseconds(), room.opensAt, room.rate, room.maxActive, room.windowMS,
	).Scan(&sh.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Show{}, fmt.Errorf("show %s: %w", sh.ID, ErrExists)
	}
	if err != nil {
		return Show{}, fmt.Errorf("create show %s: %w", sh.ID, classify(err))
	}
	return sh, nil
}

const showColumns = `show_id, title, city, venue, starts_at, hold_ttl_ms, categories, rows, capacity, created_at,
	offer_window_ms, max_wait_ms, room_opens_at, room_admit_per_second, room_max_active, room_window_ms`

// roomColumns are a show's waiting room columns, all NULL (nil) for none.
type roomColumns struct {
	opensAt   *time.Time
	rate      *float64
	maxActive *int
	windowMS  *int64
}

func scanShow(row pgx.Row) (Show, error) {
	var sh Show
	var ttlMS, offerMS, waitMS int64
	var cats, rows []byte
	var room roomColumns
	if err := row.Scan(&sh.ID, &sh.Title, &sh.City, &sh.Venue, &sh.StartsAt, &ttlMS, &cats, &rows, &sh.Capacity, &sh.CreatedAt,
		&offerMS, &waitMS, &room.opensAt, &room.rate, &room.maxActive, &room.windowMS); err != nil {
		return Show{}, err
	}
	if room.opensAt != nil && room.rate != nil && room.maxActive != nil && room.windowMS != nil {
		sh.Room = &WaitingRoom{OpensAt: *room.opensAt, AdmitPerSecond: *room.rate, MaxActive: *room.maxActive,
			ShoppingWindow: time.Duration(*room.windowMS) * time.Millisecond}
	}
	sh.HoldTTL = time.Duration(ttlMS) * time.Millisecond
	sh.OfferWindow = time.Duration(offerMS) * time.Millisecond
	sh.MaxWait = time.Duration(waitMS) * time.Millisecond
	if err := json.Unmarshal(cats, &sh.Categories); err != nil {
		return Show{}, fmt.Errorf("show %s categories: %w", sh.ID, err)
	}
	if err := json.Unmarshal(rows, &sh.Rows); err != nil {
		return Show{}, fmt.Errorf("show %s rows: %w", sh.ID, err)
	}
	return sh, nil
}

// GetShow reads a show. ErrNotFound if there is none.
func (s *Store) GetShow(ctx context.Context, id string) (Show, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	sh, err := scanShow(s.pool.QueryRow(ctx, `SELECT `+showColumns+` FROM shows WHERE show_id = $1`, id))
	if err != nil {
		return Show{}, fmt.Errorf("show %s: %w", id, classify(err))
	}
	return sh, nil
}

// LoadShow reads everything needed to rebuild a show, in one repeatable-read
// transaction so the parts agree.
func (s *Store) LoadShow(ctx context.Context, showID string) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	var snap Snapshot
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		snap.Show, err = scanShow(tx.QueryRow(ctx, `SELECT `+showColumns+` FROM shows WHERE show_id = $1`, showID))
		if err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `SELECT `+reservationColumns+` FROM reservations
			WHERE show_id = $1 AND ended_at IS NULL
			ORDER BY status = 'BOOKED', expires_at, created_at, reservation_id`, showID)
		snap.Live, err = pgx.CollectRows(rows, scanReservation)
		if err != nil {
			return err
		}
		// The complement of the writer's and the pruner's "expired".
		rows, _ = tx.Query(ctx, `SELECT idempotency_key, fingerprint, reservation_id, created_at FROM idempotency_keys
			WHERE show_id = $1 AND created_at > now() - $2::interval`, showID, s.cfg.IdempotencyRetention)
		snap.Idempotency, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (IdempotencyRecord, error) {
			var rec IdempotencyRecord
			err := r.Scan(&rec.Key, &rec.Fingerprint, &rec.ReservationID, &rec.CreatedAt)
			return rec, err
		})
		if err != nil {
			return err
		}
		if err := loadWaitlist(ctx, tx, showID, &snap); err != nil {
			return err
		}
		return loadRoom(ctx, tx, showID, &snap)
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("load show %s: %w", showID, classify(err))
	}
	return snap, nil
}

const reservationColumns = `show_id, reservation_id, user_id, status, seat_ids, created_at, expires_at,
	booked_at, ended_at, coalesce(payment_ref, '')`

func scanReservation(row pgx.CollectableRow) (Reservation, error) {
	var r Reservation
	var booked, ended *time.Time
	err := row.Scan(&r.ShowID, &r.ID, &r.UserID, &r.Status, &r.SeatIDs, &r.CreatedAt, &r.ExpiresAt, &booked, &ended, &r.PaymentRef)
	if booked != nil {
		r.BookedAt = *booked
	}
	if ended != nil {
		r.EndedAt = *ended
	}
	return r, err
}

// GetReservation reads one reservation. ErrNotFound if there is none.
func (s *Store) GetReservation(ctx context.Context, showID, id string) (Reservation, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT `+reservationColumns+` FROM reservations WHERE show_id = $1 AND reservation_id = $2`, showID, id)
	r, err := pgx.CollectExactlyOneRow(rows, scanReservation)
	if err != nil {
		return Reservation{}, fmt.Errorf("reservation %s: %w", id, classify(err))
	}
	return r, nil
}

// ReservationCursor is a position in a user's history, newest first.
type ReservationCursor struct {
	CreatedAt time.Time
	ID        string
}

// ListUserReservations returns up to limit of a user's reservations, newest
// first, starting after the cursor (nil: from the newest). A non-empty
// showID restricts them to that show.
func (s *Store) ListUserReservations(ctx context.Context, userID, showID string, after *ReservationCursor, limit int) ([]Reservation, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	var at *time.Time
	var id string
	if after != nil {
		at, id = &after.CreatedAt, after.ID
	}
	rows, _ := s.pool.Query(ctx, `SELECT `+reservationColumns+` FROM reservations
		WHERE user_id = $1 AND ($2 = '' OR show_id = $2)
		  AND ($3::timestamptz IS NULL OR (created_at, reservation_id) < ($3, $4))
		ORDER BY created_at DESC, reservation_id DESC
		LIMIT $5`, userID, showID, at, id, limit)
	list, err := pgx.CollectRows(rows, scanReservation)
	if err != nil {
		return nil, fmt.Errorf("reservations of %s: %w", userID, classify(err))
	}
	return list, nil
}

// Event is one entry of the audit log.
type Event struct {
	ID            int64
	ShowID        string
	ReservationID string
	UserID        string
	Kind          string
	SeatIDs       []string
	PaymentRef    string
	NodeID        string
	Epoch         int64
	At            time.Time
}

// EventFilter selects audit events; at least one of ShowID, ReservationID
// and UserID must be set. Events come newest first, with IDs below BeforeID
// when it is non-zero.
type EventFilter struct {
	ShowID, ReservationID, UserID string
	BeforeID                      int64
	Limit                         int
}

// ListEvents reads the audit log.
func (s *Store) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	if f.ShowID == "" && f.ReservationID == "" && f.UserID == "" {
		return nil, errors.New("list events: no filter")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT event_id, show_id, reservation_id, user_id, kind, seat_ids,
			coalesce(payment_ref, ''), node_id, epoch, at
		FROM audit_events
		WHERE ($1 = '' OR show_id = $1) AND ($2 = '' OR reservation_id = $2) AND ($3 = '' OR user_id = $3)
		  AND ($4 = 0 OR event_id < $4)
		ORDER BY event_id DESC
		LIMIT $5`, f.ShowID, f.ReservationID, f.UserID, f.BeforeID, f.Limit)
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.ID, &e.ShowID, &e.ReservationID, &e.UserID, &e.Kind, &e.SeatIDs, &e.PaymentRef, &e.NodeID, &e.Epoch, &e.At)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", classify(err))
	}
	return list, nil
}
