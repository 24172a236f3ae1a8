package bench

import (
	"errors"
	"fmt"
)

// Op is a kind of call a virtual user makes.
type Op uint8

// The calls of the scenarios.
const (
	OpSeatMap Op = iota
	OpHold
	OpConfirm
	OpJoin      // joining a waiting room's queue
	OpAdmission // from a join's answer to the admission (the engine's time of it)
	numOps
)

func (o Op) String() string {
	switch o {
	case OpSeatMap:
		return "seatmap"
	case OpHold:
		return "hold"
	case OpConfirm:
		return "confirm"
	case OpJoin:
		return "join"
	case OpAdmission:
		return "admission"
	}
	return fmt.Sprintf("op(%d)", o)
}

// Outcome is how a call ended, the same for every target.
type Outcome uint8

// Outcomes of calls.
const (
	OK          Outcome = iota
	Taken               // a seat asked for is held or booked by someone else
	Limit               // the user's seat limit, or sold out
	Ended               // the hold expired or ended before the confirm
	Unavailable         // overloaded, database down, moving: retry later
	Timeout             // the call's deadline passed
	Failed              // anything else: a bug in the target or the bench
	numOutcomes
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Taken:
		return "taken"
	case Limit:
		return "limit"
	case Ended:
		return "ended"
	case Unavailable:
		return "unavailable"
	case Timeout:
		return "timeout"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Error is a target's refusal or failure, classified.
type Error struct {
	Outcome Outcome
	Seats   []string // for Taken: the seats that are taken, when the target says
	Err     error    // the target's own error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Outcome.String()
	}
	return fmt.Sprintf("%s: %v", e.Outcome, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// OutcomeOf classifies err: OK for nil, the Outcome of an *Error, Failed
// for anything else.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Outcome
	}
	return Failed
}

// TakenSeats returns the seats a Taken error names.
func TakenSeats(err error) []string {
	var e *Error
	if errors.As(err, &e) {
		return e.Seats
	}
	return nil
}
