package engine

import (
	"context"
	"errors"
	"fmt"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
)

// SeatMap is a show's seat map with its layout, and the number of users
// on its waitlist.
type SeatMap struct {
	ar.SeatMap
	Rows    []ar.Row
	Waiting int
}

// SeatMap returns the status of every seat, loading the show if needed.
// The statuses are shared with other readers (see ar.Show.SharedSeatMap):
// callers must not modify them.
func (n *Node) SeatMap(ctx context.Context, id ar.ShowID) (SeatMap, error) {
	if err := validateShowID(id); err != nil {
		return SeatMap{}, err
	}
	sh, err := n.show(ctx, id, false)
	if err != nil {
		return SeatMap{}, err
	}
	sh.mu.Lock()
	sm := sh.rules.SharedSeatMap()
	rows := sh.rules.Rows()
	waiting := sh.wait.rules.Len()
	sh.mu.Unlock()
	return SeatMap{SeatMap: sm, Rows: rows, Waiting: waiting}, nil
}

// Reservation returns a reservation: a live one from memory when its show is
// loaded and not stale, else from the database.
func (n *Node) Reservation(ctx context.Context, id ar.HoldID) (ar.Reservation, error) {
	showID, err := showOfHold(id)
	if err != nil {
		return ar.Reservation{}, err
	}
	n.mu.RLock()
	sh := n.shows[showID]
	n.mu.RUnlock()
	if sh != nil && !n.dropIfLapsed(sh) {
		sh.mu.Lock()
		r, ok := sh.rules.Reservation(id)
		stale := sh.stale // memory may be a guess: the database knows
		sh.mu.Unlock()
		if ok && !stale {
			return r, nil
		}
	}
	return n.storedReservation(ctx, showID, id)
}

// ListUserReservations returns a user's reservations from the database,
// newest first, after the cursor.
func (n *Node) ListUserReservations(ctx context.Context, user ar.UserID, show ar.ShowID, after *persistence.ReservationCursor, limit int) ([]ar.Reservation, error) {
	if err := validateUser(user); err != nil {
		return nil, err
	}
	if show != "" {
		if err := validateShowID(show); err != nil {
			return nil, err
		}
	}
	recs, err := n.store.ListUserReservations(ctx, string(user), string(show), after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]ar.Reservation, 0, len(recs))
	for _, rec := range recs {
		r, err := reservationFromStore(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// ListEvents reads the audit log.
func (n *Node) ListEvents(ctx context.Context, f persistence.EventFilter) ([]persistence.Event, error) {
	if f.ShowID == "" && f.ReservationID == "" && f.UserID == "" {
		return nil, fmt.Errorf("%w: give show_id, hold_id or user_id", ErrInvalid)
	}
	if unstorable(f.ShowID + f.ReservationID + f.UserID) {
		return nil, fmt.Errorf("%w: a filter with a NUL or not UTF-8", ErrInvalid)
	}
	return n.store.ListEvents(ctx, f)
}

// isNotFound reports errors that mean "no such thing" to a reader.
func isNotFound(err error) bool {
	return errors.Is(err, ErrShowNotFound) || errors.Is(err, ar.ErrHoldNotFound) || errors.Is(err, persistence.ErrNotFound)
}
