// Package engine is a boxoffice node: it loads shows from the database,
// serves them from memory, makes every change durable through the store's
// group-commit writer before answering, expires holds on time, keeps each
// show's waitlist, and serves it all over gRPC. In a cluster (Config.Ring)
// it loads only the shows the ring gives it, under a lease, hands them off
// when the ring moves them, and forwards calls for the others to their
// owners.
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/internal/ordmap"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// Node serves the shows it owns. Its methods are safe for concurrent use.
//
// Concurrency: each loaded show has a mutex guarding its rules state; it is
// held only for in-memory decisions and for queueing a mutation (which never
// blocks), never across database I/O. The shows map, the loads in flight and
// the cache of unknown show IDs share the node's own lock.
//
// Memory: the expiry loop evicts a show that has no live holds, nobody on
// its waitlist and no write in flight, is neither stale nor dropped, and has
// not been used for IdleEvictAfter, and releases its ownership; a show also leaves memory when
// the node loses it. Unknown show IDs are remembered for NotFoundTTL, at
// most NotFoundCacheSize of them.
type Node struct {
	cfg     Config
	store   Store
	metrics *metrics

	mu       sync.RWMutex // guards shows, flights, notFound and created
	shows    map[ar.ShowID]*show
	flights  map[ar.ShowID]*flight
	notFound *ordmap.Map[ar.ShowID, time.Time] // unknown IDs, oldest first, with when they were found unknown
	// created counts the shows created through this node; a lookup that
	// began before a creation does not cache its NotFound.
	created uint64
	loadSem chan struct{} // one token per load running against the database

	gate changeGate

	// moved wakes the ring loop when a load installed a show that the ring
	// gave to another node while it loaded (one wake-up pending at most).
	moved chan struct{}

	// born is when the node was made: leases are timed from it, on the
	// monotonic clock (see show.leaseUntil).
	born time.Time

	ctx      context.Context // ends at Shutdown: cancels loads
	cancel   context.CancelFunc
	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // the expiry loop and the load goroutines
}

