package persistence

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Kind is what a Mutation does: to a reservation, or (Waitlist) to a
// show's waitlist only.
type Kind uint8

// Mutation kinds.
const (
	// Hold inserts a HELD reservation and claims its seats.
	Hold Kind = iota + 1
	// Confirm turns a HELD reservation into BOOKED; the claims stay.
	Confirm
	// Release ends a HELD reservation as RELEASED and frees its seats.
	Release
	// Expire ends a HELD reservation as EXPIRED and frees its seats.
	Expire
	// Waitlist is the Kind of a mutation that changes only a show's
	// waitlist: it has no reservation part (ReservationID, SeatIDs etc.
	// unused) and must carry Waitlist; without one it writes nothing. It
	// writes no reservation event, only the change's events.
	Waitlist
)

var kindEvents = [...]string{Hold: "HELD", Confirm: "BOOKED", Release: "RELEASED", Expire: "EXPIRED", Waitlist: "WAITLIST"}

func (k Kind) String() string {
	if int(k) < len(kindEvents) && kindEvents[k] != "" {
		return kindEvents[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// MaxUserSeats is the most seats of a show a user may have, held plus
// booked: a Hold that would pass it is refused with ErrConflict. It equals
// activereservation.MaxSeatsPerUser (a test checks).
const MaxUserSeats = 10

// ConfirmGrace is how long after its expires_at a hold may still be booked:
// a Confirm whose At is later is refused with ErrConflict. It equals
// activereservation.ConfirmGrace (a test of the engine checks).
const ConfirmGrace = 5 * time.Second

// Mutation is one change of one reservation, with the audit event it
// produces and, optionally, the idempotency record of the request and a
// change of the show's waitlist; or, of Kind Waitlist, a change of the
// waitlist alone. Its slices and Waitlist must not be modified after
// Enqueue.
type Mutation struct {
	Kind Kind
	// Epoch is the writer's ownership epoch of the show (from AcquireShow).
	Epoch         int64
	ShowID        string
	ReservationID string
	UserID        string
	// SeatIDs of the reservation, every kind: for Hold they are the seats
	// claimed, for Release and Expire the claims freed. Seat IDs never
	// contain a comma.
	SeatIDs []string
	// At is when it happened: created, booked or ended. A Confirm's At must
	// be within ConfirmGrace of the hold's expires_at.
	At time.Time
	// ExpiresAt is the hold's expiry (Hold only).
	ExpiresAt time.Time
	// PaymentRef is the payment reference (Confirm only).
	PaymentRef string
	// IdempotencyKey, if not empty, is recorded with Fingerprint (Hold and
	// Confirm only).
	IdempotencyKey string
	Fingerprint    string
	// Waitlist is optional for Hold, Confirm, Release and Expire, and
	// applied in the same transaction (fenced and refused with the rest);
	// required for Kind Waitlist.
	Waitlist *WaitlistChange
}

// Pending is a queued mutation. Wait returns its outcome.
type Pending struct {
	m        Mutation
	deadline time.Time // Enqueue's time plus CommitTimeout
	err      error
	done     chan struct{}
}

// Wait blocks until the mutation's outcome is known and returns it: nil once
// committed; ErrNotOwner, ErrConflict or ErrUnavailable when it was not
// committed (also when Close ran out of time before it was tried);
// ErrOutcomeUnknown when it may or may not be committed — the connection
// failed or timed out while its COMMIT was in flight, or the database
// answered with an error the sqlstates table does not list.
//
// Wait returns within the store's CommitTimeout of Enqueue, plus the
// writer's own processing (well under a second), whatever the database
// does: every transaction of the writer runs under the deadline of the
// oldest mutation in it. So Wait takes no context: the caller must learn the
// outcome to keep its memory equal to the database.
func (p *Pending) Wait() error {
	<-p.done
	return p.err
}

func (p *Pending) finish(err error) {
	p.err = err
	close(p.done)
}

// writer is the group committer: one goroutine takes every mutation queued
// so far (up to MaxBatch) and commits them in one transaction, so a busy
// node pays one round trip and one fsync for many mutations. Mutations are
// committed in queue order across batches; within a batch, statements are
// grouped by kind, which is safe because the engine never queues a mutation
// that depends on another one still in flight (a hold's seats stay taken in
// memory until its release or expiry commits). Waitlist rows are the
// exception: mutations in flight together may change the same row, so a
// transaction writes each row's last change in queue order (waitlistRows).
type writer struct {
	s     *Store
	queue chan *Pending
	// ctx is the parent of every transaction; cancel ends the one in flight
	// when Close runs out of time.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.RWMutex // guards closed against sends on a closed queue
	closed bool

	done chan struct{} // closed when the committer goroutine exits
}

func newWriter(s *Store) *writer {
	w := &writer{
		s:     s,
		queue: make(chan *Pending, s.cfg.QueueSize),
		done:  make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// Enqueue queues a mutation without blocking. It fails at once with
// ErrOverloaded when the queue is full and ErrClosed after Close. Calling it
// while holding a show's lock keeps the show's mutations in order.
func (s *Store) Enqueue(m Mutation) (*Pending, error) {
	w := s.writer
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return nil, ErrClosed
	}
	p := &Pending{m: m, deadline: time.Now().Add(s.cfg.CommitTimeout), done: make(chan struct{})}
	select {
	case w.queue <- p:
		return p, nil
	default:
		return nil, ErrOverloaded
	}
}

// Write queues a mutation and waits for its outcome.
func (s *Store) Write(m Mutation) error {
	p, err := s.Enqueue(m)
	if err != nil {
		return err
	}
	return p.Wait()
}

// QueueLen returns the number of queued mutations.
func (s *Store) QueueLen() int { return len(s.writer.queue) }

// close stops taking mutations and waits, within ctx, for the queued ones to
// be committed. When ctx ends first, the transaction in flight is cancelled
// and what is still queued fails at once, so close returns promptly either
// way, with every mutation answered.
func (w *writer) close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.cancel()
		<-w.done
		return fmt.Errorf("writer drain: %w", ctx.Err())
	}
}

func (w *writer) run() {
	defer close(w.done)
	batch := make([]*Pending, 0, w.s.cfg.MaxBatch)
	for {
		p, ok := <-w.queue
		if !ok {
			return
		}
		batch = append(batch[:0], p)
	fill:
		for len(batch) < cap(batch) {
			select {
			case p, ok := <-w.queue:
				if !ok {
					break fill
				}
				batch = append(batch, p)
			default:
				break fill
			}
		}
		w.commit(batch)
	}
}

// commit commits a batch and answers each of its mutations, all within the
// deadline of its oldest mutation. If the database refuses the batch (a
// mutation contradicts the data), it is split in halves, each committed in
// a transaction of its own and split again while refused, so only the
// culprits fail and k culprits among n mutations cost O(k log n)
// transactions. The splitting stops at the first failure that is not a
// refusal, and the mutations not yet tried are answered ErrUnavailable at
// once. A batch of one gets the same answers as a batch of many would for
// the same error.
func (w *writer) commit(batch []*Pending) {
	start := time.Now()
	ctx, cancel := context.WithDeadline(w.ctx, batch[0].deadline)
	defer cancel()
	errs := make([]error, len(batch))
	batchErr := w.commitTx(ctx, batch, errs)
	txs := 1
	switch {
	case batchErr == nil:
	case errors.Is(batchErr, ErrConflict) && len(batch) > 1:
		w.s.cfg.Logger.Warn("batch refused; committing it in parts", "mutations", len(batch), "err", batchErr)
		var stop error
		txs += w.split(ctx, batch, errs, &stop)
	default:
		fill(errs, batchErr)
	}
	if obs := w.s.cfg.Observer; obs != nil {
		failed, fenced := 0, 0
		for _, e := range errs {
			if e != nil {
				failed++
			}
			if errors.Is(e, ErrNotOwner) {
				fenced++
			}
		}
		obs(BatchStats{Mutations: len(batch), Duration: time.Since(start), Err: batchErr, Failed: failed, Fenced: fenced, Transactions: txs})
	}
	for i, p := range batch {
		p.finish(errs[i])
	}
}

// split commits the two halves of a refused part of a batch, each in its
// own transaction, and splits a refused half again, down to single
// mutations, whose refusal is their answer. errs holds the part's answers
// (ErrNotOwner already set for fenced mutations). At the first failure that
// is not a refusal, *stop is set: that half gets its own error, and every
// mutation not tried after it gets *stop. It returns the number of
// transactions it tried.
func (w *writer) split(ctx context.Context, part []*Pending, errs []error, stop *error) (txs int) {
	mid := len(part) / 2
	for _, h := range [2][2]int{{0, mid}, {mid, len(part)}} {
		half, herrs := part[h[0]:h[1]], errs[h[0]:h[1]]
		if *stop != nil {
			fill(herrs, *stop)
			continue
		}
		err := w.commitTx(ctx, half, herrs)
		txs++
		switch {
		case err == nil:
		case errors.Is(err, ErrConflict) && len(half) > 1:
			txs += w.split(ctx, half, herrs, stop)
		case errors.Is(err, ErrConflict):
			fill(herrs, err)
		default:
			fill(herrs, err)
			*stop = fmt.Errorf("%w: not tried after an earlier failure: %v", ErrUnavailable, err)
		}
	}
	return txs
}

// fill sets every answer of errs not set yet to err.
func fill(errs []error, err error) {
	for i := range errs {
		if errs[i] == nil {
			errs[i] = err
		}
	}
}

// errRowCount reports a statement that did not touch the rows expected.
var errRowCount = errors.New("unexpected row count")

// commitTx commits the mutations of batch that hold their show's current
// epoch, in one transaction. Mutations of shows whose epoch moved get
// ErrNotOwner in errs and are left out. A non-nil result wraps
// ErrUnavailable or ErrConflict when nothing was committed, or
// ErrOutcomeUnknown when COMMIT was in flight as the connection failed, or
// for an error the sqlstates table does not list (which is logged).
func (w *writer) commitTx(ctx context.Context, batch []*Pending, errs []error) error {
	atCommit, err := w.tryTx(ctx, batch, errs)
	if err == nil {
		return nil
	}
	f := failureOf(err)
	if atCommit {
		f = commitFailureOf(err)
	}
	var pgErr *pgconn.PgError
	switch {
	case f == unlisted && errors.As(err, &pgErr):
		w.s.cfg.Logger.Error("writer: database error not in the sqlstates table; outcome treated as unknown",
			"mutations", len(batch), "at_commit", atCommit, "code", pgErr.Code, "err", err)
	case f == unlisted:
		w.s.cfg.Logger.Warn("writer: connection failed while COMMIT was in flight; outcome unknown",
			"mutations", len(batch), "err", err)
	}
	return writeError(f, err)
}

// tryTx runs commitTx's transaction; atCommit reports that err came from
// COMMIT itself.
func (w *writer) tryTx(ctx context.Context, batch []*Pending, errs []error) (atCommit bool, err error) {
	tx, err := w.s.wpool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	// Fencing: lock the batch's ownership rows (FOR SHARE, in show order, as
	// lease renewals and releases lock them, so that neither can deadlock
	// with a batch) so a takeover,
	// which updates them, waits for this transaction; then leave out the
	// mutations whose epoch is no longer the show's.
	shows := make([]string, 0, 8)
	seen := make(map[string]bool, 8)
	for _, p := range batch {
		if !seen[p.m.ShowID] {
			seen[p.m.ShowID] = true
			shows = append(shows, p.m.ShowID)
		}
	}
	epochs := make(map[string]int64, len(shows))
	rows, _ := tx.Query(ctx, `SELECT show_id, epoch FROM show_owners WHERE show_id = ANY($1) ORDER BY show_id FOR SHARE`, shows)
	var id string
	var epoch int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &epoch}, func() error {
		epochs[id] = epoch
		return nil
	}); err != nil {
		return false, err
	}
	st := statements{retention: w.s.cfg.IdempotencyRetention, renewKeys: len(batch) == 1}
	for i, p := range batch {
		if e, ok := epochs[p.m.ShowID]; !ok || e != p.m.Epoch {
			errs[i] = fmt.Errorf("%w: show %s is at epoch %d, write carried %d", ErrNotOwner, p.m.ShowID, e, p.m.Epoch)
			continue
		}
		st.add(&p.m, w.s.cfg.NodeID)
	}
	if st.n == 0 {
		return false, nil // nothing to write; the deferred rollback ends it
	}
	if err := st.exec(ctx, tx); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err // COMMIT is not sent: nothing is committed
	}
	return true, tx.Commit(ctx)
}

