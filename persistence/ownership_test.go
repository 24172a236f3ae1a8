package persistence_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/persistence"
)

// Two stores with different node IDs on one database act as two nodes; two
// with the same node ID as one node.

// openNode opens a store on url as node with the given lease.
func openNode(t testing.TB, url, node string, lease time.Duration) *persistence.Store {
	t.Helper()
	return openStore(t, url, func(c *persistence.Config) {
		c.NodeID = node
		c.LeaseDuration = lease
		c.MaxConns = 4
	})
}

// waitFor polls cond until it holds, failing t after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// acquireWithin retries s's AcquireShow of show until it succeeds, failing t
// after d or on an error other than ErrLeased; it returns the epoch.
func acquireWithin(t testing.TB, s *persistence.Store, show string, d time.Duration) int64 {
	t.Helper()
	var epoch int64
	waitFor(t, d, "acquire "+show, func() bool {
		var err error
		epoch, err = s.AcquireShow(context.Background(), show)
		if err != nil && !errors.Is(err, persistence.ErrLeased) {
			t.Fatalf("acquire %s: %v, want success or ErrLeased", show, err)
		}
		return err == nil
	})
	return epoch
}

// leased fails t unless err is a *LeasedError naming owner at epoch (any
// epoch if epoch is 0) with a lease of more than min and at most max to run.
func leased(t testing.TB, err error, owner string, epoch int64, min, max time.Duration) {
	t.Helper()
	var le *persistence.LeasedError
	if !errors.Is(err, persistence.ErrLeased) || !errors.As(err, &le) {
		t.Fatalf("error %v, want a *LeasedError", err)
	}
	if le.Owner != owner || (epoch != 0 && le.Epoch != epoch) || le.Remaining <= min || le.Remaining > max {
		t.Fatalf("%+v, want owner %s, epoch %d, remaining in (%v, %v]", *le, owner, epoch, min, max)
	}
}

func ownerOf(t testing.TB, s *persistence.Store, show string) persistence.OwnerInfo {
	t.Helper()
	o, err := s.Owner(context.Background(), show)
	if err != nil {
		t.Fatalf("owner of %s: %v", show, err)
	}
	return o
}

// TestLeaseConfig: LeaseDuration defaults to 1.5 s; a negative one is
// refused.
func TestLeaseConfig(t *testing.T) {
	url := "postgres://nobody@127.0.0.1:1/nodb"
	cfg := persistence.Config{URL: url, NodeID: "n", LeaseDuration: -time.Second}
	if s, err := persistence.Open(context.Background(), cfg); err == nil {
		s.Close(context.Background())
		t.Fatal("Open with a negative LeaseDuration succeeded")
	}
	if got := openStore(t, url, nil).LeaseDuration(); got != 1500*time.Millisecond {
		t.Fatalf("default LeaseDuration %v, want 1.5s", got)
	}
	if got := openNode(t, url, "n", time.Minute).LeaseDuration(); got != time.Minute {
		t.Fatalf("LeaseDuration %v, want 1m", got)
	}
}

