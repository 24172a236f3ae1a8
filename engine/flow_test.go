package engine_test

import (
	"context"
	"testing"
	"time"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// newNode starts a node on a fresh database.
func newNode(t *testing.T, opts tc.Options) (*tc.Node, string) {
	t.Helper()
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	return tc.StartNode(t, url, opts), url
}

func TestHoldConfirmReleaseFlow(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, "flow", 3, 10, 0)
	ctx := tc.Ctx(context.Background())

	sm, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "flow"})
	if err != nil {
		t.Fatal(err)
	}
	if sm.GetAvailable() != 30 || len(sm.GetStatuses()) != 30 {
		t.Fatalf("seat map: %d available, %d statuses", sm.GetAvailable(), len(sm.GetStatuses()))
	}
	if len(sm.GetRows()) != 0 {
		t.Fatalf("seat map without include_layout has %d rows", len(sm.GetRows()))
	}
	laidOut, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "flow", IncludeLayout: true})
	if err != nil {
		t.Fatal(err)
	}
	if rows := laidOut.GetRows(); len(rows) != 3 || rows[0].GetLabel() != "A" || rows[2].GetSeatCount() != 10 ||
		string(laidOut.GetStatuses()) != string(sm.GetStatuses()) || laidOut.GetVersion() != sm.GetVersion() {
		t.Fatalf("seat map with include_layout: rows %v, version %d (want %d)", rows, laidOut.GetVersion(), sm.GetVersion())
	}
	h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "flow", UserId: "u1", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.GetExpiresAt().AsTime().Sub(time.Now()); got < 4*time.Minute || got > 6*time.Minute {
		t.Fatalf("expires in %s, want about 5m", got)
	}
	c, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: "u1", PaymentRef: "pay-1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED {
		t.Fatalf("status %v", c.GetReservation().GetStatus())
	}
	h2, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "flow", UserId: "u2", SeatIds: []string{"B-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h2.GetHoldId(), UserId: "u2"}); err != nil {
		t.Fatal(err)
	}
	sm, err = n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "flow"})
	if err != nil {
		t.Fatal(err)
	}
	if sm.GetAvailable() != 28 || sm.GetBooked() != 2 || sm.GetHeld() != 0 {
		t.Fatalf("counts %d/%d/%d", sm.GetAvailable(), sm.GetHeld(), sm.GetBooked())
	}
	list, err := n.Reservations.ListUserReservations(ctx, &pb.ListUserReservationsRequest{UserId: "u1"})
	if err != nil || len(list.GetReservations()) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	ev, err := n.Admin.ListReservationEvents(tc.AdminCtx(context.Background()), &pb.ListReservationEventsRequest{ShowId: "flow"})
	if err != nil || len(ev.GetEvents()) != 4 {
		t.Fatalf("events: %v %v", ev, err)
	}
}
