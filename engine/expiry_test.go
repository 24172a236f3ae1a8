package engine_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// TestHoldExpiry moves an injected clock past a hold's expiry: within the
// 5 s grace the hold stays HELD and can be confirmed; past it the expiry
// loop ends the hold durably (row EXPIRED, claims gone, an EXPIRED event),
// frees its seats, refuses a late confirm with HOLD_EXPIRED and books
// nothing, and another user can hold the seats.
func TestHoldExpiry(t *testing.T) {
	const (
		show = "expiry"
		ttl  = time.Minute
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: 20 * time.Millisecond})
	db := openDB(t, url)
	n.CreateShow(t, show, 2, 10, ttl)
	ctx := tc.Ctx(context.Background())
	rs := n.Reservations

	// A hold confirmed within the grace.
	t0 := clock.Now()
	h1, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := h1.GetExpiresAt().AsTime(); !got.Equal(t0.Add(ttl)) {
		t.Fatalf("expires_at %s, want %s", got, t0.Add(ttl))
	}
	clock.Advance(ttl + ar.ConfirmGrace - time.Second) // 4 s past expires_at
	if k := n.Engine.ExpireDue(); k != 0 {
		t.Fatalf("ExpireDue within the grace expired %d holds", k)
	}
	if r, err := rs.GetReservation(ctx, &pb.GetReservationRequest{HoldId: h1.GetHoldId()}); err != nil ||
		r.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD {
		t.Fatalf("within the grace: GetReservation %v, %v; want HELD", r, err)
	}
	if r, _ := dbReservationOf(t, db, show, h1.GetHoldId()); r.Status != "HELD" {
		t.Fatalf("within the grace: database has %s, want HELD", r.Status)
	}
	c, err := rs.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h1.GetHoldId(), UserId: "u1", PaymentRef: "pay-1"})
	if err != nil {
		t.Fatalf("confirm within the grace: %v", err)
	}
	if c.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED {
		t.Fatalf("confirm within the grace: %v", c.GetReservation())
	}
	if r, _ := dbReservationOf(t, db, show, h1.GetHoldId()); r.Status != "BOOKED" || r.BookedAt == nil ||
		!r.BookedAt.Equal(clock.Now()) || r.PaymentRef == nil || *r.PaymentRef != "pay-1" {
		t.Fatalf("confirmed in the grace: database has %+v", r)
	}

	// A hold left to expire.
	t1 := clock.Now()
	h2, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u2", SeatIds: []string{"B-1", "B-2"}})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(ttl + ar.ConfirmGrace + time.Second) // past expires_at + grace
	expiredAt := clock.Now()
	pollUntil(t, 10*time.Second, "the database to say EXPIRED", func() bool {
		r, _ := dbReservationOf(t, db, show, h2.GetHoldId())
		return r.Status == "EXPIRED"
	})
	r, _ := dbReservationOf(t, db, show, h2.GetHoldId())
	if r.EndedAt == nil || !r.EndedAt.Equal(expiredAt) || !r.ExpiresAt.Equal(t1.Add(ttl)) || r.BookedAt != nil {
		t.Errorf("expired hold row: %+v; want ended_at %s, expires_at %s", r, expiredAt, t1.Add(ttl))
	}
	claims := dbClaims(t, db, show)
	for _, s := range []string{"B-1", "B-2"} {
		if id, ok := claims[s]; ok {
			t.Errorf("seat %s still claimed by %s after expiry", s, id)
		}
	}
	var kinds []string
	for _, e := range dbEvents(t, db, show) {
		if e.Reservation != h2.GetHoldId() {
			continue
		}
		kinds = append(kinds, e.Kind)
		if e.Kind == "EXPIRED" && (!slices.Equal(e.Seats, []string{"B-1", "B-2"}) || e.User != "u2" || e.Node != "node-1" || !e.At.Equal(expiredAt)) {
			t.Errorf("EXPIRED event: %+v", e)
		}
	}
	if !slices.Equal(kinds, []string{"HELD", "EXPIRED"}) {
		t.Errorf("events of the expired hold: %v, want [HELD EXPIRED]", kinds)
	}
	pollUntil(t, 10*time.Second, "the seat map to show B-1 and B-2 available", func() bool {
		st := seatStatuses(t, getSeatMap(t, n, show))
		return st["B-1"] == ar.SeatAvailable && st["B-2"] == ar.SeatAvailable
	})
	checkSeatMapEqualsDB(t, n, db, show)

	// A confirm after the grace is refused and books nothing.
	_, err = rs.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h2.GetHoldId(), UserId: "u2", PaymentRef: "pay-2"})
	wantAPIError(t, "confirm after expiry", err, codes.FailedPrecondition, "HOLD_EXPIRED")
	if r, _ := dbReservationOf(t, db, show, h2.GetHoldId()); r.Status != "EXPIRED" || r.BookedAt != nil || r.PaymentRef != nil {
		t.Errorf("after a late confirm the database has %+v, want it EXPIRED and unbooked", r)
	}
	if st := seatStatuses(t, getSeatMap(t, n, show)); st["B-1"] != ar.SeatAvailable || st["B-2"] != ar.SeatAvailable {
		t.Errorf("after a late confirm B-1, B-2 are %d, %d", st["B-1"], st["B-2"])
	}
	if r, err := rs.GetReservation(ctx, &pb.GetReservationRequest{HoldId: h2.GetHoldId()}); err != nil ||
		r.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_EXPIRED {
		t.Errorf("GetReservation of the expired hold: %v, %v", r, err)
	}
	h3, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u3", SeatIds: []string{"B-2", "B-1"}})
	if err != nil {
		t.Fatalf("another user holding the expired seats: %v", err)
	}
	if r, _ := dbReservationOf(t, db, show, h3.GetHoldId()); r.Status != "HELD" || r.User != "u3" {
		t.Errorf("new hold of the expired seats: database has %+v", r)
	}

	// The booking made within the grace outlives every expiry round.
	if k := n.Engine.ExpireDue(); k != 0 {
		t.Errorf("ExpireDue expired %d more holds", k)
	}
	if r, _ := dbReservationOf(t, db, show, h1.GetHoldId()); r.Status != "BOOKED" {
		t.Errorf("booking made in the grace is %s", r.Status)
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
	if sm := getSeatMap(t, n, show); sm.GetBooked() != 2 || sm.GetHeld() != 2 || sm.GetAvailable() != 16 {
		t.Errorf("seat map counts available/held/booked %d/%d/%d, want 16/2/2", sm.GetAvailable(), sm.GetHeld(), sm.GetBooked())
	}
}