// TestLeaseTake: the first take is epoch 1 and a reload by the same node
// raises the epoch; another node is refused while the lease runs, and takes
// the show once it has run out, fencing the first node's writes.
func TestLeaseTake(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	const lease = 300 * time.Millisecond
	s1 := openNode(t, url, "node-1", lease)
	s2 := openNode(t, url, "node-2", lease)

	if e := ownShow(t, s1, "s"); e != 1 {
		t.Fatalf("first take: epoch %d, want 1", e)
	}
	start := time.Now()
	e2, err := s1.AcquireShow(ctx, "s")
	if err != nil || e2 != 2 {
		t.Fatalf("reload by the owner: %d, %v; want epoch 2", e2, err)
	}
	if o := ownerOf(t, s1, "s"); o.Node != "node-1" || o.Epoch != 2 || o.LeaseRemaining <= 0 || o.LeaseRemaining > lease {
		t.Fatalf("after the reload: %+v", o)
	}
	write(t, s1, holdM(e2, "s", "s:r1", "u1", t0, "A-1"))

	_, err = s2.AcquireShow(ctx, "s")
	leased(t, err, "node-1", 2, 0, lease)
	if o := ownerOf(t, s1, "s"); o.Node != "node-1" || o.Epoch != 2 {
		t.Fatalf("a refused take changed the row: %+v", o)
	}

	e3 := acquireWithin(t, s2, "s", 10*time.Second)
	if elapsed := time.Since(start); elapsed < lease {
		t.Fatalf("node-2 took the show %v after node-1's take, within its %v lease", elapsed, lease)
	}
	if e3 != 3 {
		t.Fatalf("take after the lease ran out: epoch %d, want 3", e3)
	}
	if err := s1.Write(holdM(e2, "s", "s:r2", "u2", t0, "A-2")); !errors.Is(err, persistence.ErrNotOwner) {
		t.Fatalf("node-1's write at epoch %d after node-2's take: %v, want ErrNotOwner", e2, err)
	}
	write(t, s2, holdM(e3, "s", "s:r3", "u3", t0, "A-3"))
	_, err = s1.AcquireShow(ctx, "s")
	leased(t, err, "node-2", 3, 0, lease)

	t.Run("Remaining", func(t *testing.T) {
		const long = time.Minute
		l1 := openNode(t, url, "node-1", long)
		l2 := openNode(t, url, "node-2", long)
		ownShow(t, l1, "long")
		_, err := l2.AcquireShow(ctx, "long")
		leased(t, err, "node-1", 1, long-30*time.Second, long)
	})
}

// TestReleaseEndsLease: a released show is taken by another node at once,
// long before its lease would have run out; a release at another epoch
// releases nothing.
func TestReleaseEndsLease(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	s1 := openNode(t, url, "node-1", time.Hour)
	s2 := openNode(t, url, "node-2", time.Hour)
	e := ownShow(t, s1, "s")

	if err := s1.ReleaseShows(ctx, []persistence.Ownership{{ShowID: "s", Epoch: e + 1}}); err != nil {
		t.Fatal(err)
	}
	_, err := s2.AcquireShow(ctx, "s")
	leased(t, err, "node-1", e, 59*time.Minute, time.Hour)

	if err := s1.ReleaseShows(ctx, []persistence.Ownership{{ShowID: "s", Epoch: e}}); err != nil {
		t.Fatal(err)
	}
	if o := ownerOf(t, s1, "s"); o.Node != "" || o.Epoch != e || o.LeaseRemaining != 0 {
		t.Fatalf("released: %+v, want no owner, epoch %d, no lease", o, e)
	}
	if got, err := s2.AcquireShow(ctx, "s"); err != nil || got != e+1 {
		t.Fatalf("take of a released show: %d, %v; want epoch %d at once", got, err, e+1)
	}
	_, err = s1.AcquireShow(ctx, "s")
	leased(t, err, "node-2", e+1, 59*time.Minute, time.Hour)
}

