package ring

import (
	"slices"
	"strings"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// View is one immutable rebuild of the ring: the members it was built from
// and the owner of every partition. Every node that builds a View from the
// same member names with the same PartitionCount, ReplicationFactor and Load
// computes the same owners. A View is never modified after it is published,
// so any number of goroutines may read it without locks; take one with
// Ring.View to ask several questions of the same ring.
type View struct {
	version uint64
	members []Member // in the ring, sorted by name; always includes this node
	status  []Member // every member known, any state, sorted by name
	owners  []int32  // partition -> index into members
	self    int      // index of this node in members
}

// xxhasher is consistent's Hasher. It must stay xxhash.Sum64: View.Partition
// computes the same hash itself so that Owner never takes consistent's lock.
type xxhasher struct{}

func (xxhasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// memberName is a member as consistent sees it: its name only, so that a
// node restarted on another address keeps its partitions.
type memberName string

func (m memberName) String() string { return string(m) }

// buildView builds the ring over members from scratch. members must be
// sorted by name, unique, and non-empty; status sorted by name. It cannot
// panic for a Config that passed Validate: Load > 1 leaves room for every
// partition, whatever the number of members.
func buildView(version uint64, selfName string, members, status []Member, cfg Config) *View {
	cm := make([]consistent.Member, len(members))
	index := make(map[string]int32, len(members))
	self := -1
	for i, m := range members {
		cm[i] = memberName(m.Name)
		index[m.Name] = int32(i)
		if m.Name == selfName {
			self = i
		}
	}
	c := consistent.New(cm, consistent.Config{
		Hasher:            xxhasher{},
		PartitionCount:    cfg.PartitionCount,
		ReplicationFactor: cfg.ReplicationFactor,
		Load:              cfg.Load,
	})
	owners := make([]int32, cfg.PartitionCount)
	for p := range owners {
		owners[p] = index[c.GetPartitionOwner(p).String()]
	}
	return &View{version: version, members: members, status: status, owners: owners, self: self}
}

// Version increases with every rebuild of the ring on this node. Versions of
// different nodes are not comparable.
func (v *View) Version() uint64 { return v.version }

// Partition returns the partition of showID, in [0, PartitionCount): the
// same partition consistent.FindPartitionID computes with xxhash.
func (v *View) Partition(showID string) int {
	return int(xxhash.Sum64String(showID) % uint64(len(v.owners)))
}

// Owner returns the member that owns showID in this view. It never locks nor
// allocates.
func (v *View) Owner(showID string) Member {
	return v.members[v.owners[v.Partition(showID)]]
}

// PartitionOwner returns the owner of partition p, which must be in
// [0, PartitionCount).
func (v *View) PartitionOwner(p int) Member {
	return v.members[v.owners[p]]
}

// Owns reports whether this node owns showID in this view.
func (v *View) Owns(showID string) bool {
	return int(v.owners[v.Partition(showID)]) == v.self
}

// Self returns this node as this view has it.
func (v *View) Self() Member { return v.members[v.self] }

// Members returns a copy of the members in the ring, sorted by name.
func (v *View) Members() []Member { return slices.Clone(v.members) }

// Status returns a copy of every member known when this view was built,
// alive, dead or left, sorted by name.
func (v *View) Status() []Member { return slices.Clone(v.status) }

// Partitions returns the number of partitions each member in the ring owns.
func (v *View) Partitions() map[string]int {
	n := make(map[string]int, len(v.members))
	for _, m := range v.members {
		n[m.Name] = 0
	}
	for _, i := range v.owners {
		n[v.members[i].Name]++
	}
	return n
}

// sameMembers reports whether a and b (sorted by name) hold the same members
// at the same addresses.
func sameMembers(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(x, y Member) bool {
		return x.Name == y.Name && x.GRPCAddr == y.GRPCAddr && x.GossipAddr == y.GossipAddr
	})
}

func byName(a, b Member) int { return strings.Compare(a.Name, b.Name) }

// PartitionCount returns the number of partitions of the ring.
func (v *View) PartitionCount() int { return len(v.owners) }

// PartitionOwners returns, for every partition, the index in Members of its
// owner: the ring's whole routing table, for clients that compute owners
// themselves (Partition tells a show's partition).
func (v *View) PartitionOwners() []int32 { return slices.Clone(v.owners) }
