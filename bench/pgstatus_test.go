package bench

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
)

func TestPGStatus(t *testing.T) {
	c := pgclustertest.Start(t)
	p, err := NewPGStatus(t.Context(), PGStatusConfig{DatabaseURL: c.URL(), ConfirmGrace: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	// A second target on the same database finds its tables.
	p2, err := NewPGStatus(t.Context(), PGStatusConfig{DatabaseURL: c.URL()})
	if err != nil {
		t.Fatalf("second NewPGStatus: %v", err)
	}
	p2.Close()

	conn, err := pgx.Connect(t.Context(), c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	testBaselineTarget(t, p, baselineHooks{
		// Past the grace too, by the database's clock.
		expired: func(ctx context.Context, show ShowSpec, h Hold) (bool, error) {
			var past bool
			err := conn.QueryRow(ctx, "SELECT now() > expires_at + interval '300 milliseconds' FROM pgs_holds WHERE hold_id = $1", h.ID).Scan(&past)
			return past, err
		},
		keepsExpired: true,
	})
}

// baselineHooks are what testBaselineTarget needs to know of a target.
type baselineHooks struct {
	// expired reports whether h can no longer be confirmed.
	expired func(ctx context.Context, show ShowSpec, h Hold) (bool, error)
	// keepsExpired: Records lists expired holds (as StateExpired).
	keepsExpired bool
}

// testShow is a small show: 3 rows of 10 seats, with the given hold TTL.
func testShow(id string, ttl time.Duration) ShowSpec {
	return layout(id, 3, 10, ttl)
}

// testBaselineTarget checks the contract of Target on a fresh database.
func testBaselineTarget(t *testing.T, target Target, hooks baselineHooks) {
	ctx := t.Context()
	show := testShow("conformance", 2*time.Second)
	if err := target.CreateShow(ctx, show); err != nil {
		t.Fatalf("CreateShow: %v", err)
	}
	if err := target.CreateShow(ctx, show); err == nil {
		t.Errorf("CreateShow of an existing show succeeded")
	}
	statusOf := func(t *testing.T) map[string]SeatStatus {
		t.Helper()
		sm, err := target.SeatMap(ctx, show)
		if err != nil {
			t.Fatalf("SeatMap: %v", err)
		}
		ids := show.SeatIDs()
		if len(sm.Statuses) != len(ids) {
			t.Fatalf("SeatMap has %d seats, want %d", len(sm.Statuses), len(ids))
		}
		m := map[string]SeatStatus{}
		for i, s := range sm.Statuses {
			m[ids[i]] = s
		}
		return m
	}
	wantStatus := func(t *testing.T, want SeatStatus, seats ...string) {
		t.Helper()
		m := statusOf(t)
		for _, s := range seats {
			if m[s] != want {
				t.Errorf("seat %s is %d, want %d", s, m[s], want)
			}
		}
	}
	records := func(t *testing.T) map[string]Record {
		t.Helper()
		recs, err := target.Records(ctx, show)
		if err != nil {
			t.Fatalf("Records: %v", err)
		}
		m := map[string]Record{}
		for _, r := range recs {
			if _, dup := m[r.ID]; dup {
				t.Errorf("record %s listed twice", r.ID)
			}
			m[r.ID] = r
		}
		return m
	}

	if m := statusOf(t); len(m) != 30 || slices.ContainsFunc(slices.Collect(maps.Values(m)), func(s SeatStatus) bool { return s != Available }) {
		t.Fatalf("new show's seat map is not all available: %v", m)
	}

	var held Hold
	t.Run("hold", func(t *testing.T) {
		h, err := target.Hold(ctx, show, "alice", []string{"A-1", "A-2"})
		if err != nil {
			t.Fatalf("Hold: %v", err)
		}
		if h.ID == "" || h.User != "alice" || !slices.Equal(h.Seats, []string{"A-1", "A-2"}) {
			t.Fatalf("Hold = %+v", h)
		}
		if d := time.Until(h.ExpiresAt); d <= 0 || d > show.HoldTTL+time.Second {
			t.Errorf("ExpiresAt in %v, want about %v", d, show.HoldTTL)
		}
		wantStatus(t, Held, "A-1", "A-2")
		wantStatus(t, Available, "A-3")
		r, ok := records(t)[h.ID]
		if !ok || r.State != StateHeld || r.User != "alice" || !slices.Equal(r.Seats, h.Seats) {
			t.Errorf("record of the hold = %+v (found %v), want held by alice of %v", r, ok, h.Seats)
		}
		held = h
	})
	if held.ID == "" {
		t.FailNow()
	}

	t.Run("taken, all or nothing", func(t *testing.T) {
		_, err := target.Hold(ctx, show, "bob", []string{"A-3", "A-2", "A-4"})
		if got := OutcomeOf(err); got != Taken {
			t.Fatalf("Hold over a held seat: outcome %v (%v), want taken", got, err)
		}
		if seats := TakenSeats(err); !slices.Equal(seats, []string{"A-2"}) {
			t.Errorf("TakenSeats = %v, want [A-2]", seats)
		}
		wantStatus(t, Available, "A-3", "A-4")
		h, err := target.Hold(ctx, show, "bob", []string{"A-3", "A-4"})
		if err != nil {
			t.Fatalf("Hold of the seats left free: %v", err)
		}
		wantStatus(t, Held, "A-3", "A-4")
		if rs := records(t); len(rs) != 2 || rs[h.ID].State != StateHeld {
			t.Errorf("records = %+v, want alice's and bob's holds", rs)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, seats := range [][]string{
			nil,
			{"B-1", "B-1"},
			{"B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "B-7", "B-8", "B-9", "B-10", "C-1"},
			{"B-1", "B-11"}, {"D-1"}, {"B-0"}, {"B-01"}, {"B-+1"}, {"B1"}, {""},
		} {
			if _, err := target.Hold(ctx, show, "carol", seats); OutcomeOf(err) != Failed {
				t.Errorf("Hold(%v) = %v, want failed", seats, err)
			}
		}
		wantStatus(t, Available, "B-1", "B-2", "C-1")
	})

	t.Run("confirm", func(t *testing.T) {
		stranger := held
		stranger.User = "mallory"
		if err := target.Confirm(ctx, show, stranger, "pay-x"); OutcomeOf(err) != Ended {
			t.Errorf("Confirm by another user = %v, want ended", err)
		}
		if err := target.Confirm(ctx, show, held, "pay-1"); err != nil {
			t.Fatalf("Confirm: %v", err)
		}
		wantStatus(t, Booked, "A-1", "A-2")
		r := records(t)[held.ID]
		if r.State != StateBooked || r.PaymentRef != "pay-1" || r.User != "alice" || !slices.Equal(r.Seats, held.Seats) {
			t.Errorf("record of the confirmed hold = %+v", r)
		}
		if err := target.Confirm(ctx, show, held, "pay-2"); OutcomeOf(err) != Ended {
			t.Errorf("second Confirm = %v, want ended", err)
		}
		if _, err := target.Hold(ctx, show, "bob", []string{"A-1"}); OutcomeOf(err) != Taken {
			t.Errorf("Hold of a booked seat = %v, want taken", err)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		short := testShow("expiry", 200*time.Millisecond)
		if err := target.CreateShow(ctx, short); err != nil {
			t.Fatal(err)
		}
		h, err := target.Hold(ctx, short, "dave", []string{"B-5"})
		if err != nil {
			t.Fatal(err)
		}
		pollBaseline(t, 20*time.Second, "the hold to expire", func() (bool, error) { return hooks.expired(ctx, short, h) })
		if err := target.Confirm(ctx, short, h, "pay-late"); OutcomeOf(err) != Ended {
			t.Fatalf("Confirm after expiry = %v, want ended", err)
		}
		sm, err := target.SeatMap(ctx, short)
		if err != nil {
			t.Fatal(err)
		}
		if sm.Statuses[14] != Available { // B-5
			t.Errorf("expired seat B-5 is %d, want available", sm.Statuses[14])
		}
		recs, err := target.Records(ctx, short)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case hooks.keepsExpired && (len(recs) != 1 || recs[0].State != StateExpired):
			t.Errorf("records after expiry = %+v, want one expired", recs)
		case !hooks.keepsExpired && len(recs) != 0:
			t.Errorf("records after expiry = %+v, want none", recs)
		}
		// The seat can be held again, and that hold confirmed.
		h2, err := target.Hold(ctx, short, "erin", []string{"B-5", "B-6"})
		if err != nil {
			t.Fatalf("Hold of an expired seat: %v", err)
		}
		if err := target.Confirm(ctx, short, h2, "pay-erin"); err != nil {
			t.Fatalf("Confirm of the new hold: %v", err)
		}
	})
}

// pollBaseline calls cond every 20 ms until it is true, failing t if it is
// not within d or returns an error.
func pollBaseline(t *testing.T, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, d)
		}
		<-tick.C
	}
}

func TestPGStatusRace(t *testing.T) {
	c := pgclustertest.Start(t)
	p, err := NewPGStatus(t.Context(), PGStatusConfig{DatabaseURL: c.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	testBaselineRace(t, p)
}

// testBaselineRace has 64 goroutines race for overlapping seats of a small
// show and checks that no seat ended up in two acknowledged holds, and that
// the target's records and seat map agree with the acknowledgements.
func testBaselineRace(t *testing.T, target Target) {
	ctx := t.Context()
	show := testShow("race", time.Minute) // nothing expires during the test
	if err := target.CreateShow(ctx, show); err != nil {
		t.Fatal(err)
	}
	ids := show.SeatIDs()
	var (
		mu    sync.Mutex
		acked = map[string]Hold{}
		bad   []error
		taken atomic.Int64
	)
	var wg sync.WaitGroup
	start := make(chan struct{}) // all at once, for the most contention
	for g := range 64 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(1, uint64(g)))
			user := fmt.Sprintf("user-%d", g)
			<-start
			for range 10 {
				n := 1 + rng.IntN(4)
				first := rng.IntN(len(ids) - n + 1)
				h, err := target.Hold(ctx, show, user, ids[first:first+n])
				mu.Lock()
				switch OutcomeOf(err) {
				case OK:
					acked[h.ID] = h
				case Taken:
					taken.Add(1)
				default:
					bad = append(bad, err)
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d holds failed other than taken, e.g. %v", len(bad), bad[0])
	}
	owner := map[string]string{}
	for _, h := range acked {
		for _, s := range h.Seats {
			if o, ok := owner[s]; ok {
				t.Errorf("seat %s in acknowledged holds %s and %s", s, o, h.ID)
			}
			owner[s] = h.ID
		}
	}
	t.Logf("%d holds acknowledged covering %d seats, %d taken", len(acked), len(owner), taken.Load())
	if len(acked) == 0 || taken.Load() == 0 {
		t.Errorf("no race happened: %d acknowledged, %d taken", len(acked), taken.Load())
	}

	recs, err := target.Records(ctx, show)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]string{}
	for _, r := range recs {
		if !r.State.Live() {
			continue
		}
		h, ok := acked[r.ID]
		if !ok || r.State != StateHeld || r.User != h.User || !slices.Equal(r.Seats, h.Seats) {
			t.Errorf("record %+v does not match an acknowledged hold (%+v)", r, h)
		}
		for _, s := range r.Seats {
			if o, ok := live[s]; ok {
				t.Errorf("seat %s held by live records %s and %s", s, o, r.ID)
			}
			live[s] = r.ID
		}
	}
	if len(live) != len(owner) {
		t.Errorf("records hold %d seats, acknowledgements %d", len(live), len(owner))
	}
	sm, err := target.SeatMap(ctx, show)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sm.Statuses {
		_, want := owner[ids[i]]
		if (s == Held) != want {
			t.Errorf("seat %s is %d in the seat map; in an acknowledged hold: %v", ids[i], s, want)
		}
	}
}

func BenchmarkPGStatusHold(b *testing.B) {
	c := pgclustertest.Start(b)
	p, err := NewPGStatus(b.Context(), PGStatusConfig{DatabaseURL: c.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchmarkBaselineHold(b, p)
}

func BenchmarkPGStatusSeatMap(b *testing.B) {
	c := pgclustertest.Start(b)
	p, err := NewPGStatus(b.Context(), PGStatusConfig{DatabaseURL: c.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	benchmarkBaselineSeatMap(b, p)
}

// benchmarkBaselineSeatMap measures seat maps of a show of 15,000 seats, a
// seventh of them held, read one at a time and 16 at a time.
func benchmarkBaselineSeatMap(b *testing.B, target Target) {
	ctx := b.Context()
	show := layout("seatmap", 100, 150, time.Hour)
	if err := target.CreateShow(ctx, show); err != nil {
		b.Fatal(err)
	}
	ids := show.SeatIDs()
	for i := 0; i < len(ids); i += 7 {
		if _, err := target.Hold(ctx, show, "u", ids[i:i+1]); err != nil {
			b.Fatal(err)
		}
	}
	check := func(sm SeatMap, err error) {
		if err != nil {
			b.Error(err)
		} else if sm.Statuses[7] != Held || sm.Statuses[8] != Available {
			b.Error("wrong seat map")
		}
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			check(target.SeatMap(ctx, show))
		}
	})
	b.Run("parallel16", func(b *testing.B) {
		b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				check(target.SeatMap(ctx, show))
			}
		})
	})
}

// benchmarkBaselineHold measures hold attempts of 1 to 4 adjacent seats,
// from 64 goroutines, on a show of 15,000 seats whose holds expire after a
// second: attempts are a mix of successes and seats taken, as in a sale.
func benchmarkBaselineHold(b *testing.B, target Target) {
	b.Run("parallel64", func(b *testing.B) {
		show := layout(fmt.Sprintf("bench-%d", time.Now().UnixNano()), 100, 150, time.Second)
		if err := target.CreateShow(b.Context(), show); err != nil {
			b.Fatal(err)
		}
		ids := show.SeatIDs()
		var seed, ok, taken, other atomic.Int64
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			g := seed.Add(1)
			rng := rand.New(rand.NewPCG(2, uint64(g)))
			user := fmt.Sprintf("user-%d", g)
			for pb.Next() {
				n := 1 + rng.IntN(4)
				first := rng.IntN(len(ids) - n + 1)
				_, err := target.Hold(b.Context(), show, user, ids[first:first+n])
				switch OutcomeOf(err) {
				case OK:
					ok.Add(1)
				case Taken:
					taken.Add(1)
				default:
					if other.Add(1) == 1 {
						b.Logf("hold: %v", err)
					}
				}
			}
		})
		b.StopTimer()
		total := float64(ok.Load() + taken.Load() + other.Load())
		b.ReportMetric(float64(ok.Load())/total, "ok/op")
		b.ReportMetric(total/b.Elapsed().Seconds(), "attempts/s")
		if other.Load() > 0 {
			b.Errorf("%d attempts neither ok nor taken", other.Load())
		}
	})
}

