package persistence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Kind is what a Mutation does: to a reservation, or (Waitlist, Room) to a
// show's waitlist or waiting room only.
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
	// Room is the Kind of a mutation that changes only a show's waiting
	// room, as Waitlist is for the waitlist: it must carry Room.
	Room
)

var kindEvents = [...]string{Hold: "HELD", Confirm: "BOOKED", Release: "RELEASED", Expire: "EXPIRED", Waitlist: "WAITLIST", Room: "ROOM"}

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
// change of the show's waitlist or waiting room; or, of Kind Waitlist or
// Room, a change of the waitlist or the room alone. Its slices, Waitlist
// and Room must not be modified after
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
	// Room is optional for every other Kind, applied in the same
	// transaction; required for Kind Room.
	Room *RoomChange
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
// committed (also when Close ran out of time before it was tried, its
// CommitTimeout passed while it was queued, or a change of its show's
// waitlist queued before it failed); ErrOutcomeUnknown when it may
// or may not be committed — the connection failed or timed out while its
// COMMIT was in flight, or the database answered with an error the
// sqlstates table does not list.
//
// Wait returns within the store's CommitTimeout of Enqueue, plus the
// writer's own processing (well under a second), whatever the database
// does: every transaction of the writer runs under the earliest deadline
// of the mutations in it and of those still queued when it begins, so none
// outlasts the deadline of a mutation waiting behind it, and mutations
// whose deadline has passed are taken first and fail at once, untried. So
// Wait takes no context: the caller must learn the outcome to keep its
// memory equal to the database.
func (p *Pending) Wait() error {
	<-p.done
	return p.err
}

func (p *Pending) finish(err error) {
	p.err = err
	close(p.done)
}

// writer is the group committer: it takes many queued mutations (up to
// MaxBatch) and commits them in one transaction, so a busy node pays two
// round trips and one fsync for many mutations.
//
// Order. Each show's mutations are committed in the order they were
// queued: a show has at most one transaction in flight, and each of its
// transactions takes the oldest of its queued mutations. A show's waiting
// room (Kind Room) is a show of its own here (queueKey): its changes keep
// their order among themselves, not with the show's other mutations. Across shows there
// is no order: no transaction needs two shows, and the engine orders only
// a show's own mutations. Within a transaction, statements are grouped by
// kind, which is safe because the engine never queues a mutation that
// depends on another one still in flight (a hold's seats stay taken in
// memory until its release or expiry commits). Waitlist rows are the
// exception: mutations in flight together may change the same row, so a
// transaction writes each row's last change in queue order (waitlistRows);
// a row belongs to one show, whose order the transaction keeps. And when a
// mutation that changes a waitlist fails, the mutations of its show queued
// behind it fail untried (failBehind): they may depend on it.
//
// Turns. Mutations wait in a FIFO per show, and the shows with mutations
// waiting and none in flight take turns, round robin: a show's turn is its
// oldest queued mutations, at most MaxBatch. A turn of at least half of
// MaxBatch is big and commits in a transaction of its own; small turns
// commit together, as many whole ones as fit in a batch. So a show with a
// deep queue (a flash sale) gets a batch per turn, and another show's
// mutation waits for the turns of the shows ahead of it, not for
// everything queued before it.
//
// Lanes. A big transaction takes tens of milliseconds, and a mutation
// committed after it would wait for all of it. So the writer has two lanes,
// each with a connection of its own. One transaction runs at a time, as in
// a plain group committer, except beside a big one: then the other lane
// commits the next turns meanwhile. Beside a small transaction only a big
// turn may start, so small turns still commit together, one transaction
// at a time. A show that fills its batches thus takes one lane, and the
// other shows commit beside it; two such shows take both lanes, and the
// others wait for one of their batches, not for their queues.
type writer struct {
	s *Store
	// ctx is the parent of every transaction; cancel ends those in flight
	// when Close runs out of time.
	ctx    context.Context
	cancel context.CancelFunc
	// big is the size of a big turn or transaction: half of MaxBatch.
	big int

	mu   sync.Mutex // guards the fields below, and the showQueues in them
	cond *sync.Cond // on mu: a turn became ready or big, a lane finished, or the writer closed
	// shows holds the shows with mutations queued or a transaction in
	// flight; ready those of them with mutations queued and none in
	// flight, in turn order.
	shows map[string]*showQueue
	ready []*showQueue
	// queued counts the mutations queued and not yet taken into a batch:
	// at most QueueSize. Beyond them, each lane has at most one batch in
	// flight.
	queued int
	// inFlight is the size of each lane's transaction in flight, 0 if none.
	inFlight [2]int
	closed   bool

	obsMu sync.Mutex // serialises calls of the Observer, which two lanes make

	done chan struct{} // closed when the lanes have exited
}