// TestRenewLeases: a renewal keeps shows, changes no epoch, revives a lease
// that ran out if nobody took the show, and reports the shows this node no
// longer owns.
func TestRenewLeases(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	const lease = 300 * time.Millisecond
	s1 := openNode(t, url, "node-1", lease)
	s2 := openNode(t, url, "node-2", lease)
	// long is node-1 too, renewing for an hour.
	long := openNode(t, url, "node-1", time.Hour)

	renew := func(t *testing.T, s *persistence.Store, shows ...persistence.Ownership) []persistence.Ownership {
		t.Helper()
		lost, err := s.RenewLeases(ctx, shows)
		if err != nil {
			t.Fatalf("renew %v: %v", shows, err)
		}
		return lost
	}

	t.Run("Empty", func(t *testing.T) {
		if lost := renew(t, s1); lost != nil {
			t.Fatalf("lost %v of none", lost)
		}
	})

	t.Run("Renews", func(t *testing.T) {
		a := persistence.Ownership{ShowID: "a", Epoch: ownShow(t, s1, "a")}
		b := persistence.Ownership{ShowID: "b", Epoch: ownShow(t, s1, "b")}
		if e, err := s1.AcquireShow(ctx, "b"); err != nil {
			t.Fatal(err)
		} else {
			b.Epoch = e
		}
		if lost := renew(t, s1, a, b); len(lost) != 0 {
			t.Fatalf("lost %v", lost)
		}
		for _, o := range []persistence.Ownership{a, b} {
			if got := ownerOf(t, s1, o.ShowID); got.Node != "node-1" || got.Epoch != o.Epoch || got.LeaseRemaining <= 0 {
				t.Fatalf("after renewal: %+v, want node-1 at epoch %d with a lease", got, o.Epoch)
			}
		}
	})

	t.Run("RanOutUntaken", func(t *testing.T) {
		c := persistence.Ownership{ShowID: "c", Epoch: ownShow(t, s1, "c")}
		waitFor(t, 10*time.Second, "lease of c runs out", func() bool { return ownerOf(t, s1, "c").LeaseRemaining == 0 })
		if lost := renew(t, long, c); len(lost) != 0 {
			t.Fatalf("lost %v, want it renewed: nobody took it", lost)
		}
		if got := ownerOf(t, s1, "c"); got.Node != "node-1" || got.Epoch != c.Epoch {
			t.Fatalf("after renewal: %+v, want node-1 at epoch %d", got, c.Epoch)
		}
		_, err := s2.AcquireShow(ctx, "c")
		leased(t, err, "node-1", c.Epoch, 59*time.Minute, time.Hour)
	})

	t.Run("Taken", func(t *testing.T) {
		d := persistence.Ownership{ShowID: "d", Epoch: ownShow(t, s1, "d")}
		e := persistence.Ownership{ShowID: "e", Epoch: ownShow(t, long, "e")}
		taken := acquireWithin(t, s2, "d", 10*time.Second)
		if lost := renew(t, s1, d, e); !slices.Equal(lost, []persistence.Ownership{d}) {
			t.Fatalf("lost %v, want [%v]", lost, d)
		}
		if got := ownerOf(t, s1, "d"); got.Node != "node-2" || got.Epoch != taken {
			t.Fatalf("a renewal by the old owner changed the row: %+v", got)
		}
	})

	t.Run("Released", func(t *testing.T) {
		r := persistence.Ownership{ShowID: "r", Epoch: ownShow(t, s1, "r")}
		if err := s1.ReleaseShows(ctx, []persistence.Ownership{r}); err != nil {
			t.Fatal(err)
		}
		if lost := renew(t, s1, r); !slices.Equal(lost, []persistence.Ownership{r}) {
			t.Fatalf("lost %v, want [%v]", lost, r)
		}
		if got := ownerOf(t, s1, "r"); got.Node != "" || got.LeaseRemaining != 0 {
			t.Fatalf("a renewal revived a released show: %+v", got)
		}
	})

	t.Run("WrongEpochOrShow", func(t *testing.T) {
		w := persistence.Ownership{ShowID: "w", Epoch: ownShow(t, long, "w")}
		stale := persistence.Ownership{ShowID: "w", Epoch: w.Epoch - 1}
		future := persistence.Ownership{ShowID: "w", Epoch: w.Epoch + 1}
		nosuch := persistence.Ownership{ShowID: "nosuch", Epoch: 1}
		if lost := renew(t, s1, stale, nosuch, future); !slices.Equal(lost, []persistence.Ownership{stale, nosuch, future}) {
			t.Fatalf("lost %v, want all three in order", lost)
		}
		if got := ownerOf(t, s1, "w"); got.Epoch != w.Epoch || got.LeaseRemaining < 59*time.Minute {
			t.Fatalf("a renewal at the wrong epoch changed the row: %+v", got)
		}
	})

	// Renewing every lease/10 keeps the show for several leases while
	// another node keeps trying to take it; once the renewals stop, it can.
	t.Run("Keeps", func(t *testing.T) {
		const lease = 500 * time.Millisecond
		k1 := openNode(t, url, "node-1", lease)
		k2 := openNode(t, url, "node-2", lease)
		k := persistence.Ownership{ShowID: "k", Epoch: ownShow(t, k1, "k")}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var renewErr error
		var renewals int
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(lease / 10)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				lost, err := k1.RenewLeases(ctx, []persistence.Ownership{k})
				if err == nil && len(lost) != 0 {
					err = errors.New("lost the show")
				}
				if err != nil {
					renewErr = err
					return
				}
				renewals++
			}
		}()
		tries := 0
		for end := time.Now().Add(4 * lease); time.Now().Before(end); tries++ {
			_, err := k2.AcquireShow(ctx, "k")
			if !errors.Is(err, persistence.ErrLeased) {
				close(stop)
				wg.Wait()
				t.Fatalf("take %d while the owner renews: %v, want ErrLeased", tries, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if renewErr != nil {
			t.Fatalf("renewal %d: %v", renewals+1, renewErr)
		}
		t.Logf("%d takes refused over %v; %d renewals", tries, 4*lease, renewals)
		if got := ownerOf(t, k1, "k"); got.Node != "node-1" || got.Epoch != k.Epoch {
			t.Fatalf("after the renewals: %+v, want node-1 at epoch %d", got, k.Epoch)
		}
		if e := acquireWithin(t, k2, "k", 10*time.Second); e != k.Epoch+1 {
			t.Fatalf("take after the renewals stopped: epoch %d, want %d", e, k.Epoch+1)
		}
		if lost, err := k1.RenewLeases(ctx, []persistence.Ownership{k}); err != nil || !slices.Equal(lost, []persistence.Ownership{k}) {
			t.Fatalf("renewal after the take: lost %v, %v; want [%v]", lost, err, k)
		}
	})
}

// TestConcurrentTakes: takes of one show at the same moment by several
// nodes are serialized by the row's lock: exactly one wins, and the others
// see its lease — from every state a show can be taken from.
func TestConcurrentTakes(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	const nodes = 8
	stores := make([]*persistence.Store, nodes)
	for i := range stores {
		stores[i] = openNode(t, url, "node-"+string(rune('a'+i)), time.Hour)
	}
	old := openNode(t, url, "old", 200*time.Millisecond)
	// race has every store take show at once; it returns each one's epoch
	// and error.
	race := func(show string, stores []*persistence.Store, each int) ([]int64, []error) {
		n := len(stores) * each
		epochs, errs := make([]int64, n), make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				epochs[i], errs[i] = stores[i%len(stores)].AcquireShow(ctx, show)
			}()
		}
		close(start)
		wg.Wait()
		return epochs, errs
	}

	for _, c := range []struct {
		name  string
		setup func(t *testing.T, show string)
		want  int64 // the winner's epoch
	}{
		{"NoRow", func(t *testing.T, show string) {
			if _, err := old.CreateShow(ctx, testShow(show)); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"Released", func(t *testing.T, show string) {
			e := ownShow(t, old, show)
			if err := old.ReleaseShows(ctx, []persistence.Ownership{{ShowID: show, Epoch: e}}); err != nil {
				t.Fatal(err)
			}
		}, 2},
		{"RanOut", func(t *testing.T, show string) {
			ownShow(t, old, show)
			waitFor(t, 10*time.Second, "lease runs out", func() bool { return ownerOf(t, old, show).LeaseRemaining == 0 })
		}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			for round := range 3 {
				show := c.name + string(rune('0'+round))
				c.setup(t, show)
				epochs, errs := race(show, stores, 1)
				winner := -1
				for i, err := range errs {
					if err == nil {
						if winner >= 0 {
							t.Fatalf("%s: two nodes took it: %d and %d", show, winner, i)
						}
						winner = i
					}
				}
				if winner < 0 {
					t.Fatalf("%s: nobody took it: %v", show, errs)
				}
				if epochs[winner] != c.want {
					t.Fatalf("%s: winner's epoch %d, want %d", show, epochs[winner], c.want)
				}
				node := ownerOf(t, old, show).Node
				for i, err := range errs {
					if i != winner {
						leased(t, err, node, c.want, 59*time.Minute, time.Hour)
					}
				}
			}
		})
	}

	// Goroutines of the same node all succeed (a reload raises the epoch),
	// those of the other node all fail.
	t.Run("TwoNodesManyGoroutines", func(t *testing.T) {
		two := stores[:2]
		if _, err := old.CreateShow(ctx, testShow("many")); err != nil {
			t.Fatal(err)
		}
		epochs, errs := race("many", two, 4)
		owner := ownerOf(t, old, "many")
		var got []int64
		for i, err := range errs {
			mine := i%2 == 0
			if owner.Node != "node-a" {
				mine = !mine
			}
			if mine != (err == nil) {
				t.Fatalf("goroutine %d of %s (owner %s): %v", i, []string{"node-a", "node-b"}[i%2], owner.Node, err)
			}
			if err == nil {
				got = append(got, epochs[i])
			} else {
				leased(t, err, owner.Node, 0, 59*time.Minute, time.Hour)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []int64{1, 2, 3, 4}) || owner.Epoch != 4 {
			t.Fatalf("the owner's epochs %v, row at %d; want 1-4", got, owner.Epoch)
		}
	})
}

