package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
)

// TestHoldStormCut checks the cut of a hold-storm's show: every seat in
// exactly one block, each block 1..MaxSeats adjacent seats of one row, the
// sizes about equally common, and the same cut for every run.
func TestHoldStormCut(t *testing.T) {
	for _, maxSeats := range []int{1, 4, 10} {
		sc, err := NewScenario("hold-storm", ScenarioConfig{MaxSeats: maxSeats, ShowPrefix: "cut"})
		if err != nil {
			t.Fatal(err)
		}
		h := sc.(*holdStorm)
		if h.Users() != 200_000 || h.show.Capacity() != 15_000 || h.show.HoldTTL != 10*time.Minute || h.Done() {
			t.Fatalf("defaults: %d users, %d seats, TTL %v, done %v", h.Users(), h.show.Capacity(), h.show.HoldTTL, h.Done())
		}
		seen := map[string]int{}
		sizes := map[int]int{}
		for r, blocks := range h.rows {
			for _, b := range blocks {
				if len(b) < 1 || len(b) > maxSeats {
					t.Fatalf("max %d: block %v", maxSeats, b)
				}
				sizes[len(b)]++
				for i, s := range b {
					row, num, _ := strings.Cut(s, "-")
					n, _ := strconv.Atoi(num)
					first, _ := strconv.Atoi(strings.TrimPrefix(b[0], row+"-"))
					if row != h.show.Rows[r].Label || n != first+i {
						t.Fatalf("max %d: block %v is not adjacent seats of row %s", maxSeats, b, h.show.Rows[r].Label)
					}
					seen[s]++
				}
			}
		}
		for _, id := range h.show.SeatIDs() {
			if seen[id] != 1 {
				t.Fatalf("max %d: seat %s is in %d blocks", maxSeats, id, seen[id])
			}
		}
		if len(seen) != h.show.Capacity() {
			t.Fatalf("max %d: blocks name %d seats, the show has %d", maxSeats, len(seen), h.show.Capacity())
		}
		for n := 1; n < maxSeats; n++ { // the last block of a row may be cut short, favouring small ones
			if sizes[n] < sizes[maxSeats]/2 || sizes[n] > sizes[maxSeats]*2 {
				t.Errorf("max %d: block sizes %v, want about equal counts", maxSeats, sizes)
			}
		}
		again, _ := NewScenario("hold-storm", ScenarioConfig{MaxSeats: maxSeats, ShowPrefix: "other"})
		if !slices.EqualFunc(h.rows, again.(*holdStorm).rows, func(a, b [][]string) bool {
			return slices.EqualFunc(a, b, slices.Equal[[]string])
		}) {
			t.Errorf("max %d: two hold-storms cut the show differently", maxSeats)
		}
	}
}

// TestHoldStormCoverage plays the default hold-storm's draws against a
// perfect store (a hold succeeds when all its seats are free): the
// 200,000 attempts hold every seat, well before the last one. Random runs
// at random offsets would leave ~120 seats never held (see holdStorm).
func TestHoldStormCoverage(t *testing.T) {
	sc, err := NewScenario("hold-storm", ScenarioConfig{ShowPrefix: "cov"})
	if err != nil {
		t.Fatal(err)
	}
	h := sc.(*holdStorm)
	for seed := range uint64(3) {
		held := map[string]bool{}
		allAt := -1
		for i := range h.Users() {
			b := h.pick(rand.New(rand.NewPCG(seed, uint64(i)))) // as the runner seeds user i
			if slices.ContainsFunc(b, func(s string) bool { return held[s] }) {
				continue
			}
			for _, s := range b {
				held[s] = true
			}
			if len(held) == h.show.Capacity() {
				allAt = i
				break
			}
		}
		if allAt < 0 {
			t.Fatalf("seed %d: %d of %d seats held after every attempt", seed, len(held), h.show.Capacity())
		}
		t.Logf("seed %d: every seat held after %d attempts", seed, allAt+1)
		if allAt > h.Users()/2 {
			t.Errorf("seed %d: every seat held only after %d attempts of %d", seed, allAt+1, h.Users())
		}
	}
}

func TestHoldStormConfigRefused(t *testing.T) {
	for name, cfg := range map[string]ScenarioConfig{
		"11 seats":       {MaxSeats: 11},
		"negative seats": {MaxSeats: -1},
		"skew below 1":   {FrontSkew: 0.5},
		"skew NaN":       {FrontSkew: math.NaN()},
		"negative users": {Users: -1},
		"negative rows":  {Rows: -1},
	} {
		if _, err := NewScenario("hold-storm", cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestHoldStorm runs a small hold-storm end to end against every target:
// 3,000 users, one attempt each, on 300 seats. Every seat ends held, the
// holds stay (nothing is confirmed), the run says when every seat was held,
// and the verification passes.
func TestHoldStorm(t *testing.T) {
	url := pgclustertest.Start(t).URL()
	redisAddr := startTestRedis(t).Addr() // one server for both Redis targets
	targets := testTargets(url, func(*testing.T) string { return redisAddr })
	for _, name := range testTargetNames() {
		t.Run(name, func(t *testing.T) {
			target := targets[name](t)
			defer target.Close()
			sc, err := NewScenario("hold-storm", ScenarioConfig{Users: 3000, Rows: 10, SeatsPerRow: 30, ShowPrefix: "hs-" + name})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc, Concurrency: 64, Seed: 11, MaxDuration: 2 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			v, ok := res.Verification.(Verification)
			if !ok || !v.Verified() {
				t.Fatalf("verification: %v", res.Verification)
			}
			hold, _ := res.Op("hold")
			if hold.Count != 3000 || res.Users != 3000 || res.Capacity != 300 {
				t.Errorf("%d hold attempts by %d users, want one each; capacity %d", hold.Count, res.Users, res.Capacity)
			}
			if _, called := res.Op("confirm"); called {
				t.Error("a hold-storm confirmed")
			}
			if _, called := res.Op("seatmap"); called {
				t.Error("a hold-storm user read the seat map")
			}
			if failed := hold.ByOutcome["failed"] + hold.ByOutcome["timeout"] + hold.ByOutcome["unavailable"]; failed > 0 {
				t.Errorf("%d holds failed: %v", failed, hold.ByOutcome)
			}
			if ok := hold.ByOutcome["ok"]; ok+hold.ByOutcome["taken"] != 3000 || v.Counts.AckedHolds != int(ok) {
				t.Errorf("outcomes %v, %d acknowledged holds verified", hold.ByOutcome, v.Counts.AckedHolds)
			}
			if v.Counts.HeldSeats != 300 || v.Counts.LiveHolds != int(hold.ByOutcome["ok"]) || v.Counts.BookedSeats != 0 {
				t.Errorf("store: %+v, want the 300 seats held by the granted holds", v.Counts)
			}
			if res.AllHeldAfter <= 0 || res.AllHeldAfter > res.Duration || res.SoldOutAfter != 0 {
				t.Errorf("all held after %v s, sold out after %v s, run of %v s", res.AllHeldAfter, res.SoldOutAfter, res.Duration)
			}
			if att, _ := res.HoldRates(); att != hold.Throughput {
				t.Errorf("hold attempts/s %v, want over the whole run (%v)", att, hold.Throughput)
			}
			if res.CPU["client"] <= 0 {
				t.Errorf("client CPU %v", res.CPU)
			}
		})
	}
}
