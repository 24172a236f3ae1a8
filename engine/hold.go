package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// HoldRequest asks for seats of a show for a user, all or nothing.
type HoldRequest struct {
	Show           ar.ShowID
	User           ar.UserID
	Seats          []ar.SeatID
	IdempotencyKey string
	// AdmissionToken is the user's admission token, needed while the show
	// has a waiting room, except for a hold of seats all offered to the
	// user in a waitlist turn; it is not part of what the idempotency key
	// names.
	AdmissionToken string
}

// Hold holds seats. It is decided in memory under the show's lock — a loser
// of a seat race is refused there and never reaches the database — then
// made durable, and answered only after commit. If the write was not
// committed the hold is undone in memory; if its outcome is unknown the
// seats stay taken and the show is reloaded before its next change, and the
// caller gets ErrOutcomeUnknown (a retry with the same idempotency key then
// gets the true answer). A replay of an idempotency key answers the hold as
// it is now, ended or not.
//
// A user whose waitlist turn it is may hold seats offered to them (and
// available ones); a hold with any of the offer's seats takes the turn, in
// the same transaction, and the offer's other seats go on to the next
// waiting user. If such a write fails, memory keeps the hold and the show is
// reloaded before its next change. A hold of seats of the user's turn
// that are still being freed (the release or expiry that gave the turn is
// committing) waits for that commit.
//
// A hold asking for a seat that another hold took but has not committed yet
// waits for that commit before it is decided: a refusal for a taken seat is
// never based on a hold that may still fail, or be lost with a crashed
// owner, so holds, confirms and releases are linearizable as to seats. The
// per-user seat limit is not: it counts the user's holds whose commit is in
// flight, so a hold refused ErrUserLimit beside one of the user's own that
// then fails was refused on a hold that never happened (the user retries).
// (Seat-map reads are not linearizable either: they show holds whose commit
// is in flight.)
func (n *Node) Hold(ctx context.Context, req HoldRequest) (ar.Reservation, error) {
	if err := checkHold(req); err != nil {
		return ar.Reservation{}, err
	}
	sh, err := n.lockForChange(ctx, req.Show)
	if err != nil {
		return ar.Reservation{}, err
	}
	defer n.gate.leave()
	var fp string
	var st holdStep
	waited := false
	sh, err = n.untilDecided(ctx, sh, func(sh *show) <-chan struct{} {
		st = n.tryHoldLocked(sh, req, &fp)
		if st.wait != nil && !waited {
			waited = true
			n.metrics.holdWaits.Inc()
		}
		return st.wait
	})
	switch {
	case err != nil:
		return ar.Reservation{}, err
	case st.queued != nil:
		return n.finishHold(st.queued)
	case st.stored != "":
		return n.storedReservation(ctx, sh.id, st.stored)
	}
	return st.r, st.err
}

// untilDecided decides a change on sh, locked by lockForChange, with try,
// which runs with the show locked and returns a channel to wait for before
// it tries again (nil once it decided). A stale or dropped show is
// reloaded first, and try waits with the show unlocked. It returns the
// show try last ran on, unlocked, or the error that ended the wait or the
// reload (the show unlocked too).
func (n *Node) untilDecided(ctx context.Context, sh *show, try func(*show) <-chan struct{}) (*show, error) {
	for {
		if sh.dropped || sh.stale {
			var err error
			if sh, err = n.relockForChange(ctx, sh); err != nil {
				return nil, err
			}
			continue
		}
		wait := try(sh)
		if wait == nil {
			sh.mu.Unlock()
			return sh, nil
		}
		if err := waitUnlocked(ctx, &sh.mu, wait); err != nil {
			return nil, err
		}
	}
}

// checkHold checks what Hold checks before it looks at the show: the user,
// the idempotency key and the number of seats.
func checkHold(req HoldRequest) error {
	if err := validateUser(req.User); err != nil {
		return err
	}
	if err := validateKey(req.IdempotencyKey); err != nil {
		return err
	}
	if len(req.Seats) == 0 || len(req.Seats) > ar.MaxSeatsPerHold {
		return ar.ErrSeatCount
	}
	return nil
}

// holdStep is what tryHoldLocked decided for a hold: to wait for a channel
// and try again; to answer a replay of a hold no longer in memory from the
// store (stored); to wait for the hold's queued write (queued); or, when
// none of these is set, the answer (r, err).
type holdStep struct {
	wait   <-chan struct{}
	stored ar.HoldID
	queued *queuedHold
	r      ar.Reservation
	err    error
}

// queuedHold is a hold taken in memory whose write is queued.
type queuedHold struct {
	sh   *show
	r    ar.Reservation
	m    persistence.Mutation
	p    *persistence.Pending
	done chan struct{} // closed once the write's outcome is known
	key  string
}

