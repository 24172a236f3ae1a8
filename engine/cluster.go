package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
)

// Ring names every show's owner node. *ring.Ring implements it. A node
// whose Config.Ring is nil is alone: it owns every show.
type Ring interface {
	Owner(showID string) ring.Member
	Self() ring.Member
	// Changes receives after the member set changed.
	Changes() <-chan struct{}
}

// ownerOf returns the show's owner by the ring, and whether it is this
// node.
func (n *Node) ownerOf(id ar.ShowID) (ring.Member, bool) {
	if n.cfg.Ring == nil {
		return ring.Member{Name: n.cfg.NodeID}, true
	}
	o := n.cfg.Ring.Owner(string(id))
	return o, o.Name == n.cfg.Ring.Self().Name
}

// member returns the ring member named name, with its addresses when the
// ring has it.
func (n *Node) member(name string) ring.Member {
	if r, ok := n.cfg.Ring.(interface{ Members() []ring.Member }); ok {
		for _, m := range r.Members() {
			if m.Name == name {
				return m
			}
		}
	}
	return ring.Member{Name: name}
}

// leasePoll bounds how long a load waits between two attempts to take a
// show another node holds a lease on.
const leasePoll = 50 * time.Millisecond

// acquire takes the show's ownership in the database, for a load: only when
// the ring names this node, and, while another node's lease on it runs
// (it is handing the show off, or died), once that lease is released or
// runs out, asking again every leasePoll — within ctx and at most
// AcquireWait: a lease renewed all that time means that node still serves
// the show (the nodes disagree about the ring), and the caller is told
// SHOW_MOVED naming it.
//
// It returns the epoch, and when the take that got it was asked for (the
// lease runs at least LeaseDuration from then).
func (n *Node) acquire(ctx context.Context, id ar.ShowID) (int64, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.AcquireWait)
	defer cancel()
	var held *persistence.LeasedError // the last refusal
	for {
		owner, mine := n.ownerOf(id)
		if !mine {
			return 0, time.Time{}, &MovedError{Show: id, Owner: owner, Why: "the ring names another node"}
		}
		asked := time.Now()
		epoch, err := n.store.AcquireShow(ctx, string(id))
		var leased *persistence.LeasedError
		if !errors.As(err, &leased) {
			if err == nil {
				n.metrics.ownership("take")
			}
			if err != nil && held != nil && ctx.Err() != nil {
				// The wait ran out while asking again: the database is
				// not at fault; the lease was still running.
				return 0, time.Time{}, &MovedError{Show: id, Owner: n.member(held.Owner), Why: fmt.Sprintf("still leased by %s", held.Owner)}
			}
			return epoch, asked, err
		}
		held = leased
		// Ask again at least every leasePoll: a node handing the show off
		// (a graceful stop, a rebalance) releases its lease long before
		// it would run out.
		wait := min(max(leased.Remaining, time.Millisecond)+n.cfg.LeaseSlack, leasePoll)
		n.cfg.Logger.Debug("show leased by another node; waiting it out", "show", id, "owner", leased.Owner, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, time.Time{}, &MovedError{Show: id, Owner: n.member(leased.Owner), Why: fmt.Sprintf("still leased by %s", leased.Owner)}
		}
	}
}

// leaseEnd is show.leaseUntil for a lease asked for at asked.
func (n *Node) leaseEnd(asked time.Time) int64 {
	return int64(asked.Add(n.store.LeaseDuration()).Sub(n.born))
}

// renewLoop renews the leases of every loaded show several times a lease,
// and drops at once a show whose renewal finds it taken by another node,
// or, in a cluster, whose lease may have run out (see RenewLeases). In a
// cluster, after a failed renewal with shows still loaded, it tries again
// after a fifth of LeaseRenewInterval, not a whole one, and a renewal that
// does not answer gives up in time for that retry (renewTimeout), so that
// one failure does not cost their leases.
func (n *Node) renewLoop() {
	defer n.wg.Done()
	t := time.NewTimer(n.cfg.LeaseRenewInterval)
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
			start := time.Now()
			_, err := n.renewLeases()
			next := n.cfg.LeaseRenewInterval - time.Since(start)
			n.mu.RLock()
			atStake := len(n.shows) > 0 // the ones that lapsed were dropped
			n.mu.RUnlock()
			if err != nil && n.cfg.Ring != nil && atStake {
				next = n.cfg.LeaseRenewInterval / 5
			}
			t.Reset(max(next, 0))
		}
	}
}

// RenewLeases renews the leases of the loaded shows in one statement and
// drops the shows it finds lost. It returns how many were lost. The renewal
// loop calls it; tests call it directly.
//
// When the renewal fails, a node in a cluster drops the shows whose lease
// may have run out (see lapsed): from then on another node may take them,
// and this node's answers from memory (seat maps, refusals) could be
// stale. A call for a lapsed show between two renewals drops it too
// (Node.show). Writes never needed the lease (they are fenced by epoch);
// so the staleness of what a node cut off from the database answers is
// bounded by the lease. The next call for such a show loads it, which
// succeeds once the database answers again. A node alone keeps serving
// its shows from memory: no other node is meant to take them.
func (n *Node) RenewLeases() int {
	lost, _ := n.renewLeases()
	return lost
}

