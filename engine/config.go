package engine

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Clock tells the time. Tests inject one they can move.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Config configures a Node.
type Config struct {
	// NodeID names this node. Required.
	NodeID string
	// Clock gives the time of every decision. Nil means SystemClock.
	Clock Clock
	// ExpiryInterval is how often due holds are looked for; a hold expires
	// at most about this late. Zero means 200 ms.
	ExpiryInterval time.Duration
	// MaxExpiriesPerTick bounds the expiries one show queues per tick, so an
	// expiry wave does not crowd out holds. Zero means 2048.
	MaxExpiriesPerTick int
	// Logger receives the node's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the node's metrics. Nil means a private registry.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with every default filled in except NodeID.
func DefaultConfig() Config {
	return Config{
		Clock:              SystemClock{},
		ExpiryInterval:     200 * time.Millisecond,
		MaxExpiriesPerTick: 2048,
		Logger:             slog.Default(),
	}
}

// Validate reports a Config that New cannot use.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("engine: NodeID is required")
	}
	if c.ExpiryInterval < 0 || c.MaxExpiriesPerTick < 0 {
		return errors.New("engine: negative ExpiryInterval or MaxExpiriesPerTick")
	}
	return nil
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	if c.ExpiryInterval == 0 {
		c.ExpiryInterval = d.ExpiryInterval
	}
	if c.MaxExpiriesPerTick == 0 {
		c.MaxExpiriesPerTick = d.MaxExpiriesPerTick
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
}
