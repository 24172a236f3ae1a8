package engine

import (
	"context"
	"errors"
	"fmt"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

// Release ends a hold at its user's request. The seats are offered again
// only after the release is durable, to the waitlist first (the hand-over
// commits with the release); if its outcome
// is unknown, the hold stays held in memory and the show is reloaded before
// its next change.
// Releasing a hold that the same user already released answers it again.
func (n *Node) Release(ctx context.Context, id ar.HoldID, user ar.UserID) (ar.Reservation, error) {
	if err := validateUser(user); err != nil {
		return ar.Reservation{}, err
	}
	showID, err := showOfHold(id)
	if err != nil {
		return ar.Reservation{}, err
	}
	sh, err := n.lockForChange(ctx, showID)
	if err != nil {
		if errors.Is(err, ErrShowNotFound) {
			return ar.Reservation{}, fmt.Errorf("%w: %s", ar.ErrHoldNotFound, id)
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
		ch, busy := sh.busy[id]
		if !busy {
			break
		}
		if err := waitUnlocked(ctx, &sh.mu, ch); err != nil {
			return ar.Reservation{}, err
		}
	}
	r, err := sh.rules.CheckRelease(id, user)
	if errors.Is(err, ar.ErrHoldNotFound) {
		sh.mu.Unlock()
		r, err := n.endedHold(ctx, sh, id, user)
		if r.Status == ar.Released && r.User == user {
			return r, nil
		}
		return r, err
	}
	if err != nil {
		sh.mu.Unlock()
		return ar.Reservation{}, err
	}
	now := n.now()
	m := persistence.Mutation{
		Kind:          persistence.Release,
		Epoch:         sh.epoch,
		ShowID:        string(sh.id),
		ReservationID: string(id),
		UserID:        string(user),
		SeatIDs:       seatStrings(r.Seats),
		At:            now,
		Waitlist:      n.handOverLocked(sh, r.Seats, now),
	}
	p, err := n.store.Enqueue(m)
	if err != nil {
		sh.stale = sh.stale || m.Waitlist != nil // the waitlist went ahead
		sh.mu.Unlock()
		return ar.Reservation{}, err
	}
	done := make(chan struct{})
	sh.busy[id] = done
	sh.mu.Unlock()

	werr := p.Wait()

	sh.mu.Lock()
	unload := false
	if werr == nil {
		if r, err = sh.rules.Release(id, user, now); err == nil && m.Waitlist != nil {
			sh.handedOverLocked(r.Seats)
		}
	} else {
		sh.stale = sh.stale || m.Waitlist != nil
		werr, unload = failedLocked(sh, werr)
	}
	delete(sh.busy, id)
	close(done)
	sh.mu.Unlock()
	if unload {
		n.unload(sh, werr.Error())
	}
	n.metrics.releases(werr)
	if werr != nil {
		return ar.Reservation{}, werr
	}
	if err != nil {
		n.drop(sh, "release committed but not applicable in memory: "+err.Error())
	}
	return r, nil
}
