package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	showID, err := checkRelease(id, user)
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
	var st changeStep[queuedRelease]
	sh, err = n.untilDecided(ctx, sh, func(sh *show) <-chan struct{} {
		st = n.tryReleaseLocked(sh, id, user)
		return st.wait
	})
	switch {
	case err != nil:
		return ar.Reservation{}, err
	case st.queued != nil:
		return n.finishRelease(st.queued)
	case st.ended:
		return n.releasedHold(ctx, sh, id, user)
	}
	return ar.Reservation{}, st.err
}

// checkRelease checks what Release checks before it looks at the show, and
// returns the hold's show.
func checkRelease(id ar.HoldID, user ar.UserID) (ar.ShowID, error) {
	if err := validateUser(user); err != nil {
		return "", err
	}
	return showOfHold(id)
}

// changeStep is what tryReleaseLocked or tryConfirmLocked decided for a
// change of a hold: to wait for a channel (a write of the hold in flight)
// and try again; to answer from the store, the hold being no longer live in
// memory (ended); to wait for the change's queued write (queued); or, when
// none of these is set, the answer (r, err).
type changeStep[Q any] struct {
	wait   <-chan struct{}
	ended  bool
	queued *Q
	r      ar.Reservation
	err    error
}

// queuedRelease is a release whose write is queued.
type queuedRelease struct {
	sh   *show
	id   ar.HoldID
	user ar.UserID
	now  time.Time
	m    persistence.Mutation
	p    *persistence.Pending
	done chan struct{} // closed once the write's outcome is known
}

// tryReleaseLocked decides the release of hold id by user on sh, which is
// locked, neither stale nor dropped, and stays locked.
func (n *Node) tryReleaseLocked(sh *show, id ar.HoldID, user ar.UserID) changeStep[queuedRelease] {
	if ch, busy := sh.busy[id]; busy {
		return changeStep[queuedRelease]{wait: ch}
	}
	r, err := sh.rules.CheckRelease(id, user)
	if errors.Is(err, ar.ErrHoldNotFound) {
		return changeStep[queuedRelease]{ended: true}
	}
	if err != nil {
		return changeStep[queuedRelease]{err: err}
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
		return changeStep[queuedRelease]{err: err}
	}
	q := &queuedRelease{sh: sh, id: id, user: user, now: now, m: m, p: p, done: make(chan struct{})}
	sh.busy[id] = q.done
	return changeStep[queuedRelease]{queued: q}
}

// finishRelease waits for a queued release's write and answers the release:
// the hold ended in memory once it committed, the show reloaded (unloaded)
// if the outcome is unknown or memory may be wrong.
func (n *Node) finishRelease(q *queuedRelease) (ar.Reservation, error) {
	werr := q.p.Wait()
	sh := q.sh

	sh.mu.Lock()
	unload := false
	var r ar.Reservation
	var err error
	if werr == nil {
		if r, err = sh.rules.Release(q.id, q.user, q.now); err == nil && q.m.Waitlist != nil {
			sh.handedOverLocked(r.Seats)
		}
	} else {
		sh.stale = sh.stale || q.m.Waitlist != nil
		werr, unload = failedLocked(sh, werr)
	}
	delete(sh.busy, q.id)
	close(q.done)
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

// releasedHold answers the release of a hold that is not live in sh's
// memory from the store: a hold the same user released is answered again.
func (n *Node) releasedHold(ctx context.Context, sh *show, id ar.HoldID, user ar.UserID) (ar.Reservation, error) {
	r, err := n.endedHold(ctx, sh, id, user)
	if r.Status == ar.Released && r.User == user {
		return r, nil
	}
	return r, err
}
