package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
)

// Bounds of a cluster status answer.
const (
	// StatusMaxShows is the most shows a NodeStatus lists of each kind
	// (loaded, owned); its totals count the rest.
	StatusMaxShows = 1000
	// StatusMemberTimeout bounds how long ClusterStatus waits for each
	// other member's answer (and for the ownership rows of a member that
	// gave none).
	StatusMemberTimeout = 2 * time.Second
	// statusFanOut is the most members asked at once.
	statusFanOut = 16
)

// ClusterStatus is the cluster as one node sees it, for an operator.
type ClusterStatus struct {
	Self string // the node answering
	// RingVersion is the version of its ring; 0 without a ring.
	RingVersion uint64
	// PartitionCount is the number of partitions of its ring; 0 without a
	// ring.
	PartitionCount int
	// Members are every member it knows, in any state, by name, each with
	// the partitions it owns in the ring. Always includes this node.
	Members []MemberStatus
	// Nodes has one entry per member, by name (only this node's when the
	// status was asked local only).
	Nodes []NodeStatus
}

// MemberStatus is a ring member and the number of partitions it owns.
type MemberStatus struct {
	ring.Member
	Partitions int
}

// NodeStatus is what one node has loaded and what PostgreSQL says it owns.
type NodeStatus struct {
	Name     string
	GRPCAddr string
	// Loaded are the shows in its memory, by ID, at most StatusMaxShows;
	// LoadedTotal counts them all. Empty when the node was not reached.
	Loaded      []ar.ShowID
	LoadedTotal int
	// Owned are the ownership rows naming it, by show ID, at most
	// StatusMaxShows; OwnedTotal counts them all, up to
	// persistence.ListOwnershipsLimit.
	Owned      []persistence.OwnerInfo
	OwnedTotal int
	// Err says why part of the entry is missing: the node is out of the
	// ring or did not answer, or its rows could not be read. Empty when
	// nothing is missing.
	Err string
	// Reached reports whether the node itself answered for the entry (so
	// Loaded is known).
	Reached bool
}

// Truncated reports whether Loaded or Owned lists fewer than its total.
func (s NodeStatus) Truncated() bool {
	return len(s.Loaded) < s.LoadedTotal || len(s.Owned) < s.OwnedTotal
}

// StatusRequest is what ClusterStatus is asked.
type StatusRequest struct {
	// LocalOnly answers for this node only, without asking the others.
	LocalOnly bool
	// Addr is this node's gRPC address as the caller reached it: a node
	// without a ring knows no address of its own. Empty: unknown.
	Addr string
	// Ask gets another member's own NodeStatus (a local-only ClusterStatus
	// on it), within ctx. Nil: the others are not asked, as if each failed.
	Ask func(ctx context.Context, m ring.Member) (NodeStatus, error)
}

// ringViewer is what ClusterStatus needs of a Ring beyond the Ring
// interface: one immutable view to read members, states and partitions
// from. *ring.Ring implements it.
type ringViewer interface {
	View() *ring.View
}

// ClusterStatus answers the cluster as this node sees it: its ring, and per
// member the shows loaded and owned. This node's entry comes from its
// memory and the database; unless req.LocalOnly, each other member of the
// ring is asked through req.Ask for its own, at most statusFanOut at once
// and each within StatusMemberTimeout. A member out of the ring (dead,
// left) or that does not answer gets an entry with Err and the ownership
// rows this node reads for it. Failures never fail the call: it returns
// once every member was answered for or ctx ended (entries still missing
// then say so).
func (n *Node) ClusterStatus(ctx context.Context, req StatusRequest) ClusterStatus {
	st, inRing := n.ringStatus(req.Addr)
	self := n.localStatus(ctx, st.Self, selfAddr(st))
	if req.LocalOnly {
		st.Nodes = []NodeStatus{self}
		return st
	}
	st.Nodes = make([]NodeStatus, len(st.Members))
	sem := make(chan struct{}, statusFanOut)
	var wg sync.WaitGroup
	for i, m := range st.Members {
		if m.Name == st.Self {
			st.Nodes[i] = self
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				st.Nodes[i] = n.unreached(ctx, m.Member, fmt.Sprintf("not asked: %v", ctx.Err()))
				return
			}
			st.Nodes[i] = n.memberStatus(ctx, m.Member, inRing[m.Name], req.Ask)
		}()
	}
	wg.Wait()
	return st
}

