package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Acks is what the clients of a run saw acknowledged for one show.
type Acks struct {
	Holds    []Hold
	Confirms map[string]string // hold ID → payment reference
}

// AckLog collects the acknowledgements of a run as they come. Its zero
// value is empty and ready; it is safe for concurrent use.
type AckLog struct {
	mu       sync.Mutex // guards holds and confirms
	holds    []Hold
	confirms map[string]string
}

// Hold logs an acknowledged hold.
func (l *AckLog) Hold(h Hold) {
	l.mu.Lock()
	l.holds = append(l.holds, h)
	l.mu.Unlock()
}

// Confirm logs an acknowledged confirm of a hold with a payment reference.
func (l *AckLog) Confirm(holdID, paymentRef string) {
	l.mu.Lock()
	if l.confirms == nil {
		l.confirms = make(map[string]string)
	}
	l.confirms[holdID] = paymentRef
	l.mu.Unlock()
}

// Acks returns a copy of what was logged so far.
func (l *AckLog) Acks() Acks {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Acks{Holds: slices.Clone(l.holds), Confirms: maps.Clone(l.confirms)}
}

// Kinds of violations: every violation line starts with one of these and
// ": ".
const (
	// ViolationDoubleBooking: a seat is in two live (held or booked)
	// reservations.
	ViolationDoubleBooking = "double booking"
	// ViolationOversold: more seats booked than the show has.
	ViolationOversold = "oversold"
	// ViolationUnknownSeat: a reservation names a seat the show doesn't have.
	ViolationUnknownSeat = "unknown seat"
	// ViolationLostHold: an acknowledged hold is not in the store.
	ViolationLostHold = "lost hold"
	// ViolationHoldMismatch: an acknowledged hold is in the store with
	// another user or other seats.
	ViolationHoldMismatch = "hold mismatch"
	// ViolationLostConfirm: an acknowledged confirm is not in the store as
	// booked.
	ViolationLostConfirm = "lost confirm"
	// ViolationConfirmMismatch: an acknowledged confirm is booked with
	// another payment reference, user or seats.
	ViolationConfirmMismatch = "confirm mismatch"
	// ViolationUserLimit: a user has more than MaxSeatsPerUser live seats.
	ViolationUserLimit = "user limit"
	// ViolationBadRecord: a reservation of no seat, more than 10, a seat
	// twice, an unknown state, or an ID used twice.
	ViolationBadRecord = "bad record"
	// ViolationClaimMismatch: the store's own index of claimed seats
	// disagrees with its reservations (see StoreChecker).
	ViolationClaimMismatch = "claim mismatch"
)

// MaxSeatsPerUser is the most seats a user may have of a show, held plus
// booked; it is also the most seats of one reservation.
const MaxSeatsPerUser = 10

// MaxViolations is how many violation lines a Verification keeps; the
// count and the count by kind cover all of them.
const MaxViolations = 50

// VerifyCounts are the figures a verification saw.
type VerifyCounts struct {
	Records       int `json:"records"`        // reservations in the store
	LiveHolds     int `json:"live_holds"`     // reservations held
	Bookings      int `json:"bookings"`       // reservations booked
	BookedSeats   int `json:"booked_seats"`   // seats of the bookings (sold)
	HeldSeats     int `json:"held_seats"`     // seats of the live holds
	Capacity      int `json:"capacity"`       // seats of the show
	AckedHolds    int `json:"acked_holds"`    // holds the clients saw acknowledged
	AckedConfirms int `json:"acked_confirms"` // confirms the clients saw acknowledged
	CheckedHolds  int `json:"checked_holds"`  // acknowledged holds checked against the store
}

func (c VerifyCounts) add(o VerifyCounts) VerifyCounts {
	return VerifyCounts{
		Records: c.Records + o.Records, LiveHolds: c.LiveHolds + o.LiveHolds, Bookings: c.Bookings + o.Bookings,
		BookedSeats: c.BookedSeats + o.BookedSeats, HeldSeats: c.HeldSeats + o.HeldSeats, Capacity: c.Capacity + o.Capacity,
		AckedHolds: c.AckedHolds + o.AckedHolds, AckedConfirms: c.AckedConfirms + o.AckedConfirms,
		CheckedHolds: c.CheckedHolds + o.CheckedHolds,
	}
}

