// Package engine is a boxoffice node: it loads shows from the database,
// serves them from memory, makes every change durable through the store's
// group-commit writer before answering, expires holds on time, and serves
// it all over gRPC.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

// Node serves the shows it owns. Its methods are safe for concurrent use.
//
// Concurrency: each loaded show has a mutex guarding its rules state; it is
// held only for in-memory decisions and for queueing a mutation (which never
// blocks), never across database I/O. The shows map has its own lock.
type Node struct {
	cfg     Config
	store   Store
	metrics *metrics

	mu    sync.RWMutex // guards shows
	shows map[ar.ShowID]*show
	loads singleflight.Group

	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// New returns a node. Start begins its background work.
func New(cfg Config, store Store) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Node{
		cfg:     cfg,
		store:   store,
		metrics: m,
		shows:   make(map[ar.ShowID]*show),
		quit:    make(chan struct{}),
	}, nil
}

// Start starts the expiry loop.
func (n *Node) Start() {
	n.wg.Add(1)
	go n.expiryLoop()
}

// Shutdown stops the expiry loop and waits for it within ctx. In-flight
// operations finish on their own; the caller closes the store afterwards so
// that queued writes are committed. It is idempotent.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() { close(n.quit) })
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("engine shutdown: %w", ctx.Err())
	}
}

// now is the time of a decision, at the database's precision so that what
// is replayed equals what was decided.
func (n *Node) now() time.Time {
	return n.cfg.Clock.Now().UTC().Truncate(time.Microsecond)
}

// show is a loaded show.
type show struct {
	id    ar.ShowID
	info  persistence.Show
	epoch int64

	mu    sync.Mutex // guards everything below
	rules *ar.Show
	// busy has a channel for each hold with a write in flight, closed when
	// the write's outcome is applied. Other changes to the hold wait for it.
	busy map[ar.HoldID]chan struct{}
	// idem maps idempotency keys to the requests they answered.
	idem map[string]idemEntry
	// dropped is set when the node lets go of the show (ownership lost, or
	// memory found to disagree with the database); a request that finds it
	// set fetches the show anew.
	dropped bool
	// stale is set when a write's outcome is unknown (the database did not
	// answer): the show is reloaded before its next change, while reads go
	// on from memory.
	stale bool
}

type idemEntry struct {
	fingerprint string
	hold        ar.HoldID
}

