package engine_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// Tests of what bounds a node's memory and goroutines: idle shows are
// evicted, unknown show IDs are answered from a negative cache, and show
// loads are bounded.

// forEach calls do(i) for every i in [0, count) from workers goroutines, and
// fails the test if any call fails (reporting the first few errors).
func forEach(t *testing.T, workers, count int, do func(i int) error) {
	t.Helper()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				if err := do(i); err != nil && failed.Add(1) <= 5 {
					t.Errorf("call %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d calls failed", f, count)
	}
}

// heapAlloc returns the bytes of live heap objects after a full collection.
func heapAlloc() int64 {
	runtime.GC()
	runtime.GC() // the first may leave objects freed only by finalizers
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// goroutines returns the number of goroutines of the process, leaving out
// those of an in-process test proxy: it spends six on every connection
// through it, and the node's pool may keep up to MaxConns connections open.
func goroutines() int {
	buf := make([]byte, 1<<20)
	for {
		k := runtime.Stack(buf, true)
		if k < len(buf) {
			buf = buf[:k]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/Shopify/toxiproxy") {
			count++
		}
	}
	return count
}

// waitForGoroutines polls until the process has at most limit goroutines
// (as counted by goroutines), and fails the test after timeout, logging
// every goroutine's stack.
func waitForGoroutines(t *testing.T, limit int, timeout time.Duration) {
	t.Helper()
	last, ok := 0, false
	defer func() {
		if !ok {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1) //nolint:errcheck
			t.Logf("%d goroutines, want at most %d:\n%s", last, limit, b.String())
		}
	}()
	pollUntil(t, timeout, fmt.Sprintf("at most %d goroutines", limit), func() bool {
		last = goroutines()
		return last <= limit
	})
	ok = true
	t.Logf("goroutines: %d, limit %d (%d with the test proxy's)", last, limit, runtime.NumGoroutine())
}

// proxiedMemNode starts a node on a fresh database reached through a
// fault-injecting proxy.
func proxiedMemNode(t *testing.T, opts tc.Options) (*tc.Node, *tc.Proxy) {
	t.Helper()
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	px := tc.NewDBProxy(t, dbURL)
	return tc.StartNode(t, px.URL(), opts), px
}

