// Package bench is boxoffice's load generator: scenarios of virtual users
// (a flash sale, browsing, a storm of one-shot holds), run closed or open
// loop against a target (the engine over gRPC, or a baseline design built
// the way people usually do), with latencies in HdrHistograms, a
// verification of the invariants straight from the target's database, and
// reports.
package bench

import (
	"context"
	"fmt"
	"time"
)

// ShowSpec is the show a scenario sells: rows of seats, all one category.
type ShowSpec struct {
	ID      string
	Rows    []RowSpec
	HoldTTL time.Duration
	// Room, if set, puts the show's sale behind a waiting room; only a
	// Queuer target can create it.
	Room *RoomSpec
}

// RoomSpec is a show's waiting room.
type RoomSpec struct {
	OpensIn        time.Duration // after the show is created
	AdmitPerSecond float64
	MaxActive      int           // shoppers at once; 0: no cap
	Window         time.Duration // an admission's shopping window
}

// RowSpec is one row of a show's layout.
type RowSpec struct {
	Label string
	Seats int
}

// Capacity is the number of seats of the show.
func (s ShowSpec) Capacity() int {
	n := 0
	for _, r := range s.Rows {
		n += r.Seats
	}
	return n
}

// SeatID is the ID of seat number n (from 1) of the given row, as the
// engine names it: "<row label>-<number>".
func SeatID(row string, n int) string { return fmt.Sprintf("%s-%d", row, n) }

// SeatIDs lists the show's seat IDs in layout order (row by row).
func (s ShowSpec) SeatIDs() []string {
	ids := make([]string, 0, s.Capacity())
	for _, r := range s.Rows {
		for n := 1; n <= r.Seats; n++ {
			ids = append(ids, SeatID(r.Label, n))
		}
	}
	return ids
}

// SeatStatus is a seat's state in a seat map, with the engine's values.
type SeatStatus byte

// Seat statuses, numbered as the API's SeatStatus.
const (
	Available SeatStatus = 1
	Held      SeatStatus = 2
	Booked    SeatStatus = 3
)

// SeatMap is a show's seats in layout order.
type SeatMap struct {
	Statuses []SeatStatus // one per seat, in ShowSpec.SeatIDs order
}

// Hold is an acknowledged hold.
type Hold struct {
	ID        string
	User      string
	Seats     []string
	ExpiresAt time.Time
}

// Target is a system under test. Every method is safe for concurrent use.
// Errors carry an Outcome (see OutcomeOf): a target translates its own
// failures (a gRPC code, a failed conditional UPDATE, a refused SETNX) into
// the same outcomes so that scenarios and reports treat targets alike.
type Target interface {
	// Name is the target's name as given to --target.
	Name() string
	// CreateShow creates a show with every seat available.
	CreateShow(ctx context.Context, show ShowSpec) error
	// SeatMap reads the show's seat map.
	SeatMap(ctx context.Context, show ShowSpec) (SeatMap, error)
	// Hold holds all of seats for user, or none.
	Hold(ctx context.Context, show ShowSpec, user string, seats []string) (Hold, error)
	// Confirm books the hold with a payment reference.
	Confirm(ctx context.Context, show ShowSpec, hold Hold, paymentRef string) error
	// Records reads every reservation of the show from the target's durable
	// store, for verification after the run.
	Records(ctx context.Context, show ShowSpec) ([]Record, error)
	// Close releases the target's connections.
	Close() error
}

// Queuer is implemented by targets that serve waiting rooms
// (ShowSpec.Room). Errors carry Outcomes, as the Target's do.
type Queuer interface {
	// JoinQueue puts user in the show's queue (or answers its entry).
	JoinQueue(ctx context.Context, show ShowSpec, user string) (QueueEntry, error)
	// PollQueue answers user's entry once its version is not since, or
	// when wait has passed.
	PollQueue(ctx context.Context, show ShowSpec, user string, since uint64, wait time.Duration) (QueueEntry, error)
	// LeaveQueue takes user out of the queue or the shoppers.
	LeaveQueue(ctx context.Context, show ShowSpec, user string) error
	// HoldAdmitted is Target.Hold with user's admission token.
	HoldAdmitted(ctx context.Context, show ShowSpec, user string, seats []string, token string) (Hold, error)
}

// QueueState is where a user is in a waiting room.
type QueueState uint8

// Waiting room states; the others (left, lapsed, done, closed) are
// QueueEnded.
const (
	QueueQueued QueueState = iota + 1
	QueueAdmitted
	QueueSoldOut
	QueueEnded
)

// QueueEntry is a user's entry in a waiting room.
type QueueEntry struct {
	State    QueueState
	Seq      int64         // the place in join order
	Position int           // users ahead, while queued
	Wait     time.Duration // the estimated wait, while queued
	Version  uint64
	Token    string    // admitted: the admission token
	Deadline time.Time // admitted: when the token ends
}

// RecordState is a reservation's state as its store records it.
type RecordState string

// Reservation states in a target's store. Live ones (Held, BookedState)
// claim their seats.
const (
	StateHeld     RecordState = "held"
	StateBooked   RecordState = "booked"
	StateReleased RecordState = "released"
	StateExpired  RecordState = "expired"
)

// Live reports whether a reservation in this state claims its seats.
func (s RecordState) Live() bool { return s == StateHeld || s == StateBooked }

// Record is a reservation as a target's durable store has it.
type Record struct {
	ID         string
	User       string
	Seats      []string
	State      RecordState
	PaymentRef string
}