// tryHoldLocked decides req (checked by checkHold) on sh, which is locked,
// neither stale nor dropped, and stays locked. *fp caches the request's
// fingerprint, computed only when the request has an idempotency key that
// is recorded or is to be: most holds are refused, and a refusal needs none.
func (n *Node) tryHoldLocked(sh *show, req HoldRequest, fp *string) holdStep {
	if ch := sh.pendingLocked(req.Seats); ch != nil {
		return holdStep{wait: ch}
	}
	if ch := sh.turnCommittingLocked(req.User, req.Seats); ch != nil {
		return holdStep{wait: ch}
	}
	fingerprint := func() string {
		if *fp == "" {
			*fp = fingerprint("hold", string(req.User), seatStrings(req.Seats)...)
		}
		return *fp
	}
	if req.IdempotencyKey != "" {
		if e, ok := sh.idem.Get(req.IdempotencyKey); ok {
			if e.fingerprint != fingerprint() {
				return holdStep{err: ErrIdempotencyMismatch}
			}
			if ch, busy := sh.busy[e.hold]; busy {
				return holdStep{wait: ch}
			}
			if r, live := sh.rules.Reservation(e.hold); live {
				return holdStep{r: r}
			}
			return holdStep{stored: e.hold}
		}
	}

	// A replay above needs no admission: its token may have run out since.
	// Nor does a hold of seats the waitlist offers the user in a turn: the
	// user was admitted to join it, and the turn may come after that
	// admission ran out.
	if !sh.offeredToLocked(req.User, req.Seats) {
		if err := n.admitted(sh, req.User, req.AdmissionToken); err != nil {
			n.metrics.holds(err)
			return holdStep{err: err}
		}
	}

	// Most holds of a sale are refused: decide first, and take the hold
	// (a hold ID from crypto/rand, the write queued) only when it will be
	// granted, in a function of its own, which keeps this one's stack frame
	// smaller (it runs first on the fresh goroutine of a pipeline call that
	// waited).
	if err := sh.rules.CheckHold("", req.User, req.Seats); err != nil {
		n.metrics.holds(err)
		if errors.Is(err, ar.ErrSeatTaken) && soldOutLocked(sh.rules, req.Seats) {
			return holdStep{err: fmt.Errorf("%w: %w", ErrSoldOut, err)}
		}
		return holdStep{err: err}
	}
	return n.takeHoldLocked(sh, req, fingerprint)
}

// takeHoldLocked takes req, which CheckHold allowed, on sh (locked, and
// left locked): the reservation in memory and its write queued.
func (n *Node) takeHoldLocked(sh *show, req HoldRequest, fingerprint func() string) holdStep {
	id, err := newHoldID(sh.id)
	if err != nil {
		return holdStep{err: err}
	}
	r, err := sh.rules.Hold(id, req.User, req.Seats, n.now())
	if err != nil {
		n.metrics.holds(err)
		return holdStep{err: err}
	}
	m := persistence.Mutation{
		Kind:          persistence.Hold,
		Epoch:         sh.epoch,
		ShowID:        string(sh.id),
		ReservationID: string(id),
		UserID:        string(req.User),
		SeatIDs:       seatStrings(r.Seats),
		At:            r.CreatedAt,
		ExpiresAt:     r.ExpiresAt,
	}
	var turns []wu.Turn // the turns the take gives others, with the rest of its seats
	if sh.wait.rules.Len() > 0 {
		if out, took := sh.wait.rules.Take(wu.UserID(req.User), m.SeatIDs, r.CreatedAt); took {
			m.Waitlist = n.waitChangeLocked(sh, out, r.CreatedAt, id)
			turns = out.Turns
		}
	}
	if req.IdempotencyKey != "" {
		m.IdempotencyKey, m.Fingerprint = req.IdempotencyKey, fingerprint()
	}
	p, err := n.store.Enqueue(m)
	if err != nil {
		if m.Waitlist != nil {
			sh.stale = true // the turn was taken in memory
		} else {
			sh.rules.Cancel(id)
		}
		n.metrics.holds(err)
		return holdStep{err: err}
	}
	sh.turningLocked(turns, p)
	q := &queuedHold{sh: sh, r: r, m: m, p: p, done: make(chan struct{}), key: req.IdempotencyKey}
	sh.busy[id] = q.done
	for _, s := range r.Seats {
		sh.pending[s] = q.done
	}
	if req.IdempotencyKey != "" {
		n.rememberLocked(sh, req.IdempotencyKey, idemEntry{fingerprint: m.Fingerprint, hold: id, at: r.CreatedAt})
	}
	return holdStep{queued: q}
}

