package persistence_test

import (
	"errors"
	"testing"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

// TestUserSeatLimitInDatabase checks that the writer's transaction refuses
// a user's 11th seat of a show, held plus booked, whatever the writer's
// caller believes, alone or in a batch, and that releases and expiries give
// seats back.
func TestUserSeatLimitInDatabase(t *testing.T) {
	s := openStore(t, newDB(t), nil)
	e := ownShow(t, s, "s")
	other := ownShow(t, s, "other")
	seats := func(user string) int {
		return count(t, s.Pool(), `SELECT coalesce(sum(cardinality(seat_ids)), 0) FROM reservations
			WHERE show_id = 's' AND user_id = $1 AND status IN ('HELD', 'BOOKED')`, user)
	}

	write(t, s, holdM(e, "s", "s:a", "u", t0, "A-1", "A-2", "A-3", "A-4", "A-5", "A-6"))
	write(t, s, holdM(e, "s", "s:b", "u", t0, "B-1", "B-2", "B-3", "B-4"))
	if got := seats("u"); got != 10 {
		t.Fatalf("user has %d seats, want 10", got)
	}
	// The 11th seat, alone and in a batch with good holds.
	if err := s.Write(holdM(e, "s", "s:c", "u", t0, "C-1")); !errors.Is(err, persistence.ErrConflict) {
		t.Fatalf("11th seat: %v, want ErrConflict", err)
	}
	ps := enqueueAll(t, s,
		holdM(e, "s", "s:d", "v", t0, "D-1"),
		holdM(e, "s", "s:c", "u", t0, "C-1"),
		holdM(other, "other", "other:e", "u", t0, "A-1"), // another show: its own 10
	)
	errs := waitAll(ps)
	if errs[0] != nil || !errors.Is(errs[1], persistence.ErrConflict) || errs[2] != nil {
		t.Fatalf("batch with an 11th seat: %v, want nil, ErrConflict, nil", errs)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservations WHERE reservation_id = 's:c'`); n != 0 {
		t.Fatal("the refused hold is in the database")
	}

	// A booking keeps its seats; a release and an expiry give them back.
	confirm := endM(persistence.Confirm, e, "s", "s:b", "u", t0.Add(time.Second), "B-1", "B-2", "B-3", "B-4")
	confirm.PaymentRef = "pay"
	write(t, s, confirm)
	if got := seats("u"); got != 10 {
		t.Fatalf("after a confirm the user has %d seats, want 10", got)
	}
	write(t, s, endM(persistence.Release, e, "s", "s:a", "u", t0.Add(time.Second), "A-1", "A-2", "A-3", "A-4", "A-5", "A-6"))
	if got := seats("u"); got != 4 {
		t.Fatalf("after a release the user has %d seats, want 4", got)
	}
	write(t, s, holdM(e, "s", "s:c", "u", t0.Add(2*time.Second), "C-1", "C-2", "C-3", "C-4", "C-5", "C-6"))
	if got := seats("u"); got != 10 {
		t.Fatalf("the user has %d seats, want 10", got)
	}
	write(t, s, endM(persistence.Expire, e, "s", "s:c", "u", t0.Add(6*time.Minute), "C-1", "C-2", "C-3", "C-4", "C-5", "C-6"))
	write(t, s, holdM(e, "s", "s:f", "u", t0.Add(7*time.Minute), "F-1", "F-2", "F-3", "F-4", "F-5", "F-6"))
	if err := s.Write(holdM(e, "s", "s:g", "u", t0.Add(7*time.Minute), "G-1")); !errors.Is(err, persistence.ErrConflict) {
		t.Fatalf("11th seat after an expiry gave 6 back and a hold took them: %v, want ErrConflict", err)
	}
	if persistence.MaxUserSeats != ar.MaxSeatsPerUser {
		t.Errorf("persistence.MaxUserSeats %d, activereservation.MaxSeatsPerUser %d", persistence.MaxUserSeats, ar.MaxSeatsPerUser)
	}
}
