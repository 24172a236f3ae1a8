package bench

import (
	"context"
	"fmt"
	"time"
)

// browse is read-heavy traffic: users refreshing the seat maps of many
// shows. Each virtual user is one refresh of a random show's map, so an
// open-loop run at rate R is R seat-map reads per second (the seeds'
// estimate: 200,000 users refreshing every 2 s, 100,000 reads/s).
type browse struct {
	cfg   ScenarioConfig
	shows []ShowSpec
}

func newBrowse(cfg ScenarioConfig) (Scenario, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.Users, 200_000)
	def(&cfg.Shows, 20)
	def(&cfg.Rows, 100)
	def(&cfg.SeatsPerRow, 150)
	if cfg.HoldTTL == 0 {
		cfg.HoldTTL = 5 * time.Minute
	}
	if cfg.Users < 1 || cfg.Shows < 1 || cfg.Rows < 1 || cfg.SeatsPerRow < 1 {
		return nil, fmt.Errorf("browse: users, shows, rows and seats per row must be positive")
	}
	b := &browse{cfg: cfg}
	for i := range cfg.Shows {
		b.shows = append(b.shows, layout(fmt.Sprintf("%s-browse-%d", cfg.ShowPrefix, i), cfg.Rows, cfg.SeatsPerRow, cfg.HoldTTL))
	}
	return b, nil
}

func (b *browse) Name() string      { return "browse" }
func (b *browse) Shows() []ShowSpec { return b.shows }
func (b *browse) Users() int        { return b.cfg.Users }
func (b *browse) Done() bool        { return false }

func (b *browse) User(ctx context.Context, u *User) {
	_, _ = u.SeatMap(ctx, b.shows[u.Rand.IntN(len(b.shows))])
}