// TestIdleShowsEvicted loads 5,001 small shows, one of them with a live
// hold, moves an injected clock past IdleEvictAfter and evicts: every show
// but the held one leaves memory (LoadedShows, boxoffice_shows_loaded, the
// heap) and is released in show_owners at its epoch. An evicted show used
// again loads again and takes a hold; a show used within IdleEvictAfter
// stays.
func TestIdleShowsEvicted(t *testing.T) {
	const (
		idle  = time.Minute
		shows = 5000
		held  = "idle-held"
		ttl   = 30 * time.Minute // holds outlive every clock move here
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{
		Clock: clock, ExpiryInterval: time.Hour, Quiet: true, // the test evicts, not the loop
		Engine: func(c *engine.Config) { c.IdleEvictAfter = idle },
	})
	db := openDB(t, url)
	admin := tc.AdminCtx(context.Background())
	ctx := tc.Ctx(context.Background())
	rs := n.Reservations

	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("idle-%04d", i)
	}
	forEach(t, 8, shows, func(i int) error {
		_, err := n.Catalog.CreateShow(admin, tc.ShowRequest(ids[i], 1, 10, ttl))
		return err
	})
	n.CreateShow(t, held, 1, 10, ttl)
	if _, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: held, UserId: "keeper", SeatIds: []string{"A-1"}}); err != nil {
		t.Fatal(err)
	}

	before := heapAlloc()
	forEach(t, 8, shows, func(i int) error {
		_, err := rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: ids[i]})
		return err
	})
	if got := len(n.Engine.LoadedShows()); got != shows+1 {
		t.Fatalf("%d shows loaded after touching, want %d", got, shows+1)
	}
	touched := heapAlloc()

	clock.Advance(idle)
	if got := n.Engine.EvictIdle(); got != shows {
		t.Errorf("EvictIdle evicted %d shows, want %d", got, shows)
	}
	after := heapAlloc()
	t.Logf("heap: %.1f MB before touching, %.1f MB with %d shows loaded, %.1f MB after eviction (%.0f%% of the growth freed)",
		mb(before), mb(touched), shows+1, mb(after), 100*float64(touched-after)/float64(touched-before))
	if touched <= before {
		t.Errorf("loading %d shows did not grow the heap (%d → %d bytes)", shows, before, touched)
	} else if freed := touched - after; freed < (touched-before)*3/4 {
		t.Errorf("eviction freed %d bytes of the %d that loading added, want at least 75%%", freed, touched-before)
	}
	if got := n.Engine.LoadedShows(); !slices.Equal(got, []ar.ShowID{held}) {
		t.Errorf("loaded after eviction: %d shows, want only %s (%v)", len(got), held, got[:min(len(got), 5)])
	}
	m := scrape(t, n)
	for name, want := range map[string]float64{"boxoffice_shows_loaded": 1, "boxoffice_shows_evicted_total": shows} {
		if v, ok := sample(m, name); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	// The ownership is released in the background, so that a slow
	// database does not delay expiries.
	var released, owned int
	pollUntil(t, 10*time.Second, "the evicted shows to be released", func() bool {
		if err := db.QueryRow(context.Background(), `SELECT
				count(*) FILTER (WHERE owner_node = '' AND epoch = 1),
				count(*) FILTER (WHERE owner_node <> '')
			FROM show_owners`).Scan(&released, &owned); err != nil {
			t.Fatal(err)
		}
		return released == shows && owned == 1
	})
	if node, epoch := dbOwner(t, db, held); node != "node-1" || epoch != 1 {
		t.Errorf("owner of the held show: %q at epoch %d, want node-1 at 1", node, epoch)
	}
	if got := n.Engine.EvictIdle(); got != 0 {
		t.Errorf("a second EvictIdle evicted %d shows", got)
	}

	// Used again after eviction: loaded again, at a new epoch, and working.
	reread, rehold := ids[0], ids[1]
	if sm := getSeatMap(t, n, reread); sm.GetAvailable() != 10 {
		t.Errorf("seat map of %s after eviction: %d available, want 10", reread, sm.GetAvailable())
	}
	h, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: rehold, UserId: "back", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatalf("hold on %s after eviction: %v", rehold, err)
	}
	if r, _ := dbReservationOf(t, db, rehold, h.GetHoldId()); r.Status != "HELD" {
		t.Errorf("hold after eviction: database has %+v", r)
	}
	for _, id := range []string{reread, rehold} {
		if !loaded(n, id) {
			t.Errorf("%s not loaded after use", id)
		}
		if node, epoch := dbOwner(t, db, id); node != "node-1" || epoch != 2 {
			t.Errorf("owner of %s after reload: %q at epoch %d, want node-1 at 2", id, node, epoch)
		}
	}
	if _, err := rs.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "back"}); err != nil {
		t.Fatal(err)
	}

	// Used within IdleEvictAfter: kept; reread is used again just before
	// rehold turns idle.
	clock.Advance(idle - time.Second)
	getSeatMap(t, n, reread)
	if got := n.Engine.EvictIdle(); got != 0 {
		t.Errorf("EvictIdle %s after the last use evicted %d shows, want 0", idle-time.Second, got)
	}
	clock.Advance(time.Second)
	if got := n.Engine.EvictIdle(); got != 1 {
		t.Errorf("EvictIdle evicted %d shows, want 1 (%s)", got, rehold)
	}
	got := n.Engine.LoadedShows()
	slices.Sort(got)
	if want := []ar.ShowID{ar.ShowID(reread), held}; !slices.Equal(got, want) {
		t.Errorf("loaded: %v, want %v", got, want)
	}
	pollUntil(t, 10*time.Second, rehold+" to be released at epoch 2 after its second eviction", func() bool {
		node, epoch := dbOwner(t, db, rehold)
		return node == "" && epoch == 2
	})
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// TestUnknownShowNotFoundFromMemory finds a show ID unknown, then cuts the
// database off: the same ID is still answered NotFound at once, by every
// method that takes a show, while another unknown ID cannot be answered
// (Unavailable). CreateShow on the node makes the ID found at once, and an
// ID found unknown is asked of the database again after NotFoundTTL.
func TestUnknownShowNotFoundFromMemory(t *testing.T) {
	const (
		ttl    = 30 * time.Second
		prompt = time.Second
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, px := proxiedMemNode(t, tc.Options{
		Clock: clock, Quiet: true,
		Store:  persistence.Config{QueryTimeout: 2 * time.Second},
		Engine: func(c *engine.Config) { c.NotFoundTTL = ttl },
	})
	ctx := tc.Ctx(context.Background())
	rs := n.Reservations

	type call struct {
		name string
		do   func(ctx context.Context, show string) error
	}
	calls := []call{
		{"GetSeatMap", func(ctx context.Context, show string) error {
			_, err := rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show})
			return err
		}},
		{"GetShow", func(ctx context.Context, show string) error {
			_, err := n.Catalog.GetShow(ctx, &pb.GetShowRequest{ShowId: show})
			return err
		}},
		{"HoldSeats", func(ctx context.Context, show string) error {
			_, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"A-1"}})
			return err
		}},
	}
	seatMap := calls[0]
	// answer makes c on show and fails t unless it is refused with code and
	// reason within bound.
	answer := func(t *testing.T, c call, show string, bound time.Duration, code codes.Code, reason string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		err := c.do(cctx, show)
		took := time.Since(start)
		wantAPIError(t, fmt.Sprintf("%s %s", c.name, show), err, code, reason)
		if took > bound {
			t.Errorf("%s %s answered %v after %s, want within %s", c.name, show, code, took, bound)
		}
	}

	answer(t, seatMap, "ghost", 5*time.Second, codes.NotFound, "SHOW_NOT_FOUND") // the database says so
	px.Cut()
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			answer(t, c, "ghost", prompt, codes.NotFound, "SHOW_NOT_FOUND")
		})
	}
	answer(t, seatMap, "ghost-2", 5*time.Second, codes.Unavailable, "DATABASE_UNAVAILABLE")

	// Created on this node: found at once, though "ghost" was found unknown
	// well within NotFoundTTL by the (unmoved) clock.
	px.Reconnect()
	pollUntil(t, 10*time.Second, "the database to answer again", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := n.Catalog.GetShow(cctx, &pb.GetShowRequest{ShowId: "ghost-2"})
		if e := apiErrorOf(err); e.Code != codes.Unavailable && e.Reason != "SHOW_NOT_FOUND" {
			t.Fatalf("GetShow ghost-2 after Reconnect: %v", err)
		}
		return apiErrorOf(err).Reason == "SHOW_NOT_FOUND"
	})
	n.CreateShow(t, "ghost", 1, 10, 0)
	start := time.Now()
	if sm := getSeatMap(t, n, "ghost"); sm.GetAvailable() != 10 {
		t.Errorf("seat map of the created show: %d available, want 10", sm.GetAvailable())
	}
	if took := time.Since(start); took > prompt {
		t.Errorf("seat map of the created show took %s", took)
	}
	if _, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "ghost", UserId: "u1", SeatIds: []string{"A-1"}}); err != nil {
		t.Errorf("hold on the created show: %v", err)
	}

	// NotFoundTTL by the node's clock: remembered until it has passed, then
	// asked of the (cut) database again.
	answer(t, seatMap, "ghost-3", 5*time.Second, codes.NotFound, "SHOW_NOT_FOUND")
	px.Cut()
	clock.Advance(ttl - time.Second)
	answer(t, seatMap, "ghost-3", prompt, codes.NotFound, "SHOW_NOT_FOUND")
	clock.Advance(time.Second)
	answer(t, seatMap, "ghost-3", 5*time.Second, codes.Unavailable, "DATABASE_UNAVAILABLE")
	px.Reconnect()
}

