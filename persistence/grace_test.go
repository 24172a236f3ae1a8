package persistence_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

// TestConfirmSQLRefusesAfterGrace checks that the writer's confirm SQL, not
// only the engine's memory, keeps ConfirmGrace: a Confirm whose At is past
// the row's expires_at + ConfirmGrace fails with ErrConflict and leaves the
// row HELD, alone or in a batch; one at exactly expires_at + ConfirmGrace
// books the hold.
func TestConfirmSQLRefusesAfterGrace(t *testing.T) {
	if persistence.ConfirmGrace != ar.ConfirmGrace {
		t.Fatalf("persistence.ConfirmGrace = %s, activereservation.ConfirmGrace = %s; they must be equal",
			persistence.ConfirmGrace, ar.ConfirmGrace)
	}
	url := newDB(t)
	s := openStore(t, url, nil)
	e := ownShow(t, s, "g")

	// hold writes a hold of seat that expires a minute after t0.
	hold := func(t *testing.T, id, user, seat string) persistence.Mutation {
		t.Helper()
		m := holdM(e, "g", id, user, t0, seat)
		m.ExpiresAt = t0.Add(time.Minute)
		write(t, s, m)
		return m
	}
	confirm := func(h persistence.Mutation, at time.Time, ref string) persistence.Mutation {
		m := endM(persistence.Confirm, e, "g", h.ReservationID, h.UserID, at, h.SeatIDs...)
		m.PaymentRef = ref
		return m
	}
	// wantHeld fails the test unless the hold's row is HELD, unbooked, with
	// its seat still claimed by it and no BOOKED event.
	wantHeld := func(t *testing.T, h persistence.Mutation) {
		t.Helper()
		r := reservation(t, s, "g", h.ReservationID)
		if r.Status != "HELD" || !r.BookedAt.IsZero() || r.PaymentRef != "" || !r.ExpiresAt.Equal(h.ExpiresAt) {
			t.Errorf("%s after a refused confirm: %+v; want it HELD, unbooked, expiring at %s", h.ReservationID, r, h.ExpiresAt)
		}
		if c := claimsOf(t, s, "g"); c[h.SeatIDs[0]] != h.ReservationID {
			t.Errorf("seat %s is claimed by %q, want %s", h.SeatIDs[0], c[h.SeatIDs[0]], h.ReservationID)
		}
		if ev := eventKinds(t, s, "g"); slices.Contains(ev, h.ReservationID+" BOOKED") {
			t.Errorf("events %v have a BOOKED event of %s", ev, h.ReservationID)
		}
	}
	wantBooked := func(t *testing.T, h persistence.Mutation, at time.Time, ref string) {
		t.Helper()
		r := reservation(t, s, "g", h.ReservationID)
		if r.Status != "BOOKED" || !r.BookedAt.Equal(at) || r.PaymentRef != ref {
			t.Errorf("%s after its confirm at %s: %+v; want BOOKED at that time with %s", h.ReservationID, at, r, ref)
		}
		if ev := eventKinds(t, s, "g"); !slices.Contains(ev, h.ReservationID+" BOOKED") {
			t.Errorf("events %v lack the BOOKED event of %s", ev, h.ReservationID)
		}
	}

	t.Run("alone", func(t *testing.T) {
		h := hold(t, "g:alone", "u1", "A-1")
		lastAt := h.ExpiresAt.Add(persistence.ConfirmGrace)

		err := s.Write(confirm(h, lastAt.Add(time.Microsecond), "pay-late"))
		if !errors.Is(err, persistence.ErrConflict) {
			t.Fatalf("confirm 1 µs after expires_at + grace: %v, want ErrConflict", err)
		}
		wantHeld(t, h)

		if err := s.Write(confirm(h, lastAt, "pay-last")); err != nil {
			t.Fatalf("confirm at exactly expires_at + grace: %v, want it booked", err)
		}
		wantBooked(t, h, lastAt, "pay-last")
	})

	t.Run("in a batch", func(t *testing.T) {
		late := hold(t, "g:late", "u2", "A-2")
		timely := hold(t, "g:timely", "u3", "A-3")
		release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))
		muts := []persistence.Mutation{
			confirm(late, late.ExpiresAt.Add(persistence.ConfirmGrace+time.Microsecond), "pay-late"),
			confirm(timely, timely.ExpiresAt.Add(persistence.ConfirmGrace), "pay-timely"),
		}
		ps := enqueueAll(t, s, muts...)
		release()
		if err := blocker.Wait(); err != nil {
			t.Fatalf("the blocking hold: %v", err)
		}
		errs := waitAll(ps)
		if !errors.Is(errs[0], persistence.ErrConflict) || errs[1] != nil {
			t.Fatalf("batch of a late and a timely confirm answered %v; want [ErrConflict <nil>]", errs)
		}
		wantHeld(t, late)
		wantBooked(t, timely, muts[1].At, "pay-timely")
	})

	wantClaims := map[string]string{"A-1": "g:alone", "A-2": "g:late", "A-3": "g:timely"}
	if c := claimsOf(t, s, "g"); !reflect.DeepEqual(c, wantClaims) {
		t.Errorf("claims %v, want %v", c, wantClaims)
	}
}
