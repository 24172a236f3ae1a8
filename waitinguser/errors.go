package waitinguser

import "errors"

// Sentinel errors of the queue rules. Every refusal leaves the queue
// unchanged.
var (
	// ErrSeatsWanted: a user must want 1 to MaxSeatsWanted seats.
	ErrSeatsWanted = errors.New("seats wanted must be 1 to 10")
	// ErrNotWaiting: the user is not in the queue.
	ErrNotWaiting = errors.New("not waiting")
	// ErrCorrupt: persisted entries contradict each other (a user twice).
	ErrCorrupt = errors.New("inconsistent waiting entries")
)
