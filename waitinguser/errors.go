package waitinguser

import "errors"

// Sentinel errors of the queue rules. Every refusal leaves the queue
// unchanged.
var (
	// ErrSeatsWanted: a user must want 1 to MaxSeatsWanted seats.
	ErrSeatsWanted = errors.New("seats wanted must be 1 to 10")
	// ErrNotWaiting: the user is not in the queue.
	ErrNotWaiting = errors.New("not waiting")
	// ErrUserLimit: the seats wanted plus the user's held and booked seats
	// would pass MaxSeatsWanted.
	ErrUserLimit = errors.New("user seat limit reached")
	// ErrSeatsAvailable: as many seats as wanted are available now; the
	// user should hold them instead of waiting.
	ErrSeatsAvailable = errors.New("seats are available")
	// ErrSoldOut: the show can never free as many seats as wanted.
	ErrSoldOut = errors.New("sold out")
	// ErrCorrupt: persisted rows contradict each other: a user twice, a seat
	// in two places, join order not increasing.
	ErrCorrupt = errors.New("inconsistent waitlist rows")
	// ErrRoomConfig: a waiting room's rate, cap or window is out of range.
	ErrRoomConfig = errors.New("invalid waiting room")
	// ErrRoomClosed: the waiting room is closed; nobody needs admission.
	ErrRoomClosed = errors.New("waiting room closed")
	// ErrNotAdmitted: an admission token is missing, malformed, forged,
	// expired, or another user's or show's.
	ErrNotAdmitted = errors.New("not admitted")
)