// queueKey names the FIFO a mutation waits in: its show's, or, for a
// change of the show's waiting room, the room's own. A room's writes
// depend on no reservation write in flight (an admission or a booking's
// end is queued after what it follows has committed), so the crowd
// joining an on-sale queues beside the show's holds, not ahead of them.
func queueKey(m Mutation) string {
	if m.Kind == Room {
		return m.ShowID + "\x00room"
	}
	return m.ShowID
}

// showQueue holds a show's (or its waiting room's) queued mutations,
// oldest first.
type showQueue struct {
	id      string // queueKey
	pending []*Pending
	busy    bool // a transaction with mutations of the show is in flight
}

// turn is the number of mutations the show's next turn takes.
func (w *writer) turn(q *showQueue) int { return min(len(q.pending), w.s.cfg.MaxBatch) }

func newWriter(s *Store) *writer {
	w := &writer{
		s:     s,
		big:   max(1, s.cfg.MaxBatch/2),
		shows: make(map[string]*showQueue),
		done:  make(chan struct{}),
	}
	w.cond = sync.NewCond(&w.mu)
	w.ctx, w.cancel = context.WithCancel(context.Background())
	// The first lane commits on the store's wpool, the second on a pool of
	// its own made like it (a copy of its config: pgxpool connects lazily,
	// so this fails only for a config that could not have made wpool).
	// Without it, the writer runs the first lane alone.
	side, err := pgxpool.NewWithConfig(context.Background(), s.wpool.Config())
	if err != nil {
		s.cfg.Logger.Error("writer: no second connection; committing on one", "err", err)
		side = nil
	}
	var lanes sync.WaitGroup
	lanes.Go(func() { w.run(0, s.wpool) })
	if side != nil {
		lanes.Go(func() { w.run(1, side) })
	}
	go func() {
		lanes.Wait()
		if side != nil {
			side.Close()
		}
		close(w.done)
	}()
	return w
}

// Enqueue queues a mutation without blocking. It fails at once with
// ErrOverloaded when QueueSize mutations are queued and ErrClosed after
// Close. Calling it while holding a show's lock keeps the show's mutations
// in order.
func (s *Store) Enqueue(m Mutation) (*Pending, error) {
	w := s.writer
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	if w.queued >= s.cfg.QueueSize {
		return nil, ErrOverloaded
	}
	p := &Pending{m: m, deadline: time.Now().Add(s.cfg.CommitTimeout), done: make(chan struct{})}
	key := queueKey(m)
	q := w.shows[key]
	if q == nil {
		q = &showQueue{id: key}
		w.shows[key] = q
	}
	q.pending = append(q.pending, p)
	w.queued++
	if !q.busy {
		switch len(q.pending) {
		case 1: // the show's turn is ready
			w.ready = append(w.ready, q)
			w.cond.Signal()
		case w.big: // its turn is big now: it may start beside a small transaction
			w.cond.Signal()
		}
	}
	return p, nil
}

// Write queues a mutation and waits for its outcome.
func (s *Store) Write(m Mutation) error {
	p, err := s.Enqueue(m)
	if err != nil {
		return err
	}
	return p.Wait()
}