// finishHold waits for a queued hold's write and answers the hold: undone
// in memory if it was not committed, the show reloaded (unloaded) if the
// outcome is unknown or memory may be wrong.
func (n *Node) finishHold(q *queuedHold) (ar.Reservation, error) {
	werr := q.p.Wait()
	sh, id := q.sh, q.r.ID

	sh.mu.Lock()
	delete(sh.busy, id)
	for _, s := range q.r.Seats {
		if sh.pending[s] == q.done {
			delete(sh.pending, s)
		}
	}
	close(q.done)
	if q.m.Waitlist != nil {
		sh.shownLocked(q.p, werr)
	}
	unload := false
	if werr != nil {
		switch {
		case q.m.Waitlist != nil:
			sh.stale = true // the turn was taken in memory; the reload tells
		case !unknownOutcome(werr):
			sh.rules.Cancel(id)
			if q.key != "" {
				sh.idem.Delete(q.key)
			}
		}
		werr, unload = failedLocked(sh, werr)
	}
	sh.mu.Unlock()
	if unload {
		n.unload(sh, werr.Error())
	}
	n.metrics.holds(werr)
	if werr != nil {
		return ar.Reservation{}, werr
	}
	return q.r, nil
}

// soldOutLocked reports whether every seat of the show is booked, for a hold
// of seats that was refused because some were taken. Most refusals are not
// sold out and are decided from the requested seats alone: copying the
// whole seat map under the show's lock (15 KB for 15,000 seats) on every
// refusal cost a third of the CPU of the hold path in a flash sale.
func soldOutLocked(rules *ar.Show, seats []ar.SeatID) bool {
	for _, id := range seats {
		if st, ok := rules.SeatStatus(id); !ok || st != ar.SeatBooked {
			return false
		}
	}
	available, held, _, offered := rules.Counts()
	return available == 0 && held == 0 && offered == 0
}

// pendingLocked returns the busy channel of an in-flight hold that took one
// of seats, or nil.
func (sh *show) pendingLocked(seats []ar.SeatID) <-chan struct{} {
	if len(sh.pending) == 0 {
		return nil
	}
	for _, s := range seats {
		if ch, ok := sh.pending[s]; ok {
			return ch
		}
	}
	return nil
}

// waitUnlocked waits for ch with mu unlocked, and returns with mu locked,
// unless ctx ends first (then mu is unlocked).
func waitUnlocked(ctx context.Context, mu interface {
	Lock()
	Unlock()
}, ch <-chan struct{}) error {
	mu.Unlock()
	select {
	case <-ch:
		mu.Lock()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newHoldID returns "<show>:<random>". The show ID inside routes requests
// that name only the hold to the show's owner.
func newHoldID(show ar.ShowID) (ar.HoldID, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return ar.HoldID(string(show) + ":" + strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))), nil
}

// showOfHold returns the show a hold ID belongs to.
func showOfHold(id ar.HoldID) (ar.ShowID, error) {
	i := strings.LastIndexByte(string(id), ':')
	if i <= 0 || validateShowID(ar.ShowID(id[:i])) != nil || unstorable(string(id)) {
		return "", fmt.Errorf("%w: hold %q", ar.ErrHoldNotFound, id)
	}
	return ar.ShowID(id[:i]), nil
}

// fingerprint identifies a request for idempotency checks.
func fingerprint(kind, user string, parts ...string) string {
	h := sha256.New()
	for _, p := range append([]string{kind, user}, parts...) {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// offeredToLocked reports whether every one of seats (at least one) is
// offered to user in a waitlist turn.
func (sh *show) offeredToLocked(user ar.UserID, seats []ar.SeatID) bool {
	if sh.wait.rules.Len() == 0 || len(seats) == 0 {
		return false
	}
	for _, s := range seats {
		if to, ok := sh.rules.OfferedTo(s); !ok || to != user {
			return false
		}
	}
	return true
}

// admitted checks that token admits user to shop show sh, which needs one
// while it has a waiting room that is not closed: wu.ErrNotAdmitted if not
// (and always on a node without an admission key). A token admits only
// while its user counts under the room's cap of shoppers: not after they
// left the room or booked, though the token has not run out, or a user
// who no longer counts would shop beside a full cap. sh.mu must be held.
func (n *Node) admitted(sh *show, user ar.UserID, token string) error {
	if sh.info.Room == nil || sh.room != nil && sh.room.rules.IsClosed() {
		return nil
	}
	if n.cfg.AdmissionKey == nil {
		return fmt.Errorf("%w: this node has no admission key to check the show's admission tokens", wu.ErrNotAdmitted)
	}
	u := wu.UserID(user)
	if _, err := n.cfg.AdmissionKey.Check(token, string(sh.id), u, n.now()); err != nil {
		return err
	}
	if sh.room == nil || sh.room.rules.Get(u).State != wu.Admitted {
		return fmt.Errorf("%w: the user's admission ended (they left the waiting room or booked); join the queue again", wu.ErrNotAdmitted)
	}
	return nil
}
