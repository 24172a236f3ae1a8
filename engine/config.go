package engine

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// Clock tells the time. Tests inject one they can move.
type Clock interface {
	Now() time.Time
}

// SystemClock is the real clock. Made by NewSystemClock, it tells the wall
// time at its creation plus the monotonic time elapsed since, so it never
// steps back when the wall clock is set back, and advances at the rate of
// real time. The zero value reads the wall clock as it is.
type SystemClock struct{ start time.Time }

// NewSystemClock returns a SystemClock anchored at the wall time now.
func NewSystemClock() SystemClock { return SystemClock{start: time.Now()} }

// Now returns the time.
func (c SystemClock) Now() time.Time {
	if c.start.IsZero() {
		return time.Now()
	}
	return c.start.Add(time.Since(c.start))
}

// Config configures a Node.
type Config struct {
	// NodeID names this node. Required; with a Ring, it must be the ring's
	// name for this node.
	NodeID string
	// Ring names every show's owner; nil means this node is alone and owns
	// every show.
	Ring Ring
	// LeaseRenewInterval is how often the leases of the loaded shows are
	// renewed: several times per the store's lease. Zero means 500 ms.
	LeaseRenewInterval time.Duration
	// LeaseSlack is added to another node's remaining lease before a take
	// is tried again. Zero means 20 ms.
	LeaseSlack time.Duration
	// AcquireWait bounds how long a load waits for another node's lease on
	// the show to run out. Zero means 3 s (twice the store's default lease).
	AcquireWait time.Duration
	// HandOffTimeout bounds how long a show handed off waits for its writes
	// in flight before its lease is released. Zero means 6 s (the store's
	// commit timeout and a margin).
	HandOffTimeout time.Duration
	// Clock gives the time of every decision. Nil means SystemClock.
	Clock Clock
	// ExpiryInterval is how often due holds are looked for; a hold expires
	// at most about this late. Zero means 200 ms.
	ExpiryInterval time.Duration
	// MaxExpiriesPerTick bounds the expiries one show queues per tick, so an
	// expiry wave does not crowd out holds. Zero means 2048.
	MaxExpiriesPerTick int
	// IdleEvictAfter is how long a loaded show with no live holds, nobody on
	// its waitlist or in its waiting room and no write in flight stays in
	// memory after its last use; then it is evicted
	// and its ownership released. Zero means 10 minutes.
	IdleEvictAfter time.Duration
	// MaxWaitlist bounds the users on one show's waitlist (waiting or
	// holding a turn); a join beyond it is refused with ErrWaitlistFull.
	// Zero means 200,000.
	MaxWaitlist int
	// IdempotencyRetention is how long an idempotency key is remembered; it
	// should equal the store's. Zero means 24 hours.
	IdempotencyRetention time.Duration
	// AdmissionKey signs and checks waiting rooms' admission tokens; every
	// node of a cluster needs the same. Without one the node creates no
	// show with a waiting room, and refuses the holds of such a show as
	// NOT_ADMITTED.
	AdmissionKey wu.TokenKey
	// NotFoundTTL is how long an unknown show ID is answered NotFound from
	// memory; NotFoundCacheSize bounds how many are remembered. A show
	// created on this node is found at once; one created through another
	// node may be answered NotFound here for up to NotFoundTTL. Zero means
	// 2 s and 10,000.
	NotFoundTTL       time.Duration
	NotFoundCacheSize int
	// MaxConcurrentLoads bounds the show loads that use the database at
	// once, so a flood of show IDs leaves the store's pool to other reads
	// (the writer has a connection of its own); MaxPendingLoads bounds the
	// shows loading (running or waiting for a turn), beyond which a load is
	// refused as overloaded. LoadTimeout bounds one load, its wait
	// for a turn included. Zero means 4, 1024 and 10 s.
	MaxConcurrentLoads int
	MaxPendingLoads    int
	LoadTimeout        time.Duration
	// Logger receives the node's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the node's metrics. Nil means a private registry.
	Registerer prometheus.Registerer
}

// DefaultConfig returns a Config with every default filled in except NodeID.
func DefaultConfig() Config {
	return Config{
		Clock:                NewSystemClock(),
		ExpiryInterval:       200 * time.Millisecond,
		MaxExpiriesPerTick:   2048,
		IdleEvictAfter:       10 * time.Minute,
		IdempotencyRetention: 24 * time.Hour,
		NotFoundTTL:          2 * time.Second,
		NotFoundCacheSize:    10_000,
		MaxConcurrentLoads:   4,
		MaxPendingLoads:      1024,
		LoadTimeout:          10 * time.Second,
		MaxWaitlist:          200_000,
		LeaseRenewInterval:   500 * time.Millisecond,
		LeaseSlack:           20 * time.Millisecond,
		HandOffTimeout:       6 * time.Second,
		AcquireWait:          3 * time.Second,
		Logger:               slog.Default(),
	}
}

// Validate reports a Config that New cannot use.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("engine: NodeID is required")
	}
	if c.ExpiryInterval < 0 || c.MaxExpiriesPerTick < 0 || c.IdleEvictAfter < 0 || c.IdempotencyRetention < 0 ||
		c.NotFoundTTL < 0 || c.NotFoundCacheSize < 0 || c.MaxConcurrentLoads < 0 || c.MaxPendingLoads < 0 || c.LoadTimeout < 0 ||
		c.MaxWaitlist < 0 || c.LeaseRenewInterval < 0 || c.LeaseSlack < 0 || c.HandOffTimeout < 0 || c.AcquireWait < 0 {
		return errors.New("engine: a negative duration or limit in Config")
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
	setDefault(&c.IdleEvictAfter, d.IdleEvictAfter)
	setDefault(&c.IdempotencyRetention, d.IdempotencyRetention)
	setDefault(&c.NotFoundTTL, d.NotFoundTTL)
	setDefault(&c.NotFoundCacheSize, d.NotFoundCacheSize)
	setDefault(&c.MaxConcurrentLoads, d.MaxConcurrentLoads)
	setDefault(&c.MaxPendingLoads, d.MaxPendingLoads)
	setDefault(&c.LoadTimeout, d.LoadTimeout)
	setDefault(&c.MaxWaitlist, d.MaxWaitlist)
	setDefault(&c.LeaseRenewInterval, d.LeaseRenewInterval)
	setDefault(&c.LeaseSlack, d.LeaseSlack)
	setDefault(&c.HandOffTimeout, d.HandOffTimeout)
	setDefault(&c.AcquireWait, d.AcquireWait)
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
}

// setDefault sets *v to def when it is zero.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