// QueueLen returns the number of queued mutations, not counting those in
// transactions in flight.
func (s *Store) QueueLen() int {
	w := s.writer
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queued
}

// close stops taking mutations and waits, within ctx, for the queued ones to
// be committed. When ctx ends first, the transactions in flight are
// cancelled and what is still queued fails at once, so close returns
// promptly either way, with every mutation answered.
func (w *writer) close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
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

// run is lane i: it commits batches on db until the writer is closed and
// nothing is queued.
func (w *writer) run(i int, db *pgxpool.Pool) {
	buf := make([]*Pending, 0, w.s.cfg.MaxBatch)
	var shows []*showQueue
	for {
		batch, taken, deadline, ok := w.take(i, buf[:0], shows[:0])
		if !ok {
			return
		}
		w.commit(db, batch, deadline)
		w.mu.Lock()
		w.inFlight[i] = 0
		for _, q := range taken {
			q.busy = false
			switch {
			case len(q.pending) > 0:
				w.ready = append(w.ready, q)
			case w.shows[q.id] == q:
				delete(w.shows, q.id)
			}
		}
		w.cond.Broadcast()
		w.mu.Unlock()
		clear(batch) // no answered mutation stays referenced
		buf, shows = batch, taken
		clear(shows)
	}
}

// take waits for lane i's next batch and returns it, the shows it takes
// turns of (now busy), and the deadline of its transaction; ok is false
// once the writer is closed and nothing is queued.
func (w *writer) take(i int, batch []*Pending, taken []*showQueue) (_ []*Pending, _ []*showQueue, deadline time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if w.closed && w.queued == 0 {
			return nil, nil, time.Time{}, false
		}
		batch, taken = w.pickLocked(w.inFlight[1-i], batch, taken)
		if len(batch) > 0 {
			break
		}
		w.cond.Wait()
	}
	w.inFlight[i] = len(batch)
	w.ready = slices.DeleteFunc(w.ready, func(q *showQueue) bool { return q.busy })
	// The transaction's deadline: its oldest mutation's, or that of a
	// mutation left waiting, if sooner (one whose deadline passed already
	// goes first in a later batch, and does not cut this one short).
	deadline = batch[0].deadline
	for _, p := range batch {
		if p.deadline.Before(deadline) {
			deadline = p.deadline
		}
	}
	now := time.Now()
	for _, q := range w.shows {
		if len(q.pending) > 0 {
			if d := q.pending[0].deadline; d.Before(deadline) && d.After(now) {
				deadline = d
			}
		}
	}
	return batch, taken, deadline, true
}

// pickLocked picks a batch from the ready turns, given the size of the
// other lane's transaction in flight (0: none), and takes it: it appends
// the mutations to batch and their shows, marked busy, to taken. It picks
// nothing when only a small batch could start beside a small transaction.
//
//   - Mutations whose deadline has passed go first, alone: the oldest of
//     each ready show, in turn order. Their transaction fails at once.
//   - Beside a small transaction: the first big turn in turn order, alone.
//   - Otherwise the first turn in turn order: alone if it is big, or with
//     the whole small turns of the shows after it that fit in the batch.
func (w *writer) pickLocked(other int, batch []*Pending, taken []*showQueue) ([]*Pending, []*showQueue) {
	limit := w.s.cfg.MaxBatch
	takeTurn := func(q *showQueue, n int) {
		batch = append(batch, q.pending[:n]...)
		clear(q.pending[:n])
		q.pending = q.pending[n:]
		if len(q.pending) == 0 {
			q.pending = nil
		}
		w.queued -= n
		q.busy = true
		taken = append(taken, q)
	}
	now := time.Now()
	for _, q := range w.ready {
		n := 0
		for n < len(q.pending) && len(batch)+n < limit && !q.pending[n].deadline.After(now) {
			n++
		}
		if n > 0 {
			takeTurn(q, n)
		}
	}
	if len(batch) > 0 {
		return batch, taken
	}
	if other > 0 && other < w.big {
		for _, q := range w.ready {
			if n := w.turn(q); n >= w.big {
				takeTurn(q, n)
				break
			}
		}
		return batch, taken
	}
	if len(w.ready) == 0 {
		return batch, taken
	}
	if n := w.turn(w.ready[0]); n >= w.big {
		takeTurn(w.ready[0], n)
		return batch, taken
	}
	for _, q := range w.ready {
		if n := w.turn(q); n < w.big && len(batch)+n <= limit {
			takeTurn(q, n)
		}
	}
	return batch, taken
}