// TestOwnershipNotFound: a show that does not exist cannot be taken, has
// no owner and no lease to renew.
func TestOwnershipNotFound(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	if _, err := s.AcquireShow(ctx, "nosuch"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("AcquireShow: %v, want ErrNotFound", err)
	}
	if _, err := s.Owner(ctx, "nosuch"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("Owner: %v, want ErrNotFound", err)
	}
	nosuch := []persistence.Ownership{{ShowID: "nosuch", Epoch: 1}}
	if lost, err := s.RenewLeases(ctx, nosuch); err != nil || !slices.Equal(lost, nosuch) {
		t.Fatalf("RenewLeases: %v, %v; want it lost", lost, err)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM show_owners`); n != 0 {
		t.Fatalf("%d ownership rows, want none", n)
	}
}

// TestOwnershipDatabaseDown: with nothing listening at the database's
// address every ownership call fails with ErrUnavailable, promptly; empty
// renewals and releases send no query and succeed.
func TestOwnershipDatabaseDown(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	s := openStore(t, "postgres://nobody@"+addr+"/nodb?sslmode=disable", func(c *persistence.Config) {
		c.QueryTimeout = time.Second
	})
	some := []persistence.Ownership{{ShowID: "s", Epoch: 1}}
	for _, c := range []struct {
		name string
		call func() error
	}{
		{"AcquireShow", func() error { _, err := s.AcquireShow(ctx, "s"); return err }},
		{"RenewLeases", func() error {
			lost, err := s.RenewLeases(ctx, some)
			if lost != nil {
				t.Errorf("RenewLeases lost %v on an error, want nil", lost)
			}
			return err
		}},
		{"ReleaseShows", func() error { return s.ReleaseShows(ctx, some) }},
		{"Owner", func() error { _, err := s.Owner(ctx, "s"); return err }},
		{"ListOwnerships", func() error { _, err := s.ListOwnerships(ctx, ""); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			within(t, 10*time.Second, c.name, func() {
				if err := c.call(); !errors.Is(err, persistence.ErrUnavailable) {
					t.Errorf("%s: %v, want ErrUnavailable", c.name, err)
				}
			})
		})
	}
	if lost, err := s.RenewLeases(ctx, nil); lost != nil || err != nil {
		t.Fatalf("RenewLeases of none: %v, %v", lost, err)
	}
	if err := s.ReleaseShows(ctx, nil); err != nil {
		t.Fatalf("ReleaseShows of none: %v", err)
	}
}

// TestListOwnerships lists a node's rows, or all of them, by show ID.
func TestListOwnerships(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	s1 := openNode(t, url, "node-1", time.Hour)
	s2 := openNode(t, url, "node-2", time.Hour)
	eb := ownShow(t, s1, "b")
	ea := ownShow(t, s1, "a")
	if e, err := s1.AcquireShow(ctx, "a"); err != nil {
		t.Fatal(err)
	} else {
		ea = e
	}
	ec := ownShow(t, s2, "c")
	ed := ownShow(t, s1, "d")
	if err := s1.ReleaseShows(ctx, []persistence.Ownership{{ShowID: "d", Epoch: ed}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.CreateShow(ctx, testShow("e")); err != nil { // never acquired: no row
		t.Fatal(err)
	}
	type row struct {
		show, node string
		epoch      int64
		leased     bool
	}
	for _, c := range []struct {
		node string
		want []row
	}{
		{"node-1", []row{{"a", "node-1", ea, true}, {"b", "node-1", eb, true}}},
		{"node-2", []row{{"c", "node-2", ec, true}}},
		{"", []row{{"a", "node-1", ea, true}, {"b", "node-1", eb, true}, {"c", "node-2", ec, true}, {"d", "", ed, false}}},
		{"node-3", nil},
	} {
		t.Run("node="+c.node, func(t *testing.T) {
			list, err := s2.ListOwnerships(ctx, c.node)
			if err != nil {
				t.Fatal(err)
			}
			var got []row
			for _, o := range list {
				if o.LeaseRemaining < 0 || o.LeaseRemaining > time.Hour || (o.LeaseRemaining > 0) != (o.LeaseRemaining > 59*time.Minute) {
					t.Errorf("%s: lease remaining %v, want 0 or about an hour", o.ShowID, o.LeaseRemaining)
				}
				got = append(got, row{o.ShowID, o.Node, o.Epoch, o.LeaseRemaining > 0})
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestLeaseRenewalBesideWrites: a renewal does not wait for a writer's
// transaction in flight, while a take still waits for it (the fence). A
// renewal that waited would hold the rows it locked first — every show
// before the busy one — until that transaction ended, and stall their
// writes meanwhile.
func TestLeaseRenewalBesideWrites(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	s := openStore(t, url, func(c *persistence.Config) {
		c.NodeID, c.LeaseDuration, c.MaxConns = "node-1", time.Hour, 4
		c.CommitTimeout = 2 * time.Minute // b's transaction waits for the test
	})
	a := persistence.Ownership{ShowID: "a", Epoch: ownShow(t, s, "a")}
	b := persistence.Ownership{ShowID: "b", Epoch: ownShow(t, s, "b")}

	// A transaction of the test claims seat A-1 of b without committing,
	// so the writer's transaction of a hold of that seat, past its fence,
	// waits for it in the claim's insert.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) }) //nolint:errcheck // a no-op once rolled back
	if _, err := tx.Exec(ctx, `INSERT INTO seat_claims (show_id, seat_id, reservation_id) VALUES ('b', 'A-1', 'b:test')`); err != nil {
		t.Fatal(err)
	}
	hold, err := s.Enqueue(holdM(b.Epoch, "b", "b:h1", "u1", t0, "A-1"))
	if err != nil {
		t.Fatal(err)
	}
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Close(ctx) })
	waiting := func(table string) func() bool {
		return func() bool {
			return count(t, watch, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%'||$1||'%'`, table) > 0
		}
	}
	waitFor(t, 30*time.Second, "the writer's transaction to wait for the test's claim", waiting("seat_claims"))

	within(t, 10*time.Second, "a renewal of a and b beside b's transaction in flight", func() {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if lost, err := s.RenewLeases(rctx, []persistence.Ownership{a, b}); err != nil || len(lost) != 0 {
			t.Errorf("renewal: lost %v, err %v; want both renewed", lost, err)
		}
	})

	// A take of b (a reload by the same node raises the epoch) waits for
	// b's transaction, which commits at the epoch it carries.
	took := make(chan int64, 1)
	go func() {
		e, err := s.AcquireShow(ctx, "b")
		if err != nil {
			t.Errorf("take of b: %v", err)
		}
		took <- e
	}()
	waitFor(t, 30*time.Second, "the take to wait for b's transaction", waiting("show_owners"))
	select {
	case e := <-took:
		t.Fatalf("the take of b returned epoch %d while a write of b at epoch %d was in flight", e, b.Epoch)
	default:
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := hold.Wait(); err != nil {
		t.Fatalf("b's hold: %v, want it committed before the take", err)
	}
	if e := <-took; e != b.Epoch+1 {
		t.Fatalf("take of b: epoch %d, want %d", e, b.Epoch+1)
	}
}