// TestUnknownShowFlood floods a node with seat-map reads of 20,000 distinct
// unknown show IDs from 64 callers while 4 others hold and release seats of
// a real show: every unknown ID is answered NotFound and leaves no trace in
// show_owners, the flood takes no more database connections than the load
// bound allows, the holds are not starved (p99 under 200 ms), and the node's
// goroutines come back down afterwards.
func TestUnknownShowFlood(t *testing.T) {
	const (
		show     = "flood"
		unknown  = 20_000
		flooders = 64
		holders  = 4
		// The bound tells holds starved by the flood from holds served
		// beside it, not fast holds from slow ones (the benchmarks measure
		// speed): on busy days of the project's shared 2-core machines the
		// p99 was 34-68 ms, and a bound of 50 ms failed a CI run.
		p99Bound = 200 * time.Millisecond
	)
	// The loads may hold MaxConcurrentLoads connections at once; the writer,
	// the pruner and the health check one each.
	maxConns := int32(engine.DefaultConfig().MaxConcurrentLoads + 3)
	n, url := newNode(t, tc.Options{Quiet: true})
	n.CreateShow(t, show, 100, 100, 0)
	ctx := tc.Ctx(context.Background())
	rs := n.Reservations
	getSeatMap(t, n, show)
	warm, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "warm", SeatIds: []string{"A-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: warm.GetHoldId(), UserId: "warm"}); err != nil {
		t.Fatal(err)
	}
	// The flood comes from other clients than the holders', on a
	// connection of its own.
	conn, err := tc.Dial(n.Server.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	flood := pb.NewReservationServiceClient(conn)
	if _, err := flood.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show}); err != nil {
		t.Fatal(err)
	}
	baseline, conns := goroutines(), n.Store.Pool().Stat().TotalConns()

	stop := make(chan struct{})
	latencies := make([][]time.Duration, holders)
	var hwg sync.WaitGroup
	for g := range holders {
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			// Holder g cycles through rows 25g..25g+24, releasing each hold.
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("h%d-%d", g, i)
				seat := tc.SeatID(g*25+(i%2500)/100, 1+i%100)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				start := time.Now()
				h, err := rs.HoldSeats(cctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: []string{seat}})
				latencies[g] = append(latencies[g], time.Since(start))
				if err == nil {
					_, err = rs.ReleaseHold(cctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: user})
				}
				cancel()
				if err != nil {
					t.Errorf("holder %d, %s on %s: %v", g, user, seat, err)
					return
				}
			}
		}()
	}

	var next atomic.Int64
	answers := make([]map[string]int, flooders)
	var fwg sync.WaitGroup
	start := time.Now()
	for f := range flooders {
		answers[f] = map[string]int{}
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			for {
				i := next.Add(1) - 1
				if i >= unknown {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := flood.GetSeatMap(cctx, &pb.GetSeatMapRequest{ShowId: fmt.Sprintf("nosuch-%05d", i)})
				cancel()
				e := apiErrorOf(err)
				if err == nil {
					e.Reason = "OK"
				}
				answers[f][e.Code.String()+" "+e.Reason]++
			}
		}()
	}
	fwg.Wait()
	took := time.Since(start)
	close(stop)
	hwg.Wait()

	total := map[string]int{}
	for _, a := range answers {
		for k, v := range a {
			total[k] += v
		}
	}
	t.Logf("%d unknown IDs answered in %s (%.0f/s): %v", unknown, took.Round(time.Millisecond), unknown/took.Seconds(), total)
	if total["NotFound SHOW_NOT_FOUND"] != unknown {
		t.Errorf("of %d unknown IDs, %d were answered NotFound SHOW_NOT_FOUND: %v", unknown, total["NotFound SHOW_NOT_FOUND"], total)
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	if len(all) == 0 {
		t.Fatal("no holds were made during the flood")
	}
	p50, p99 := time.Duration(percentile(all, 0.50)*1e3), time.Duration(percentile(all, 0.99)*1e3)
	t.Logf("%d holds during the flood: p50 %s, p99 %s, max %s", len(all), p50, p99, all[len(all)-1])
	switch {
	case raceDetector:
		// The race detector multiplies the CPU of both sides of every call
		// on two saturated cores; `make test` runs this test again without
		// it, where the bound is asserted.
		t.Logf("built with -race: the p99 bound (%s) is checked by the run without it", p99Bound)
	case p99 > p99Bound:
		t.Errorf("holds' p99 during the flood is %s, want under %s", p99, p99Bound)
	}
	if got := n.Engine.LoadedShows(); !slices.Equal(got, []ar.ShowID{show}) {
		t.Errorf("loaded after the flood: %d shows, want only %s", len(got), show)
	}
	var owned int
	if err := openDB(t, url).QueryRow(context.Background(), `SELECT count(*) FROM show_owners`).Scan(&owned); err != nil {
		t.Fatal(err)
	}
	if owned != 1 {
		t.Errorf("show_owners has %d rows after the flood, want 1", owned)
	}
	// Idle connections stay in the pool, so its size tells how many the
	// flood took at once: the load bound must leave the rest to the writer.
	opened := n.Store.Pool().Stat().TotalConns()
	if opened > maxConns {
		t.Errorf("the flood opened %d database connections, want at most %d", opened, maxConns)
	}
	t.Logf("goroutines: baseline %d; pool connections %d at the baseline, %d now", baseline, conns, opened)
	waitForGoroutines(t, baseline+10, 10*time.Second)
}

