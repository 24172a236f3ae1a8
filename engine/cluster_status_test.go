package engine_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/ring"
)

// clusterStatus calls ClusterStatus on n with the admin token.
func clusterStatus(t testing.TB, n *tc.Node, localOnly bool) *pb.ClusterStatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := n.Admin.ClusterStatus(tc.AdminCtx(ctx), &pb.ClusterStatusRequest{LocalOnly: localOnly})
	if err != nil {
		t.Fatalf("ClusterStatus: %v", err)
	}
	return resp
}

// loadShows creates count shows prefix0, prefix1, ... through the nodes in
// turn and holds a seat of each through nodes[0], so that each is loaded on
// its owner. It returns the show IDs by owner name.
func loadShows(t *testing.T, nodes []*tc.Node, prefix string, count int) map[string][]string {
	t.Helper()
	byOwner := map[string][]string{}
	for i := range count {
		id := fmt.Sprintf("%s%02d", prefix, i)
		nodes[i%len(nodes)].CreateShow(t, id, 1, 5, 0)
		if _, err := hold(t, nodes[0], id, "u-"+id, tc.SeatID(0, 1)); err != nil {
			t.Fatalf("hold on %s: %v", id, err)
		}
		o := nodes[0].Ring.Owner(id).Name
		byOwner[o] = append(byOwner[o], id)
	}
	return byOwner
}

func nodeEntry(resp *pb.ClusterStatusResponse, name string) *pb.NodeStatus {
	for _, ns := range resp.GetNodes() {
		if ns.GetName() == name {
			return ns
		}
	}
	return nil
}

func memberEntry(resp *pb.ClusterStatusResponse, name string) *pb.ClusterMember {
	for _, m := range resp.GetMembers() {
		if m.GetName() == name {
			return m
		}
	}
	return nil
}

// checkOwned checks that ns lists every show of want as owned, with an
// epoch of at least 1 and a lease still running.
func checkOwned(t *testing.T, ns *pb.NodeStatus, want []string) {
	t.Helper()
	owned := map[string]*pb.OwnedShow{}
	for _, o := range ns.GetOwnedShows() {
		owned[o.GetShowId()] = o
	}
	for _, id := range want {
		o := owned[id]
		switch {
		case o == nil:
			t.Errorf("%s: show %s not among the owned shows %v", ns.GetName(), id, ns.GetOwnedShows())
		case o.GetEpoch() < 1:
			t.Errorf("%s: show %s owned at epoch %d", ns.GetName(), id, o.GetEpoch())
		case o.GetLeaseRemaining().AsDuration() <= 0:
			t.Errorf("%s: show %s owned with lease remaining %v", ns.GetName(), id, o.GetLeaseRemaining().AsDuration())
		}
	}
	if int(ns.GetOwnedTotal()) != len(ns.GetOwnedShows()) || ns.GetTruncated() {
		t.Errorf("%s: owned_total %d, %d listed, truncated %v", ns.GetName(), ns.GetOwnedTotal(), len(ns.GetOwnedShows()), ns.GetTruncated())
	}
}

