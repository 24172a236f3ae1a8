package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

// ConfirmRequest books a hold.
type ConfirmRequest struct {
	Hold           ar.HoldID
	User           ar.UserID
	PaymentRef     string
	IdempotencyKey string
}

// Confirm books a hold: only its user, only until ExpiresAt+ConfirmGrace
// judged at the moment of the decision (after any wait for the show's lock
// or for a write in flight on the hold), and a repeat with the same payment
// reference answers the booking again. The booking is answered after it is
// durable; if the write's outcome is unknown, the hold stays held in memory
// and the show is reloaded before its next change.
func (n *Node) Confirm(ctx context.Context, req ConfirmRequest) (ar.Reservation, error) {
	showID, err := checkConfirm(req)
	if err != nil {
		return ar.Reservation{}, err
	}
	fp := confirmFingerprint(req)
	sh, err := n.lockForChange(ctx, showID)
	if err != nil {
		if errors.Is(err, ErrShowNotFound) {
			return ar.Reservation{}, fmt.Errorf("%w: %s", ar.ErrHoldNotFound, req.Hold)
		}
		return ar.Reservation{}, err
	}
	defer n.gate.leave()
	var st changeStep[queuedConfirm]
	sh, err = n.untilDecided(ctx, sh, func(sh *show) <-chan struct{} {
		st = n.tryConfirmLocked(sh, req, fp)
		return st.wait
	})
	switch {
	case err != nil:
		return ar.Reservation{}, err
	case st.queued != nil:
		return n.settleConfirm(n.applyConfirm(st.queued))
	case st.ended:
		return n.endedHold(ctx, sh, req.Hold, req.User)
	}
	return st.r, st.err
}

// checkConfirm checks what Confirm checks before it looks at the show, and
// returns the hold's show.
func checkConfirm(req ConfirmRequest) (ar.ShowID, error) {
	if err := validateUser(req.User); err != nil {
		return "", err
	}
	if err := validateKey(req.IdempotencyKey); err != nil {
		return "", err
	}
	if req.PaymentRef == "" || len(req.PaymentRef) > 200 || unstorable(req.PaymentRef) {
		return "", fmt.Errorf("%w: payment_ref must have 1-200 characters, UTF-8 without NUL", ErrInvalid)
	}
	return showOfHold(req.Hold)
}

// confirmFingerprint identifies a confirm request for idempotency checks.
func confirmFingerprint(req ConfirmRequest) string {
	return fingerprint("confirm", string(req.User), string(req.Hold), req.PaymentRef)
}

// queuedConfirm is a confirm whose write is queued.
type queuedConfirm struct {
	sh   *show
	req  ConfirmRequest
	now  time.Time
	p    *persistence.Pending
	done chan struct{} // closed once the write's outcome is known
}

// tryConfirmLocked decides req (checked by checkConfirm; fp its
// fingerprint) on sh, which is locked, neither stale nor dropped, and stays
// locked.
func (n *Node) tryConfirmLocked(sh *show, req ConfirmRequest, fp string) changeStep[queuedConfirm] {
	if req.IdempotencyKey != "" {
		if e, ok := sh.idem.Get(req.IdempotencyKey); ok && e.fingerprint != fp {
			return changeStep[queuedConfirm]{err: ErrIdempotencyMismatch}
		}
	}
	if ch, busy := sh.busy[req.Hold]; busy {
		return changeStep[queuedConfirm]{wait: ch}
	}
	now := n.now()
	r, already, err := sh.rules.CheckConfirm(req.Hold, req.User, req.PaymentRef, now)
	if errors.Is(err, ar.ErrHoldNotFound) {
		return changeStep[queuedConfirm]{ended: true}
	}
	if err != nil || already {
		n.metrics.confirms(err)
		return changeStep[queuedConfirm]{r: r, err: err}
	}
	m := persistence.Mutation{
		Kind:          persistence.Confirm,
		Epoch:         sh.epoch,
		ShowID:        string(sh.id),
		ReservationID: string(req.Hold),
		UserID:        string(req.User),
		SeatIDs:       seatStrings(r.Seats),
		At:            now,
		PaymentRef:    req.PaymentRef,
	}
	if req.IdempotencyKey != "" {
		m.IdempotencyKey, m.Fingerprint = req.IdempotencyKey, fp
	}
	p, err := n.store.Enqueue(m)
	if err != nil {
		n.metrics.confirms(err)
		return changeStep[queuedConfirm]{err: err}
	}
	q := &queuedConfirm{sh: sh, req: req, now: now, p: p, done: make(chan struct{})}
	sh.busy[req.Hold] = q.done
	if req.IdempotencyKey != "" {
		n.rememberLocked(sh, req.IdempotencyKey, idemEntry{fingerprint: fp, hold: req.Hold, at: now})
	}
	return changeStep[queuedConfirm]{queued: q}
}