// TestLoadsBounded black-holes the database under 50 concurrent seat-map
// reads of distinct unknown shows, with MaxPendingLoads 8: at most 8 wait
// (for LoadTimeout, no longer), the others are refused OVERLOADED at once;
// after the black hole is lifted the node answers again and its goroutines
// come back down.
func TestLoadsBounded(t *testing.T) {
	const (
		pending     = 8
		callers     = 50
		loadTimeout = 2 * time.Second
		// A refusal comes at once, a waiting call after LoadTimeout: half of
		// it tells them apart with room for a slow, loaded machine.
		fast  = loadTimeout / 2
		bound = loadTimeout + time.Second
	)
	n, px := proxiedMemNode(t, tc.Options{
		Quiet: true,
		Store: persistence.Config{QueryTimeout: loadTimeout, CommitTimeout: loadTimeout},
		Engine: func(c *engine.Config) {
			c.MaxPendingLoads = pending
			c.LoadTimeout = loadTimeout
		},
	})
	n.CreateShow(t, "bounded", 1, 10, 0)
	getSeatMap(t, n, "bounded")
	ctx := tc.Ctx(context.Background())
	rs := n.Reservations
	baseline, conns := goroutines(), n.Store.Pool().Stat().TotalConns()

	px.BlackHole()
	type answer struct {
		took time.Duration
		err  error
	}
	answers := make(chan answer, callers)
	ready := make(chan struct{})
	for i := range callers {
		go func() {
			<-ready
			cctx, cancel := context.WithTimeout(ctx, 4*bound)
			defer cancel()
			start := time.Now()
			_, err := rs.GetSeatMap(cctx, &pb.GetSeatMapRequest{ShowId: fmt.Sprintf("absent-%02d", i)})
			answers <- answer{time.Since(start), err}
		}()
	}
	close(ready)
	waited, refused := map[string]int{}, 0
	var slowest time.Duration
	for range callers {
		a := <-answers
		slowest = max(slowest, a.took)
		e := apiErrorOf(a.err)
		if a.err == nil {
			t.Errorf("a seat map of an unknown show succeeded with the database black-holed")
			continue
		}
		if a.took > bound {
			t.Errorf("answered %s after %s, want within %s", e, a.took, bound)
		}
		if a.took <= fast {
			if e.Code != codes.ResourceExhausted || e.Reason != "OVERLOADED" {
				t.Errorf("answered within %s: %s, want ResourceExhausted OVERLOADED", a.took, e)
			}
			refused++
			continue
		}
		waited[e.Code.String()+" "+e.Reason]++
	}
	nWaited := callers - refused
	t.Logf("%d refused within %s; %d waited, answered %v; slowest %s", refused, fast, nWaited, waited, slowest)
	if nWaited > pending || nWaited == 0 {
		t.Errorf("%d calls waited for a load, want 1 to %d", nWaited, pending)
	}

	px.Lift()
	pollUntil(t, 10*time.Second, "the node to answer from the database again", func() bool {
		cctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		_, err := rs.GetSeatMap(cctx, &pb.GetSeatMapRequest{ShowId: "absent-after"})
		return apiErrorOf(err).Reason == "SHOW_NOT_FOUND"
	})
	if sm := getSeatMap(t, n, "bounded"); sm.GetAvailable() != 10 {
		t.Errorf("seat map after the black hole: %d available", sm.GetAvailable())
	}
	t.Logf("goroutines: baseline %d; pool connections %d at the baseline, %d now", baseline, conns, n.Store.Pool().Stat().TotalConns())
	waitForGoroutines(t, baseline+10, 10*time.Second)
}