// commit commits a batch on db and answers each of its mutations, all
// within deadline (no later than that of its oldest mutation). If the
// database refuses the batch (a mutation contradicts the data), it is split
// in halves, each committed in a transaction of its own and split again
// while refused, so only the culprits fail and k culprits among n mutations
// cost O(k log n) transactions; but a refused change of a show's waitlist
// fails the show's mutations after it in the batch, untried
// (failAfterWaitlist), and the show's queued ones (failBehind). The
// splitting stops at the first failure that is not a refusal, and the
// mutations not yet tried are answered ErrUnavailable at once. A batch of
// one gets the same answers as a batch of many would for the same error.
func (w *writer) commit(db *pgxpool.Pool, batch []*Pending, deadline time.Time) {
	start := time.Now()
	ctx, cancel := context.WithDeadline(w.ctx, deadline)
	defer cancel()
	errs := make([]error, len(batch))
	batchErr := w.commitTx(ctx, db, batch, errs)
	txs := 1
	switch {
	case batchErr == nil:
	case errors.Is(batchErr, ErrConflict) && len(batch) > 1:
		w.s.cfg.Logger.Warn("batch refused; committing it in parts", "mutations", len(batch), "err", batchErr)
		var stop error
		txs += w.split(ctx, db, batch, errs, &stop)
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
		w.obsMu.Lock()
		obs(BatchStats{Mutations: len(batch), Duration: time.Since(start), Err: batchErr, Failed: failed, Fenced: fenced, Transactions: txs})
		w.obsMu.Unlock()
	}
	w.failBehind(batch, errs)
	for i, p := range batch {
		p.finish(errs[i])
	}
}

// failBehind answers ErrUnavailable, untried, every mutation queued behind
// a mutation of batch that changed its show's waitlist and failed (errs),
// in that show's queue. The engine decided them on memory in which that
// change was made, and waitlist rows are written whole, last change winning
// (see waitlistRows), so one committed after the failure would write a
// waitlist the engine never had (a user's turn passed on by a leave whose
// expiry, which gave the turn, was not committed). It runs before the
// batch is answered: nothing queued by then was decided on the failure.
func (w *writer) failBehind(batch []*Pending, errs []error) {
	var failed []string
	for i, p := range batch {
		if errs[i] != nil && p.m.Waitlist != nil && !slices.Contains(failed, queueKey(p.m)) {
			failed = append(failed, queueKey(p.m))
		}
	}
	if len(failed) == 0 {
		return
	}
	var behind []*Pending
	w.mu.Lock()
	for _, key := range failed {
		if q := w.shows[key]; q != nil {
			behind = append(behind, q.pending...)
			w.queued -= len(q.pending)
			q.pending = nil
		}
	}
	w.mu.Unlock()
	err := fmt.Errorf("%w: not tried: a change of the show's waitlist queued before it failed", ErrUnavailable)
	for _, p := range behind {
		p.finish(err)
	}
}