// TestClusterStatus: asked through one node of three, ClusterStatus lists
// the three members alive with their addresses and partitions (summing to
// the ring's), and for each node the shows the ring gives it that were used
// (loaded in its memory, owned in PostgreSQL with a running lease), read
// by asking the other two with the caller's admin token. Local only, a node
// answers for itself; without the admin token the call is refused.
func TestClusterStatus(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	byOwner := loadShows(t, nodes, "st", 18)

	resp := clusterStatus(t, nodes[1], false)
	if resp.GetSelf() != "c1" || resp.GetRingVersion() == 0 {
		t.Errorf("self %q, ring version %d; want c1 and a version", resp.GetSelf(), resp.GetRingVersion())
	}
	if got := resp.GetPartitionCount(); got != ring.DefaultPartitionCount {
		t.Errorf("partition count %d, want %d", got, ring.DefaultPartitionCount)
	}
	if len(resp.GetMembers()) != 3 || len(resp.GetNodes()) != 3 {
		t.Fatalf("%d members, %d nodes; want 3 and 3: %v", len(resp.GetMembers()), len(resp.GetNodes()), resp)
	}
	parts, sum := nodes[1].Ring.Partitions(), 0
	for i, n := range nodes {
		name := n.Ring.Self().Name
		m := resp.GetMembers()[i]
		if m.GetName() != name || m.GetState() != pb.MemberState_MEMBER_STATE_ALIVE ||
			m.GetGrpcAddr() != n.Server.GRPCAddr() || m.GetGossipAddr() != n.Ring.GossipAddr() {
			t.Errorf("member %d: %v; want %s alive at %s, gossip %s", i, m, name, n.Server.GRPCAddr(), n.Ring.GossipAddr())
		}
		if int(m.GetPartitions()) != parts[name] || m.GetPartitions() == 0 {
			t.Errorf("member %s: %d partitions, the ring gives it %d", name, m.GetPartitions(), parts[name])
		}
		sum += int(m.GetPartitions())

		ns := resp.GetNodes()[i]
		want := slices.Sorted(slices.Values(byOwner[name]))
		if ns.GetName() != name || ns.GetGrpcAddr() != n.Server.GRPCAddr() || ns.GetError() != "" || !ns.GetReached() {
			t.Errorf("node %d: %s at %s, error %q; want %s at %s", i, ns.GetName(), ns.GetGrpcAddr(), ns.GetError(), name, n.Server.GRPCAddr())
		}
		if !slices.Equal(ns.GetLoadedShows(), want) || int(ns.GetLoadedTotal()) != len(want) {
			t.Errorf("%s: loaded %v (total %d), the ring gives it %v", name, ns.GetLoadedShows(), ns.GetLoadedTotal(), want)
		}
		checkOwned(t, ns, want)
	}
	if sum != ring.DefaultPartitionCount {
		t.Errorf("partitions sum to %d, want %d", sum, ring.DefaultPartitionCount)
	}

	t.Run("local only", func(t *testing.T) {
		resp := clusterStatus(t, nodes[2], true)
		if resp.GetSelf() != "c2" || len(resp.GetMembers()) != 3 || len(resp.GetNodes()) != 1 || resp.GetNodes()[0].GetName() != "c2" {
			t.Fatalf("local only on c2: self %q, %d members, nodes %v; want c2, 3, c2 only", resp.GetSelf(), len(resp.GetMembers()), resp.GetNodes())
		}
		ns := resp.GetNodes()[0]
		want := slices.Sorted(slices.Values(byOwner["c2"]))
		if !slices.Equal(ns.GetLoadedShows(), want) || ns.GetError() != "" {
			t.Errorf("c2 alone: loaded %v, error %q; want %v", ns.GetLoadedShows(), ns.GetError(), want)
		}
		checkOwned(t, ns, want)
	})

	t.Run("admin token required", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for _, c := range []struct {
			name string
			ctx  context.Context
			want codes.Code
		}{
			{"no token", ctx, codes.Unauthenticated},
			{"wrong token", metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer nope"), codes.Unauthenticated},
			// The server refuses the service token on every admin RPC
			// with PermissionDenied ADMIN_ONLY.
			{"service token", tc.Ctx(ctx), codes.PermissionDenied},
		} {
			_, err := nodes[0].Admin.ClusterStatus(c.ctx, &pb.ClusterStatusRequest{})
			if status.Code(err) != c.want {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
	})
}

// TestClusterStatusMemberDown: with one member of three crashed,
// ClusterStatus still answers at once, listing the two others in full and
// the crashed one with an error and the ownership rows it left in
// PostgreSQL; once gossip declares it dead it is listed dead, not asked.
func TestClusterStatusMemberDown(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	byOwner := loadShows(t, nodes, "sd", 18)
	if len(byOwner["c2"]) == 0 {
		t.Fatal("c2 owns none of the shows: the test shows nothing")
	}
	nodes[2].Crash()

	check := func(t *testing.T, resp *pb.ClusterStatusResponse) *pb.NodeStatus {
		t.Helper()
		for _, name := range []string{"c0", "c1"} {
			ns := nodeEntry(resp, name)
			if ns == nil || ns.GetError() != "" || !ns.GetReached() {
				t.Fatalf("%s: %v; want an entry reached, without error", name, ns)
			}
			want := slices.Sorted(slices.Values(byOwner[name]))
			if !slices.Equal(ns.GetLoadedShows(), want) {
				t.Errorf("%s: loaded %v, want %v", name, ns.GetLoadedShows(), want)
			}
		}
		down := nodeEntry(resp, "c2")
		if down == nil || down.GetError() == "" || down.GetReached() || len(down.GetLoadedShows()) != 0 {
			t.Fatalf("c2: %v; want an entry with an error and no loaded shows", down)
		}
		var owned []string
		for _, o := range down.GetOwnedShows() {
			owned = append(owned, o.GetShowId())
		}
		if want := slices.Sorted(slices.Values(byOwner["c2"])); !slices.Equal(owned, want) {
			t.Errorf("c2: owned %v, want the rows it left, %v", owned, want)
		}
		return down
	}

	start := time.Now()
	resp := clusterStatus(t, nodes[0], false)
	if d := time.Since(start); d > engine.StatusMemberTimeout+3*time.Second {
		t.Errorf("ClusterStatus took %v with a member down", d)
	}
	down := check(t, resp)
	t.Logf("right after the crash: c2 %v: %s", memberEntry(resp, "c2").GetState(), down.GetError())

	waitMembers(t, nodes[:2], 2)
	resp = clusterStatus(t, nodes[0], false)
	down = check(t, resp)
	if m := memberEntry(resp, "c2"); m.GetState() != pb.MemberState_MEMBER_STATE_DEAD || m.GetPartitions() != 0 {
		t.Errorf("c2 after detection: %v; want dead with no partitions", m)
	}
	if !strings.Contains(down.GetError(), "dead") {
		t.Errorf("c2's error %q does not say it is dead", down.GetError())
	}
	sum := 0
	for _, m := range resp.GetMembers() {
		sum += int(m.GetPartitions())
	}
	if sum != ring.DefaultPartitionCount {
		t.Errorf("partitions of the two left sum to %d, want %d", sum, ring.DefaultPartitionCount)
	}
}

// TestClusterStatusMuteMember: a ring member whose gRPC address accepts
// connections but never answers holds ClusterStatus up for about
// StatusMemberTimeout only, and is listed with the timeout as its error.
func TestClusterStatusMuteMember(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() { // accept and say nothing
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	mute, err := ring.New(ring.Config{Name: "mute", GRPCAddr: lis.Addr().String(), Join: []string{nodes[0].Ring.GossipAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mute.Shutdown() })
	waitMembers(t, nodes, 3)

	start := time.Now()
	resp := clusterStatus(t, nodes[0], false)
	d := time.Since(start)
	if d < engine.StatusMemberTimeout-100*time.Millisecond || d > engine.StatusMemberTimeout+3*time.Second {
		t.Errorf("ClusterStatus took %v with a mute member; want about %v", d, engine.StatusMemberTimeout)
	}
	if ns := nodeEntry(resp, "c1"); ns == nil || ns.GetError() != "" {
		t.Errorf("c1: %v; want an entry without error", ns)
	}
	ns := nodeEntry(resp, "mute")
	if ns == nil || ns.GetReached() || !strings.Contains(ns.GetError(), codes.DeadlineExceeded.String()) {
		t.Errorf("mute: %v; want an error naming %v", ns, codes.DeadlineExceeded)
	}
	if m := memberEntry(resp, "mute"); m.GetState() != pb.MemberState_MEMBER_STATE_ALIVE || m.GetGrpcAddr() != lis.Addr().String() {
		t.Errorf("mute member: %v", m)
	}
}

// TestClusterStatusAlone: a node without a ring answers itself as the only
// member, at the address the call reached, with no partitions.
func TestClusterStatusAlone(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "alone-status"})
	n.CreateShow(t, "alone-st1", 1, 5, 0)
	if _, err := hold(t, n, "alone-st1", "u1", tc.SeatID(0, 1)); err != nil {
		t.Fatal(err)
	}
	resp := clusterStatus(t, n, false)
	if resp.GetSelf() != "alone-status" || resp.GetRingVersion() != 0 || resp.GetPartitionCount() != 0 {
		t.Errorf("self %q, ring version %d, partitions %d; want alone-status, 0, 0", resp.GetSelf(), resp.GetRingVersion(), resp.GetPartitionCount())
	}
	if len(resp.GetMembers()) != 1 || len(resp.GetNodes()) != 1 {
		t.Fatalf("members %v, nodes %v; want one of each", resp.GetMembers(), resp.GetNodes())
	}
	if m := resp.GetMembers()[0]; m.GetName() != "alone-status" || m.GetGrpcAddr() != n.Server.GRPCAddr() || m.GetState() != pb.MemberState_MEMBER_STATE_ALIVE {
		t.Errorf("member %v; want alone-status alive at %s", m, n.Server.GRPCAddr())
	}
	ns := resp.GetNodes()[0]
	if !slices.Equal(ns.GetLoadedShows(), []string{"alone-st1"}) || ns.GetError() != "" {
		t.Errorf("node %v; want alone-st1 loaded, no error", ns)
	}
	checkOwned(t, ns, []string{"alone-st1"})
}
