package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
	"unsafe"
)

// Scenario is a workload: the shows it needs and what each virtual user
// does. A new scenario (a waitlist, a node failure during a sale) is one new
// type implementing it, registered in Scenarios.
type Scenario interface {
	// Name is the scenario's name as given to --scenario.
	Name() string
	// Shows lists the shows the scenario creates before the run and
	// verifies after it.
	Shows() []ShowSpec
	// Users is how many virtual users the run has.
	Users() int
	// User plays virtual user i until it is done. Calls go through u,
	// which times and records them.
	User(ctx context.Context, u *User)
	// Done reports whether the run may stop before every user is done
	// (the show is sold out).
	Done() bool
}

// ScenarioConfig holds the knobs of every scenario; each uses the ones it
// needs. A zero Users, Rows, SeatsPerRow, Shows, HoldTTL, MaxSeats or
// FrontSkew means the scenario's default (zero is not a valid value of
// any of them). Retries, ConfirmProb and PayDelay are used as given, zero
// included (no retry, nobody pays, users pay at once): start from
// DefaultScenarioConfig to get their defaults.
type ScenarioConfig struct {
	Users       int           // virtual users
	Rows        int           // rows of each show
	SeatsPerRow int           // seats of each row
	Shows       int           // shows (browse)
	HoldTTL     time.Duration // hold TTL of the shows
	MaxSeats    int           // a user asks for 1..MaxSeats adjacent seats
	Retries     int           // attempts after a refusal (AlreadyExists), ≥ 0 (flash-sale)
	ConfirmProb float64       // probability that a user pays for a hold, in [0, 1] (flash-sale)
	PayDelay    time.Duration // the longest a user takes to pay (uniform from a tenth of it), ≥ 0 (flash-sale)
	FrontSkew   float64       // ≥ 1; larger crowds the front rows
	ShowPrefix  string        // prefix of the show IDs, unique per run

	// The on-sale's crowd and waiting room; zero means the default.
	Arrivals       time.Duration // the users arrive over this (20 s)
	AdmitPerSecond float64       // the room's admissions a second (2,000)
	MaxActive      int           // the room's cap on shoppers (0: none)
	NoRoom         bool          // no room: the crowd shops at once
}

// DefaultScenarioConfig returns the configuration of the default sale:
// Retries 3, ConfirmProb 0.8 and PayDelay 3 s; its other fields are zero,
// which gives each scenario its defaults.
func DefaultScenarioConfig() ScenarioConfig {
	return ScenarioConfig{Retries: 3, ConfirmProb: 0.8, PayDelay: 3 * time.Second}
}

// ScenarioNames lists the scenarios that NewScenario knows.
func ScenarioNames() []string { return []string{"browse", "flash-sale", "hold-storm", "on-sale"} }

// NewScenario returns the named scenario.
func NewScenario(name string, cfg ScenarioConfig) (Scenario, error) {
	if cfg.ShowPrefix == "" {
		cfg.ShowPrefix = fmt.Sprintf("bench-%d", time.Now().Unix())
	}
	switch name {
	case "flash-sale":
		return newFlashSale(cfg)
	case "browse":
		return newBrowse(cfg)
	case "hold-storm":
		return newHoldStorm(cfg)
	case "on-sale":
		return newOnSale(cfg)
	}
	return nil, fmt.Errorf("bench: unknown scenario %q (have %v)", name, ScenarioNames())
}

// layout builds a show of rows×seats seats with rows labelled A..Z, AA...
func layout(id string, rows, seats int, ttl time.Duration) ShowSpec {
	s := ShowSpec{ID: id, HoldTTL: ttl}
	for i := range rows {
		s.Rows = append(s.Rows, RowSpec{Label: rowLabel(i), Seats: seats})
	}
	return s
}

// rowLabel names row i: A..Z, then AA, AB, ...
func rowLabel(i int) string {
	if i < 26 {
		return string(rune('A' + i))
	}
	return rowLabel(i/26-1) + string(rune('A'+i%26))
}

// pickSeats chooses n adjacent available seats, starting from a row drawn
// with the given skew toward the front (row = rows·u^skew for uniform u) and
// moving back row by row; in a row, the first fit at or after a random seat
// (so users spread out), else the row's first fit. When no row has n
// adjacent seats it takes the longest run of fewer. It returns the seats'
// indexes in layout order, or nil when none is available.
//
// It reads each row once, so a pick costs one pass over the seat map at
// worst (a nearly full show), whatever n is; a full one costs one
// vectorised scan.
func pickSeats(show ShowSpec, sm SeatMap, n int, skew float64, rng *rand.Rand) []int {
	all := unsafe.Slice((*byte)(unsafe.SliceData(sm.Statuses)), len(sm.Statuses)) // SeatStatus is a byte
	if bytes.IndexByte(all, byte(Available)) < 0 {
		return nil // a full house, as most users of a sale find it, in one scan
	}
	rows := len(show.Rows)
	first := int(float64(rows) * math.Pow(rng.Float64(), skew))
	first = min(first, rows-1)
	lo := 0 // index of the row's first seat
	for _, r := range show.Rows[:first] {
		lo += r.Seats
	}
	best, bestLen := 0, 0 // the first longest run shorter than n
	for k := range rows {
		row := (first + k) % rows
		if row == 0 {
			lo = 0
		}
		hi := lo + show.Rows[row].Seats
		at, l := fit(sm.Statuses[lo:hi], rng.IntN(hi-lo), n)
		if l == n {
			return seatRun(lo+at, n)
		}
		if l > bestLen {
			best, bestLen = lo+at, l
		}
		lo = hi
	}
	if bestLen == 0 {
		return nil
	}
	return seatRun(best, bestLen)
}

// fit finds n adjacent available seats in one row's statuses: the first
// run of n starting at or after off, else the first before it. It returns
// the run's start and n, or, when the row has no n adjacent seats, the
// start and length of its longest run, the first at or after off if there
// is one of that length, else the first before it (length 0 if no seat is
// free).
//
// It looks for the next available seat with bytes.IndexByte, so the taken
// seats of a nearly full row cost a vectorised scan rather than a step
// each: a user who reads a full seat map of 15,000 seats pays about a
// microsecond to find nothing (this is the load generator's own CPU, which
// shares the machine with the target).
func fit(row []SeatStatus, off, n int) (start, length int) {
	b := unsafe.Slice((*byte)(unsafe.SliceData(row)), len(row)) // SeatStatus is a byte
	before := -1                                                // the first fit starting before off
	longest, longStart := 0, 0
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], byte(Available))
		if j < 0 {
			break
		}
		s := i + j
		e := s + 1
		for e < len(b) && b[e] == byte(Available) {
			e++
		}
		i = e
		if e-s >= n {
			if at := max(s, off); at <= e-n {
				return at, n
			}
			if before < 0 {
				before = s
			}
			continue
		}
		if l := e - s; l > longest || (l == longest && longStart < off && s >= off) {
			longest, longStart = l, s
		}
	}
	if before >= 0 {
		return before, n
	}
	return longStart, longest
}

// seatRun returns the indexes from, from+1, ..., from+n-1.
func seatRun(from, n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = from + i
	}
	return idx
}