// Verification is the check of a target's store after a run. OK is true
// exactly when there is no violation. Violations keeps the first
// MaxViolations lines, each "<kind>: <details>" with a kind of the
// Violation... constants; ViolationCount and ByKind count all of them.
type Verification struct {
	OK             bool           `json:"verified"`
	Violations     []string       `json:"violations,omitempty"`
	ViolationCount int            `json:"violation_count"`
	ByKind         map[string]int `json:"by_kind,omitempty"`
	Counts         VerifyCounts   `json:"counts"`
}

// Verified reports whether the store had no violation.
func (v Verification) Verified() bool { return v.OK }

// Add records violations, each "<kind>: <details>", and clears OK.
func (v *Verification) Add(violations ...string) {
	for _, s := range violations {
		kind, _, _ := strings.Cut(s, ": ")
		if v.ByKind == nil {
			v.ByKind = make(map[string]int)
		}
		v.ByKind[kind]++
		v.ViolationCount++
		if len(v.Violations) < MaxViolations {
			v.Violations = append(v.Violations, s)
		}
	}
	v.OK = v.ViolationCount == 0
}

// addf records one violation of kind.
func (v *Verification) addf(kind, format string, args ...any) {
	v.Add(kind + ": " + fmt.Sprintf(format, args...))
}

// Merge returns the verification of v's shows and o's together: counts
// and violations added up (the kept lines still capped).
func (v Verification) Merge(o Verification) Verification {
	m := Verification{
		ViolationCount: v.ViolationCount + o.ViolationCount,
		Counts:         v.Counts.add(o.Counts),
	}
	m.Violations = append(slices.Clone(v.Violations), o.Violations...)
	if len(m.Violations) > MaxViolations {
		m.Violations = m.Violations[:MaxViolations]
	}
	if len(v.ByKind)+len(o.ByKind) > 0 {
		m.ByKind = maps.Clone(v.ByKind)
		if m.ByKind == nil {
			m.ByKind = make(map[string]int)
		}
		for k, n := range o.ByKind {
			m.ByKind[k] += n
		}
	}
	m.OK = m.ViolationCount == 0
	return m
}

// String is the verification in one line: "VERIFIED: <counts>" or
// "VIOLATIONS (n): <the first three>" ("NOT VERIFIED" for the zero value).
func (v Verification) String() string {
	c := v.Counts
	if v.OK {
		return fmt.Sprintf("VERIFIED: %d reservations, %d of %d seats sold, %d held; %d acknowledged holds (%d checked) and %d confirms present",
			c.Records, c.BookedSeats, c.Capacity, c.HeldSeats, c.AckedHolds, c.CheckedHolds, c.AckedConfirms)
	}
	if v.ViolationCount == 0 {
		return "NOT VERIFIED" // the zero Verification: nothing was checked
	}
	const shown = 3
	first := v.Violations[:min(shown, len(v.Violations))]
	s := fmt.Sprintf("VIOLATIONS (%d): %s", v.ViolationCount, strings.Join(first, "; "))
	if more := v.ViolationCount - len(first); more > 0 {
		s += fmt.Sprintf("; and %d more", more)
	}
	return s
}

// StoreChecker is implemented by targets whose store has consistency
// checks of its own beyond its records (the engine's seat claims). A run
// may Add what CheckStore returns to the show's Verification.
type StoreChecker interface {
	// CheckStore returns violation lines, as Verification.Add takes them.
	CheckStore(ctx context.Context, show ShowSpec) ([]string, error)
}

