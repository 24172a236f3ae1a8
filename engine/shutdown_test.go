package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// TestShutdownDrains stops a node (as SIGTERM does) while a hold is in
// flight: new changes are answered Unavailable SHUTTING_DOWN and reads go
// on while the hold in flight finishes, is answered OK, and is in the
// database.
func TestShutdownDrains(t *testing.T) {
	const show = "drain"
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	db := openDB(t, dbURL)
	// A long commit timeout: the hold in flight waits for the test's lock.
	n := tc.StartNode(t, dbURL, tc.Options{Store: persistence.Config{CommitTimeout: time.Minute}})
	n.CreateShow(t, show, 2, 10, 0)
	bg := tc.Ctx(context.Background())
	getSeatMap(t, n, show)

	// The writer waits for the show's ownership row, so the hold stays in
	// flight until the test lets it go.
	ctx := context.Background()
	plug := lockOwnerRow(t, db, show)
	type answer struct {
		r   *pb.HoldSeatsResponse
		err error
	}
	inFlight := make(chan answer, 1)
	go func() {
		r, err := n.Reservations.HoldSeats(bg, &pb.HoldSeatsRequest{ShowId: show, UserId: "early", SeatIds: []string{"A-1"}})
		inFlight <- answer{r, err}
	}()
	pollUntil(t, 10*time.Second, "the hold to reach the writer", func() bool { return lockWaiters(t, db) > 0 })

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stopped <- n.Server.Shutdown(ctx)
	}()
	pollUntil(t, 10*time.Second, "new holds to be refused as shutting down", func() bool {
		_, err := n.Reservations.HoldSeats(bg, &pb.HoldSeatsRequest{ShowId: show, UserId: "late", SeatIds: []string{"B-1"}})
		if err == nil {
			t.Fatal("a hold was taken after shutdown began")
		}
		return apiErrorOf(err).Reason == "SHUTTING_DOWN"
	})
	_, err := n.Reservations.ReleaseHold(bg, &pb.ReleaseHoldRequest{HoldId: show + ":nosuchhold", UserId: "late"})
	wantAPIError(t, "release while draining", err, codes.Unavailable, "SHUTTING_DOWN")
	if sm := getSeatMap(t, n, show); sm.GetHeld() != 1 {
		t.Errorf("seat map while draining: %d held, want the hold in flight", sm.GetHeld())
	}

	if err := plug.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-inFlight
	if a.err != nil {
		t.Fatalf("the hold in flight when shutdown began: %v", a.err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if r, ok := dbReservationOf(t, db, show, a.r.GetHoldId()); !ok || r.Status != "HELD" {
		t.Errorf("the hold answered during the drain is %+v in the database", r)
	}
	for _, r := range dbReservations(t, db, show) {
		if r.User == "late" {
			t.Errorf("a hold refused during the drain is in the database: %+v", r)
		}
	}
}

// lockWaiters returns how many backends of the database wait for a lock.
func lockWaiters(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var n int
	err := db.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
