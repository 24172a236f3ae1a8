package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// TestDatabaseDown kills PostgreSQL under a node that serves a show: writes
// are refused promptly with Unavailable, reads of the loaded show go on
// from memory; after PostgreSQL restarts the same node takes writes again,
// and nothing refused during the outage is in the database.
func TestDatabaseDown(t *testing.T) {
	const show = "dbdown"
	cl := pgclustertest.Start(t)
	tc.Migrate(t, cl.URL())
	n := tc.StartNode(t, cl.URL(), tc.Options{})
	db := openDB(t, cl.URL())
	n.CreateShow(t, show, 3, 10, 0)
	bg := tc.Ctx(context.Background())
	rs := n.Reservations

	h1, err := rs.HoldSeats(bg, &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := rs.HoldSeats(bg, &pb.HoldSeatsRequest{ShowId: show, UserId: "u2", SeatIds: []string{"A-3"}})
	if err != nil {
		t.Fatal(err)
	}
	before := getSeatMap(t, n, show)

	if err := cl.Kill(); err != nil {
		t.Fatal(err)
	}

	// Writes: Unavailable within a few seconds, not the caller's deadline.
	// The first hold fails at commit; later writes fail reloading the show.
	const callTimeout = 4 * time.Second
	unavailable := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bg, callTimeout)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s succeeded with the database down", what)
		}
		if e := apiErrorOf(err); e.Code != codes.Unavailable {
			t.Fatalf("%s with the database down: %s after %s, want Unavailable", what, e, took)
		}
		if took > callTimeout-time.Second {
			t.Errorf("%s took %s to be refused", what, took)
		}
		t.Logf("%s refused in %s: %v", what, took, err)
	}
	refusedSeats := [][]string{{"B-1", "B-2"}, {"B-3"}}
	for i, seats := range refusedSeats {
		unavailable("HoldSeats", func(ctx context.Context) error {
			_, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "refused-" + string(rune('a'+i)), SeatIds: seats})
			return err
		})
	}
	unavailable("ConfirmHold", func(ctx context.Context) error {
		_, err := rs.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h1.GetHoldId(), UserId: "u1", PaymentRef: "pay-1"})
		return err
	})
	unavailable("ReleaseHold", func(ctx context.Context) error {
		_, err := rs.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h2.GetHoldId(), UserId: "u2"})
		return err
	})

	// Reads of the loaded show: from memory, unchanged by the refusals.
	ctx, cancel := context.WithTimeout(bg, callTimeout)
	defer cancel()
	sm, err := rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show})
	if err != nil {
		t.Fatalf("GetSeatMap with the database down: %v", err)
	}
	if sm.GetHeld() != 3 || sm.GetAvailable() != 27 || string(sm.GetStatuses()) != string(before.GetStatuses()) {
		t.Errorf("seat map with the database down: %d held, %d available; changed: %v",
			sm.GetHeld(), sm.GetAvailable(), string(sm.GetStatuses()) != string(before.GetStatuses()))
	}
	if sh, err := n.Catalog.GetShow(ctx, &pb.GetShowRequest{ShowId: show}); err != nil || sh.GetShow().GetCapacity() != 30 {
		t.Errorf("GetShow with the database down: %v, %v", sh, err)
	}
	for _, h := range []*pb.HoldSeatsResponse{h1, h2} {
		r, err := rs.GetReservation(ctx, &pb.GetReservationRequest{HoldId: h.GetHoldId()})
		if err != nil || r.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD {
			t.Errorf("GetReservation %s with the database down: %v, %v", h.GetHoldId(), r, err)
		}
	}

	restartCtx, cancelRestart := context.WithTimeout(context.Background(), time.Minute)
	defer cancelRestart()
	if err := cl.Restart(restartCtx); err != nil {
		t.Fatal(err)
	}

	// The same node recovers on its own.
	pollUntil(t, 30*time.Second, "a hold to succeed after the restart", func() bool {
		ctx, cancel := context.WithTimeout(bg, 2*time.Second)
		defer cancel()
		_, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u3", SeatIds: []string{"C-1"}})
		if err != nil && apiErrorOf(err).Code != codes.Unavailable && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("hold after the restart: %v", err)
		}
		return err == nil
	})

	// Nothing refused during the outage reached the database, and the
	// refused holds left their seats available.
	rows := dbReservations(t, db, show)
	for id, r := range rows {
		if r.User != "u1" && r.User != "u2" && r.User != "u3" {
			t.Errorf("reservation %s of %s %v is in the database, but its hold was refused", id, r.User, r.Seats)
		}
	}
	if len(rows) != 3 || rows[h1.GetHoldId()].Status != "HELD" || rows[h2.GetHoldId()].Status != "HELD" {
		t.Errorf("after the outage the database has %+v; want h1 and h2 still HELD and the new hold", rows)
	}
	st := seatStatuses(t, getSeatMap(t, n, show))
	for _, seats := range refusedSeats {
		for _, s := range seats {
			if st[s] != ar.SeatAvailable {
				t.Errorf("seat %s of a refused hold is %d after the outage", s, st[s])
			}
		}
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)

	// And the node takes every kind of write again.
	if _, err := rs.HoldSeats(bg, &pb.HoldSeatsRequest{ShowId: show, UserId: "u4", SeatIds: refusedSeats[0]}); err != nil {
		t.Errorf("holding the seats of a refused hold: %v", err)
	}
	if _, err := rs.ConfirmHold(bg, &pb.ConfirmHoldRequest{HoldId: h1.GetHoldId(), UserId: "u1", PaymentRef: "pay-1"}); err != nil {
		t.Errorf("confirm after the outage: %v", err)
	}
	if _, err := rs.ReleaseHold(bg, &pb.ReleaseHoldRequest{HoldId: h2.GetHoldId(), UserId: "u2"}); err != nil {
		t.Errorf("release after the outage: %v", err)
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
}
