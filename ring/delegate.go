package ring

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is the Ring's memberlist Delegate, EventDelegate and
// MergeDelegate. memberlist calls it with its own node lock held, so it never
// blocks and never calls memberlist: it records the event and wakes the
// Ring's rebuild goroutine through kick (buffered 1, so bursts coalesce into
// one rebuild).
//
// The rebuild reads the members from these records rather than from
// memberlist.Members(): that returns pointers into memberlist's state, which
// it keeps modifying under its lock (a restarted node's address, metadata),
// so reading them afterwards is a data race. The records are copies taken
// inside the callbacks and hold the same alive set: memberlist fires
// NotifyJoin on every transition to alive, NotifyUpdate on every change of
// metadata and NotifyLeave on every transition to dead or left.
type delegate struct {
	self    string // this node's name
	grpc    string // this node's gRPC address
	leaving atomic.Bool
	kick    chan struct{}

	// staleSelf is set when a peer's state, received in a join, lists this
	// node dead or at another address: that peer has not accepted this node
	// (a restart on another port before DeadNodeReclaimTime ran out, or a
	// healed partition) and the Ring should push its state again.
	staleSelf atomic.Bool

	mu    sync.Mutex         // guards nodes
	nodes map[string]*record // every node heard of, by name; pruned by snapshot
}

type record struct {
	Member
	since time.Time // when State was last set
}

func newDelegate(self, grpc string) *delegate {
	return &delegate{self: self, grpc: grpc, kick: make(chan struct{}, 1), nodes: make(map[string]*record)}
}

func (d *delegate) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *delegate) set(n *memberlist.Node, state string) {
	meta := decodeMeta(n.Meta)
	if state == StateDead && meta.Leaving {
		state = StateLeft
	}
	d.mu.Lock()
	d.nodes[n.Name] = &record{
		Member: Member{Name: n.Name, GRPCAddr: meta.GRPC, GossipAddr: n.Address(), State: state},
		since:  time.Now(),
	}
	d.mu.Unlock()
	d.wake()
}

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.set(n, StateAlive) }

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.set(n, StateAlive) }

// NotifyLeave implements memberlist.EventDelegate. memberlist reports a
// graceful leave and a crash alike; the Leaving flag of the node's last
// metadata tells them apart.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.set(n, StateDead) }

// NotifyMerge implements memberlist.MergeDelegate. It never refuses a merge.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	d.mu.Lock()
	self, ok := d.nodes[d.self]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	for _, n := range peers {
		if n.Name == d.self && (n.State != memberlist.StateAlive || n.Address() != self.GossipAddr) {
			d.staleSelf.Store(true)
		}
	}
	return nil
}

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	// Config.Validate checked that the metadata fits memberlist.MetaMaxSize.
	return encodeMeta(d.grpc, d.leaving.Load())
}

// NotifyMsg implements memberlist.Delegate; the ring sends no messages.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate; the ring has none.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate; the ring has no state of its own.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// snapshot forgets dead and left members older than forget and returns the
// members, sorted by name, in two lists: those alive with a usable gRPC
// address (the ring), and all (the status).
func (d *delegate) snapshot(now time.Time, forget time.Duration) (live, all []Member) {
	d.mu.Lock()
	for name, r := range d.nodes {
		if r.State != StateAlive && name != d.self && now.Sub(r.since) > forget {
			delete(d.nodes, name)
			continue
		}
		all = append(all, r.Member)
		if r.State == StateAlive && r.GRPCAddr != "" {
			live = append(live, r.Member)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(live, byName)
	slices.SortFunc(all, byName)
	return live, all
}

// expired reports whether snapshot would forget a member now.
func (d *delegate) expired(now time.Time, forget time.Duration) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, r := range d.nodes {
		if r.State != StateAlive && name != d.self && now.Sub(r.since) > forget {
			return true
		}
	}
	return false
}

// reconnectTargets returns the gossip addresses of dead (not left) peers and
// of alive peers, and this node's own gossip address.
func (d *delegate) reconnectTargets() (dead, alive []string, self string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, r := range d.nodes {
		switch {
		case name == d.self:
			self = r.GossipAddr
		case r.State == StateDead:
			dead = append(dead, r.GossipAddr)
		case r.State == StateAlive:
			alive = append(alive, r.GossipAddr)
		}
	}
	return dead, alive, self
}

func (d *delegate) selfRecord() (Member, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.nodes[d.self]
	if !ok {
		return Member{}, false
	}
	return r.Member, true
}