// Verify checks a show's records, as a target's store has them after a
// run, against the invariants and against what the clients saw
// acknowledged:
//
//   - no seat is in two live (held or booked) records — computed from the
//     records' seat lists, not trusting any constraint of the store;
//   - seats booked ≤ capacity, and every seat of every record is the show's;
//   - every acknowledged hold is present with the same user and seat set —
//     when holdsDurable; otherwise only the acknowledged holds that were
//     also confirmed, as a target keeping holds in volatile memory may
//     lose the rest;
//   - every acknowledged confirm is present as booked, with the same
//     payment reference, user and seats;
//   - every user has at most MaxSeatsPerUser live seats;
//   - every record has 1–10 distinct seats, a known state and its own ID.
func Verify(show ShowSpec, records []Record, acks Acks, holdsDurable bool) Verification {
	v := Verification{OK: true}
	v.Counts.Records = len(records)
	v.Counts.Capacity = show.Capacity()
	v.Counts.AckedHolds = len(acks.Holds)
	v.Counts.AckedConfirms = len(acks.Confirms)

	seatsOfShow := make(map[string]struct{}, show.Capacity())
	for _, id := range show.SeatIDs() {
		seatsOfShow[id] = struct{}{}
	}
	byID := make(map[string]*Record, len(records))
	claimedBy := make(map[string]*Record) // live seat → the first live record with it
	userSeats := make(map[string]int)     // user → live seats
	for i := range records {
		r := &records[i]
		if _, dup := byID[r.ID]; dup {
			v.addf(ViolationBadRecord, "reservation ID %s is used twice", r.ID)
		} else {
			byID[r.ID] = r
		}
		switch r.State {
		case StateHeld:
			v.Counts.LiveHolds++
			v.Counts.HeldSeats += len(r.Seats)
		case StateBooked:
			v.Counts.Bookings++
			v.Counts.BookedSeats += len(r.Seats)
		case StateReleased, StateExpired:
		default:
			v.addf(ViolationBadRecord, "reservation %s is in unknown state %q", r.ID, r.State)
		}
		if n := len(r.Seats); n < 1 || n > MaxSeatsPerUser {
			v.addf(ViolationBadRecord, "reservation %s has %d seats, not 1-%d", r.ID, n, MaxSeatsPerUser)
		}
		for k, seat := range r.Seats {
			if slices.Contains(r.Seats[:k], seat) {
				v.addf(ViolationBadRecord, "reservation %s has seat %s twice", r.ID, seat)
				continue
			}
			if _, ok := seatsOfShow[seat]; !ok {
				v.addf(ViolationUnknownSeat, "reservation %s (%s) has seat %q, which show %s doesn't have", r.ID, r.State, seat, show.ID)
			}
			if !r.State.Live() {
				continue
			}
			if first, taken := claimedBy[seat]; taken {
				v.addf(ViolationDoubleBooking, "seat %s is in live reservations %s (%s, user %s) and %s (%s, user %s)",
					seat, first.ID, first.State, first.User, r.ID, r.State, r.User)
			} else {
				claimedBy[seat] = r
			}
		}
		if r.State.Live() {
			userSeats[r.User] += len(r.Seats)
		}
	}
	if v.Counts.BookedSeats > v.Counts.Capacity {
		v.addf(ViolationOversold, "%d seats booked, the show has %d", v.Counts.BookedSeats, v.Counts.Capacity)
	}
	for _, u := range slices.Sorted(maps.Keys(userSeats)) {
		if n := userSeats[u]; n > MaxSeatsPerUser {
			v.addf(ViolationUserLimit, "user %s has %d live seats, more than %d", u, n, MaxSeatsPerUser)
		}
	}

	ackedHolds := make(map[string]Hold, len(acks.Holds))
	for _, h := range acks.Holds {
		ackedHolds[h.ID] = h
		if _, confirmed := acks.Confirms[h.ID]; !holdsDurable && !confirmed {
			continue
		}
		v.Counts.CheckedHolds++
		r, ok := byID[h.ID]
		switch {
		case !ok:
			v.addf(ViolationLostHold, "acknowledged hold %s of user %s (seats %s) is not in the store", h.ID, h.User, strings.Join(h.Seats, ","))
		case r.User != h.User || !sameSeats(r.Seats, h.Seats):
			v.addf(ViolationHoldMismatch, "acknowledged hold %s of user %s (seats %s) is stored as user %s (seats %s)",
				h.ID, h.User, strings.Join(h.Seats, ","), r.User, strings.Join(r.Seats, ","))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(acks.Confirms)) {
		ref := acks.Confirms[id]
		r, ok := byID[id]
		switch {
		case !ok:
			v.addf(ViolationLostConfirm, "acknowledged confirm of hold %s (payment %s) is not in the store", id, ref)
			continue
		case r.State != StateBooked:
			v.addf(ViolationLostConfirm, "acknowledged confirm of hold %s (payment %s) is stored as %s", id, ref, r.State)
			continue
		case r.PaymentRef != ref:
			v.addf(ViolationConfirmMismatch, "acknowledged confirm of hold %s (payment %s) is booked with payment %q", id, ref, r.PaymentRef)
		}
		if h, ok := ackedHolds[id]; ok && (r.User != h.User || !sameSeats(r.Seats, h.Seats)) {
			v.addf(ViolationConfirmMismatch, "acknowledged confirm of hold %s of user %s (seats %s) is booked as user %s (seats %s)",
				id, h.User, strings.Join(h.Seats, ","), r.User, strings.Join(r.Seats, ","))
		}
	}
	return v
}

// sameSeats reports whether a and b have the same seats, in any order.
func sameSeats(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	as, bs := slices.Clone(a), slices.Clone(b)
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}
