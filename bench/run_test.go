package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/internal/testcluster"
)

// smallSale is a flash sale small enough for a test: 2,000 users for 300
// seats, holds of 10 s, users paying with probability 0.8 within 1 s.
func smallSale(t *testing.T, prefix string) Scenario {
	t.Helper()
	sc, err := NewScenario("flash-sale", ScenarioConfig{
		Users: 2000, Rows: 10, SeatsPerRow: 30, HoldTTL: 10 * time.Second, PayDelay: time.Second,
		Retries: 3, ConfirmProb: 0.8, ShowPrefix: prefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// checkSale checks what every flash sale must show: verified, holds and
// confirms made, figures consistent with the users' choices.
func checkSale(t *testing.T, res *Result) {
	t.Helper()
	v, ok := res.Verification.(Verification)
	if !ok || !v.Verified() {
		t.Fatalf("verification: %v", res.Verification)
	}
	hold, ok := res.Op("hold")
	if !ok || hold.ByOutcome["ok"] == 0 {
		t.Fatalf("no successful hold: %+v", hold)
	}
	confirm, _ := res.Op("confirm")
	if v.Counts.AckedHolds != int(hold.ByOutcome["ok"]) || v.Counts.AckedConfirms != int(confirm.ByOutcome["ok"]) {
		t.Errorf("verification counted %d holds and %d confirms, the recorder %d and %d",
			v.Counts.AckedHolds, v.Counts.AckedConfirms, hold.ByOutcome["ok"], confirm.ByOutcome["ok"])
	}
	if v.Counts.BookedSeats == 0 || v.Counts.BookedSeats > res.Capacity {
		t.Errorf("%d seats sold of %d", v.Counts.BookedSeats, res.Capacity)
	}
	// Most users who held paid (p = 0.8): 2,000 users contend for 300 seats.
	if ok := hold.ByOutcome["ok"]; confirm.ByOutcome["ok"] < ok/2 || confirm.ByOutcome["ok"] > ok {
		t.Errorf("%d confirms for %d holds, want about 80%%", confirm.ByOutcome["ok"], ok)
	}
	if res.AllHeldAfter <= 0 {
		t.Errorf("2,000 users for 300 seats never held every seat")
	}
	if hold.P50 <= 0 || hold.P99 < hold.P50 || hold.Max < hold.P99 {
		t.Errorf("hold latencies out of order: %+v", hold)
	}
	if failed := hold.ByOutcome["failed"] + confirm.ByOutcome["failed"]; failed > 0 {
		t.Errorf("%d calls failed", failed)
	}
}

// TestFlashSale runs a small flash sale end to end against every target:
// the engine over gRPC, and the baseline designs (Redis on both clients).
func TestFlashSale(t *testing.T) {
	url := pgclustertest.Start(t).URL()
	targets := testTargets(url, func(t *testing.T) string { return startTestRedis(t).Addr() })
	for _, name := range testTargetNames() {
		t.Run(name, func(t *testing.T) {
			target := targets[name](t)
			defer target.Close()
			var progress bytes.Buffer
			pp := NewProgressPrinter(&progress, false, 100*time.Millisecond)
			res, err := Run(t.Context(), RunConfig{
				Target: target, Scenario: smallSale(t, "t-"+name), Concurrency: 200, Seed: 7,
				MaxDuration: 2 * time.Minute, Progress: pp.Update, ProgressEvery: 100 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			pp.Done()
			checkSale(t, res)
			if res.Target != name || res.Scenario != "flash-sale" || res.Users != 2000 || res.Capacity != 300 {
				t.Errorf("result header: %+v", res)
			}
			if progress.Len() == 0 {
				t.Error("no progress was printed")
			}
		})
	}
}

// TestSoldOutTime checks that a sale in which every user pays ends sold
// out, and the result says when, also for a target whose users read seat
// maps from a cache (the run's sampler and the confirms do not use it).
func TestSoldOutTime(t *testing.T) {
	url := pgclustertest.Start(t).URL()
	target, err := NewRedisSetNX(t.Context(), RedisSetNXConfig{
		RedisAddr: startTestRedis(t).Addr(), DatabaseURL: url, SeatMapMaxAge: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	sc, err := NewScenario("flash-sale", ScenarioConfig{
		Users: 10000, Rows: 10, SeatsPerRow: 30, HoldTTL: 10 * time.Second, PayDelay: time.Second,
		Retries: 3, ConfirmProb: 1, ShowPrefix: "so",
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc, Concurrency: 200, Seed: 3, MaxDuration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	checkSale(t, res)
	if !sc.Done() {
		t.Fatal("every user paid, yet the show did not sell out")
	}
	if res.SoldOutAfter <= 0 || res.AllHeldAfter <= 0 || res.SoldOutAfter < res.AllHeldAfter || res.SoldOutAfter > res.Duration {
		t.Errorf("sold out after %.2f s, all held after %.2f s, run of %.2f s", res.SoldOutAfter, res.AllHeldAfter, res.Duration)
	}
}

// TestOpenLoopCountsFromDueTime checks that an open-loop run counts a
// call's latency from when it was due: against a target that stalls every
// call for a while, users who arrive during the stall see it whole.
func TestOpenLoopCountsFromDueTime(t *testing.T) {
	target := &stallTarget{stall: 300 * time.Millisecond}
	sc, err := NewScenario("browse", ScenarioConfig{Users: 200, Shows: 2, Rows: 2, SeatsPerRow: 5, ShowPrefix: "ol"})
	if err != nil {
		t.Fatal(err)
	}
	// 200 users at 1,000/s arrive over 0.2 s; with 10 in flight they
	// queue behind each other, ~6 s in all.
	res, err := Run(t.Context(), RunConfig{
		Target: target, Scenario: sc, Rate: 1000, MaxInFlight: 10, SampleEvery: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	op, ok := res.Op("seatmap")
	if !ok || op.Count != 200 {
		t.Fatalf("seat map calls: %+v", op)
	}
	// Served 10 at a time, 300 ms each: the 200th user waits ~19 rounds.
	// Measured from its own start, every call would take 300 ms.
	if op.Max < 4000 {
		t.Errorf("max latency %.0f ms: the queueing behind the stall is hidden (coordinated omission)", op.Max)
	}
	if op.P50 < 1000 {
		t.Errorf("p50 %.0f ms, want the queueing counted (> 1 s)", op.P50)
	}
}

// TestClosedLoopIsDeterministic checks that a seed fixes the users' choices:
// against a target that answers at once, two runs ask for the same seats.
func TestClosedLoopIsDeterministic(t *testing.T) {
	asked := func() map[string]bool {
		target := &stallTarget{}
		sc, err := NewScenario("flash-sale", ScenarioConfig{Users: 300, Rows: 50, SeatsPerRow: 20, ShowPrefix: "det",
			HoldTTL: 10 * time.Second, Retries: 3, ConfirmProb: 0.8, PayDelay: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc, Concurrency: 1, Seed: 42}); err != nil {
			t.Fatal(err)
		}
		return target.asked
	}
	a, b := asked(), asked()
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("runs asked for %d and %d seat sets", len(a), len(b))
	}
	for k := range a {
		if !b[k] {
			t.Fatalf("the second run never asked for %s", k)
		}
	}
}

// TestConfirmProbability checks that a flash sale's users pay with the
// probability given, 0 and 1 included: with 0 nobody confirms a hold, with
// 1 everyone who held does (at once, with a pay delay of 0).
func TestConfirmProbability(t *testing.T) {
	for _, p := range []float64{0, 1} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			target := &stallTarget{}
			// 200 users of at most 4 seats each cannot sell out 1,000 seats.
			sc, err := NewScenario("flash-sale", ScenarioConfig{Users: 200, Rows: 50, SeatsPerRow: 20, ShowPrefix: "cp",
				HoldTTL: 10 * time.Second, Retries: 3, ConfirmProb: p, PayDelay: 0})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc, Concurrency: 20, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			holds, confirms := target.holds.Load(), target.confirms.Load()
			if holds != 200 {
				t.Fatalf("%d holds granted, want one per user (200)", holds)
			}
			if want := int64(p * float64(holds)); confirms != want {
				t.Errorf("probability %v: %d confirm calls for %d holds, want %d", p, confirms, holds, want)
			}
			if op, _ := res.Op("confirm"); op.Count != confirms {
				t.Errorf("the result counts %d confirms, the target saw %d", op.Count, confirms)
			}
		})
	}
}

// TestRetries checks that a user whose seats are taken tries again as many
// times as Retries says, none when it is 0.
func TestRetries(t *testing.T) {
	for _, retries := range []int{0, 2} {
		t.Run(fmt.Sprint(retries), func(t *testing.T) {
			target := &stallTarget{refuse: true}
			sc, err := NewScenario("flash-sale", ScenarioConfig{Users: 50, Rows: 5, SeatsPerRow: 10, ShowPrefix: "rt",
				HoldTTL: 10 * time.Second, Retries: retries, ConfirmProb: 1, PayDelay: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc, Concurrency: 10, Seed: 5}); err != nil {
				t.Fatal(err)
			}
			if got, want := target.holds.Load(), int64(50*(1+retries)); got != want {
				t.Errorf("retries %d: %d hold attempts by 50 users, want %d", retries, got, want)
			}
		})
	}
}

// TestScenarioTakesZeros checks that a flash sale keeps a zero Retries,
// ConfirmProb and PayDelay rather than replacing them by defaults, and
// that DefaultScenarioConfig gives the defaults.
func TestScenarioTakesZeros(t *testing.T) {
	sc, err := NewScenario("flash-sale", ScenarioConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg := sc.(*flashSale).cfg; cfg.Retries != 0 || cfg.ConfirmProb != 0 || cfg.PayDelay != 0 {
		t.Errorf("zero config: retries %d, confirm %v, pay delay %v; want all zero", cfg.Retries, cfg.ConfirmProb, cfg.PayDelay)
	}
	sc, err = NewScenario("flash-sale", DefaultScenarioConfig())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := sc.(*flashSale).cfg; cfg.Retries != 3 || cfg.ConfirmProb != 0.8 || cfg.PayDelay != 3*time.Second {
		t.Errorf("default config: retries %d, confirm %v, pay delay %v; want 3, 0.8, 3s", cfg.Retries, cfg.ConfirmProb, cfg.PayDelay)
	}
}

// stallTarget is an in-memory target whose every call takes stall; it
// grants every hold, or with refuse refuses every hold as taken, and
// records what was asked.
type stallTarget struct {
	stall           time.Duration
	refuse          bool
	holds, confirms atomic.Int64 // hold and confirm calls
	mu              sync.Mutex
	asked           map[string]bool // "user seats" of every hold asked
}

func (s *stallTarget) wait(ctx context.Context) error {
	if s.stall == 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return &Error{Outcome: Timeout, Err: ctx.Err()}
	case <-time.After(s.stall):
		return nil
	}
}

func (s *stallTarget) Name() string                                     { return "stall" }
func (s *stallTarget) CreateShow(ctx context.Context, _ ShowSpec) error { return nil }
func (s *stallTarget) Close() error                                     { return nil }
func (s *stallTarget) SeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	sm := SeatMap{Statuses: make([]SeatStatus, show.Capacity())}
	for i := range sm.Statuses {
		sm.Statuses[i] = Available
	}
	return sm, s.wait(ctx)
}
func (s *stallTarget) Hold(ctx context.Context, show ShowSpec, user string, seats []string) (Hold, error) {
	s.mu.Lock()
	if s.asked == nil {
		s.asked = map[string]bool{}
	}
	s.asked[user+" "+fmt.Sprint(seats)] = true
	s.mu.Unlock()
	s.holds.Add(1)
	if err := s.wait(ctx); err != nil {
		return Hold{}, err
	}
	if s.refuse {
		return Hold{}, &Error{Outcome: Taken, Seats: seats}
	}
	return Hold{ID: "h-" + user, User: user, Seats: seats}, nil
}
func (s *stallTarget) Confirm(ctx context.Context, _ ShowSpec, _ Hold, _ string) error {
	s.confirms.Add(1)
	return s.wait(ctx)
}
func (s *stallTarget) Records(ctx context.Context, _ ShowSpec) ([]Record, error) { return nil, nil }

// testTargetNames returns the targets of testTargets, in the order tests
// run them.
func testTargetNames() []string {
	return []string{"boxoffice", "pg-status", "redis-setnx", "redis-rueidis"}
}

// testTargets returns a constructor of each target on the database at url:
// the engine (a node started for the test), pg-status, and the Redis design
// on both clients, against the Redis server redisAddr returns.
func testTargets(url string, redisAddr func(t *testing.T) string) map[string]func(t *testing.T) Target {
	must := func(t *testing.T, tg Target, err error) Target {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	return map[string]func(t *testing.T) Target{
		"boxoffice": func(t *testing.T) Target {
			testcluster.Migrate(t, url)
			n := testcluster.StartNode(t, url, testcluster.Options{Quiet: true})
			b, err := NewBoxoffice(t.Context(), BoxofficeConfig{
				Addr: n.Server.GRPCAddr(), Token: testcluster.Token, AdminToken: testcluster.AdminToken, DatabaseURL: url,
			})
			return must(t, b, err)
		},
		"pg-status": func(t *testing.T) Target {
			p, err := NewPGStatus(t.Context(), PGStatusConfig{DatabaseURL: url})
			return must(t, p, err)
		},
		"redis-setnx": func(t *testing.T) Target {
			r, err := NewRedisSetNX(t.Context(), RedisSetNXConfig{RedisAddr: redisAddr(t), DatabaseURL: url})
			return must(t, r, err)
		},
		"redis-rueidis": func(t *testing.T) Target {
			r, err := NewRedisSetNX(t.Context(), RedisSetNXConfig{Client: Rueidis, RedisAddr: redisAddr(t), DatabaseURL: url})
			return must(t, r, err)
		},
	}
}