// New returns a node. Start begins its background work.
func New(cfg Config, store Store) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if cfg.Ring != nil && 2*cfg.LeaseRenewInterval >= store.LeaseDuration() {
		return nil, fmt.Errorf("engine: LeaseRenewInterval %v must be under half the store's LeaseDuration %v: a node in a cluster drops its shows when their lease may have run out", cfg.LeaseRenewInterval, store.LeaseDuration())
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		store:    store,
		metrics:  m,
		shows:    make(map[ar.ShowID]*show),
		flights:  make(map[ar.ShowID]*flight),
		notFound: ordmap.New[ar.ShowID, time.Time](0),
		loadSem:  make(chan struct{}, cfg.MaxConcurrentLoads),
		quit:     make(chan struct{}),
		moved:    make(chan struct{}, 1),
		born:     time.Now(),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// NodeID returns the node's name.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// Start starts the expiry loop (which also evicts idle shows), the lease
// renewals and, with a ring, the hand-off of shows the ring moves away.
func (n *Node) Start() {
	n.wg.Add(2)
	go n.expiryLoop()
	go n.renewLoop()
	n.metrics.members.Set(1)
	if n.cfg.Ring != nil {
		n.wg.Add(1)
		go n.ringLoop()
	}
}

// Drain makes the node refuse new changes (holds, confirms, releases) with
// ErrShuttingDown and waits, within ctx, for the changes in flight to be
// answered. Reads go on. It is idempotent; the node does not take changes
// again.
func (n *Node) Drain(ctx context.Context) error {
	select {
	case <-n.gate.close():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("engine drain: %w", ctx.Err())
	}
}

// Shutdown refuses new changes, stops the expiry loop and cancels loads in
// flight, and waits for them within ctx. Changes in flight finish on their
// own (Drain waits for them); the caller closes the store afterwards so that
// queued writes are committed. It is idempotent.
func (n *Node) Shutdown(ctx context.Context) error {
	n.gate.close()
	n.stopOnce.Do(func() {
		close(n.quit)
		n.mu.Lock() // no load starts after this (see flight)
		n.cancel()
		n.mu.Unlock()
	})
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
	// used is n.now() of the show's last use, in Unix nanoseconds.
	used atomic.Int64
	// leaseUntil is when this node's lease on the show runs out at the
	// earliest, if no renewal succeeds meanwhile: the time the last
	// successful take or renewal was asked for, plus the lease's duration,
	// in nanoseconds since Node.born on the monotonic clock (real time,
	// whatever Config.Now says: the database times the lease).
	leaseUntil atomic.Int64

	mu    sync.Mutex // guards everything below
	rules *ar.Show
	// wait is the show's waitlist.
	wait waitlist
	// room is the show's waiting room; nil for a show without one.
	room *room
	// busy has a channel for each hold with a write in flight, closed when
	// the write's outcome is applied. Other changes to the hold wait for it.
	busy map[ar.HoldID]chan struct{}
	// pending maps each seat of a new hold whose write is in flight to
	// that hold's busy channel: a hold asking for the seat waits for the
	// outcome instead of being refused on a hold that may never commit.
	pending map[ar.SeatID]chan struct{}
	// idem maps idempotency keys to the requests they answered, oldest
	// first; keys older than the retention are forgotten as new ones come.
	idem *ordmap.Map[string, idemEntry]
	// dropped is set when the node lets go of the show (ownership lost,
	// memory found to disagree with the database, evicted); a change that
	// finds it set fetches the show anew.
	dropped bool
	// stale is set, in the critical section that learns it, when a write's
	// outcome is unknown: memory keeps the write's seats taken, and every
	// change reloads the show from the database first (lockForChange),
	// while reads go on from memory.
	stale bool
}

type idemEntry struct {
	fingerprint string
	hold        ar.HoldID
	at          time.Time // when the key was recorded
}

// idemMargin is how much longer than the retention memory keeps a key, so
// that it does not forget a key the database, by its own clock, still
// keeps: a key forgotten too early would be written again and refused.
const idemMargin = time.Minute

// rememberLocked records an idempotency key, and forgets the oldest keys
// that have passed the retention (plus idemMargin).
func (n *Node) rememberLocked(sh *show, key string, e idemEntry) {
	sh.idem.Put(key, e)
	horizon := e.at.Add(-n.cfg.IdempotencyRetention - idemMargin)
	for {
		k, old, ok := sh.idem.Front()
		if !ok || !old.at.Before(horizon) || k == key {
			return
		}
		sh.idem.PopFront()
	}
}

// touch records a use of sh, for idle eviction.
func (n *Node) touch(sh *show) { sh.used.Store(n.now().UnixNano()) }

// show returns the loaded show, loading it (and taking its ownership) on
// first use, when forChange and it is stale or dropped, or, in a cluster,
// once its lease may have run out (see lapsed). A failed reload leaves a
// stale show in place, so reads go on from memory while the database is
// away, until, in a cluster, the show's lease may have run out. An ID
// found unknown within NotFoundTTL is answered ErrShowNotFound without
// asking the database.
func (n *Node) show(ctx context.Context, id ar.ShowID, forChange bool) (*show, error) {
	for attempt := 0; attempt < 3; attempt++ {
		n.mu.RLock()
		sh := n.shows[id]
		unknown := sh == nil && n.knownUnknownLocked(id)
		n.mu.RUnlock()
		if unknown {
			return nil, fmt.Errorf("show %s: %w", id, ErrShowNotFound)
		}
		if sh != nil && n.dropIfLapsed(sh) {
			sh = nil // load it anew, from the database
		}
		if sh != nil {
			n.touch(sh)
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

// lockForChange admits a change through the node's gate (ErrShuttingDown
// once it drains) and returns show id locked, neither stale nor dropped: a
// stale or dropped show is reloaded first. On success the caller unlocks
// sh.mu when done deciding, and calls n.gate.leave once the change has been
// answered.
func (n *Node) lockForChange(ctx context.Context, id ar.ShowID) (*show, error) {
	if err := n.gate.enter(); err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		sh, err := n.show(ctx, id, true)
		if err != nil {
			n.gate.leave()
			return nil, err
		}
		sh.mu.Lock()
		if !sh.stale && !sh.dropped {
			return sh, nil
		}
		sh.mu.Unlock()
	}
	n.gate.leave()
	return nil, fmt.Errorf("show %s: %w", id, ErrMoved)
}

// lockLoaded is lockForChange for a show already loaded here, neither
// stale nor dropped: it never waits for the database. It reports false,
// having left the gate and locked nothing, when the show is not such a
// show or the gate is closed; the caller then goes the way of
// lockForChange.
func (n *Node) lockLoaded(id ar.ShowID) (*show, bool) {
	if n.gate.enter() != nil {
		return nil, false
	}
	n.mu.RLock()
	sh := n.shows[id]
	n.mu.RUnlock()
	if sh != nil && !n.dropIfLapsed(sh) {
		n.touch(sh)
		sh.mu.Lock()
		if !sh.stale && !sh.dropped {
			return sh, true
		}
		sh.mu.Unlock()
	}
	n.gate.leave()
	return nil, false
}

// relockForChange is lockForChange for a caller that holds sh.mu and found
// sh stale or dropped after waiting: it unlocks sh and returns the show
// reloaded and locked.
func (n *Node) relockForChange(ctx context.Context, sh *show) (*show, error) {
	sh.mu.Unlock()
	for attempt := 0; attempt < 3; attempt++ {
		fresh, err := n.show(ctx, sh.id, true)
		if err != nil {
			return nil, err
		}
		fresh.mu.Lock()
		if !fresh.stale && !fresh.dropped {
			return fresh, nil
		}
		fresh.mu.Unlock()
	}
	return nil, fmt.Errorf("show %s: %w", sh.id, ErrMoved)
}

// knownUnknownLocked reports whether id was found unknown within
// NotFoundTTL. n.mu must be held (read or write).
func (n *Node) knownUnknownLocked(id ar.ShowID) bool {
	at, ok := n.notFound.Get(id)
	return ok && n.now().Sub(at) < n.cfg.NotFoundTTL
}

// createdSoFar returns the count of shows created through this node, to
// pass to rememberUnknown after a lookup.
func (n *Node) createdSoFar() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.created
}

// rememberUnknown records that id names no show, as found by a lookup that
// began when createdSoFar was gen: if a show was created through this node
// since, the answer may be outdated and is not kept. It forgets entries past
// NotFoundTTL and, when full, the oldest.
func (n *Node) rememberUnknown(id ar.ShowID, gen uint64) {
	now := n.now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.created != gen {
		return
	}
	for {
		_, at, ok := n.notFound.Front()
		if !ok || (now.Sub(at) < n.cfg.NotFoundTTL && n.notFound.Len() < n.cfg.NotFoundCacheSize) {
			break
		}
		n.notFound.PopFront()
	}
	n.notFound.Delete(id) // re-inserted at the back with the new time
	n.notFound.Put(id, now)
}

// forgetUnknown removes id from the cache of unknown IDs, and keeps lookups
// in flight from adding it back: it was just created.
func (n *Node) forgetUnknown(id ar.ShowID) {
	n.mu.Lock()
	n.created++
	n.notFound.Delete(id)
	n.mu.Unlock()
}

// flight is a load of one show in progress; every caller that needs the
// show waits for the same one.
type flight struct {
	done    chan struct{} // closed when err is set
	err     error
	created uint64 // Node.created when the load began
}

// load reads a show from the database, takes its ownership, and installs it.
// Concurrent loads of one show share one goroutine and one database round;
// at most MaxConcurrentLoads run against the database at once, and when
// MaxPendingLoads shows are loading (running or waiting for a turn), another
// is refused with
// ErrOverloaded. A caller whose ctx ends stops waiting; the load goes on
// (bounded by LoadTimeout) for the others.
func (n *Node) load(ctx context.Context, id ar.ShowID) error {
	for {
		f, err := n.flight(id)
		if err != nil {
			return err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		// A load that began before a show was created through this node
		// may have found it missing: ask again.
		if errors.Is(f.err, ErrShowNotFound) && f.created != n.createdSoFar() {
			continue
		}
		return f.err
	}
}

// flight returns the load of show id in flight, starting one if there is
// none: ErrOverloaded when MaxPendingLoads are in flight, ErrShuttingDown
// once the node shuts down.
func (n *Node) flight(id ar.ShowID) (*flight, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f := n.flights[id]
	if f == nil {
		if n.ctx.Err() != nil {
			return nil, ErrShuttingDown
		}
		if pending := len(n.flights); pending >= n.cfg.MaxPendingLoads {
			return nil, fmt.Errorf("%w: %d shows loading", ErrOverloaded, pending)
		}
		f = &flight{done: make(chan struct{}), created: n.created}
		n.flights[id] = f
		n.wg.Add(1) // under n.mu and before n.ctx ends: Shutdown cancels n.ctx under n.mu, then waits
		go n.runLoad(id, f)
	}
	return f, nil
}

func (n *Node) runLoad(id ar.ShowID, f *flight) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LoadTimeout)
	defer cancel()
	f.err = n.loadNow(ctx, id)
	if errors.Is(f.err, ErrShowNotFound) {
		n.rememberUnknown(id, f.created)
	}
	n.mu.Lock()
	delete(n.flights, id)
	n.mu.Unlock()
	close(f.done)
}

func (n *Node) loadNow(ctx context.Context, id ar.ShowID) error {
	select {
	case n.loadSem <- struct{}{}:
		defer func() { <-n.loadSem }()
	case <-ctx.Done():
		return fmt.Errorf("show %s: waiting to load: %w", id, ErrOverloaded)
	}
	// A caller that found the show missing or unusable may get here just
	// after another load installed it: reloading then would raise the epoch
	// over the fresh show and fence its in-flight writes.
	if n.usable(id) {
		return nil
	}
	start := time.Now()
	sh, err := n.loadShow(ctx, id)
	if err != nil {
		return err
	}
	n.touch(sh)
	live := len(sh.rules.Holds()) + len(sh.rules.Bookings()) // before sh is shared
	n.mu.Lock()
	old := n.shows[id]
	n.shows[id] = sh
	loaded := len(n.shows)
	n.mu.Unlock()
	if old != nil {
		// Its in-flight writes carry the old epoch and fail; its watchers
		// and pollers, the waitlist's and the room's, move to the new one.
		old.mu.Lock()
		old.dropped = true
		old.wait.waiters.wakeAllLocked()
		if old.room != nil {
			old.room.waiters.wakeAllLocked()
		}
		old.mu.Unlock()
	}
	n.metrics.showsLoaded.Set(float64(loaded))
	n.metrics.loadTime.Observe(time.Since(start).Seconds())
	n.cfg.Logger.Info("show loaded", "show", id, "epoch", sh.epoch, "live", live, "took", time.Since(start))
	// The ring may have given the show to another node while it loaded,
	// after the ring loop's hand-off looked at the loaded shows: then the
	// ring loop looks again. (A ring that changes after this look wakes
	// the ring loop itself, which then finds the show loaded.)
	if _, mine := n.ownerOf(id); !mine {
		select {
		case n.moved <- struct{}{}:
		default:
		}
	}
	return nil
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
	epoch, asked, err := n.acquire(ctx, id)
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
		wait:  newWaitlist(wu.WaitlistConfig{MaxWait: snap.Show.MaxWait, OfferWindow: snap.Show.OfferWindow}),
		busy:  make(map[ar.HoldID]chan struct{}),

		pending: make(map[ar.SeatID]chan struct{}),
		idem:    ordmap.New[string, idemEntry](len(snap.Idempotency)),
	}
	sh.leaseUntil.Store(n.leaseEnd(asked))
	if err := n.restoreWaitlist(sh, snap); err != nil {
		return nil, fmt.Errorf("replay show %s waitlist: %w", id, err)
	}
	if sh.room, err = newRoom(snap, n.now()); err != nil {
		return nil, fmt.Errorf("replay show %s waiting room: %w", id, err)
	}
	recs := slices.SortedFunc(slices.Values(snap.Idempotency), func(a, b persistence.IdempotencyRecord) int {
		return a.CreatedAt.Compare(b.CreatedAt)
	})
	for _, rec := range recs {
		sh.idem.Put(rec.Key, idemEntry{fingerprint: rec.Fingerprint, hold: ar.HoldID(rec.ReservationID), at: rec.CreatedAt})
	}
	if n.cfg.Ring != nil && time.Duration(sh.leaseUntil.Load())-time.Since(n.born) < n.cfg.LeaseRenewInterval {
		// The load took most of the lease the take began: renew it now,
		// before the show is served, rather than install a show that
		// lapses at once.
		asked := time.Now()
		lost, err := n.store.RenewLeases(ctx, []persistence.Ownership{{ShowID: string(id), Epoch: epoch}})
		if err != nil {
			return nil, err
		}
		if len(lost) > 0 {
			return nil, fmt.Errorf("show %s: taken by another node while it loaded: %w", id, ErrMoved)
		}
		sh.leaseUntil.Store(n.leaseEnd(asked))
	}
	return sh, nil
}