// split commits the two halves of a refused part of a batch, each in its
// own transaction, and splits a refused half again, down to single
// mutations, whose refusal is their answer. errs holds the part's answers
// (ErrNotOwner already set for fenced mutations). At the first failure that
// is not a refusal, *stop is set: that half gets its own error, and every
// mutation not tried after it gets *stop. It returns the number of
// transactions it tried.
func (w *writer) split(ctx context.Context, db *pgxpool.Pool, part []*Pending, errs []error, stop *error) (txs int) {
	mid := len(part) / 2
	for _, h := range [2][2]int{{0, mid}, {mid, len(part)}} {
		half, herrs := part[h[0]:h[1]], errs[h[0]:h[1]]
		if *stop != nil {
			fill(herrs, *stop)
			continue
		}
		err := w.commitTx(ctx, db, half, herrs)
		txs++
		switch {
		case err == nil:
		case errors.Is(err, ErrConflict) && len(half) > 1:
			txs += w.split(ctx, db, half, herrs, stop)
		case errors.Is(err, ErrConflict):
			fill(herrs, err)
		default:
			fill(herrs, err)
			*stop = fmt.Errorf("%w: not tried after an earlier failure: %v", ErrUnavailable, err)
		}
		failAfterWaitlist(half, herrs, part[h[1]:], errs[h[1]:])
	}
	return txs
}

