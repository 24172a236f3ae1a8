package activereservation

import (
	"errors"
	"strings"
)

// Sentinel errors of the reservation rules. Every refusal leaves the show
// unchanged.
var (
	// ErrSeatCount: a hold must name 1 to MaxSeatsPerHold seats.
	ErrSeatCount = errors.New("a hold needs 1 to 10 seats")
	// ErrDuplicateSeat: a hold named the same seat twice.
	ErrDuplicateSeat = errors.New("duplicate seat")
	// ErrUnknownSeat: a seat ID is not in the show's layout.
	ErrUnknownSeat = errors.New("no such seat")
	// ErrSeatTaken: a seat is held or booked; errors.As gives the
	// *SeatsTakenError that names the seats.
	ErrSeatTaken = errors.New("seats taken")
	// ErrUserLimit: the hold would give the user more than MaxSeatsPerUser
	// seats of the show, held plus booked.
	ErrUserLimit = errors.New("user seat limit reached")
	// ErrHoldNotFound: no live hold or booking with that ID in this show.
	ErrHoldNotFound = errors.New("hold not found")
	// ErrNotHolder: the hold belongs to another user.
	ErrNotHolder = errors.New("not your hold")
	// ErrHoldExpired: the hold's expiry plus grace has passed.
	ErrHoldExpired = errors.New("hold expired")
	// ErrHoldEnded: the hold was already booked (with another payment
	// reference, or cannot be released), released or expired.
	ErrHoldEnded = errors.New("hold already ended")
	// ErrCorrupt: persisted rows contradict each other (two claims on a seat).
	ErrCorrupt = errors.New("inconsistent reservation rows")
	// ErrInvalidLayout: a show's layout is unusable.
	ErrInvalidLayout = errors.New("invalid layout")
)

// SeatsTakenError is the refusal of a hold whose seats are not all available.
// It matches ErrSeatTaken with errors.Is.
type SeatsTakenError struct {
	// Seats are the requested seats that are held or booked, in request order.
	Seats []SeatID
}

func (e *SeatsTakenError) Error() string {
	var b strings.Builder
	n := len(ErrSeatTaken.Error()) + 2
	for _, s := range e.Seats {
		n += len(s) + 1
	}
	b.Grow(n)
	b.WriteString(ErrSeatTaken.Error())
	b.WriteString(": ")
	for i, s := range e.Seats {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(s))
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrSeatTaken) hold.
func (e *SeatsTakenError) Unwrap() error { return ErrSeatTaken }