// appliedConfirm is a confirm whose write's outcome is known and applied to
// memory (applyConfirm), with the writes it queued in turn: the sweep of
// the waitlist a booking may leave unservable, the end of the user's turn
// in the waiting room.
type appliedConfirm struct {
	sh         *show
	r          ar.Reservation
	werr, err  error // the write's outcome; memory's refusal of what committed
	wait, room *persistence.Pending
}

// applyConfirm waits for a queued confirm's write and applies its outcome
// to memory: the booking, and the waitlist's and the room's writes it
// queues in turn, once it committed; the idempotency record dropped if it
// did not; the show reloaded (unloaded) if the outcome is unknown or memory
// may be wrong.
func (n *Node) applyConfirm(q *queuedConfirm) appliedConfirm {
	werr := q.p.Wait()
	sh, req := q.sh, q.req
	c := appliedConfirm{sh: sh, werr: werr}

	sh.mu.Lock()
	unload := false
	switch {
	case werr == nil:
		if c.r, c.err = sh.rules.Confirm(req.Hold, req.User, req.PaymentRef, q.now); c.err == nil && sh.wait.rules.Waiting() > 0 {
			c.wait, _ = n.waitSoldOutLocked(sh, n.now())
		}
		if c.err == nil {
			c.room = n.finishShopperLocked(sh, req.User, n.now())
		}
	case !unknownOutcome(werr) && req.IdempotencyKey != "":
		sh.idem.Delete(req.IdempotencyKey)
	}
	if werr != nil {
		c.werr, unload = failedLocked(sh, werr)
	}
	delete(sh.busy, req.Hold)
	close(q.done)
	sh.mu.Unlock()
	if unload {
		n.unload(sh, c.werr.Error())
	}
	return c
}

// settleConfirm waits for the writes an applied confirm queued and answers
// the confirm. The booking stands whatever they do: a failed one reloads
// the show.
func (n *Node) settleConfirm(c appliedConfirm) (ar.Reservation, error) {
	if c.wait != nil {
		n.settleWait(c.sh, c.wait) //nolint:errcheck // the booking stands; a failed sweep reloads the show
	}
	if c.room != nil {
		n.settleRoom(c.sh, c.room) //nolint:errcheck // the booking stands; a failed write reloads the show
	}
	n.metrics.confirms(c.werr)
	if c.werr != nil {
		return ar.Reservation{}, c.werr
	}
	if c.err != nil {
		// The database has the booking; memory could not follow. Reload.
		n.drop(c.sh, "confirm committed but not applicable in memory: "+c.err.Error())
	}
	return c.r, nil
}

// endedHold answers a confirm or release of a hold that is not live in
// sh's memory: the database says whether it ever existed and how it ended.
// If the database has it live, another node has changed the show since sh
// was loaded (sh's node lost it without knowing yet): sh is dropped and the
// caller told to retry, not that a live hold has ended.
func (n *Node) endedHold(ctx context.Context, sh *show, id ar.HoldID, user ar.UserID) (ar.Reservation, error) {
	r, err := n.storedReservation(ctx, sh.id, id)
	if err != nil {
		return ar.Reservation{}, err
	}
	if r.User != user {
		return ar.Reservation{}, ar.ErrNotHolder
	}
	switch r.Status {
	case ar.Expired:
		return r, ar.ErrHoldExpired
	case ar.Held, ar.Booked:
		n.drop(sh, "a live reservation is missing from memory")
		return ar.Reservation{}, fmt.Errorf("show %s: %w", sh.id, ErrMoved)
	}
	return r, fmt.Errorf("%w: %s", ar.ErrHoldEnded, r.Status)
}

// storedReservation reads a reservation from the database.
func (n *Node) storedReservation(ctx context.Context, show ar.ShowID, id ar.HoldID) (ar.Reservation, error) {
	rec, err := n.store.GetReservation(ctx, string(show), string(id))
	if errors.Is(err, persistence.ErrNotFound) {
		return ar.Reservation{}, fmt.Errorf("%w: %s", ar.ErrHoldNotFound, id)
	}
	if err != nil {
		return ar.Reservation{}, err
	}
	return reservationFromStore(rec)
}