// renewLeases is RenewLeases, with the renewal's error.
func (n *Node) renewLeases() (int, error) {
	n.mu.RLock()
	owned := make([]persistence.Ownership, 0, len(n.shows))
	byID := make(map[string]*show, len(n.shows))
	for _, sh := range n.shows {
		owned = append(owned, persistence.Ownership{ShowID: string(sh.id), Epoch: sh.epoch})
		byID[string(sh.id)] = sh
	}
	n.mu.RUnlock()
	if len(owned) == 0 {
		n.metrics.showsOwned.Set(0)
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.renewTimeout())
	defer cancel()
	asked := time.Now()
	lost, err := n.store.RenewLeases(ctx, owned)
	if err != nil {
		n.metrics.ownership("renew_failed")
		n.cfg.Logger.Warn("lease renewal failed", "shows", len(owned), "err", err)
		for _, sh := range byID {
			n.dropIfLapsed(sh)
		}
		return 0, err
	}
	until := n.leaseEnd(asked)
	for _, sh := range byID {
		sh.leaseUntil.Store(until) // the lost ones are dropped below
	}
	n.metrics.showsOwned.Set(float64(len(owned) - len(lost)))
	for _, o := range lost {
		if sh := byID[o.ShowID]; sh != nil {
			n.metrics.ownership("lost")
			n.drop(sh, "lease lost: the show is no longer this node's at this epoch (another node took it, or it was released or deleted)")
		}
	}
	return len(lost), nil
}

// renewTimeout bounds a renewal: two intervals, and, in a cluster, short
// enough that after a renewal asked on time that did not answer, the retry
// (a fifth of an interval later) is asked before the lease it was to renew
// runs out.
func (n *Node) renewTimeout() time.Duration {
	d := 2 * n.cfg.LeaseRenewInterval
	if n.cfg.Ring != nil {
		i := n.cfg.LeaseRenewInterval
		d = min(d, max(n.store.LeaseDuration()-i-i/5-n.cfg.LeaseSlack, i/5))
	}
	return d
}

// lapsed reports whether, in a cluster, sh's lease may have run out (see
// show.leaseUntil): another node may have taken it, so this node must not
// answer it from memory. A node alone never lapses.
func (n *Node) lapsed(sh *show) bool {
	return n.cfg.Ring != nil && sh.leaseUntil.Load() <= int64(time.Since(n.born))
}

// dropIfLapsed drops sh if its lease may have run out, and reports whether
// it did.
func (n *Node) dropIfLapsed(sh *show) bool {
	if !n.lapsed(sh) {
		return false
	}
	if n.drop(sh, "lease may have run out: renewals failed") {
		n.metrics.ownership("lapsed")
	}
	return true
}

// ringLoop hands off the loaded shows that the ring gives to another node
// whenever the ring changes, and whenever a load installed a show the ring
// had given away while it loaded.
func (n *Node) ringLoop() {
	defer n.wg.Done()
	n.countMembers()
	for {
		select {
		case <-n.quit:
			return
		case <-n.cfg.Ring.Changes():
			n.metrics.ringChanges.Inc()
			n.countMembers()
			n.HandOffMoved()
		case <-n.moved:
			n.HandOffMoved()
		}
	}
}

func (n *Node) countMembers() {
	if r, ok := n.cfg.Ring.(interface{ Members() []ring.Member }); ok {
		n.metrics.members.Set(float64(len(r.Members())))
	}
}

// HandOffMoved hands off every loaded show whose owner by the ring is now
// another node: it stops taking changes for it, waits (within the commit
// timeout) for its writes in flight, and releases its lease so that the
// new owner takes it at once. The lease is not renewed meanwhile: if the
// writes take longer than the rest of the lease, the new owner may take
// the show first, and those not yet committing are fenced and answered
// SHOW_MOVED (retryable there). It returns the number handed off.
func (n *Node) HandOffMoved() int {
	n.mu.RLock()
	var moved []*show
	for id, sh := range n.shows {
		if _, mine := n.ownerOf(id); !mine {
			moved = append(moved, sh)
		}
	}
	n.mu.RUnlock()
	if len(moved) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.HandOffTimeout)
	defer cancel()
	n.handOff(ctx, moved, "the ring gives it to another node")
	return len(moved)
}

// handOff stops serving shows and releases their leases once their writes
// in flight are answered (or ctx ends: then the next owner waits out the
// lease, as after a crash).
func (n *Node) handOff(ctx context.Context, shows []*show, why string) {
	for _, sh := range shows {
		n.drop(sh, "handed off: "+why)
	}
	released := make([]persistence.Ownership, 0, len(shows))
	for _, sh := range shows {
		if err := n.settled(ctx, sh); err != nil {
			n.cfg.Logger.Warn("hand-off: writes still in flight; the lease will run out instead", "show", sh.id, "err", err)
			continue
		}
		released = append(released, persistence.Ownership{ShowID: string(sh.id), Epoch: sh.epoch})
	}
	if err := n.store.ReleaseShows(ctx, released); err != nil {
		n.cfg.Logger.Warn("hand-off: releasing leases", "shows", len(released), "err", err)
		return
	}
	for range released {
		n.metrics.ownership("release")
	}
}

// settled waits until sh has no write in flight, polling, within ctx.
func (n *Node) settled(ctx context.Context, sh *show) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		sh.mu.Lock()
		idle := len(sh.busy) == 0 && sh.wait.writes == 0
		sh.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ReleaseAll hands off every loaded show, for a graceful stop: after Drain
// (no change in flight) and before the store closes. It returns once their
// leases are released, or ctx ends.
func (n *Node) ReleaseAll(ctx context.Context) {
	n.mu.RLock()
	shows := make([]*show, 0, len(n.shows))
	for _, sh := range n.shows {
		shows = append(shows, sh)
	}
	n.mu.RUnlock()
	n.handOff(ctx, shows, "the node stops")
}
