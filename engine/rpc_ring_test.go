package engine_test

import (
	"testing"

	"github.com/cespare/xxhash/v2"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// TestGetRing: every node of a cluster answers the same routing table, and
// a show's owner computed from it as the proto documents (XXH64 of the
// show ID, modulo the partitions) is the ring's owner; a node without a
// cluster answers no partitions.
func TestGetRing(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	var first *pb.GetRingResponse
	for _, n := range nodes {
		resp, err := n.Reservations.GetRing(tc.Ctx(t.Context()), &pb.GetRingRequest{})
		if err != nil {
			t.Fatalf("GetRing on %s: %v", n.Ring.Self().Name, err)
		}
		if resp.GetSelf() != n.Ring.Self().Name || len(resp.GetMembers()) != 3 || len(resp.GetPartitionOwners()) != n.Ring.View().PartitionCount() {
			t.Fatalf("GetRing on %s: self %s, %d members, %d partitions", n.Ring.Self().Name, resp.GetSelf(), len(resp.GetMembers()), len(resp.GetPartitionOwners()))
		}
		if first == nil {
			first = resp
			continue
		}
		for p, o := range resp.GetPartitionOwners() {
			if resp.GetMembers()[o].GetName() != first.GetMembers()[first.GetPartitionOwners()[p]].GetName() {
				t.Fatalf("partition %d: %s says %s owns it, %s says %s", p, resp.GetSelf(), resp.GetMembers()[o].GetName(), first.GetSelf(), first.GetMembers()[first.GetPartitionOwners()[p]].GetName())
			}
		}
	}
	for i := range 500 {
		show := "ring-show-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		m := first.GetMembers()[first.GetPartitionOwners()[xxhash.Sum64String(show)%uint64(len(first.GetPartitionOwners()))]]
		want := nodes[0].Ring.Owner(show)
		if m.GetName() != want.Name || m.GetGrpcAddr() != want.GRPCAddr {
			t.Fatalf("show %s: GetRing routes to %s at %s, the ring names %s at %s", show, m.GetName(), m.GetGrpcAddr(), want.Name, want.GRPCAddr)
		}
	}

	solo := tc.StartNode(t, pgclustertest.Shared(t), tc.Options{NodeID: "alone"})
	resp, err := solo.Reservations.GetRing(tc.Ctx(t.Context()), &pb.GetRingRequest{})
	if err != nil || resp.GetSelf() != "alone" || len(resp.GetPartitionOwners()) != 0 {
		t.Fatalf("GetRing without a cluster: %v, %v", resp, err)
	}
}