func TestSeatMapCache(t *testing.T) {
	show := testShow("cache", time.Minute)
	var reads atomic.Int64
	release := make(chan struct{})
	read := func(ctx context.Context, s ShowSpec) (SeatMap, error) {
		reads.Add(1)
		<-release
		return SeatMap{Statuses: slices.Repeat([]SeatStatus{Available}, s.Capacity())}, nil
	}

	t.Run("off", func(t *testing.T) {
		reads.Store(0)
		c := newSeatMapCache(0)
		close(release)
		defer func() { release = make(chan struct{}) }()
		for range 3 {
			if _, err := c.get(t.Context(), show, read); err != nil {
				t.Fatal(err)
			}
		}
		if n := reads.Load(); n != 3 {
			t.Errorf("%d reads for 3 calls without a cache", n)
		}
	})

	t.Run("shared", func(t *testing.T) {
		reads.Store(0)
		c := newSeatMapCache(time.Hour)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if sm, err := c.get(t.Context(), show, read); err != nil || len(sm.Statuses) != 30 {
					t.Errorf("get = %d seats, %v", len(sm.Statuses), err)
				}
			})
		}
		pollBaseline(t, 10*time.Second, "the first read", func() (bool, error) { return reads.Load() == 1, nil })
		close(release)
		wg.Wait()
		sm, err := c.get(t.Context(), show, read)
		if err != nil {
			t.Fatal(err)
		}
		sm.Statuses[0] = Booked // a copy: the cache keeps its own
		sm, _ = c.get(t.Context(), show, read)
		if n := reads.Load(); n != 1 || sm.Statuses[0] != Available {
			t.Errorf("%d reads, first seat %d; want one read shared, available", n, sm.Statuses[0])
		}
	})

	t.Run("local", func(t *testing.T) {
		reads.Store(0)
		if _, ok := newSeatMapCache(0).local(show); ok {
			t.Error("local answered without a cache")
		}
		c := newSeatMapCache(time.Hour)
		if _, ok := c.local(show); ok {
			t.Error("local answered before any read")
		}
		release = make(chan struct{})
		close(release)
		if _, err := c.get(t.Context(), show, read); err != nil {
			t.Fatal(err)
		}
		sm, ok := c.local(show)
		if !ok || len(sm.Statuses) != 30 {
			t.Fatalf("local after a read = %d seats, %t", len(sm.Statuses), ok)
		}
		sm.Statuses[0] = Booked // a copy
		if sm, _ := c.local(show); sm.Statuses[0] != Available || reads.Load() != 1 {
			t.Errorf("first seat %d after %d reads; want available, one read", sm.Statuses[0], reads.Load())
		}
	})

	t.Run("caller deadline", func(t *testing.T) {
		blocked := make(chan struct{})
		c := newSeatMapCache(time.Hour)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.get(ctx, show, func(ctx context.Context, s ShowSpec) (SeatMap, error) {
			<-blocked
			return SeatMap{}, ctx.Err()
		})
		close(blocked)
		if OutcomeOf(err) != Timeout {
			t.Errorf("get past the caller's deadline = %v, want timeout", err)
		}
	})
}
