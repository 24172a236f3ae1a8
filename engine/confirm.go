package engine

import (
	"context"
	"errors"
	"fmt"

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
	if err := validateUser(req.User); err != nil {
		return ar.Reservation{}, err
	}
	if err := validateKey(req.IdempotencyKey); err != nil {
		return ar.Reservation{}, err
	}
	if req.PaymentRef == "" || len(req.PaymentRef) > 200 || unstorable(req.PaymentRef) {
		return ar.Reservation{}, fmt.Errorf("%w: payment_ref must have 1-200 characters, UTF-8 without NUL", ErrInvalid)
	}
	showID, err := showOfHold(req.Hold)
	if err != nil {
		return ar.Reservation{}, err
	}
	fp := fingerprint("confirm", string(req.User), string(req.Hold), req.PaymentRef)
	sh, err := n.lockForChange(ctx, showID)
	if err != nil {
		if errors.Is(err, ErrShowNotFound) {
			return ar.Reservation{}, fmt.Errorf("%w: %s", ar.ErrHoldNotFound, req.Hold)
		}
		return ar.Reservation{}, err
	}
	defer n.gate.leave()
	for {
		if sh.dropped || sh.stale {
			if sh, err = n.relockForChange(ctx, sh); err != nil {
				return ar.Reservation{}, err
			}
			continue
		}
		if req.IdempotencyKey != "" {
			if e, ok := sh.idem.Get(req.IdempotencyKey); ok && e.fingerprint != fp {
				sh.mu.Unlock()
				return ar.Reservation{}, ErrIdempotencyMismatch
			}
		}
		ch, busy := sh.busy[req.Hold]
		if !busy {
			break
		}
		if err := waitUnlocked(ctx, &sh.mu, ch); err != nil {
			return ar.Reservation{}, err
		}
	}
	now := n.now()
	r, already, err := sh.rules.CheckConfirm(req.Hold, req.User, req.PaymentRef, now)
	if errors.Is(err, ar.ErrHoldNotFound) {
		sh.mu.Unlock()
		return n.endedHold(ctx, sh, req.Hold, req.User)
	}
	if err != nil || already {
		sh.mu.Unlock()
		n.metrics.confirms(err)
		return r, err
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
		sh.mu.Unlock()
		n.metrics.confirms(err)
		return ar.Reservation{}, err
	}
	done := make(chan struct{})
	sh.busy[req.Hold] = done
	if req.IdempotencyKey != "" {
		n.rememberLocked(sh, req.IdempotencyKey, idemEntry{fingerprint: fp, hold: req.Hold, at: now})
	}
	sh.mu.Unlock()

	werr := p.Wait()

	sh.mu.Lock()
	unload := false
	var wp, rp *persistence.Pending
	switch {
	case werr == nil:
		if r, err = sh.rules.Confirm(req.Hold, req.User, req.PaymentRef, now); err == nil && sh.wait.rules.Waiting() > 0 {
			wp, _ = n.waitSoldOutLocked(sh, n.now())
		}
		if err == nil {
			rp = n.finishShopperLocked(sh, req.User, n.now())
		}
	case !unknownOutcome(werr) && req.IdempotencyKey != "":
		sh.idem.Delete(req.IdempotencyKey)
	}
	if werr != nil {
		werr, unload = failedLocked(sh, werr)
	}
	delete(sh.busy, req.Hold)
	close(done)
	sh.mu.Unlock()
	if unload {
		n.unload(sh, werr.Error())
	}
	if wp != nil {
		n.settleWait(sh, wp) //nolint:errcheck // the booking stands; a failed sweep reloads the show
	}
	if rp != nil {
		n.settleRoom(sh, rp) //nolint:errcheck // the booking stands; a failed write reloads the show
	}
	n.metrics.confirms(werr)
	if werr != nil {
		return ar.Reservation{}, werr
	}
	if err != nil {
		// The database has the booking; memory could not follow. Reload.
		n.drop(sh, "confirm committed but not applicable in memory: "+err.Error())
	}
	return r, nil
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