// show returns the loaded show, loading it (and taking its ownership) on
// first use. forChange says the caller is about to change it: a stale show
// is then reloaded first. A failed reload leaves the stale show in place, so
// reads go on from memory while the database is away.
func (n *Node) show(ctx context.Context, id ar.ShowID, forChange bool) (*show, error) {
	for attempt := 0; attempt < 3; attempt++ {
		n.mu.RLock()
		sh := n.shows[id]
		n.mu.RUnlock()
		if sh != nil {
			if !forChange {
				return sh, nil
			}
			sh.mu.Lock()
			usable := !sh.stale && !sh.dropped
			sh.mu.Unlock()
			if usable {
				return sh, nil
			}
		}
		if err := n.load(ctx, id); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("show %s: %w", id, ErrMoved)
}

// load reads a show from the database, takes its ownership, and installs it.
// Concurrent loads of one show share one database round.
func (n *Node) load(ctx context.Context, id ar.ShowID) error {
	ch := n.loads.DoChan(string(id), func() (any, error) {
		// Detached from the caller: other callers may share this load.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		// A caller that found the show missing or unusable may get here
		// just after another load installed it: reloading then would raise
		// the epoch over the fresh show and fence its in-flight writes.
		if n.usable(id) {
			return nil, nil
		}
		start := time.Now()
		sh, err := n.loadShow(ctx, id)
		if err != nil {
			return nil, err
		}
		live := len(sh.rules.Holds()) + len(sh.rules.Bookings()) // before sh is shared
		n.mu.Lock()
		old := n.shows[id]
		n.shows[id] = sh
		loaded := len(n.shows)
		n.mu.Unlock()
		if old != nil {
			// Its in-flight writes carry the old epoch and fail.
			old.mu.Lock()
			old.dropped = true
			old.mu.Unlock()
		}
		n.metrics.showsLoaded.Set(float64(loaded))
		n.cfg.Logger.Info("show loaded", "show", id, "epoch", sh.epoch,
			"live", live, "took", time.Since(start))
		return nil, nil
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// usable reports whether show id is loaded and neither stale nor dropped.
func (n *Node) usable(id ar.ShowID) bool {
	n.mu.RLock()
	sh := n.shows[id]
	n.mu.RUnlock()
	if sh == nil {
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return !sh.stale && !sh.dropped
}

func (n *Node) loadShow(ctx context.Context, id ar.ShowID) (*show, error) {
	epoch, err := n.store.AcquireShow(ctx, string(id))
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, fmt.Errorf("show %s: %w", id, ErrShowNotFound)
	}
	if err != nil {
		return nil, err
	}
	snap, err := n.store.LoadShow(ctx, string(id))
	if err != nil {
		return nil, err
	}
	rules, err := ar.NewShow(ar.Config{
		ID:          id,
		Rows:        rowsFromStore(snap.Show.Rows),
		HoldTTL:     snap.Show.HoldTTL,
		VersionBase: uint64(epoch) << 32,
	})
	if err != nil {
		return nil, fmt.Errorf("show %s: %w", id, err)
	}
	for _, r := range snap.Live {
		res, err := reservationFromStore(r)
		if err != nil {
			return nil, err
		}
		if err := rules.Restore(res); err != nil {
			return nil, fmt.Errorf("replay show %s: %w", id, err)
		}
	}
	sh := &show{
		id:    id,
		info:  snap.Show,
		epoch: epoch,
		rules: rules,
		busy:  make(map[ar.HoldID]chan struct{}),
		idem:  make(map[string]idemEntry, len(snap.Idempotency)),
	}
	for _, rec := range snap.Idempotency {
		sh.idem[rec.Key] = idemEntry{fingerprint: rec.Fingerprint, hold: ar.HoldID(rec.ReservationID)}
	}
	return sh, nil
}

// drop unloads a show; the next request loads it again.
func (n *Node) drop(sh *show, why string) {
	sh.mu.Lock()
	already := sh.dropped
	sh.dropped = true
	sh.mu.Unlock()
	n.mu.Lock()
	if n.shows[sh.id] == sh {
		delete(n.shows, sh.id)
	}
	loaded := len(n.shows)
	n.mu.Unlock()
	if !already {
		n.metrics.showsLoaded.Set(float64(loaded))
		n.cfg.Logger.Warn("show dropped", "show", sh.id, "epoch", sh.epoch, "why", why)
	}
}

// writeFailed reacts to a failed write of sh and returns the error to give
// the caller. Lost ownership or a conflict with the database drops the show
// (the database is right; a reload rebuilds it); an unknown outcome makes it
// stale, so it is reloaded before its next change.
func (n *Node) writeFailed(sh *show, err error) error {
	switch {
	case errors.Is(err, persistence.ErrNotOwner):
		n.drop(sh, "ownership lost")
		return fmt.Errorf("%w: %v", ErrMoved, err)
	case errors.Is(err, persistence.ErrConflict):
		n.drop(sh, err.Error())
	case errors.Is(err, persistence.ErrUnavailable):
		sh.mu.Lock()
		sh.stale = true
		sh.mu.Unlock()
	}
	return err
}

// LoadedShows returns the IDs of the shows in memory.
func (n *Node) LoadedShows() []ar.ShowID {
	n.mu.RLock()
	defer n.mu.RUnlock()
	ids := make([]ar.ShowID, 0, len(n.shows))
	for id := range n.shows {
		ids = append(ids, id)
	}
	return ids
}

func rowsFromStore(rows []persistence.Row) []ar.Row {
	out := make([]ar.Row, len(rows))
	for i, r := range rows {
		out[i] = ar.Row{Label: r.Label, SeatCount: r.SeatCount, Category: r.Category}
	}
	return out
}

func reservationFromStore(r persistence.Reservation) (ar.Reservation, error) {
	st, err := ar.ParseStatus(r.Status)
	if err != nil {
		return ar.Reservation{}, err
	}
	seats := make([]ar.SeatID, len(r.SeatIDs))
	for i, s := range r.SeatIDs {
		seats[i] = ar.SeatID(s)
	}
	return ar.Reservation{
		ID:         ar.HoldID(r.ID),
		Show:       ar.ShowID(r.ShowID),
		User:       ar.UserID(r.UserID),
		Seats:      seats,
		Status:     st,
		CreatedAt:  r.CreatedAt.UTC(),
		ExpiresAt:  r.ExpiresAt.UTC(),
		BookedAt:   utcOrZero(r.BookedAt),
		EndedAt:    utcOrZero(r.EndedAt),
		PaymentRef: r.PaymentRef,
	}, nil
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func seatStrings(seats []ar.SeatID) []string {
	out := make([]string, len(seats))
	for i, s := range seats {
		out[i] = string(s)
	}
	return out
}
