package engine_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// startCluster starts n nodes "c0", "c1", ... on one fresh database, each
// joining the first's gossip address, and waits until every ring has them
// all.
func startCluster(t *testing.T, n int) ([]*tc.Node, string) {
	t.Helper()
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	nodes := []*tc.Node{tc.StartNode(t, url, tc.Options{NodeID: "c0", Cluster: &tc.ClusterOptions{}})}
	for i := 1; i < n; i++ {
		nodes = append(nodes, tc.StartNode(t, url, tc.Options{
			NodeID: fmt.Sprintf("c%d", i), Cluster: &tc.ClusterOptions{Join: []string{nodes[0].Ring.GossipAddr()}},
		}))
	}
	waitMembers(t, nodes, n)
	return nodes, url
}

// waitMembers waits until every node's ring has want members.
func waitMembers(t *testing.T, nodes []*tc.Node, want int) {
	t.Helper()
	pollUntil(t, 10*time.Second, fmt.Sprintf("every ring to have %d members", want), func() bool {
		for _, n := range nodes {
			if len(n.Ring.Members()) != want {
				return false
			}
		}
		return true
	})
}

// TestClusterRoutesToOwner: three nodes agree on every show's owner, a call
// to any node reaches the owner (which alone loads the show and owns it in
// PostgreSQL), and when a node stops gracefully its shows move to the
// others with every acknowledged hold kept.
func TestClusterRoutesToOwner(t *testing.T) {
	nodes, url := startCluster(t, 3)
	db := openDB(t, url)
	const shows = 24
	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("cs%d", i)
		nodes[i%3].CreateShow(t, ids[i], 2, 10, 0)
	}
	for _, id := range ids {
		o := nodes[0].Ring.Owner(id).Name
		for _, n := range nodes[1:] {
			if got := n.Ring.Owner(id).Name; got != o {
				t.Fatalf("show %s: owner %s by c0, %s by %s", id, o, got, n.Ring.Self().Name)
			}
		}
	}
	held := map[string]string{} // hold ID → show
	for i, id := range ids {
		for k, n := range nodes { // each node takes a hold: two of three are forwarded
			h, err := hold(t, n, id, fmt.Sprintf("u%d-%d", i, k), tc.SeatID(0, k+1))
			if err != nil {
				t.Fatalf("hold on %s through %s: %v", id, n.Ring.Self().Name, err)
			}
			held[h.GetHoldId()] = id
		}
	}
	for _, id := range ids {
		owner, _ := dbOwner(t, db, id)
		if want := nodes[0].Ring.Owner(id).Name; owner != want {
			t.Errorf("show %s: PostgreSQL names %s, the ring %s", id, owner, want)
		}
	}
	for _, n := range nodes {
		for _, id := range n.Engine.LoadedShows() {
			if o := n.Ring.Owner(string(id)).Name; o != n.Ring.Self().Name {
				t.Errorf("%s has show %s loaded, owned by %s", n.Ring.Self().Name, id, o)
			}
		}
	}

	// c2 stops: its shows move to c0 and c1, which take them at once (c2
	// released the leases) and replay its holds.
	var moved []string
	for _, id := range ids {
		if nodes[0].Ring.Owner(id).Name == "c2" {
			moved = append(moved, id)
		}
	}
	if len(moved) == 0 {
		t.Fatal("c2 owns none of the shows: the test shows nothing")
	}
	start := time.Now()
	nodes[2].Stop()
	waitMembers(t, nodes[:2], 2)
	for _, id := range moved {
		pollUntil(t, 5*time.Second, "a hold on a moved show", func() bool {
			_, err := hold(t, nodes[0], id, "after-"+id, tc.SeatID(1, 1))
			if err != nil && apiErrorOf(err).Reason != "SHOW_MOVED" {
				t.Fatalf("hold on moved show %s: %v", id, err)
			}
			return err == nil
		})
	}
	t.Logf("%d shows moved; all served again %s after the stop began", len(moved), time.Since(start).Round(time.Millisecond))
	for hold, id := range held {
		if r, ok := dbReservationOf(t, db, id, hold); !ok || r.Status != "HELD" {
			t.Errorf("hold %s of %s: %+v, %v", hold, id, r, ok)
		}
	}
	for _, id := range moved {
		owner, _ := dbOwner(t, db, id)
		if want := nodes[0].Ring.Owner(id).Name; owner != want || owner == "c2" {
			t.Errorf("moved show %s: PostgreSQL names %s, the ring %s", id, owner, want)
		}
		n := nodes[0]
		if n.Ring.Owner(id).Name == "c1" {
			n = nodes[1]
		}
		if !slices.Contains(n.Engine.LoadedShows(), ar.ShowID(id)) {
			t.Errorf("moved show %s is not loaded on its new owner", id)
		}
		checkSeatMapEqualsDB(t, n, db, id)
	}
}

