package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/ring"
)

// ownerChange is a show's ownership row as a watcher of PostgreSQL saw it
// change.
type ownerChange struct {
	at    time.Time
	owner string // "" once released
	epoch int64
}

// watchOwners polls the ownership rows of shows every 20 ms until the
// returned function is called, which returns each show's history of
// changes (the first entry is the row as first read). The function may be
// called more than once.
func watchOwners(t *testing.T, db *pgxpool.Pool, shows []string) func() map[string][]ownerChange {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hist := map[string][]ownerChange{} // written by the watcher until done is closed
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			rows, _ := db.Query(ctx, `SELECT show_id, owner_node, epoch FROM show_owners WHERE show_id = ANY($1)`, shows)
			var show, owner string
			var epoch int64
			now := time.Now()
			_, err := pgx.ForEachRow(rows, []any{&show, &owner, &epoch}, func() error {
				h := hist[show]
				if len(h) == 0 || h[len(h)-1].owner != owner || h[len(h)-1].epoch != epoch {
					hist[show] = append(h, ownerChange{at: now, owner: owner, epoch: epoch})
				}
				return nil
			})
			if err != nil && ctx.Err() == nil {
				t.Errorf("watching the ownership rows: %v", err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() map[string][]ownerChange {
		cancel()
		<-done
		return hist
	}
}

// TestClusterPartition cuts one node of four off from gossip (its
// memberlist transport drops everything) while every node still reaches
// PostgreSQL, with load on the cut node's shows through both sides. Each
// side comes to believe it owns those shows, yet PostgreSQL has one node
// committing per epoch, and the lease keeps the shows from moving back and
// forth: a show changes epoch at most twice (to the majority and back, if
// the cut node's lease ever ran out; normally not at all). After the
// partition heals the rings agree again, every acknowledged change is in
// PostgreSQL and every owner's seat map equals it.
func TestClusterPartition(t *testing.T) {
	const (
		shows     = 20
		partition = 3 * time.Second // load while cut off, after detection
	)
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	db := openDB(t, url)
	c0 := tc.StartNode(t, url, tc.Options{NodeID: "c0", Cluster: &tc.ClusterOptions{}})
	join := []string{c0.Ring.GossipAddr()}
	nodes := []*tc.Node{c0}
	for _, name := range []string{"c1", "c2"} {
		nodes = append(nodes, tc.StartNode(t, url, tc.Options{NodeID: name, Cluster: &tc.ClusterOptions{Join: join}}))
	}
	var cut *ring.PartitionableTransport
	c3 := tc.StartNode(t, url, tc.Options{NodeID: "c3", Cluster: &tc.ClusterOptions{Join: join, Ring: func(rc *ring.Config) {
		tr, err := ring.NewPartitionableTransport("127.0.0.1", 0)
		if err != nil {
			t.Fatalf("partitionable transport: %v", err)
		}
		rc.Transport = tr
		cut = tr
	}}})
	nodes = append(nodes, c3)
	majority := nodes[:3]

	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("pt%02d", i)
		nodes[i%4].CreateShow(t, ids[i], 3, 10, 0)
	}
	owners := waitConverged(t, nodes, ids, 20*time.Second)
	var cutShows, otherShows []string
	for _, s := range ids {
		getSeatMap(t, c0, s) // loads it on its owner
		if owners[s] == "c3" {
			cutShows = append(cutShows, s)
		} else {
			otherShows = append(otherShows, s)
		}
	}
	if len(cutShows) < 2 {
		t.Fatalf("c3 owns %d of the shows: the test shows too little", len(cutShows))
	}
	t.Logf("c3 owns %v", cutShows)
	initial := map[string]int64{}
	for _, s := range ids {
		o, e := dbOwner(t, db, s)
		if o != owners[s] {
			t.Fatalf("show %s: PostgreSQL names %s, the ring %s", s, o, owners[s])
		}
		initial[s] = e
	}
	history := watchOwners(t, db, ids)
	defer history()

	l := newClusterLoad(t)
	for _, n := range nodes {
		l.add(n)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	minority := func(name string) bool { return name == "c3" }
	majoritySide := func(name string) bool { return name != "c3" }
	seats := allSeats(3, 10)
	// Load on the cut node's shows through both sides, and on two of the
	// others through the cut node (which will think it owns them too).
	stops := []func(){
		l.startWorkers("cut-min", 3, seed, cutShows, seats, minority, 10*time.Millisecond),
		l.startWorkers("cut-maj", 3, seed+1, cutShows, seats, majoritySide, 10*time.Millisecond),
		l.startWorkers("other-min", 1, seed+2, otherShows[:2], seats, minority, 10*time.Millisecond),
		l.startWorkers("other-maj", 2, seed+3, otherShows, seats, majoritySide, 10*time.Millisecond),
	}
	stopAll := func() {
		for _, stop := range stops {
			stop()
		}
	}
	defer stopAll()
	pollUntil(t, 10*time.Second, "acknowledged holds before the partition", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.holds) >= 40
	})

	blockedAt := time.Now()
	cut.Block()
	pollUntil(t, 15*time.Second, "the majority to drop c3 and c3 to be alone", func() bool {
		for _, n := range majority {
			if len(n.Ring.Members()) != 3 {
				return false
			}
		}
		return len(c3.Ring.Members()) == 1
	})
	splitAt := time.Now()
	t.Logf("partition: both sides dropped the other %v after the cut", splitAt.Sub(blockedAt).Round(time.Millisecond))
	for _, s := range cutShows {
		if o := c3.Ring.Owner(s).Name; o != "c3" {
			t.Errorf("cut off, c3 names %s the owner of %s", o, s)
		}
		if o := c0.Ring.Owner(s).Name; o == "c3" {
			t.Errorf("the majority still names c3 the owner of %s", s)
		}
	}
	for _, s := range otherShows {
		if o := c3.Ring.Owner(s).Name; o != "c3" {
			t.Errorf("cut off and alone, c3 names %s the owner of %s", o, s)
		}
	}
	pollUntil(t, partition+5*time.Second, "the partition to last", func() bool { return time.Since(splitAt) > partition })
	marks := map[string]int64{}
	for _, s := range ids {
		marks[s] = dbLastEventID(t, db, s)
	}
	// Who committed while both sides believed they owned the cut node's
	// shows.
	var during []string
	for _, s := range cutShows {
		by := map[string]int{}
		for _, e := range dbEvents(t, db, s) {
			if e.At.After(splitAt) && e.ID <= marks[s] {
				by[e.Node]++
			}
		}
		during = append(during, fmt.Sprintf("%s %v", s, by))
	}
	t.Logf("events on c3's shows while split: %s", strings.Join(during, "; "))

	healAt := time.Now()
	cut.Unblock()
	final := waitConverged(t, nodes, ids, 20*time.Second)
	t.Logf("healed: the rings agreed %v after the cut ended", time.Since(healAt).Round(time.Millisecond))
	for _, s := range ids {
		if final[s] != owners[s] {
			t.Errorf("show %s: owner %s after healing, %s before the cut", s, final[s], owners[s])
		}
	}
	pollUntil(t, 10*time.Second, "the load to run on after healing", func() bool { return time.Since(healAt) > 2*time.Second })
	stopAll()

	byReason, _, _ := l.retriedSummary()
	l.mu.Lock()
	t.Logf("%d holds acknowledged; final refusals %s; retried answers %v", len(l.holds), maps2str(l.refusals), byReason)
	l.mu.Unlock()
	l.checkDB(t, db, ids)
	checkOwnersSettled(t, nodes, db, final)

	// Ownership did not flap: a show's epoch rose at most twice (to the
	// majority and back), and each epoch's events are from the node that
	// took it.
	hist := history()
	for _, s := range ids {
		h := hist[s]
		took := map[int64]string{}
		var line []string
		for _, c := range h {
			if c.owner != "" {
				took[c.epoch] = c.owner
			}
			line = append(line, fmt.Sprintf("%s@%d(%+dms)", orDash(c.owner), c.epoch, c.at.Sub(blockedAt).Milliseconds()))
		}
		_, e := dbOwner(t, db, s)
		if d := e - initial[s]; d > 2 {
			t.Errorf("show %s: epoch rose %d times (%d → %d); its ownership flapped: %s", s, d, initial[s], e, strings.Join(line, " "))
		} else if d > 0 || slices.Contains(cutShows, s) {
			t.Logf("show %s (owner %s): epoch %d → %d: %s", s, owners[s], initial[s], e, strings.Join(line, " "))
		}
		checkEventsFenced(t, db, s, took)
	}
	epochsSeen := map[string][]int64{}
	for _, s := range ids {
		for _, e := range dbEvents(t, db, s) {
			if !slices.Contains(epochsSeen[s], e.Epoch) {
				epochsSeen[s] = append(epochsSeen[s], e.Epoch)
			}
		}
		sort.Slice(epochsSeen[s], func(i, j int) bool { return epochsSeen[s][i] < epochsSeen[s][j] })
		if len(epochsSeen[s]) > 3 {
			t.Errorf("show %s has events of %d epochs %v: more than one move there and back", s, len(epochsSeen[s]), epochsSeen[s])
		}
	}
}

// orDash returns s, or "-" if s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