// statements gathers a batch's mutations into column arrays, so a batch of
// any size costs a handful of statements.
type statements struct {
	n int
	// new holds
	hShow, hID, hUser, hSeats []string
	hAt, hExp                 []time.Time
	// seat claims of new holds
	claims seatRows
	// confirms
	bShow, bID, bRef []string
	bAt              []time.Time
	// releases and expiries
	eShow, eID, eStatus []string
	eAt                 []time.Time
	// seat claims they free
	freed seatRows
	// users of new holds, whose seats are checked against the limit
	holders userRows
	// audit events
	vShow, vID, vUser, vKind, vSeats, vRef []string
	vEpoch                                 []int64
	vAt                                    []time.Time
	// idempotency records
	iShow, iKey, iFP, iID []string
	// waitlist changes; their events are among the audit events
	wait waitlistRows
	node string
	// retention is Config.IdempotencyRetention: an older record's key may
	// be reused.
	retention time.Duration
	// renewKeys makes the idempotency insert renew an expired record of the
	// same key. Only a transaction of one mutation does: a plain insert is
	// cheaper, and a larger one that meets an existing key is refused and
	// split down to single mutations.
	renewKeys bool
}

// userRows are (show, user) pairs as column arrays.
type userRows struct{ show, user []string }

func (r *userRows) add(m *Mutation) {
	r.show = append(r.show, m.ShowID)
	r.user = append(r.user, m.UserID)
}

