package engine

import (
	"context"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

func (n *Node) expiryLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
			n.ExpireDue()
		}
	}
}

type expiring struct {
	sh   *show
	r    ar.Reservation
	p    *persistence.Pending
	done chan struct{}
}

// ExpireDue expires every loaded show's holds whose expiry plus grace has
// passed, durably: each is written first and its seats are offered again
// only after the commit. A hold with a change in flight is left for a later
// round. It returns the number of holds expired. The expiry loop calls it
// every ExpiryInterval; tests call it directly.
func (n *Node) ExpireDue() int {
	now := n.now()
	n.mu.RLock()
	shows := make([]*show, 0, len(n.shows))
	for _, sh := range n.shows {
		shows = append(shows, sh)
	}
	n.mu.RUnlock()

	var batch []expiring
	var stale []ar.ShowID
	for _, sh := range shows {
		sh.mu.Lock()
		if sh.stale && !sh.dropped {
			stale = append(stale, sh.id)
		}
		if sh.dropped || sh.stale {
			sh.mu.Unlock()
			continue
		}
		due := sh.rules.Due(now, func(id ar.HoldID) bool { _, busy := sh.busy[id]; return busy })
		if len(due) > n.cfg.MaxExpiriesPerTick {
			due = due[:n.cfg.MaxExpiriesPerTick]
		}
		for _, r := range due {
			p, err := n.store.Enqueue(persistence.Mutation{
				Kind:          persistence.Expire,
				Epoch:         sh.epoch,
				ShowID:        string(sh.id),
				ReservationID: string(r.ID),
				UserID:        string(r.User),
				SeatIDs:       seatStrings(r.Seats),
				At:            now,
			})
			if err != nil {
				break // overloaded: the rest wait for the next round
			}
			done := make(chan struct{})
			sh.busy[r.ID] = done
			batch = append(batch, expiring{sh: sh, r: r, p: p, done: done})
		}
		sh.mu.Unlock()
	}

	expired := 0
	for _, e := range batch {
		werr := e.p.Wait()
		e.sh.mu.Lock()
		var err error
		if werr == nil {
			_, err = e.sh.rules.Expire(e.r.ID, now)
		}
		delete(e.sh.busy, e.r.ID)
		close(e.done)
		e.sh.mu.Unlock()
		n.metrics.expiries(werr)
		switch {
		case werr != nil:
			n.writeFailed(e.sh, werr) //nolint:errcheck // logged by the writer; retried next round
		case err != nil:
			n.drop(e.sh, "expiry committed but not applicable in memory: "+err.Error())
		default:
			expired++
		}
	}
	// A stale show takes no changes until reloaded; reload it here, so its
	// holds expire even if no request comes. While the database is down
	// this fails fast and is tried again next round.
	for _, id := range stale {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ExpiryInterval*10)
		if err := n.load(ctx, id); err != nil {
			n.cfg.Logger.Debug("reload of stale show failed", "show", id, "err", err)
		}
		cancel()
	}
	return expired
}