// TestClusterMetrics: the ring's members, forwarded calls, ownership takes
// and the shows owned are counted.
func TestClusterMetrics(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	var show string
	for i := 0; show == ""; i++ {
		if id := fmt.Sprintf("cm%d", i); nodes[0].Ring.Owner(id).Name == "c0" {
			show = id
		}
	}
	nodes[0].CreateShow(t, show, 1, 10, 0)
	if _, err := hold(t, nodes[1], show, "u", "A-1"); err != nil { // through c1: forwarded to c0
		t.Fatal(err)
	}
	pollUntil(t, 5*time.Second, "the gauges and counters", func() bool {
		m0, m1 := scrape(t, nodes[0]), scrape(t, nodes[1])
		members0, _ := sample(m0, "boxoffice_ring_members")
		members1, _ := sample(m1, "boxoffice_ring_members")
		fwd, _ := sample(m1, "boxoffice_forwarded_calls_total")
		takes, _ := sample(m0, "boxoffice_ownership_events_total", `event="take"`)
		owned, _ := sample(m0, "boxoffice_shows_owned")
		return members0 == 2 && members1 == 2 && fwd == 1 && takes == 1 && owned == 1
	})
}

// TestLoadDuringRingChangeHandsOff: shows whose loads are in flight on
// their owner when a joining node takes them over are handed off once the
// loads end: the old owner unloads them and releases their leases, and the
// new owner serves them at once. Before, a load installed its show after
// the ring change's hand-off had looked at the loaded shows, and the old
// owner kept it, renewing its lease, so the new owner's loads waited for
// AcquireWait and then failed SHOW_MOVED until the next ring change.
func TestLoadDuringRingChangeHandsOff(t *testing.T) {
	const candidates = 24
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	db := openDB(t, url)
	opts := func(id string, join ...string) tc.Options {
		return tc.Options{
			NodeID:  id,
			Cluster: &tc.ClusterOptions{Join: join},
			// Every candidate's load waits at once, within its query timeout.
			Store:  persistence.Config{MaxConns: 2 * candidates, QueryTimeout: 30 * time.Second},
			Engine: func(c *engine.Config) { c.MaxConcurrentLoads = 2 * candidates },
		}
	}
	c0 := tc.StartNode(t, url, opts("c0"))
	c1 := tc.StartNode(t, url, opts("c1", c0.Ring.GossipAddr()))
	waitMembers(t, []*tc.Node{c0, c1}, 2)
	var ids []string
	for i := 0; len(ids) < candidates; i++ {
		if id := fmt.Sprintf("r%03d", i); c0.Ring.Owner(id).Name == "c0" {
			c0.CreateShow(t, id, 1, 10, 0)
			ids = append(ids, id)
		}
	}

	// The loads read reservations, which a transaction of the test locks.
	ctx := context.Background()
	lock, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx) //nolint:errcheck // a no-op once rolled back
	if _, err := lock.Exec(ctx, `LOCK TABLE reservations IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	loads := make(chan error, candidates)
	for _, id := range ids {
		go func() {
			ctx, cancel := context.WithTimeout(tc.Ctx(ctx), 30*time.Second)
			defer cancel()
			_, err := c0.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: id})
			loads <- err
		}()
	}
	pollUntil(t, 10*time.Second, "every load to wait for the lock", func() bool {
		var waiting int
		err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query ILIKE '%FROM reservations%'`).Scan(&waiting)
		return err == nil && waiting >= candidates
	})
	c2 := tc.StartNode(t, url, opts("c2", c0.Ring.GossipAddr()))
	nodes := []*tc.Node{c0, c1, c2}
	waitMembers(t, nodes, 3)
	moved := map[string]string{} // show -> its new owner
	for _, id := range ids {
		if o := c0.Ring.Owner(id).Name; o != "c0" {
			moved[id] = o
		}
	}
	if len(moved) == 0 {
		t.Fatalf("none of %d shows moved when c2 joined", candidates)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range ids {
		if err := <-loads; err != nil && apiErrorOf(err).Reason != "SHOW_MOVED" {
			t.Errorf("a seat-map read whose load was in flight across the ring change: %v", err)
		}
	}

	pollUntil(t, 10*time.Second, "the moved shows to leave c0", func() bool {
		loaded := c0.Engine.LoadedShows()
		for id := range moved {
			if slices.Contains(loaded, ar.ShowID(id)) {
				return false
			}
		}
		return true
	})
	for id, owner := range moved {
		// Within less than AcquireWait: the old owner released the lease.
		ctx, cancel := context.WithTimeout(tc.Ctx(ctx), 2*time.Second)
		_, err := nodeByName(t, nodes, owner).Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: id})
		cancel()
		if err != nil {
			t.Errorf("show %s on its new owner %s: %v", id, owner, err)
			continue
		}
		if got, _ := dbOwner(t, db, id); got != owner {
			t.Errorf("show %s: PostgreSQL names %s its owner, want %s", id, got, owner)
		}
	}
	t.Logf("%d of %d shows moved to c2 with their loads in flight", len(moved), candidates)
}
