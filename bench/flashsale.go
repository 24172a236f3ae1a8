package bench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// flashSale is an on-sale: one show, many users at once. Each user reads
// the seat map, picks 1..MaxSeats adjacent seats (crowding the front rows),
// holds them, and on "taken" refreshes and tries other seats, up to
// Retries more times. A user with a hold pays with probability
// ConfirmProb after a random delay and confirms; the others abandon the
// hold, which expires. The sale is over when every user is done or every
// seat is booked.
type flashSale struct {
	cfg    ScenarioConfig
	show   ShowSpec
	ids    []string     // the show's seat IDs in layout order
	booked atomic.Int64 // seats whose confirm was acknowledged
}

// saleDefaults fills in the zero fields of a one-show sale's cfg: 200,000
// users, 100 rows of 150 seats, up to 4 seats a user, and the scenario's
// hold TTL and front skew.
func saleDefaults(cfg *ScenarioConfig, ttl time.Duration, skew float64) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.Users, 200_000)
	def(&cfg.Rows, 100)
	def(&cfg.SeatsPerRow, 150)
	def(&cfg.MaxSeats, 4)
	if cfg.HoldTTL == 0 {
		cfg.HoldTTL = ttl
	}
	if cfg.FrontSkew == 0 {
		cfg.FrontSkew = skew
	}
}

func newFlashSale(cfg ScenarioConfig) (Scenario, error) {
	// Retries, ConfirmProb and PayDelay are taken as given: zero is a
	// meaningful value of each (see ScenarioConfig).
	saleDefaults(&cfg, 15*time.Second, 2)
	switch {
	case cfg.MaxSeats < 1 || cfg.MaxSeats > 10:
		return nil, fmt.Errorf("flash-sale: max seats %d: want 1..10", cfg.MaxSeats)
	case !(cfg.ConfirmProb >= 0 && cfg.ConfirmProb <= 1): // also refuses NaN
		return nil, fmt.Errorf("flash-sale: confirm probability %v: want 0..1", cfg.ConfirmProb)
	case cfg.PayDelay < 0:
		return nil, fmt.Errorf("flash-sale: pay delay %v: want ≥ 0", cfg.PayDelay)
	case cfg.PayDelay >= cfg.HoldTTL:
		return nil, fmt.Errorf("flash-sale: pay delay %v must be shorter than the hold TTL %v", cfg.PayDelay, cfg.HoldTTL)
	case !(cfg.FrontSkew >= 1): // also refuses NaN
		return nil, fmt.Errorf("flash-sale: front skew %v: want ≥ 1", cfg.FrontSkew)
	case cfg.Users < 1 || cfg.Rows < 1 || cfg.SeatsPerRow < 1 || cfg.Retries < 0:
		return nil, errors.New("flash-sale: users, rows and seats per row must be positive, retries not negative")
	}
	show := layout(cfg.ShowPrefix+"-sale", cfg.Rows, cfg.SeatsPerRow, cfg.HoldTTL)
	return &flashSale{cfg: cfg, show: show, ids: show.SeatIDs()}, nil
}

func (f *flashSale) Name() string      { return "flash-sale" }
func (f *flashSale) Shows() []ShowSpec { return []ShowSpec{f.show} }
func (f *flashSale) Users() int        { return f.cfg.Users }
func (f *flashSale) Done() bool        { return f.booked.Load() >= int64(f.show.Capacity()) }

func (f *flashSale) User(ctx context.Context, u *User) { f.shop(ctx, u) }

// shop plays one shopper of the sale; it reports whether the user has a
// hold it will pay for.
func (f *flashSale) shop(ctx context.Context, u *User) (booking bool) {
	want := 1 + u.Rand.IntN(f.cfg.MaxSeats)
	for attempt := 0; attempt <= f.cfg.Retries; attempt++ {
		sm, err := u.SeatMap(ctx, f.show)
		if err != nil {
			if !u.Backoff(ctx, err) {
				return
			}
			continue
		}
		idx := pickSeats(f.show, sm, want, f.cfg.FrontSkew, u.Rand)
		if idx == nil {
			u.SawSoldOut()
			return
		}
		seats := make([]string, len(idx))
		for i, x := range idx {
			seats[i] = f.ids[x]
		}
		hold, err := u.Hold(ctx, f.show, seats)
		switch OutcomeOf(err) {
		case OK:
			if u.Rand.Float64() >= f.cfg.ConfirmProb { // always when ConfirmProb is 0
				return // abandoned: the hold expires
			}
			pay := f.cfg.PayDelay/10 + time.Duration(u.Rand.Int64N(int64(f.cfg.PayDelay-f.cfg.PayDelay/10)+1))
			u.Later(pay, func(ctx context.Context, u *User) {
				if u.Confirm(ctx, f.show, hold) == nil &&
					f.booked.Add(int64(len(hold.Seats))) >= int64(f.show.Capacity()) {
					u.SoldOut()
				}
			})
			return true
		case Taken:
			continue // refresh the map and try other seats
		case Unavailable, Timeout:
			if !u.Backoff(ctx, err) {
				return
			}
		default:
			return
		}
	}
	return false
}
