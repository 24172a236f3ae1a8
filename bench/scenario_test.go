package bench

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestPickSeats(t *testing.T) {
	show := layout("s", 3, 5, time.Minute) // A-1..A-5, B-1..B-5, C-1..C-5
	all := func(st SeatStatus) SeatMap {
		sm := SeatMap{Statuses: make([]SeatStatus, show.Capacity())}
		for i := range sm.Statuses {
			sm.Statuses[i] = st
		}
		return sm
	}
	rng := rand.New(rand.NewPCG(1, 2))

	t.Run("adjacent and available", func(t *testing.T) {
		sm := all(Available)
		for range 200 {
			idx := pickSeats(show, sm, 3, 2, rng)
			if len(idx) != 3 {
				t.Fatalf("picked %v, want 3 seats", idx)
			}
			for i := 1; i < len(idx); i++ {
				if idx[i] != idx[i-1]+1 {
					t.Fatalf("picked %v: not adjacent", idx)
				}
			}
			if idx[0]/5 != idx[2]/5 {
				t.Fatalf("picked %v: crosses a row", idx)
			}
		}
	})
	t.Run("only free seats", func(t *testing.T) {
		sm := all(Booked)
		sm.Statuses[11], sm.Statuses[12] = Available, Available // C-2, C-3
		for range 50 {
			idx := pickSeats(show, sm, 4, 1, rng)
			if len(idx) != 2 || idx[0] != 11 || idx[1] != 12 {
				t.Fatalf("picked %v, want the only two free seats [11 12]", idx)
			}
		}
	})
	t.Run("fewer when no run is long enough", func(t *testing.T) {
		sm := all(Held)
		sm.Statuses[0], sm.Statuses[7] = Available, Available
		idx := pickSeats(show, sm, 2, 1, rng)
		if len(idx) != 1 || (idx[0] != 0 && idx[0] != 7) {
			t.Fatalf("picked %v, want one of the two free seats", idx)
		}
	})
	t.Run("none available", func(t *testing.T) {
		if idx := pickSeats(show, all(Booked), 1, 1, rng); idx != nil {
			t.Fatalf("picked %v from a sold-out map", idx)
		}
	})
	t.Run("skew crowds the front", func(t *testing.T) {
		big := layout("b", 100, 10, time.Minute)
		sm := SeatMap{Statuses: make([]SeatStatus, big.Capacity())}
		for i := range sm.Statuses {
			sm.Statuses[i] = Available
		}
		front := 0
		for range 1000 {
			if pickSeats(big, sm, 1, 3, rng)[0] < big.Capacity()/4 {
				front++
			}
		}
		// With skew 3, P(row < 25%) = 0.25^(1/3) ≈ 0.63.
		if front < 550 || front > 710 {
			t.Fatalf("%d of 1000 picks in the front quarter, want about 630", front)
		}
	})
}

func TestFit(t *testing.T) {
	const A, H = Available, Held
	for _, c := range []struct {
		name       string
		row        []SeatStatus
		off, n     int
		start, len int
	}{
		{"at the offset", []SeatStatus{A, A, A, A, A}, 2, 2, 2, 2},
		{"after the offset", []SeatStatus{A, A, H, A, A, A}, 1, 3, 3, 3},
		{"a run that began before the offset", []SeatStatus{A, A, A, A}, 2, 2, 2, 2},
		{"wraps to before the offset", []SeatStatus{A, A, A, H, A}, 3, 2, 0, 2},
		{"the longest shorter run", []SeatStatus{A, H, A, A, A, H, A, A}, 0, 4, 2, 3},
		{"the first of equal runs after the offset", []SeatStatus{H, A, A, H, A, A, H, A, A}, 5, 3, 7, 2},
		{"the first of equal runs, wrapping", []SeatStatus{H, A, A, H, A, A}, 5, 3, 1, 2},
		{"a longer run before the offset", []SeatStatus{A, A, A, H, A, H}, 4, 4, 0, 3},
		{"none free", []SeatStatus{H, H, H}, 0, 1, 0, 0},
	} {
		if start, l := fit(c.row, c.off, c.n); start != c.start || l != c.len {
			t.Errorf("%s: fit(%v, off %d, n %d) = %d, %d; want %d, %d", c.name, c.row, c.off, c.n, start, l, c.start, c.len)
		}
	}
}

// BenchmarkPickSeats picks 1-4 seats from a 15,000-seat map (100 rows of
// 150) with 90% of its seats taken, at random, as late in a sale.
func BenchmarkPickSeats(b *testing.B) {
	show := layout("s", 100, 150, time.Minute)
	rng := rand.New(rand.NewPCG(1, 2))
	sm := SeatMap{Statuses: make([]SeatStatus, show.Capacity())}
	for i := range sm.Statuses {
		sm.Statuses[i] = Available
		if rng.IntN(10) != 0 {
			sm.Statuses[i] = Held
		}
	}
	for b.Loop() {
		if pickSeats(show, sm, 1+rng.IntN(4), 3, rng) == nil {
			b.Fatal("no seats picked")
		}
	}
}

func TestScenarioConfigRefused(t *testing.T) {
	for name, cfg := range map[string]ScenarioConfig{
		"11 seats":             {MaxSeats: 11},
		"pay longer than hold": {HoldTTL: 10 * time.Second, PayDelay: 20 * time.Second},
		"probability above 1":  {ConfirmProb: 1.5},
		"probability below 0":  {ConfirmProb: -0.1},
		"probability NaN":      {ConfirmProb: math.NaN()},
		"negative pay delay":   {PayDelay: -time.Second},
		"negative retries":     {Retries: -1},
		"skew below 1":         {FrontSkew: 0.5},
		"skew NaN":             {FrontSkew: math.NaN()},
		"negative users":       {Users: -1},
	} {
		if _, err := NewScenario("flash-sale", cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewScenario("no-such", ScenarioConfig{}); err == nil {
		t.Error("an unknown scenario was accepted")
	}
}

// fitByStep is fit as it was first written, a step per seat: the
// reference for TestFitMatchesStepwise.
func fitByStep(row []SeatStatus, off, n int) (start, length int) {
	before := -1
	longest, longStart := 0, 0
	run := 0
	for i, s := range row {
		if s != Available {
			run = 0
			continue
		}
		run++
		if run < n {
			at := i - run + 1
			if run > longest || (run == longest && longStart < off && at >= off) {
				longest, longStart = run, at
			}
			continue
		}
		if at := i - n + 1; at >= off {
			return at, n
		} else if before < 0 {
			before = at
		}
	}
	if before >= 0 {
		return before, n
	}
	return longStart, longest
}

// TestFitMatchesStepwise: fit, which skips taken seats with IndexByte,
// answers as the stepwise scan does for random rows, offsets and sizes,
// so a seed picks the same seats as before.
func TestFitMatchesStepwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		row := make([]SeatStatus, rng.IntN(40))
		full := rng.Float64()
		for i := range row {
			row[i] = Available
			if rng.Float64() < full {
				row[i] = Held + SeatStatus(rng.IntN(2))
			}
		}
		off := 0
		if len(row) > 0 {
			off = rng.IntN(len(row))
		}
		n := 1 + rng.IntN(5)
		s1, l1 := fit(row, off, n)
		s2, l2 := fitByStep(row, off, n)
		if s1 != s2 || l1 != l2 {
			t.Fatalf("fit(%v, off %d, n %d) = %d, %d; stepwise %d, %d", row, off, n, s1, l1, s2, l2)
		}
	}
}