// failAfterWaitlist answers ErrUnavailable, so that they are not tried,
// the mutations of later (errs, the answers of later, unset if not
// answered yet) that come after a mutation of done (with answers derrs)
// that changed the same show's waitlist and failed. As failBehind does for
// the queue, for the same reason: they may depend on it.
func failAfterWaitlist(done []*Pending, derrs []error, later []*Pending, errs []error) {
	for i, p := range done {
		if derrs[i] == nil || p.m.Waitlist == nil {
			continue
		}
		key := queueKey(p.m)
		for j, l := range later {
			if errs[j] == nil && queueKey(l.m) == key {
				errs[j] = fmt.Errorf("%w: not tried: a change of the show's waitlist before it was refused", ErrUnavailable)
			}
		}
	}
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
func (w *writer) commitTx(ctx context.Context, db *pgxpool.Pool, batch []*Pending, errs []error) error {
	atCommit, err := w.tryTx(ctx, db, batch, errs)
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

// fenceSQL locks the ownership rows of a transaction's shows (FOR KEY
// SHARE, in show order), so that a takeover, which locks them FOR UPDATE,
// waits for the transaction, and reads their epochs. Lease renewals and
// releases, which lock them FOR NO KEY UPDATE, neither wait for it nor
// make it wait (see ownership.go).
const fenceSQL = `SELECT show_id, epoch FROM show_owners WHERE show_id = ANY($1) ORDER BY show_id FOR KEY SHARE`

// fenceOneSQL is fenceSQL for a transaction of one show, the most common:
// an equality on the primary key, whose plan PostgreSQL keeps as a
// prepared statement (pgx's default), where fenceSQL's array makes it plan
// the query again on every execution (~47 µs of the server's time, a tenth
// of a transaction of 6 holds).
const fenceOneSQL = `SELECT show_id, epoch FROM show_owners WHERE show_id = $1 FOR KEY SHARE`

// queueFence queues the fencing query of shows in b.
func queueFence(b *pgx.Batch, shows []string) {
	if len(shows) == 1 {
		b.Queue(fenceOneSQL, shows[0])
		return
	}
	b.Queue(fenceSQL, shows)
}

// guardSQL and guardOneSQL fail with division_by_zero unless every (show,
// epoch) pair given is a show's current epoch. Run after the fence, in the
// same transaction, they read the rows it locked; their error makes
// PostgreSQL skip the rest of the pipelined batch, so a moved show's
// statements are never run.
const (
	guardSQL = `SELECT 1 / ((SELECT count(*) FROM show_owners o
		JOIN unnest($1::text[], $2::bigint[]) AS u(show_id, epoch) ON o.show_id = u.show_id AND o.epoch = u.epoch) = $3)::int`
	guardOneSQL = `SELECT 1 / (SELECT count(*) FROM show_owners WHERE show_id = $1 AND epoch = $2)::int`
)

// queueGuard queues the guard of batch's (show, epoch) pairs in b.
func queueGuard(b *pgx.Batch, batch []*Pending) {
	type pair struct {
		show  string
		epoch int64
	}
	pairs := make([]pair, 0, 4)
	for _, p := range batch {
		if pr := (pair{p.m.ShowID, p.m.Epoch}); !slices.Contains(pairs, pr) {
			pairs = append(pairs, pr)
		}
	}
	if len(pairs) == 1 {
		b.Queue(guardOneSQL, pairs[0].show, pairs[0].epoch)
		return
	}
	shows, epochs := make([]string, len(pairs)), make([]int64, len(pairs))
	for i, pr := range pairs {
		shows[i], epochs[i] = pr.show, pr.epoch
	}
	b.Queue(guardSQL, shows, epochs, len(pairs))
}

// tryTx runs commitTx's transaction; atCommit reports that err came from
// COMMIT itself.
//
// It takes two round trips once the connection has prepared its
// statements: BEGIN, the fencing query, a guard and the statements of
// every mutation go in one pipelined batch, and COMMIT follows once the
// fencing query showed that every mutation holds its show's epoch. If one
// does not (its show moved to another node: rare), the guard fails the
// transaction before any statement of the batch runs, and it is rolled
// back and run again by tryFencedTx, which leaves such mutations out.
func (w *writer) tryTx(ctx context.Context, db *pgxpool.Pool, batch []*Pending, errs []error) (atCommit bool, err error) {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return false, err
	}
	// A connection left inside the transaction (a failure below) is closed
	// by Release, which ends the transaction.
	defer conn.Release()

	// A part of a refused batch has its fenced-off mutations answered
	// already (ErrNotOwner): they are left out, not tried again.
	live := batch
	if slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		live = make([]*Pending, 0, len(batch))
		for i, p := range batch {
			if errs[i] == nil {
				live = append(live, p)
			}
		}
		if len(live) == 0 {
			return false, nil
		}
	}
	shows := batchShows(live)
	st := statements{retention: w.s.cfg.IdempotencyRetention, renewKeys: len(live) == 1}
	for _, p := range live {
		st.add(&p.m, w.s.cfg.NodeID)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	queueFence(b, shows)
	queueGuard(b, live)
	checks := st.queue(b)
	br := conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close() //nolint:errcheck // err is the answer; Release closes a broken connection
		return false, err
	}
	epochs, err := readEpochs(br)
	if err != nil {
		br.Close() //nolint:errcheck // as above
		return false, err
	}
	if _, err = br.Exec(); err == nil { // the guard
		err = checkResults(br, checks)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	for _, p := range live {
		if e, ok := epochs[p.m.ShowID]; !ok || e != p.m.Epoch {
			if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr != nil {
				return false, rerr
			}
			return w.tryFencedTx(ctx, conn, shows, batch, errs)
		}
	}
	if err != nil {
		// Ended here, the transaction keeps the connection for the next
		// one (a batch refused is split and tried again in parts).
		conn.Exec(ctx, "ROLLBACK") //nolint:errcheck // on failure Release closes the connection
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err // COMMIT is not sent: nothing is committed
	}
	tag, err := conn.Exec(ctx, "COMMIT")
	if err == nil && tag.String() == "ROLLBACK" {
		err = pgx.ErrTxCommitRollback
	}
	return true, err
}

// tryFencedTx is tryTx's transaction for a batch with mutations of shows
// whose epoch moved: it locks and reads the ownership rows first, then
// gives those mutations ErrNotOwner in errs and writes the others.
func (w *writer) tryFencedTx(ctx context.Context, conn *pgxpool.Conn, shows []string, batch []*Pending, errs []error) (atCommit bool, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	fence := &pgx.Batch{}
	queueFence(fence, shows)
	fr := tx.SendBatch(ctx, fence)
	epochs, err := readEpochs(fr)
	if cerr := fr.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	st := statements{retention: w.s.cfg.IdempotencyRetention, renewKeys: len(batch) == 1}
	for i, p := range batch {
		if errs[i] != nil {
			continue // fenced off in an earlier part of the batch, as tryTx leaves out
		}
		if e, ok := epochs[p.m.ShowID]; !ok || e != p.m.Epoch {
			errs[i] = fmt.Errorf("%w: show %s is at epoch %d, write carried %d", ErrNotOwner, p.m.ShowID, e, p.m.Epoch)
			continue
		}
		st.add(&p.m, w.s.cfg.NodeID)
	}
	if st.n == 0 {
		return false, nil // nothing to write; the deferred rollback ends it
	}
	b := &pgx.Batch{}
	checks := st.queue(b)
	br := tx.SendBatch(ctx, b)
	err = checkResults(br, checks)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err // COMMIT is not sent: nothing is committed
	}
	return true, tx.Commit(ctx)
}