// unload removes a show that was marked dropped from the loaded shows; the
// next change loads it again.
func (n *Node) unload(sh *show, why string) {
	sh.mu.Lock()
	sh.wait.waiters.wakeAllLocked() // its watchers look for the show anew
	if sh.room != nil {
		sh.room.waiters.wakeAllLocked()
	}
	sh.mu.Unlock()
	n.mu.Lock()
	if n.shows[sh.id] == sh {
		delete(n.shows, sh.id)
	}
	loaded := len(n.shows)
	n.mu.Unlock()
	n.metrics.showsLoaded.Set(float64(loaded))
	n.cfg.Logger.Warn("show dropped", "show", sh.id, "epoch", sh.epoch, "why", why)
}

// drop marks a show dropped and unloads it; false if it was dropped
// already.
func (n *Node) drop(sh *show, why string) bool {
	sh.mu.Lock()
	already := sh.dropped
	sh.dropped = true
	sh.mu.Unlock()
	if !already {
		n.unload(sh, why)
	}
	return !already
}

// failedLocked reacts, under sh.mu and so before any other decision for sh,
// to a write of sh that failed: lost ownership or a conflict with the
// database marks it dropped (the database is right; a reload rebuilds it);
// an unknown outcome marks it stale. It returns the error for the caller
// and whether the caller must unload sh after unlocking.
func failedLocked(sh *show, werr error) (err error, unload bool) {
	switch {
	case errors.Is(werr, persistence.ErrNotOwner):
		unload = !sh.dropped
		sh.dropped = true
		return fmt.Errorf("%w: %v", ErrMoved, werr), unload
	case errors.Is(werr, persistence.ErrConflict):
		unload = !sh.dropped
		sh.dropped = true
	case errors.Is(werr, persistence.ErrOutcomeUnknown):
		sh.stale = true
	}
	return werr, unload
}

// unknownOutcome reports a write that may have committed: memory keeps its
// effect undecided, holding the seats taken, until the show is reloaded.
func unknownOutcome(err error) bool { return errors.Is(err, persistence.ErrOutcomeUnknown) }

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