// ringStatus returns the ring part of the status (self, version,
// partitions and members) and the names of the members in the ring, all
// from one view of it.
func (n *Node) ringStatus(addr string) (ClusterStatus, map[string]bool) {
	v, ok := n.cfg.Ring.(ringViewer)
	if !ok {
		st := ClusterStatus{Self: n.cfg.NodeID}
		m := ring.Member{Name: n.cfg.NodeID, GRPCAddr: addr, State: ring.StateAlive}
		if n.cfg.Ring != nil { // a Ring that offers no view: itself only
			m = n.cfg.Ring.Self()
			st.Self = m.Name
		}
		st.Members = []MemberStatus{{Member: m}}
		return st, map[string]bool{m.Name: true}
	}
	view := v.View()
	parts := view.Partitions() // one entry per member in the ring
	st := ClusterStatus{Self: view.Self().Name, RingVersion: view.Version()}
	inRing := make(map[string]bool, len(parts))
	for name, p := range parts {
		st.PartitionCount += p
		inRing[name] = true
	}
	for _, m := range view.Status() {
		st.Members = append(st.Members, MemberStatus{Member: m, Partitions: parts[m.Name]})
	}
	return st, inRing
}

func selfAddr(st ClusterStatus) string {
	for _, m := range st.Members {
		if m.Name == st.Self {
			return m.GRPCAddr
		}
	}
	return ""
}

// localStatus is this node's own entry: its loaded shows from memory and
// its ownership rows from the database.
func (n *Node) localStatus(ctx context.Context, name, addr string) NodeStatus {
	loaded := n.LoadedShows()
	slices.Sort(loaded)
	s := NodeStatus{Name: name, GRPCAddr: addr, LoadedTotal: len(loaded), Reached: true}
	s.Loaded = loaded[:min(len(loaded), StatusMaxShows)]
	if err := n.readOwned(ctx, &s); err != nil {
		s.Err = err.Error()
	}
	return s
}

// memberStatus is another member's entry: its own answer when it is in the
// ring and answers, else an entry saying why not.
func (n *Node) memberStatus(ctx context.Context, m ring.Member, inRing bool, ask func(context.Context, ring.Member) (NodeStatus, error)) NodeStatus {
	switch {
	case !inRing:
		return n.unreached(ctx, m, fmt.Sprintf("not asked: %s, out of the ring", m.State))
	case m.GRPCAddr == "":
		return n.unreached(ctx, m, "not asked: no gRPC address in its gossip metadata")
	case ask == nil:
		return n.unreached(ctx, m, "not asked")
	}
	actx, cancel := context.WithTimeout(ctx, StatusMemberTimeout)
	defer cancel()
	s, err := ask(actx, m)
	if err == nil && s.Name != m.Name {
		err = fmt.Errorf("%s answered as node %q", m.GRPCAddr, s.Name)
	}
	if err != nil {
		return n.unreached(ctx, m, "unreachable: "+err.Error())
	}
	s.GRPCAddr, s.Reached = m.GRPCAddr, true
	return s
}

// unreached is the entry of a member that gave no answer: why, and the
// ownership rows this node reads for it (the leases a crashed node left
// running, say).
func (n *Node) unreached(ctx context.Context, m ring.Member, why string) NodeStatus {
	s := NodeStatus{Name: m.Name, GRPCAddr: m.GRPCAddr, Err: why}
	if ctx.Err() != nil {
		return s
	}
	rctx, cancel := context.WithTimeout(ctx, StatusMemberTimeout)
	defer cancel()
	if err := n.readOwned(rctx, &s); err != nil {
		s.Err += "; " + err.Error()
	}
	return s
}

// readOwned fills s.Owned and s.OwnedTotal from the ownership rows naming
// s.Name.
func (n *Node) readOwned(ctx context.Context, s *NodeStatus) error {
	rows, err := n.store.ListOwnerships(ctx, s.Name)
	if err != nil {
		return fmt.Errorf("ownership rows: %w", err)
	}
	s.OwnedTotal = len(rows)
	s.Owned = rows[:min(len(rows), StatusMaxShows)]
	return nil
}