// batchShows returns the shows of batch's mutations, each once.
func batchShows(batch []*Pending) []string {
	shows := make([]string, 0, 8)
	for _, p := range batch {
		if !slices.Contains(shows, p.m.ShowID) {
			shows = append(shows, p.m.ShowID)
		}
	}
	return shows
}

// readEpochs reads the fencing query's result from br.
func readEpochs(br pgx.BatchResults) (map[string]int64, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return collectEpochs(rows)
}

// collectEpochs reads the fencing query's rows: the epoch of each show.
func collectEpochs(rows pgx.Rows) (map[string]int64, error) {
	epochs := make(map[string]int64, 4)
	var id string
	var epoch int64
	_, err := pgx.ForEachRow(rows, []any{&id, &epoch}, func() error {
		epochs[id] = epoch
		return nil
	})
	return epochs, err
}

// statements gathers a batch's mutations into column arrays, so a batch of
// any size costs a handful of statements.
type statements struct {
	n int
	// new holds
	hShow, hID, hUser, hSeats []string
	hAt, hExp                 []time.Time
	hEpoch                    []int64
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
	room roomRows
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

// single reports whether the rows are one (show, user) pair, any number of
// times.
func (r *userRows) single() bool {
	for i := 1; i < len(r.user); i++ {
		if r.show[i] != r.show[0] || r.user[i] != r.user[0] {
			return false
		}
	}
	return len(r.user) > 0
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
	if m.Kind != Waitlist && m.Kind != Room {
		st.addReservation(m)
	}
	if m.Waitlist != nil {
		st.addWaitlist(m)
	}
	if m.Room != nil {
		st.addRoom(m)
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
		st.hEpoch = append(st.hEpoch, m.Epoch)
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
	// A hold's HELD event is its reservations row (see the insert).
	if m.Kind != Hold {
		st.vShow = append(st.vShow, m.ShowID)
		st.vID = append(st.vID, m.ReservationID)
		st.vUser = append(st.vUser, m.UserID)
		st.vKind = append(st.vKind, m.Kind.String())
		st.vSeats = append(st.vSeats, seats)
		st.vRef = append(st.vRef, m.PaymentRef)
		st.vEpoch = append(st.vEpoch, m.Epoch)
		st.vAt = append(st.vAt, m.At)
	}
	if m.IdempotencyKey != "" {
		st.iShow = append(st.iShow, m.ShowID)
		st.iKey = append(st.iKey, m.IdempotencyKey)
		st.iFP = append(st.iFP, m.Fingerprint)
		st.iID = append(st.iID, m.ReservationID)
	}
}

// queue adds the statements to b and returns what each must do, for
// checkResults. Ends come before new claims so that, were a seat freed and
// claimed in one batch, the order would be right; updates must touch
// exactly one row per mutation.
func (st *statements) queue(b *pgx.Batch) []rowCheck {
	var checks []rowCheck
	// The updates of reservations find each row by reservation_id alone, by
	// its unique index: "r.show_id || '' = u.show_id" still checks the show
	// but cannot drive an index. Matched on show_id too, a plan made while
	// the table's statistics are stale (a new or fast-growing table) scans
	// the partial index reservations_open by show_id — every live
	// reservation of the show, per row updated. (Their status = 'HELD'
	// implies no index's predicate: see migration 009.)
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
		// Each row is its hold's HELD event too (migration 008): its event
		// ID comes from the events' sequence, drawn before the statement
		// of the transaction's other events, so a transaction's HELD
		// events come first in the audit log.
		b.Queue(`INSERT INTO reservations (show_id, reservation_id, user_id, status, seat_ids, created_at, expires_at,
				held_event_id, held_node, held_epoch)
			SELECT show_id, id, user_id, 'HELD', string_to_array(seats, ','), at, exp,
				nextval('reservation_events_event_id_seq'), $8, epoch
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bigint[])
				AS u(show_id, id, user_id, seats, at, exp, epoch)`,
			st.hShow, st.hID, st.hUser, st.hSeats, st.hAt, st.hExp, st.hEpoch, st.node)
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
		// The holds of one user, the most common in a small transaction, are
		// checked by a query PostgreSQL plans once, like fenceOneSQL.
		if st.holders.single() {
			b.Queue(`SELECT $1::text, $2::text FROM reservations r WHERE r.user_id = $2
				HAVING sum(cardinality(r.seat_ids)) FILTER (WHERE r.show_id = $1 AND r.status IN ('HELD', 'BOOKED')) > $3`,
				st.holders.show[0], st.holders.user[0], MaxUserSeats)
		} else {
			b.Queue(`SELECT u.show_id, u.user_id
				FROM (SELECT DISTINCT show_id, user_id FROM unnest($1::text[], $2::text[]) AS u(show_id, user_id)) u
				CROSS JOIN LATERAL (SELECT sum(cardinality(r.seat_ids)) FILTER (WHERE r.show_id = u.show_id AND r.status IN ('HELD', 'BOOKED')) AS seats
					FROM reservations r WHERE r.user_id = u.user_id) s
				WHERE s.seats > $3`, st.holders.show, st.holders.user, MaxUserSeats)
		}
		checks = append(checks, rowCheck{0, "users over the seat limit"})
	}
	if len(st.bID) > 0 {
		// A hold past its expiry plus grace is not booked, whatever the
		// writer's caller believed: the row count check then fails. One
		// confirm, the most common alone, has a statement of its own, a
		// lookup by the unique reservation ID: 36 µs of the server's time
		// where the join with unnest took 290 µs for ~3 rows (planned at
		// every execution, or cached as a hash join over every live
		// reservation while the table's statistics are stale).
		if len(st.bID) == 1 {
			b.Queue(`UPDATE reservations SET status = 'BOOKED', booked_at = $4, payment_ref = $3
				WHERE reservation_id = $2 AND show_id || '' = $1 AND status = 'HELD'
				  AND $4::timestamptz <= expires_at + $5::interval`,
				st.bShow[0], st.bID[0], st.bRef[0], st.bAt[0], ConfirmGrace)
		} else {
			// reservation_id = ANY($2) bounds the scan by the IDs, whatever
			// plan is cached: without it, a generic plan made on stale
			// statistics hash-joined every live reservation.
			b.Queue(`UPDATE reservations r SET status = 'BOOKED', booked_at = u.at, payment_ref = u.ref
				FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(show_id, id, ref, at)
				WHERE r.reservation_id = ANY($2::text[]) AND r.reservation_id = u.id AND r.show_id || '' = u.show_id
				  AND r.status = 'HELD' AND u.at <= r.expires_at + $5::interval`,
				st.bShow, st.bID, st.bRef, st.bAt, ConfirmGrace)
		}
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
	checks = st.room.queue(b, checks)
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
	return checks
}

// checkResults reads the results of the statements that
// statements.queue added, in order, and returns the first error or
// rowCountError. The caller closes br.
func checkResults(br pgx.BatchResults, checks []rowCheck) error {
	for _, c := range checks {
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if c.want >= 0 && tag.RowsAffected() != c.want {
			return &rowCountError{what: c.what, want: c.want, got: tag.RowsAffected()}
		}
	}
	return nil
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