// seatRows are seat-claim rows as column arrays: one per seat of a
// mutation.
type seatRows struct{ show, seat, id []string }

func (r *seatRows) add(m *Mutation) {
	for _, s := range m.SeatIDs {
		r.show = append(r.show, m.ShowID)
		r.seat = append(r.seat, s)
		r.id = append(r.id, m.ReservationID)
	}
}

func (st *statements) add(m *Mutation, node string) {
	st.n++
	st.node = node
	if m.Kind != Waitlist {
		st.addReservation(m)
	}
	if m.Waitlist != nil {
		st.addWaitlist(m)
	}
}

// addReservation adds the reservation part of m, its event and its
// idempotency record.
func (st *statements) addReservation(m *Mutation) {
	seats := strings.Join(m.SeatIDs, ",")
	switch m.Kind {
	case Hold:
		st.hShow = append(st.hShow, m.ShowID)
		st.hID = append(st.hID, m.ReservationID)
		st.hUser = append(st.hUser, m.UserID)
		st.hSeats = append(st.hSeats, seats)
		st.hAt = append(st.hAt, m.At)
		st.hExp = append(st.hExp, m.ExpiresAt)
		st.claims.add(m)
		st.holders.add(m)
	case Confirm:
		st.bShow = append(st.bShow, m.ShowID)
		st.bID = append(st.bID, m.ReservationID)
		st.bRef = append(st.bRef, m.PaymentRef)
		st.bAt = append(st.bAt, m.At)
	case Release, Expire:
		st.eShow = append(st.eShow, m.ShowID)
		st.eID = append(st.eID, m.ReservationID)
		st.eStatus = append(st.eStatus, m.Kind.String())
		st.eAt = append(st.eAt, m.At)
		st.freed.add(m)
	}
	st.vShow = append(st.vShow, m.ShowID)
	st.vID = append(st.vID, m.ReservationID)
	st.vUser = append(st.vUser, m.UserID)
	st.vKind = append(st.vKind, m.Kind.String())
	st.vSeats = append(st.vSeats, seats)
	st.vRef = append(st.vRef, m.PaymentRef)
	st.vEpoch = append(st.vEpoch, m.Epoch)
	st.vAt = append(st.vAt, m.At)
	if m.IdempotencyKey != "" {
		st.iShow = append(st.iShow, m.ShowID)
		st.iKey = append(st.iKey, m.IdempotencyKey)
		st.iFP = append(st.iFP, m.Fingerprint)
		st.iID = append(st.iID, m.ReservationID)
	}
}

