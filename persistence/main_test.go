package persistence_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/persistence"
)

func TestMain(m *testing.M) { pgclustertest.Main(m) }

// t0 is the time of the tests' first mutation, at the database's precision.
var t0 = time.Date(2026, 11, 22, 18, 30, 0, 123456000, time.UTC)

// newDB returns the URL of a fresh, migrated database.
func newDB(t testing.TB) string {
	t.Helper()
	url := pgclustertest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := persistence.Migrate(ctx, url); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return url
}

// batches records the writer's BatchStats through Config.Observer.
type batches struct {
	mu    sync.Mutex // guards stats
	stats []persistence.BatchStats
}

func (b *batches) observe(s persistence.BatchStats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats = append(b.stats, s)
}

// last returns the stats of the latest batch.
func (b *batches) last() persistence.BatchStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.stats) == 0 {
		return persistence.BatchStats{}
	}
	return b.stats[len(b.stats)-1]
}

// sizes returns the number of mutations of each batch so far.
func (b *batches) sizes() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]int, len(b.stats))
	for i, s := range b.stats {
		out[i] = s.Mutations
	}
	return out
}

// openStore opens a store on url as node "node-1", after edit (may be nil)
// has adjusted the config; it is closed at cleanup.
func openStore(t testing.TB, url string, edit func(*persistence.Config)) *persistence.Store {
	t.Helper()
	cfg := persistence.Config{URL: url, NodeID: "node-1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&cfg)
	}
	s, err := persistence.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// testShow is a show of two rows for the store's tests.
func testShow(id string) persistence.Show {
	return persistence.Show{
		ID: id, Title: "Show " + id, City: "Pune", Venue: "Hall 1",
		StartsAt:    t0.Add(48 * time.Hour),
		HoldTTL:     5 * time.Minute,
		OfferWindow: 90 * time.Second, // not the defaults, so round trips show them
		MaxWait:     30 * time.Minute,
		Categories:  []persistence.Category{{Name: "gold", PriceCents: 90000}, {Name: "silver", PriceCents: 50000}},
		Rows:        []persistence.Row{{Label: "A", SeatCount: 10, Category: "gold"}, {Label: "B", SeatCount: 20, Category: "silver"}},
		Capacity:    30,
	}
}

// ownShow creates a show and makes s its owner; it returns the epoch.
func ownShow(t testing.TB, s *persistence.Store, id string) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := s.CreateShow(ctx, testShow(id)); err != nil {
		t.Fatalf("create show %s: %v", id, err)
	}
	epoch, err := s.AcquireShow(ctx, id)
	if err != nil {
		t.Fatalf("acquire show %s: %v", id, err)
	}
	return epoch
}

func holdM(epoch int64, show, id, user string, at time.Time, seats ...string) persistence.Mutation {
	return persistence.Mutation{Kind: persistence.Hold, Epoch: epoch, ShowID: show, ReservationID: id, UserID: user,
		SeatIDs: seats, At: at, ExpiresAt: at.Add(5 * time.Minute)}
}

func endM(kind persistence.Kind, epoch int64, show, id, user string, at time.Time, seats ...string) persistence.Mutation {
	return persistence.Mutation{Kind: kind, Epoch: epoch, ShowID: show, ReservationID: id, UserID: user, SeatIDs: seats, At: at}
}

func write(t testing.TB, s *persistence.Store, m persistence.Mutation) {
	t.Helper()
	if err := s.Write(m); err != nil {
		t.Fatalf("write %s %s: %v", m.Kind, m.ReservationID, err)
	}
}

// count returns the result of a count(*) query.
func count(t testing.TB, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// blockCommitter makes the writer's committer wait: it locks the ownership
// row of show (FOR UPDATE, in a transaction of its own), queues a hold of
// show that the committer takes alone, and returns once the committer is
// waiting for the lock. Until release, Enqueue fills the queue and nothing
// commits. The blocking hold commits after release; its Pending is
// returned. release is idempotent and also runs at cleanup.
func blockCommitter(t testing.TB, s *persistence.Store, url, show string, epoch int64) (release func(), blocker *persistence.Pending) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, tx, `SELECT count(*) FROM (SELECT 1 FROM show_owners WHERE show_id = $1 FOR UPDATE) l`, show); n != 1 {
		t.Fatalf("show %s has %d ownership rows", show, n)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			tx.Rollback(ctx)
			conn.Close(ctx)
		})
	}
	t.Cleanup(release)
	blocker, err = s.Enqueue(holdM(epoch, show, show+":blocker", "blocker", t0, "A-1"))
	if err != nil {
		t.Fatal(err)
	}
	// The committer waits for a lock held by this test's transaction.
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if count(t, watch, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%show_owners%'`) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the committer did not block on the ownership row")
		}
		time.Sleep(time.Millisecond)
	}
	if n := s.QueueLen(); n != 0 {
		t.Fatalf("queue holds %d mutations while the committer is blocked, want 0", n)
	}
	return release, blocker
}

// waitAll waits for every pending mutation and returns their outcomes.
func waitAll(ps []*persistence.Pending) []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p.Wait()
	}
	return errs
}

// within fails t if f does not return within d.
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %s", what, d)
	}
}

func isErr(err, target error) bool {
	if target == nil {
		return err == nil
	}
	return errors.Is(err, target)
}

// enqueueAll queues ms in order and returns their pendings.
func enqueueAll(t testing.TB, s *persistence.Store, ms ...persistence.Mutation) []*persistence.Pending {
	t.Helper()
	ps := make([]*persistence.Pending, len(ms))
	for i, m := range ms {
		p, err := s.Enqueue(m)
		if err != nil {
			t.Fatalf("enqueue %s %s: %v", m.Kind, m.ReservationID, err)
		}
		ps[i] = p
	}
	return ps
}
