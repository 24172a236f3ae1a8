package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// holdStorm measures raw hold capacity, as redis-benchmark measures a
// server's: every user makes exactly one hold attempt, on seats chosen
// without reading the seat map, and nobody confirms. The show is cut once
// into blocks (single seats, or runs of 2..MaxSeats adjacent seats of one
// row, each size about as likely), and each user asks for one block drawn
// with its own seeded random source, from a row drawn with FrontSkew
// (uniform by default). Most attempts find their block taken; the holds
// that succeed stay held (the default TTL outlasts a run), and the run
// notes when the acknowledged holds cover every seat ("all held").
//
// Users ask for blocks of one fixed cut rather than for runs at random
// offsets because random runs leave isolated seats that only a single-seat
// attempt at exactly that seat can take: with 200,000 random attempts of
// 1–4 seats on 15,000 seats, about 120 seats were never held, so "all held"
// was never reached. With the cut (~6,000 blocks), every block is drawn
// ~33 times on average, and every seat is held after 43,000–58,000
// attempts (TestHoldStormCoverage). The cut depends only
// on the layout and MaxSeats (a fixed seed), so every target and every
// round of a comparison races for the same blocks; the users' draws follow
// the run's seed.
type holdStorm struct {
	cfg    ScenarioConfig
	show   ShowSpec
	rows   [][][]string // rows[r]: row r's blocks, each its seat IDs; shared, read-only
	seats  int64        // capacity
	heldOK atomic.Int64 // seats of acknowledged holds
}

// holdStormCutSeed seeds the cut of the show into blocks.
const holdStormCutSeed = 0x686f6c6473746f72 // "holdstor"

func newHoldStorm(cfg ScenarioConfig) (Scenario, error) {
	// The hold TTL is longer than the default maximum run (5 minutes), so
	// that holds stay held; the engine accepts up to an hour.
	saleDefaults(&cfg, 10*time.Minute, 1)
	switch {
	case cfg.MaxSeats < 1 || cfg.MaxSeats > MaxSeatsPerUser:
		return nil, fmt.Errorf("hold-storm: max seats %d: want 1..%d", cfg.MaxSeats, MaxSeatsPerUser)
	case !(cfg.FrontSkew >= 1): // also refuses NaN
		return nil, fmt.Errorf("hold-storm: front skew %v: want ≥ 1", cfg.FrontSkew)
	case cfg.Users < 1 || cfg.Rows < 1 || cfg.SeatsPerRow < 1:
		return nil, errors.New("hold-storm: users, rows and seats per row must be positive")
	}
	show := layout(cfg.ShowPrefix+"-storm", cfg.Rows, cfg.SeatsPerRow, cfg.HoldTTL)
	h := &holdStorm{cfg: cfg, show: show, seats: int64(show.Capacity())}
	rng := rand.New(rand.NewPCG(holdStormCutSeed, uint64(cfg.MaxSeats)))
	for _, r := range show.Rows {
		var blocks [][]string
		for n := 1; n <= r.Seats; {
			size := min(1+rng.IntN(cfg.MaxSeats), r.Seats-n+1)
			b := make([]string, size)
			for i := range b {
				b[i] = SeatID(r.Label, n+i)
			}
			blocks = append(blocks, b)
			n += size
		}
		h.rows = append(h.rows, blocks)
	}
	return h, nil
}

func (h *holdStorm) Name() string      { return "hold-storm" }
func (h *holdStorm) Shows() []ShowSpec { return []ShowSpec{h.show} }
func (h *holdStorm) Users() int        { return h.cfg.Users }

// Done returns false: every user makes its attempt, even once every seat
// is held (those attempts are refusals the target must still answer).
func (h *holdStorm) Done() bool { return false }

// User makes the user's one hold attempt, on a block it draws. The block's
// slice is shared with the other users who draw it; targets only read it.
func (h *holdStorm) User(ctx context.Context, u *User) {
	seats := h.pick(u.Rand)
	if _, err := u.Hold(ctx, h.show, seats); err == nil && h.heldOK.Add(int64(len(seats))) >= h.seats {
		u.AllHeld()
	}
}

// pick draws a block: a row with FrontSkew, then one of its blocks.
func (h *holdStorm) pick(rng *rand.Rand) []string {
	row := int(float64(len(h.rows)) * math.Pow(rng.Float64(), h.cfg.FrontSkew))
	blocks := h.rows[min(row, len(h.rows)-1)]
	return blocks[rng.IntN(len(blocks))]
}