// exec sends the statements in one pipelined batch. Ends come before new
// claims so that, were a seat freed and claimed in one batch, the order
// would be right; updates must touch exactly one row per mutation.
func (st *statements) exec(ctx context.Context, tx pgx.Tx) error {
	b := &pgx.Batch{}
	var checks []rowCheck
	// The updates of reservations find each row by reservation_id alone, by
	// its unique index: "r.show_id || '' = u.show_id" still checks the show
	// but cannot drive an index. Matched on show_id too, a plan made while
	// the table's statistics are stale (a new or fast-growing table) scans
	// the partial index reservations_live by show_id — every live
	// reservation of the show, per row updated.
	if len(st.eID) > 0 {
		b.Queue(`UPDATE reservations r SET status = u.status, ended_at = u.at
			FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(show_id, id, status, at)
			WHERE r.reservation_id = u.id AND r.show_id || '' = u.show_id AND r.status = 'HELD'`,
			st.eShow, st.eID, st.eStatus, st.eAt)
		checks = append(checks, rowCheck{int64(len(st.eID)), "end holds"})
		b.Queue(`DELETE FROM seat_claims c USING unnest($1::text[], $2::text[], $3::text[]) AS u(show_id, seat_id, id)
			WHERE c.show_id = u.show_id AND c.seat_id = u.seat_id AND c.reservation_id = u.id`, st.freed.show, st.freed.seat, st.freed.id)
		// Not counted: a claim missing already (a repaired database) must not
		// stop the hold from ending, and one naming another reservation is
		// left alone by the filter.
		checks = append(checks, rowCheck{-1, "free seats"})
	}
	if len(st.hID) > 0 {
		b.Queue(`INSERT INTO reservations (show_id, reservation_id, user_id, status, seat_ids, created_at, expires_at)
			SELECT show_id, id, user_id, 'HELD', string_to_array(seats, ','), at, exp
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[])
				AS u(show_id, id, user_id, seats, at, exp)`,
			st.hShow, st.hID, st.hUser, st.hSeats, st.hAt, st.hExp)
		checks = append(checks, rowCheck{int64(len(st.hID)), "insert holds"})
		b.Queue(`INSERT INTO seat_claims (show_id, seat_id, reservation_id)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`, st.claims.show, st.claims.seat, st.claims.id)
		checks = append(checks, rowCheck{int64(len(st.claims.id)), "claim seats"})
		// The database's own check of the seat limit: no user of a new hold
		// may have more than MaxUserSeats seats of the show, held plus
		// booked, the batch's holds included. It reads all of the user's
		// reservations (an index probe by user; the show and status are
		// filtered after) and writes nothing. It sees what is committed and
		// this transaction's own rows, not a transaction the writer gave up
		// on that may still commit; the engine keeps such a write's seats
		// counted in memory until it reloads the show, which waits for it.
		b.Queue(`SELECT u.show_id, u.user_id
			FROM (SELECT DISTINCT show_id, user_id FROM unnest($1::text[], $2::text[]) AS u(show_id, user_id)) u
			CROSS JOIN LATERAL (SELECT sum(cardinality(r.seat_ids)) FILTER (WHERE r.show_id = u.show_id AND r.status IN ('HELD', 'BOOKED')) AS seats
				FROM reservations r WHERE r.user_id = u.user_id) s
			WHERE s.seats > $3`, st.holders.show, st.holders.user, MaxUserSeats)
		checks = append(checks, rowCheck{0, "users over the seat limit"})
	}
	if len(st.bID) > 0 {
		// A hold past its expiry plus grace is not booked, whatever the
		// writer's caller believed: the row count check then fails.
		b.Queue(`UPDATE reservations r SET status = 'BOOKED', booked_at = u.at, payment_ref = u.ref
			FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(show_id, id, ref, at)
			WHERE r.reservation_id = u.id AND r.show_id || '' = u.show_id AND r.status = 'HELD'
			  AND u.at <= r.expires_at + $5::interval`,
			st.bShow, st.bID, st.bRef, st.bAt, ConfirmGrace)
		checks = append(checks, rowCheck{int64(len(st.bID)), "book holds"})
	}
	if len(st.vID) > 0 {
		b.Queue(`INSERT INTO reservation_events (show_id, reservation_id, user_id, kind, seat_ids, payment_ref, node_id, epoch, at)
			SELECT show_id, id, user_id, kind, string_to_array(seats, ','), nullif(ref, ''), $9, epoch, at
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::timestamptz[])
				AS u(show_id, id, user_id, kind, seats, ref, epoch, at)`,
			st.vShow, st.vID, st.vUser, st.vKind, st.vSeats, st.vRef, st.vEpoch, st.vAt, st.node)
		checks = append(checks, rowCheck{int64(len(st.vID)), "audit"})
	}
	checks = st.wait.queue(b, checks)
	if len(st.iKey) > 0 {
		if st.renewKeys {
			// A key older than the retention (not loaded, maybe not pruned
			// yet) is renewed; a younger one conflicts and, being left out
			// of the count, fails the transaction.
			b.Queue(`INSERT INTO idempotency_keys AS k (show_id, idempotency_key, fingerprint, reservation_id)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
				ON CONFLICT (show_id, idempotency_key) DO UPDATE
				SET fingerprint = EXCLUDED.fingerprint, reservation_id = EXCLUDED.reservation_id, created_at = now()
				WHERE k.created_at <= now() - $5::interval`, st.iShow, st.iKey, st.iFP, st.iID, st.retention)
		} else {
			// Any existing key, expired or not, or a key twice in the batch,
			// is a unique violation: the batch is split (see commit).
			b.Queue(`INSERT INTO idempotency_keys (show_id, idempotency_key, fingerprint, reservation_id)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])`, st.iShow, st.iKey, st.iFP, st.iID)
		}
		checks = append(checks, rowCheck{int64(len(st.iKey)), "idempotency"})
	}
	br := tx.SendBatch(ctx, b)
	for _, c := range checks {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return err
		}
		if c.want >= 0 && tag.RowsAffected() != c.want {
			br.Close()
			return &rowCountError{what: c.what, want: c.want, got: tag.RowsAffected()}
		}
	}
	return br.Close()
}

// rowCheck is the number of rows a statement of a batch must touch (-1:
// any), and what it does, for the error.
type rowCheck struct {
	want int64
	what string
}

// rowCountError is a statement of a batch that touched fewer rows than it
// had mutations: some reservation was not in the state the writer expected.
// It is a refusal, like a constraint violation (the batch is split).
type rowCountError struct {
	what      string
	want, got int64
}

func (e *rowCountError) Error() string {
	return fmt.Sprintf("%s: %d rows, want %d", e.what, e.got, e.want)
}

func (e *rowCountError) Unwrap() error { return errRowCount }
