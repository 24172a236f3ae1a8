package engine

import (
	"context"
	"sync"
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
			n.EvictIdle()
		}
	}
}

type expiring struct {
	sh       *show
	r        ar.Reservation
	p        *persistence.Pending
	done     chan struct{}
	handOver bool // the expiry's write hands the seats to the waitlist
}

// ExpireDue expires every loaded show's holds whose expiry plus grace has
// passed, durably: each is written first and its seats are offered again
// only after the commit, to the waitlist first (the hand-over commits with
// the expiry). A hold with a change in
// flight is left for a later round. Then it ends the waitlist turns and
// waits that are due, lapses and grants the waiting rooms' admissions
// (admitRooms), and reloads the stale shows (reloadStale). It returns the
// number of holds expired. The expiry
// loop calls it every ExpiryInterval; tests call it directly.
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
			m := persistence.Mutation{
				Kind:          persistence.Expire,
				Epoch:         sh.epoch,
				ShowID:        string(sh.id),
				ReservationID: string(r.ID),
				UserID:        string(r.User),
				SeatIDs:       seatStrings(r.Seats),
				At:            now,
				Waitlist:      n.handOverLocked(sh, r.Seats, now),
			}
			p, err := n.store.Enqueue(m)
			if err != nil {
				sh.stale = sh.stale || m.Waitlist != nil // the waitlist went ahead
				break                                    // overloaded: the rest wait for the next round
			}
			done := make(chan struct{})
			sh.busy[r.ID] = done
			batch = append(batch, expiring{sh: sh, r: r, p: p, done: done, handOver: m.Waitlist != nil})
		}
		sh.mu.Unlock()
	}

	expired := 0
	for _, e := range batch {
		werr := e.p.Wait()
		e.sh.mu.Lock()
		var err error
		unload := false
		if werr == nil {
			if _, err = e.sh.rules.Expire(e.r.ID, now); err == nil && e.handOver {
				e.sh.handedOverLocked(e.r.Seats)
			}
		} else {
			e.sh.stale = e.sh.stale || e.handOver
			werr, unload = failedLocked(e.sh, werr)
		}
		delete(e.sh.busy, e.r.ID)
		close(e.done)
		e.sh.mu.Unlock()
		if unload {
			n.unload(e.sh, werr.Error())
		}
		n.metrics.expiries(werr)
		switch {
		case werr != nil:
			// Logged by the writer; retried next round (after a reload if
			// the outcome is unknown).
		case err != nil:
			n.drop(e.sh, "expiry committed but not applicable in memory: "+err.Error())
		default:
			expired++
		}
	}
	n.lapseWaitlists(shows, n.now())
	n.admitRooms(shows, n.now())
	n.reloadStale(stale)
	return expired
}

// reloadStale reloads stale shows, which take no changes until reloaded,
// so that their holds expire even if no request comes. The reloads start
// together (each a load in flight, bounded by MaxPendingLoads), and the
// round waits for them at most ExpiryInterval*10 in all: a database that
// does not answer delays the next round of every show's expiries by that
// once, not once per stale show. A reload that failed or is still running
// is tried again next round.
func (n *Node) reloadStale(ids []ar.ShowID) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ExpiryInterval*10)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			if err := n.load(ctx, id); err != nil {
				n.cfg.Logger.Debug("reload of stale show failed", "show", id, "err", err)
			}
		})
	}
	wg.Wait()
}

// EvictIdle evicts the loaded shows that have no live holds, nobody on their
// waitlist and no write in flight, and have not been used for IdleEvictAfter, and releases their
// ownership in the database (best effort: a failed release is logged, and
// the next owner takes the show by raising its epoch as usual). It returns
// the number evicted. The expiry loop calls it every ExpiryInterval; tests
// call it directly.
func (n *Node) EvictIdle() int {
	horizon := n.now().Add(-n.cfg.IdleEvictAfter).UnixNano()
	n.mu.RLock()
	var idle []*show
	for _, sh := range n.shows {
		if sh.used.Load() <= horizon {
			idle = append(idle, sh)
		}
	}
	n.mu.RUnlock()

	var evicted []persistence.Ownership
	for _, sh := range idle {
		sh.mu.Lock()
		ok := !sh.dropped && !sh.stale && len(sh.busy) == 0 && sh.rules.LiveHolds() == 0 && sh.used.Load() <= horizon &&
			sh.wait.rules.Len() == 0 && sh.wait.writes == 0 &&
			(sh.room == nil || sh.room.rules.Queued() == 0 && sh.room.rules.Active() == 0 && sh.room.writes == 0)
		if ok {
			sh.dropped = true
			sh.wait.waiters.wakeAllLocked()
			if sh.room != nil {
				sh.room.waiters.wakeAllLocked()
			}
		}
		sh.mu.Unlock()
		if !ok {
			continue
		}
		n.mu.Lock()
		if n.shows[sh.id] == sh {
			delete(n.shows, sh.id)
		}
		n.mu.Unlock()
		evicted = append(evicted, persistence.Ownership{ShowID: string(sh.id), Epoch: sh.epoch})
	}
	if len(evicted) == 0 {
		return 0
	}
	n.mu.RLock()
	loaded := len(n.shows)
	n.mu.RUnlock()
	n.metrics.showsLoaded.Set(float64(loaded))
	n.metrics.evictions.Add(float64(len(evicted)))
	// Released on a goroutine of its own, so a slow database does not
	// delay the next expiries. The caller is the expiry loop (tracked by
	// n.wg) or a test, both before Shutdown returns.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LoadTimeout)
		defer cancel()
		if err := n.store.ReleaseShows(ctx, evicted); err != nil {
			n.cfg.Logger.Warn("releasing evicted shows", "shows", len(evicted), "err", err)
		}
	}()
	n.cfg.Logger.Debug("idle shows evicted", "shows", len(evicted), "loaded", loaded)
	return len(evicted)
}
