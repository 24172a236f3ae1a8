package activereservation

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// t0 is the time of the first operation of most tests.
var t0 = time.Date(2026, 11, 22, 20, 0, 0, 0, time.UTC)

// testRows is the layout of most tests: rows A, B, C of 10 seats, so one
// user can reach the 10-seat limit and another still find seats.
var testRows = []Row{
	{Label: "A", SeatCount: 10, Category: "gold"},
	{Label: "B", SeatCount: 10, Category: "silver"},
	{Label: "C", SeatCount: 10, Category: "silver"},
}

// newShow returns an empty show of rows (testRows if none), default TTL.
func newShow(t testing.TB, rows ...Row) *Show {
	t.Helper()
	if len(rows) == 0 {
		rows = testRows
	}
	s, err := NewShow(Config{ID: "show-1", Rows: rows})
	if err != nil {
		t.Fatalf("NewShow: %v", err)
	}
	return s
}

// seatIDs converts strings to seat IDs.
func seatIDs(ids ...string) []SeatID {
	out := make([]SeatID, len(ids))
	for i, id := range ids {
		out[i] = SeatID(id)
	}
	return out
}

// rowSeats returns seats label-from .. label-to.
func rowSeats(label string, from, to int) []SeatID {
	var out []SeatID
	for n := from; n <= to; n++ {
		out = append(out, SeatID(label+"-"+strconv.Itoa(n)))
	}
	return out
}

// mustHold holds seats or fails the test.
func mustHold(t testing.TB, s *Show, id HoldID, user UserID, seats []SeatID, now time.Time) Reservation {
	t.Helper()
	r, err := s.Hold(id, user, seats, now)
	if err != nil {
		t.Fatalf("Hold(%s, %s, %v): %v", id, user, seats, err)
	}
	return r
}

// mustConfirm confirms a hold or fails the test.
func mustConfirm(t testing.TB, s *Show, id HoldID, user UserID, ref string, now time.Time) Reservation {
	t.Helper()
	r, err := s.Confirm(id, user, ref, now)
	if err != nil {
		t.Fatalf("Confirm(%s, %s): %v", id, user, err)
	}
	return r
}

// state is everything observable about a show, for before/after comparisons.
type state struct {
	Map      SeatMap
	Users    map[UserID]int
	Holds    []Reservation // expiry order
	Bookings []Reservation // sorted by ID
}

// testUsers are always included in a captured state's Users.
var testUsers = []UserID{"u1", "u2", "u3", "u4"}

// capture returns the observable state of s.
func capture(t testing.TB, s *Show) state {
	t.Helper()
	st := state{
		Map:      s.SeatMap(nil),
		Users:    make(map[UserID]int),
		Holds:    s.Holds(),
		Bookings: sortedByID(s.Bookings()),
	}
	for _, u := range testUsers {
		st.Users[u] = s.UserSeats(u)
	}
	for _, r := range append(slices.Clone(st.Holds), st.Bookings...) {
		st.Users[r.User] = s.UserSeats(r.User)
	}
	return st
}

func sortedByID(rs []Reservation) []Reservation {
	slices.SortFunc(rs, func(a, b Reservation) int { return cmp.Compare(a.ID, b.ID) })
	return rs
}

// assertSame fails the test if two captured states differ.
func assertSame(t testing.TB, what string, before, after state) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("%s changed the show:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

// checkInvariants checks the show against itself: counts, seat statuses
// against the reservations that claim them, per-user counts, hold order.
func checkInvariants(t testing.TB, s *Show) {
	t.Helper()
	m := s.SeatMap(nil)
	if m.Available+m.Held+m.Booked != s.Capacity() {
		t.Fatalf("counts %d+%d+%d != capacity %d", m.Available, m.Held, m.Booked, s.Capacity())
	}
	if len(m.Statuses) != s.Capacity() {
		t.Fatalf("seat map has %d seats, capacity %d", len(m.Statuses), s.Capacity())
	}
	var tally [4]int
	for _, b := range m.Statuses {
		if b < byte(SeatAvailable) || b > byte(SeatBooked) {
			t.Fatalf("bad seat status %d", b)
		}
		tally[b]++
	}
	if tally[SeatAvailable] != m.Available || tally[SeatHeld] != m.Held || tally[SeatBooked] != m.Booked {
		t.Fatalf("counts %d/%d/%d, statuses say %d/%d/%d",
			m.Available, m.Held, m.Booked, tally[SeatAvailable], tally[SeatHeld], tally[SeatBooked])
	}
	claims := make(map[SeatID]HoldID)
	perUser := make(map[UserID]int)
	claim := func(r Reservation, want SeatStatus) {
		for _, seat := range r.Seats {
			if other, dup := claims[seat]; dup {
				t.Fatalf("seat %s claimed by %s and %s", seat, other, r.ID)
			}
			claims[seat] = r.ID
			if st, ok := s.SeatStatus(seat); !ok || st != want {
				t.Fatalf("seat %s of %s %s has status %d, want %d", seat, r.Status, r.ID, st, want)
			}
		}
		perUser[r.User] += len(r.Seats)
		if got, ok := s.Reservation(r.ID); !ok || !reflect.DeepEqual(got, r) {
			t.Fatalf("Reservation(%s) = %+v, %v; want %+v", r.ID, got, ok, r)
		}
	}
	holds := s.Holds()
	for i, r := range holds {
		if r.Status != Held {
			t.Fatalf("live hold %s has status %s", r.ID, r.Status)
		}
		if i > 0 && r.ExpiresAt.Before(holds[i-1].ExpiresAt) {
			t.Fatalf("holds out of expiry order: %s after %s", r.ID, holds[i-1].ID)
		}
		claim(r, SeatHeld)
	}
	for _, r := range s.Bookings() {
		if r.Status != Booked {
			t.Fatalf("booking %s has status %s", r.ID, r.Status)
		}
		claim(r, SeatBooked)
	}
	for i := range s.Capacity() {
		id, st := s.Seat(i)
		if _, ok := claims[id]; ok != (st != SeatAvailable) {
			t.Fatalf("seat %s has status %d but claimed=%v", id, st, ok)
		}
	}
	for u, n := range perUser {
		if got := s.UserSeats(u); got != n {
			t.Fatalf("UserSeats(%s) = %d, reservations say %d", u, got, n)
		}
		if n > MaxSeatsPerUser {
			t.Fatalf("user %s has %d seats", u, n)
		}
	}
}

func TestNewShow(t *testing.T) {
	tests := []struct {
		name string
		rows []Row
		ok   bool
	}{
		{"no rows", nil, false},
		{"empty rows", []Row{}, false},
		{"empty label", []Row{{Label: "A", SeatCount: 2}, {Label: "", SeatCount: 2}}, false},
		{"zero seats", []Row{{Label: "A", SeatCount: 0}}, false},
		{"negative seats", []Row{{Label: "A", SeatCount: -3}}, false},
		{"duplicate labels", []Row{{Label: "A", SeatCount: 2}, {Label: "B", SeatCount: 2}, {Label: "A", SeatCount: 1}}, false},
		{"one seat", []Row{{Label: "A", SeatCount: 1}}, true},
		// Seat IDs are label + "-" + decimal digits, so two distinct labels
		// can never generate the same ID: the longer label would have to be
		// the shorter one plus "-" and digits followed by another "-", and
		// seat numbers have no "-". Labels that look alike are accepted.
		{"look-alike labels", []Row{{Label: "A", SeatCount: 11}, {Label: "A-1", SeatCount: 1}, {Label: "A-", SeatCount: 1}, {Label: "1", SeatCount: 1}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewShow(Config{ID: "s", Rows: tt.rows})
			if !tt.ok {
				if !errors.Is(err, ErrInvalidLayout) || s != nil {
					t.Fatalf("NewShow = %v, %v; want nil, ErrInvalidLayout", s, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewShow: %v", err)
			}
			checkInvariants(t, s)
		})
	}
}

func TestNewShowLayout(t *testing.T) {
	rows := []Row{{Label: "B", SeatCount: 2}, {Label: "A", SeatCount: 11}, {Label: "A-1", SeatCount: 1}}
	s, err := NewShow(Config{ID: "s1", Rows: rows, VersionBase: 7 << 32})
	if err != nil {
		t.Fatal(err)
	}
	want := seatIDs("B-1", "B-2", "A-1", "A-2", "A-3", "A-4", "A-5", "A-6", "A-7", "A-8", "A-9", "A-10", "A-11", "A-1-1")
	if s.Capacity() != len(want) {
		t.Fatalf("Capacity = %d, want %d", s.Capacity(), len(want))
	}
	for i, id := range want {
		got, st := s.Seat(i)
		if got != id || st != SeatAvailable {
			t.Errorf("Seat(%d) = %s, %d; want %s, available", i, got, st, id)
		}
		if st, ok := s.SeatStatus(id); !ok || st != SeatAvailable {
			t.Errorf("SeatStatus(%s) = %d, %v", id, st, ok)
		}
	}
	for _, bogus := range seatIDs("A-0", "A-12", "B-3", "C-1", "a-1", "A1", "", "A-01", " A-1") {
		if _, ok := s.SeatStatus(bogus); ok {
			t.Errorf("SeatStatus(%q) found a seat", bogus)
		}
	}
	if !reflect.DeepEqual(s.Rows(), rows) {
		t.Errorf("Rows = %v, want %v", s.Rows(), rows)
	}
	rows[0].Label = "Z" // the show keeps its own copy
	if s.Rows()[0].Label != "B" {
		t.Errorf("show shares the caller's rows")
	}
	if s.ID() != "s1" || s.HoldTTL() != DefaultHoldTTL {
		t.Errorf("ID, HoldTTL = %s, %v", s.ID(), s.HoldTTL())
	}
	m := s.SeatMap(nil)
	if m.Version != 7<<32 || m.Available != len(want) || m.Held != 0 || m.Booked != 0 {
		t.Errorf("fresh seat map = %+v", m)
	}

	s2, err := NewShow(Config{ID: "s2", Rows: rows, HoldTTL: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := mustHold(t, s2, "h", "u1", seatIDs("Z-1"), t0)
	if s2.HoldTTL() != 90*time.Second || !r.ExpiresAt.Equal(t0.Add(90*time.Second)) {
		t.Errorf("HoldTTL %v, ExpiresAt %v", s2.HoldTTL(), r.ExpiresAt)
	}
}

func TestHold(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Show)
		user  UserID
		seats []SeatID
		// want is the error class (nil: success); taken the seats a
		// *SeatsTakenError must name.
		want  error
		taken []SeatID
	}{
		{name: "one seat", seats: seatIDs("A-1")},
		{name: "ten seats across rows", seats: append(rowSeats("A", 6, 10), rowSeats("B", 1, 5)...)},
		{name: "no seats", seats: nil, want: ErrSeatCount},
		{name: "empty seat list", seats: []SeatID{}, want: ErrSeatCount},
		{name: "eleven seats, one unknown", seats: rowSeats("A", 1, 11), want: ErrSeatCount},
		{name: "eleven valid seats", seats: append(rowSeats("A", 1, 10), "B-1"), want: ErrSeatCount},
		{name: "eleven seats with a duplicate", seats: append(rowSeats("A", 1, 10), "A-1"), want: ErrSeatCount},
		{name: "twelve seats", seats: append(rowSeats("A", 1, 10), "B-1", "B-2"), want: ErrSeatCount},
		{name: "duplicate seat", seats: seatIDs("A-1", "A-2", "A-1"), want: ErrDuplicateSeat},
		{name: "duplicate adjacent", seats: seatIDs("B-3", "B-3"), want: ErrDuplicateSeat},
		{name: "duplicate wins over unknown before it", seats: seatIDs("Z-9", "A-1", "A-1"), want: ErrDuplicateSeat},
		{name: "duplicate wins over unknown after it", seats: seatIDs("A-1", "A-1", "Z-9"), want: ErrDuplicateSeat},
		{name: "duplicate unknown seat", seats: seatIDs("Z-9", "Z-9"), want: ErrDuplicateSeat},
		{name: "unknown row", seats: seatIDs("A-1", "D-1"), want: ErrUnknownSeat},
		{name: "seat zero", seats: seatIDs("A-0"), want: ErrUnknownSeat},
		{name: "seat past row end", seats: seatIDs("A-11"), want: ErrUnknownSeat},
		{name: "empty seat ID", seats: seatIDs(""), want: ErrUnknownSeat},
		{name: "lower case", seats: seatIDs("a-1"), want: ErrUnknownSeat},
		{name: "leading zero", seats: seatIDs("A-01"), want: ErrUnknownSeat},
		{
			name:  "unknown wins over taken",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u2", seatIDs("A-1"), t0) },
			seats: seatIDs("A-1", "D-1"), want: ErrUnknownSeat,
		},
		{
			name:  "held seats named in request order",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u2", seatIDs("A-1", "A-2", "A-5"), t0) },
			seats: seatIDs("A-3", "A-5", "A-4", "A-1"), want: ErrSeatTaken, taken: seatIDs("A-5", "A-1"),
		},
		{
			name: "booked seat",
			setup: func(t *testing.T, s *Show) {
				mustHold(t, s, "h0", "u2", seatIDs("B-7"), t0)
				mustConfirm(t, s, "h0", "u2", "pay-0", t0)
			},
			seats: seatIDs("B-6", "B-7", "B-8"), want: ErrSeatTaken, taken: seatIDs("B-7"),
		},
		{
			name:  "own held seat",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u1", seatIDs("C-1"), t0) },
			seats: seatIDs("C-1"), want: ErrSeatTaken, taken: seatIDs("C-1"),
		},
		{
			name: "held and booked seats together",
			setup: func(t *testing.T, s *Show) {
				mustHold(t, s, "h0", "u2", seatIDs("C-1"), t0)
				mustHold(t, s, "h1", "u3", seatIDs("C-2"), t0)
				mustConfirm(t, s, "h1", "u3", "pay-1", t0)
			},
			seats: seatIDs("C-2", "C-3", "C-1"), want: ErrSeatTaken, taken: seatIDs("C-2", "C-1"),
		},
		{
			name:  "taken wins over user limit",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u1", rowSeats("A", 1, 10), t0) },
			seats: seatIDs("B-1", "A-10"), want: ErrSeatTaken, taken: seatIDs("A-10"),
		},
		{
			name:  "user limit",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u1", rowSeats("A", 1, 9), t0) },
			seats: seatIDs("B-1", "B-2"), want: ErrUserLimit,
		},
		{
			name:  "user limit reached exactly",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u1", rowSeats("A", 1, 9), t0) },
			seats: seatIDs("B-1"),
		},
		{
			name:  "other user's seats do not count",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h0", "u2", rowSeats("A", 1, 10), t0) },
			seats: rowSeats("B", 1, 10),
		},
		{
			name:  "hold ID in use",
			setup: func(t *testing.T, s *Show) { mustHold(t, s, "h1", "u2", seatIDs("C-9"), t0) },
			seats: seatIDs("C-1"), want: ErrCorrupt,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShow(t)
			if tt.setup != nil {
				tt.setup(t, s)
			}
			user := cmp.Or(tt.user, "u1")
			now := t0.Add(time.Minute)
			before := capture(t, s)
			req := slices.Clone(tt.seats)

			if err := s.CheckHold("h1", user, req); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("CheckHold = %v, want %v", err, tt.want)
			}
			assertSame(t, "CheckHold", before, capture(t, s))

			r, err := s.Hold("h1", user, req, now)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Hold = %+v, %v; want %v", r, err, tt.want)
				}
				var ste *SeatsTakenError
				if errors.As(err, &ste) != (tt.taken != nil) {
					t.Fatalf("Hold error %v (%T): SeatsTakenError want %v", err, err, tt.taken != nil)
				}
				if ste != nil && !slices.Equal(ste.Seats, tt.taken) {
					t.Fatalf("taken seats %v, want %v", ste.Seats, tt.taken)
				}
				if !reflect.DeepEqual(r, Reservation{}) {
					t.Fatalf("refused Hold returned %+v", r)
				}
				assertSame(t, "refused Hold", before, capture(t, s))
				checkInvariants(t, s)
				return
			}
			if err != nil {
				t.Fatalf("Hold: %v", err)
			}
			want := Reservation{ID: "h1", Show: "show-1", User: user, Seats: tt.seats, Status: Held,
				CreatedAt: now, ExpiresAt: now.Add(DefaultHoldTTL)}
			if !reflect.DeepEqual(r, want) {
				t.Fatalf("Hold = %+v, want %+v", r, want)
			}
			req[0] = "mutated" // the show keeps its own copy of the seats
			if got, _ := s.Reservation("h1"); !slices.Equal(got.Seats, tt.seats) {
				t.Fatalf("hold shares the caller's seat slice: %v", got.Seats)
			}
			after := capture(t, s)
			if after.Map.Version != before.Map.Version+1 {
				t.Errorf("version %d -> %d, want +1", before.Map.Version, after.Map.Version)
			}
			if after.Map.Held != before.Map.Held+len(tt.seats) || after.Map.Available != before.Map.Available-len(tt.seats) {
				t.Errorf("counts %+v -> %+v", before.Map, after.Map)
			}
			if after.Users[user] != before.Users[user]+len(tt.seats) {
				t.Errorf("UserSeats %d -> %d", before.Users[user], after.Users[user])
			}
			for _, seat := range tt.seats {
				if st, _ := s.SeatStatus(seat); st != SeatHeld {
					t.Errorf("seat %s status %d after hold", seat, st)
				}
			}
			if h := s.Holds(); h[len(h)-1].ID != "h1" {
				t.Errorf("new hold not last in expiry order: %v", h)
			}
			checkInvariants(t, s)
		})
	}
}

func TestSeatsTakenError(t *testing.T) {
	s := newShow(t)
	mustHold(t, s, "h0", "u2", seatIDs("A-1", "A-2"), t0)
	_, err := s.Hold("h1", "u1", seatIDs("A-2", "A-3", "A-1"), t0)
	var ste *SeatsTakenError
	if !errors.As(err, &ste) || !errors.Is(err, ErrSeatTaken) {
		t.Fatalf("err = %v (%T)", err, err)
	}
	if got, want := err.Error(), "seats taken: A-2,A-1"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if wrapped := fmt.Errorf("hold: %w", err); !errors.Is(wrapped, ErrSeatTaken) || !errors.As(wrapped, &ste) {
		t.Errorf("wrapped error lost its identity")
	}
}

func TestUserLimit(t *testing.T) {
	s := newShow(t)
	mustHold(t, s, "h1", "u1", rowSeats("A", 1, 6), t0)
	mustHold(t, s, "h2", "u1", rowSeats("A", 7, 10), t0)
	if n := s.UserSeats("u1"); n != 10 {
		t.Fatalf("UserSeats = %d, want 10", n)
	}
	refused := func(step string) {
		t.Helper()
		before := capture(t, s)
		if _, err := s.Hold("hx", "u1", seatIDs("C-10"), t0); !errors.Is(err, ErrUserLimit) {
			t.Fatalf("%s: 11th seat: %v, want ErrUserLimit", step, err)
		}
		assertSame(t, step, before, capture(t, s))
	}
	refused("held 10")
	mustConfirm(t, s, "h1", "u1", "pay-1", t0)
	refused("booked 6 + held 4") // booked seats count too
	mustHold(t, s, "h3", "u2", rowSeats("B", 1, 10), t0)
	if _, err := s.Release("h2", "u1", t0); err != nil {
		t.Fatal(err)
	}
	if n := s.UserSeats("u1"); n != 6 {
		t.Fatalf("UserSeats after release = %d, want 6", n)
	}
	mustHold(t, s, "h4", "u1", rowSeats("C", 1, 4), t0)
	refused("booked 6 + held 4 again")
	// Expiry and Cancel give seats back to the user's allowance too.
	if _, err := s.Expire("h4", t0.Add(DefaultHoldTTL+ConfirmGrace)); err != nil {
		t.Fatal(err)
	}
	mustHold(t, s, "h5", "u1", rowSeats("C", 1, 4), t0)
	if !s.Cancel("h5") {
		t.Fatal("Cancel(h5) = false")
	}
	mustHold(t, s, "h6", "u1", rowSeats("C", 5, 8), t0)
	if n := s.UserSeats("u1"); n != 10 {
		t.Fatalf("UserSeats = %d, want 10", n)
	}
	checkInvariants(t, s)
}

func TestConfirm(t *testing.T) {
	exp := t0.Add(DefaultHoldTTL)
	tests := []struct {
		name    string
		setup   func(t *testing.T, s *Show) // after h1 is held by u1 at t0
		id      HoldID
		user    UserID
		ref     string
		at      time.Time
		want    error
		already bool
	}{
		{name: "holder", at: t0.Add(time.Minute)},
		{name: "holder at creation", at: t0},
		{name: "at ExpiresAt", at: exp},
		{name: "within grace", at: exp.Add(ConfirmGrace - time.Millisecond)},
		{name: "at ExpiresAt+grace exactly", at: exp.Add(ConfirmGrace)},
		{name: "just after grace", at: exp.Add(ConfirmGrace + time.Nanosecond), want: ErrHoldExpired},
		{name: "long after", at: exp.Add(time.Hour), want: ErrHoldExpired},
		{name: "other user", user: "u2", at: t0, want: ErrNotHolder},
		{name: "other user after expiry", user: "u2", at: exp.Add(time.Hour), want: ErrNotHolder},
		{name: "unknown hold", id: "nope", at: t0, want: ErrHoldNotFound},
		{
			name:  "again with same ref",
			setup: func(t *testing.T, s *Show) { mustConfirm(t, s, "h1", "u1", "pay-1", t0.Add(time.Minute)) },
			at:    t0.Add(2 * time.Minute), already: true,
		},
		{
			name:  "again with same ref after grace",
			setup: func(t *testing.T, s *Show) { mustConfirm(t, s, "h1", "u1", "pay-1", t0.Add(time.Minute)) },
			at:    exp.Add(time.Hour), already: true,
		},
		{
			name:  "again with another ref",
			setup: func(t *testing.T, s *Show) { mustConfirm(t, s, "h1", "u1", "pay-1", t0.Add(time.Minute)) },
			ref:   "pay-2", at: t0.Add(2 * time.Minute), want: ErrHoldEnded,
		},
		{
			name:  "booking by other user",
			setup: func(t *testing.T, s *Show) { mustConfirm(t, s, "h1", "u1", "pay-1", t0.Add(time.Minute)) },
			user:  "u2", at: t0.Add(2 * time.Minute), want: ErrNotHolder,
		},
		{
			name: "released",
			setup: func(t *testing.T, s *Show) {
				if _, err := s.Release("h1", "u1", t0); err != nil {
					t.Fatal(err)
				}
			},
			at: t0.Add(time.Minute), want: ErrHoldNotFound,
		},
		{
			name: "expired",
			setup: func(t *testing.T, s *Show) {
				if _, err := s.Expire("h1", exp.Add(ConfirmGrace)); err != nil {
					t.Fatal(err)
				}
			},
			at: exp.Add(ConfirmGrace), want: ErrHoldNotFound,
		},
		{
			name:  "cancelled",
			setup: func(t *testing.T, s *Show) { s.Cancel("h1") },
			at:    t0, want: ErrHoldNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShow(t)
			held := mustHold(t, s, "h1", "u1", seatIDs("B-2", "B-3"), t0)
			mustHold(t, s, "h2", "u2", seatIDs("B-4"), t0)
			if tt.setup != nil {
				tt.setup(t, s)
			}
			id, user, ref := cmp.Or(tt.id, "h1"), cmp.Or(tt.user, "u1"), cmp.Or(tt.ref, "pay-1")
			before := capture(t, s)

			cr, already, err := s.CheckConfirm(id, user, ref, tt.at)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) || already != tt.already {
				t.Fatalf("CheckConfirm = %v, %v; want %v, %v", already, err, tt.want, tt.already)
			}
			assertSame(t, "CheckConfirm", before, capture(t, s))

			r, err := s.Confirm(id, user, ref, tt.at)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !reflect.DeepEqual(r, Reservation{}) {
					t.Fatalf("Confirm = %+v, %v; want %v", r, err, tt.want)
				}
				assertSame(t, "refused Confirm", before, capture(t, s))
				checkInvariants(t, s)
				return
			}
			if err != nil {
				t.Fatalf("Confirm: %v", err)
			}
			after := capture(t, s)
			if tt.already {
				assertSame(t, "repeated Confirm", before, after)
				if !reflect.DeepEqual(r, cr) || r.Status != Booked || r.PaymentRef != ref {
					t.Fatalf("repeated Confirm = %+v, CheckConfirm %+v", r, cr)
				}
				return
			}
			want := held
			want.Status, want.BookedAt, want.PaymentRef = Booked, tt.at, ref
			if !reflect.DeepEqual(r, want) {
				t.Fatalf("Confirm = %+v, want %+v", r, want)
			}
			if after.Map.Version != before.Map.Version+1 || after.Map.Booked != 2 || after.Map.Held != 1 {
				t.Errorf("seat map %+v -> %+v", before.Map, after.Map)
			}
			if after.Users["u1"] != 2 {
				t.Errorf("UserSeats(u1) = %d, want 2 (booked seats count)", after.Users["u1"])
			}
			if len(after.Holds) != 1 || after.Holds[0].ID != "h2" || len(after.Bookings) != 1 || !reflect.DeepEqual(after.Bookings[0], want) {
				t.Errorf("holds %v bookings %v", after.Holds, after.Bookings)
			}
			checkInvariants(t, s)
			// A confirmed hold is no longer due, whatever the time.
			if due := s.Due(exp.Add(time.Hour), nil); len(due) != 1 || due[0].ID != "h2" {
				t.Errorf("Due after confirm = %v", due)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Show)
		id    HoldID
		user  UserID
		want  error
	}{
		{name: "holder"},
		{name: "other user", user: "u2", want: ErrNotHolder},
		{
			name:  "booked",
			setup: func(t *testing.T, s *Show) { mustConfirm(t, s, "h1", "u1", "pay", t0) },
			want:  ErrHoldEnded,
		},
		{
			name:  "booked, other user",
			setup: func(t *testing.T, s *Show) { mustConfirm(t, s, "h1", "u1", "pay", t0) },
			user:  "u2", want: ErrNotHolder,
		},
		{name: "unknown", id: "nope", want: ErrHoldNotFound},
		{
			name: "twice",
			setup: func(t *testing.T, s *Show) {
				if _, err := s.Release("h1", "u1", t0); err != nil {
					t.Fatal(err)
				}
			},
			want: ErrHoldNotFound,
		},
		{
			name: "expired",
			setup: func(t *testing.T, s *Show) {
				if got := s.ExpireDue(t0.Add(time.Hour)); len(got) != 2 {
					t.Fatalf("ExpireDue = %v", got)
				}
			},
			want: ErrHoldNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShow(t)
			held := mustHold(t, s, "h1", "u1", seatIDs("C-5", "C-1"), t0)
			mustHold(t, s, "h2", "u2", seatIDs("C-2"), t0)
			if tt.setup != nil {
				tt.setup(t, s)
			}
			id, user := cmp.Or(tt.id, "h1"), cmp.Or(tt.user, "u1")
			at := t0.Add(time.Minute)
			before := capture(t, s)

			if _, err := s.CheckRelease(id, user); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("CheckRelease = %v, want %v", err, tt.want)
			}
			assertSame(t, "CheckRelease", before, capture(t, s))

			r, err := s.Release(id, user, at)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !reflect.DeepEqual(r, Reservation{}) {
					t.Fatalf("Release = %+v, %v; want %v", r, err, tt.want)
				}
				assertSame(t, "refused Release", before, capture(t, s))
				checkInvariants(t, s)
				return
			}
			if err != nil {
				t.Fatalf("Release: %v", err)
			}
			want := held
			want.Status, want.EndedAt = Released, at
			if !reflect.DeepEqual(r, want) {
				t.Fatalf("Release = %+v, want %+v", r, want)
			}
			after := capture(t, s)
			if after.Map.Version != before.Map.Version+1 || after.Map.Held != 1 || after.Map.Available != s.Capacity()-1 {
				t.Errorf("seat map %+v -> %+v", before.Map, after.Map)
			}
			if after.Users["u1"] != 0 || after.Users["u2"] != 1 {
				t.Errorf("users %v", after.Users)
			}
			if _, ok := s.Reservation("h1"); ok {
				t.Errorf("released hold still found")
			}
			checkInvariants(t, s)
			mustHold(t, s, "h3", "u3", seatIDs("C-1", "C-5"), at) // seats are available again
		})
	}
}

func TestCancel(t *testing.T) {
	s := newShow(t)
	mustHold(t, s, "h0", "u2", seatIDs("A-1"), t0)
	mustHold(t, s, "b0", "u2", seatIDs("A-2"), t0)
	mustConfirm(t, s, "b0", "u2", "pay", t0)
	before := capture(t, s)

	mustHold(t, s, "h1", "u1", seatIDs("A-3", "A-4"), t0)
	mid := capture(t, s)
	if !s.Cancel("h1") {
		t.Fatal("Cancel(h1) = false")
	}
	after := capture(t, s)
	if after.Map.Version != mid.Map.Version+1 {
		t.Errorf("Cancel: version %d -> %d, want +1 (versions never go back)", mid.Map.Version, after.Map.Version)
	}
	after.Map.Version = before.Map.Version
	assertSame(t, "Hold then Cancel (apart from the version)", before, after)
	checkInvariants(t, s)

	for _, id := range []HoldID{"h1", "b0", "nope"} {
		before := capture(t, s)
		if s.Cancel(id) {
			t.Errorf("Cancel(%s) = true", id)
		}
		assertSame(t, "Cancel("+string(id)+")", before, capture(t, s))
	}
	// The ID of a cancelled hold may be used again: it never existed.
	mustHold(t, s, "h1", "u1", seatIDs("A-3"), t0)
}

func TestDueAndExpire(t *testing.T) {
	s := newShow(t)
	grace := DefaultHoldTTL + ConfirmGrace // from creation to due
	h1 := mustHold(t, s, "h1", "u1", seatIDs("A-1"), t0)
	h2 := mustHold(t, s, "h2", "u2", seatIDs("A-2", "A-3"), t0.Add(time.Minute))
	mustHold(t, s, "h3", "u3", seatIDs("A-4"), t0.Add(2*time.Minute))
	h4 := mustHold(t, s, "h4", "u1", seatIDs("A-5"), t0.Add(2*time.Minute))
	mustHold(t, s, "b1", "u4", seatIDs("A-6"), t0)
	mustConfirm(t, s, "b1", "u4", "pay", t0)
	ids := func(rs []Reservation) []HoldID {
		var out []HoldID
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}

	t.Run("Due", func(t *testing.T) {
		before := capture(t, s)
		tests := []struct {
			name string
			at   time.Time
			skip func(HoldID) bool
			want []HoldID
		}{
			{"none yet", t0, nil, nil},
			{"at ExpiresAt", h1.ExpiresAt, nil, nil},
			{"just before grace ends", t0.Add(grace - time.Nanosecond), nil, nil},
			// Documented: due when ExpiresAt+grace is not after now. At
			// that very instant the hold is still confirmable too.
			{"exactly ExpiresAt+grace", t0.Add(grace), nil, []HoldID{"h1"}},
			{"two due, oldest first", t0.Add(time.Minute + grace), nil, []HoldID{"h1", "h2"}},
			{"all due", t0.Add(time.Hour), nil, []HoldID{"h1", "h2", "h3", "h4"}},
			{"skip", t0.Add(time.Hour), func(id HoldID) bool { return id == "h1" || id == "h3" }, []HoldID{"h2", "h4"}},
			{"skip all", t0.Add(time.Hour), func(HoldID) bool { return true }, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := s.Due(tt.at, tt.skip)
				if !slices.Equal(ids(got), tt.want) {
					t.Fatalf("Due = %v, want %v", ids(got), tt.want)
				}
				for _, r := range got {
					if r.Status != Held {
						t.Errorf("due %s has status %s", r.ID, r.Status)
					}
				}
				assertSame(t, "Due", before, capture(t, s))
			})
		}
	})

	t.Run("Expire refusals", func(t *testing.T) {
		tests := []struct {
			name string
			id   HoldID
			at   time.Time
			want error
		}{
			{"not due", "h1", t0.Add(grace - time.Nanosecond), ErrHoldEnded},
			{"not due, later hold", "h3", t0.Add(time.Minute + grace), ErrHoldEnded},
			{"booked", "b1", t0.Add(time.Hour), ErrHoldNotFound},
			{"unknown", "nope", t0.Add(time.Hour), ErrHoldNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := capture(t, s)
				r, err := s.Expire(tt.id, tt.at)
				if !errors.Is(err, tt.want) || !reflect.DeepEqual(r, Reservation{}) {
					t.Fatalf("Expire = %+v, %v; want %v", r, err, tt.want)
				}
				assertSame(t, "refused Expire", before, capture(t, s))
			})
		}
	})

	t.Run("Expire one out of order", func(t *testing.T) {
		at := t0.Add(2*time.Minute + grace)
		before := capture(t, s)
		r, err := s.Expire("h2", at)
		if err != nil {
			t.Fatal(err)
		}
		want := h2
		want.Status, want.EndedAt = Expired, at
		if !reflect.DeepEqual(r, want) {
			t.Fatalf("Expire = %+v, want %+v", r, want)
		}
		after := capture(t, s)
		if after.Map.Version != before.Map.Version+1 || after.Map.Held != before.Map.Held-2 || after.Users["u2"] != 0 {
			t.Errorf("after Expire: %+v", after)
		}
		if _, err := s.Expire("h2", at); !errors.Is(err, ErrHoldNotFound) {
			t.Errorf("second Expire = %v", err)
		}
		checkInvariants(t, s)
	})

	t.Run("ExpireDue", func(t *testing.T) {
		at := t0.Add(time.Minute + grace) // h1 due; h3, h4 not yet
		before := capture(t, s)
		got := s.ExpireDue(at)
		want := h1
		want.Status, want.EndedAt = Expired, at
		if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Fatalf("ExpireDue = %+v, want [%+v]", got, want)
		}
		after := capture(t, s)
		if after.Map.Version != before.Map.Version+1 || !slices.Equal(ids(after.Holds), []HoldID{"h3", "h4"}) {
			t.Errorf("after ExpireDue: %+v", after)
		}
		if got := s.ExpireDue(at); len(got) != 0 {
			t.Errorf("second ExpireDue = %v", got)
		}
		later := t0.Add(time.Hour)
		got = s.ExpireDue(later)
		if !slices.Equal(ids(got), []HoldID{"h3", "h4"}) || got[1].User != h4.User || got[1].EndedAt != later {
			t.Errorf("ExpireDue = %+v", got)
		}
		end := capture(t, s)
		if end.Map.Version != after.Map.Version+2 || end.Map.Held != 0 || end.Map.Booked != 1 || len(end.Holds) != 0 {
			t.Errorf("end: %+v", end)
		}
		checkInvariants(t, s)
	})
}

// TestVersion checks that the version moves by one on every seat change and
// on nothing else.
func TestVersion(t *testing.T) {
	s, err := NewShow(Config{ID: "v", Rows: testRows, VersionBase: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	late := t0.Add(time.Hour)
	steps := []struct {
		name    string
		op      func() error
		changes bool
	}{
		{"hold", func() error { _, err := s.Hold("h1", "u1", seatIDs("A-1", "A-2"), t0); return err }, true},
		{"refused hold", func() error { _, err := s.Hold("h2", "u2", seatIDs("A-2"), t0); return nil2(err) }, false},
		{"check hold", func() error { return s.CheckHold("h2", "u2", seatIDs("A-3")) }, false},
		{"hold 2", func() error { _, err := s.Hold("h2", "u2", seatIDs("A-3"), t0); return err }, true},
		{"hold 3", func() error { _, err := s.Hold("h3", "u3", seatIDs("A-4"), t0); return err }, true},
		{"hold 4", func() error { _, err := s.Hold("h4", "u3", seatIDs("A-5"), t0); return err }, true},
		{"confirm by other", func() error { _, err := s.Confirm("h1", "u2", "p", t0); return nil2(err) }, false},
		{"check confirm", func() error { _, _, err := s.CheckConfirm("h1", "u1", "p", t0); return err }, false},
		{"confirm", func() error { _, err := s.Confirm("h1", "u1", "p", t0); return err }, true},
		{"confirm again", func() error { _, err := s.Confirm("h1", "u1", "p", t0); return err }, false},
		{"confirm other ref", func() error { _, err := s.Confirm("h1", "u1", "q", t0); return nil2(err) }, false},
		{"release booked", func() error { _, err := s.Release("h1", "u1", t0); return nil2(err) }, false},
		{"check release", func() error { _, err := s.CheckRelease("h2", "u2"); return err }, false},
		{"release", func() error { _, err := s.Release("h2", "u2", t0); return err }, true},
		{"release again", func() error { _, err := s.Release("h2", "u2", t0); return nil2(err) }, false},
		{"expire not due", func() error { _, err := s.Expire("h3", t0); return nil2(err) }, false},
		{"due", func() error { s.Due(late, nil); return nil }, false},
		{"seat map", func() error { s.SeatMap(nil); return nil }, false},
		{"expire", func() error { _, err := s.Expire("h3", late); return err }, true},
		{"cancel", func() error { return okErr(s.Cancel("h4")) }, true},
		{"cancel unknown", func() error { return okErr(!s.Cancel("h4")) }, false},
		{"expire due, none", func() error { return okErr(len(s.ExpireDue(late)) == 0) }, false},
		{"restore", func() error {
			return s.Restore(Reservation{ID: "r1", User: "u9", Seats: seatIDs("B-1"), Status: Held, ExpiresAt: late})
		}, true},
		{"refused restore", func() error {
			return nil2(s.Restore(Reservation{ID: "r2", User: "u9", Seats: seatIDs("B-2", "B-1"), Status: Held}))
		}, false},
	}
	for _, st := range steps {
		before := s.Version()
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		after := s.Version()
		if want := before + b2u(st.changes); after != want {
			t.Errorf("%s: version %d -> %d, want %d", st.name, before, after, want)
		}
		if m := s.SeatMap(nil); m.Version != after {
			t.Errorf("%s: SeatMap version %d, Version %d", st.name, m.Version, after)
		}
		checkInvariants(t, s)
	}
}

// nil2 turns an expected refusal into success and success into a failure.
func nil2(err error) error {
	if err == nil {
		return errors.New("unexpectedly succeeded")
	}
	return nil
}

func okErr(ok bool) error {
	if !ok {
		return errors.New("unexpected result")
	}
	return nil
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func TestSeatMap(t *testing.T) {
	s := newShow(t)
	mustHold(t, s, "h1", "u1", seatIDs("A-1", "C-10"), t0)
	mustHold(t, s, "h2", "u2", seatIDs("B-5"), t0)
	mustConfirm(t, s, "h2", "u2", "pay", t0)

	buf := make([]byte, 3, 64)
	m := s.SeatMap(buf)
	if &m.Statuses[0] != &buf[:1][0] {
		t.Errorf("SeatMap did not reuse a large enough buffer")
	}
	if m.Available != 27 || m.Held != 2 || m.Booked != 1 || m.Version != 3 {
		t.Errorf("SeatMap = %+v", m)
	}
	for i, b := range m.Statuses {
		if _, st := s.Seat(i); byte(st) != b {
			t.Errorf("status %d = %d, Seat says %d", i, b, st)
		}
	}
	want := map[int]SeatStatus{0: SeatHeld, 29: SeatHeld, 14: SeatBooked}
	for i, b := range m.Statuses {
		if w := cmp.Or(want[i], SeatAvailable); SeatStatus(b) != w {
			t.Errorf("seat %d status %d, want %d", i, b, w)
		}
	}
	snapshot := slices.Clone(m.Statuses)
	if _, err := s.Release("h1", "u1", t0); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Statuses, snapshot) {
		t.Errorf("a snapshot changed with the show")
	}
	small := s.SeatMap(make([]byte, 0, 2))
	if len(small.Statuses) != 30 || small.Held != 0 || small.Version != 4 {
		t.Errorf("SeatMap with small buffer = %+v", small)
	}
}

func TestSharedSeatMap(t *testing.T) {
	s := newShow(t)
	mustHold(t, s, "h1", "u1", seatIDs("A-1", "A-2"), t0)
	first := s.SharedSeatMap()
	if own := s.SeatMap(nil); !slices.Equal(first.Statuses, own.Statuses) || first.Version != own.Version ||
		first.Held != own.Held || first.Available != own.Available || first.Booked != own.Booked {
		t.Fatalf("SharedSeatMap = %+v, SeatMap = %+v", first, own)
	}
	if again := s.SharedSeatMap(); &again.Statuses[0] != &first.Statuses[0] {
		t.Errorf("an unchanged show copied its statuses again")
	}
	snapshot := slices.Clone(first.Statuses)
	for _, change := range []func() error{
		func() error { _, err := s.Hold("h2", "u2", seatIDs("B-1"), t0); return err },
		func() error { _, err := s.Confirm("h2", "u2", "pay", t0); return err },
		func() error { _, err := s.Release("h1", "u1", t0); return err },
	} {
		before := s.SharedSeatMap()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		after := s.SharedSeatMap()
		if &after.Statuses[0] == &before.Statuses[0] || after.Version == before.Version {
			t.Errorf("after a change: the same statuses (version %d → %d)", before.Version, after.Version)
		}
		if own := s.SeatMap(nil); !slices.Equal(after.Statuses, own.Statuses) {
			t.Errorf("after a change: shared %v, own %v", after.Statuses, own.Statuses)
		}
		if a, h, b, _ := s.Counts(); a != after.Available || h != after.Held || b != after.Booked {
			t.Errorf("Counts = %d, %d, %d; seat map %+v", a, h, b, after)
		}
	}
	if !slices.Equal(first.Statuses, snapshot) {
		t.Errorf("a shared snapshot changed with the show")
	}
}

func TestStatusString(t *testing.T) {
	for _, st := range []Status{Held, Booked, Released, Expired} {
		got, err := ParseStatus(st.String())
		if err != nil || got != st {
			t.Errorf("ParseStatus(%q) = %v, %v", st.String(), got, err)
		}
	}
	for _, bad := range []string{"", "held", "Status(0)", "AVAILABLE"} {
		if _, err := ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q) succeeded", bad)
		}
	}
	if got := Status(0).String(); got != "Status(0)" {
		t.Errorf("Status(0) = %q", got)
	}
	if got := Status(9).String(); got != "Status(9)" {
		t.Errorf("Status(9) = %q", got)
	}
}

func TestRestoreRefusals(t *testing.T) {
	late := t0.Add(DefaultHoldTTL)
	tests := []struct {
		name string
		r    Reservation
	}{
		{"released", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1"), Status: Released}},
		{"expired", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1"), Status: Expired}},
		{"zero status", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1")}},
		{"hold ID in use", Reservation{ID: "h1", User: "u1", Seats: seatIDs("C-1"), Status: Held}},
		{"booking ID in use", Reservation{ID: "b1", User: "u1", Seats: seatIDs("C-1"), Status: Booked}},
		{"unknown seat", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1", "C-2", "Z-1"), Status: Held, ExpiresAt: late}},
		{"seat twice", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1", "C-2", "C-1"), Status: Booked}},
		{"held seat", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1", "A-1"), Status: Held, ExpiresAt: late}},
		{"booked seat", Reservation{ID: "r", User: "u1", Seats: seatIDs("C-1", "C-2", "B-1"), Status: Booked}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShow(t)
			mustHold(t, s, "h1", "u2", seatIDs("A-1"), t0)
			mustHold(t, s, "b1", "u2", seatIDs("B-1"), t0)
			mustConfirm(t, s, "b1", "u2", "pay", t0)
			before := capture(t, s)
			if err := s.Restore(tt.r); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Restore = %v, want ErrCorrupt", err)
			}
			assertSame(t, "refused Restore", before, capture(t, s))
			checkInvariants(t, s)
			mustHold(t, s, "h2", "u1", seatIDs("C-1", "C-2"), t0) // nothing leaked
		})
	}
}

func TestRestore(t *testing.T) {
	s := newShow(t)
	late := t0.Add(DefaultHoldTTL)
	// The rows already obeyed the per-user limit when they were written (a
	// limit can change), so Restore does not apply it.
	rs := []Reservation{
		{ID: "b1", Show: "show-1", User: "u1", Seats: rowSeats("A", 1, 8), Status: Booked, CreatedAt: t0, ExpiresAt: late, BookedAt: t0, PaymentRef: "p"},
		{ID: "h1", Show: "show-1", User: "u1", Seats: seatIDs("B-1", "B-2", "B-3"), Status: Held, CreatedAt: t0, ExpiresAt: late},
		{ID: "h2", Show: "show-1", User: "u2", Seats: seatIDs("C-4"), Status: Held, CreatedAt: t0.Add(time.Second), ExpiresAt: late.Add(time.Second)},
	}
	for _, r := range rs {
		if err := s.Restore(r); err != nil {
			t.Fatalf("Restore(%s): %v", r.ID, err)
		}
	}
	m := s.SeatMap(nil)
	if m.Booked != 8 || m.Held != 4 || m.Version != 3 || s.UserSeats("u1") != 11 || s.UserSeats("u2") != 1 {
		t.Fatalf("after restore: %+v, u1 %d, u2 %d", m, s.UserSeats("u1"), s.UserSeats("u2"))
	}
	if got := s.Holds(); !reflect.DeepEqual(got, rs[1:]) {
		t.Errorf("Holds = %+v", got)
	}
	if got := s.Bookings(); !reflect.DeepEqual(got, rs[:1]) {
		t.Errorf("Bookings = %+v", got)
	}
	if _, err := s.Hold("h3", "u1", seatIDs("C-1"), t0); !errors.Is(err, ErrUserLimit) {
		t.Errorf("Hold over the limit after restore: %v", err)
	}
	mustConfirm(t, s, "h1", "u1", "q", late.Add(ConfirmGrace))
	if due := s.ExpireDue(t0.Add(time.Hour)); len(due) != 1 || due[0].ID != "h2" {
		t.Errorf("ExpireDue = %+v", due)
	}
}

// op is one random operation of the replay test.
type op struct {
	kind  int // 0 hold, 1 confirm, 2 release, 3 expire due, 4 cancel, 5 advance time
	id    HoldID
	user  UserID
	seats []SeatID
	ref   string
	dt    time.Duration
}

// randomOps returns n operations over a show of rows and users, with hold
// IDs h<start>... Confirm, release and cancel pick any hold ID of prior or
// of an earlier operation (live or not), and usually its holder.
func randomOps(rng *rand.Rand, rows []Row, users, n, start int, prior []Reservation) []op {
	var seats []SeatID
	for _, r := range rows {
		seats = append(seats, rowSeats(r.Label, 1, r.SeatCount)...)
	}
	ops := make([]op, 0, n)
	owner := map[HoldID]UserID{}
	var issued []HoldID
	for _, r := range prior {
		owner[r.ID] = r.User
		issued = append(issued, r.ID)
	}
	user := func() UserID { return UserID("u" + strconv.Itoa(rng.IntN(users))) }
	pick := func() (HoldID, UserID) {
		if len(issued) == 0 {
			return "none", user()
		}
		id := issued[rng.IntN(len(issued))]
		if rng.IntN(5) == 0 {
			return id, user()
		}
		return id, owner[id]
	}
	for i := range n {
		o := op{kind: []int{0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 5}[rng.IntN(11)]}
		switch o.kind {
		case 0:
			o.id, o.user = HoldID("h"+strconv.Itoa(start+i)), user()
			k := 1 + rng.IntN(4)
			if rng.IntN(20) == 0 {
				k = rng.IntN(12)
			}
			for range k {
				o.seats = append(o.seats, seats[rng.IntN(len(seats))])
			}
			owner[o.id] = o.user
			issued = append(issued, o.id)
		case 1:
			o.id, o.user = pick()
			o.ref = "pay-" + strconv.Itoa(rng.IntN(2))
		case 2, 4:
			o.id, o.user = pick()
		case 5:
			o.dt = time.Duration(rng.Int64N(int64(2 * time.Minute)))
		}
		ops = append(ops, o)
	}
	return ops
}

// apply runs o on s at *now and returns a printable outcome.
func apply(s *Show, o op, now *time.Time) string {
	switch o.kind {
	case 0:
		r, err := s.Hold(o.id, o.user, o.seats, *now)
		return fmt.Sprintf("hold %+v %v", r, err)
	case 1:
		r, err := s.Confirm(o.id, o.user, o.ref, *now)
		return fmt.Sprintf("confirm %+v %v", r, err)
	case 2:
		r, err := s.Release(o.id, o.user, *now)
		return fmt.Sprintf("release %+v %v", r, err)
	case 3:
		return fmt.Sprintf("expire %+v", s.ExpireDue(*now))
	case 4:
		return fmt.Sprintf("cancel %v", s.Cancel(o.id))
	default:
		*now = now.Add(o.dt)
		return "advance"
	}
}

// TestReplay checks that a show rebuilt with Restore from another show's
// live reservations equals it, and keeps behaving the same.
func TestReplay(t *testing.T) {
	rows := []Row{{Label: "A", SeatCount: 8}, {Label: "B", SeatCount: 12}, {Label: "C", SeatCount: 5}}
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			orig := newShow(t, rows...)
			now := t0
			for _, o := range randomOps(rng, rows, 6, 300, 0, nil) {
				apply(orig, o, &now)
			}
			checkInvariants(t, orig)

			replayed, err := NewShow(Config{ID: "show-1", Rows: rows, VersionBase: orig.Version() + 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range orig.Holds() {
				if err := replayed.Restore(r); err != nil {
					t.Fatalf("Restore(%+v): %v", r, err)
				}
			}
			for _, r := range orig.Bookings() {
				if err := replayed.Restore(r); err != nil {
					t.Fatalf("Restore(%+v): %v", r, err)
				}
			}
			checkInvariants(t, replayed)
			a, b := capture(t, orig), capture(t, replayed)
			if b.Map.Version <= a.Map.Version {
				t.Errorf("replayed version %d not above the old owner's %d", b.Map.Version, a.Map.Version)
			}
			b.Map.Version = a.Map.Version
			assertSame(t, "replay", a, b)

			// Both shows must now decide every operation alike.
			nowA, nowB := now, now
			for i, o := range randomOps(rng, rows, 6, 300, 1000, append(orig.Holds(), orig.Bookings()...)) {
				ra, rb := apply(orig, o, &nowA), apply(replayed, o, &nowB)
				if ra != rb {
					t.Fatalf("after replay, op %d %+v: original %s, replayed %s", i, o, ra, rb)
				}
			}
			a, b = capture(t, orig), capture(t, replayed)
			b.Map.Version = a.Map.Version
			assertSame(t, "continued replay", a, b)
		})
	}
}

// TestHoldExpiryOrderWhenClockGoesBack makes holds at times that do not
// only go forward (a clock set back, holds restored from a node whose clock
// ran ahead). Every hold must still expire in the order the holds are kept
// in, no earlier than now+HoldTTL, and none may wait behind a hold that is
// not due: Due and ExpireDue stop at the first hold not due.
func TestHoldExpiryOrderWhenClockGoesBack(t *testing.T) {
	ids := func(rs []Reservation) []HoldID {
		var out []HoldID
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	due := func(r Reservation) time.Time { return r.ExpiresAt.Add(ConfirmGrace) }
	// checkExpiryOrder checks that the holds, given in the order they were
	// made, are due in that order: Due at each one's due time answers
	// exactly the holds due by then, oldest first; and ExpireDue called at
	// each due time in turn expires every hold by its due time, in order.
	checkExpiryOrder := func(t *testing.T, s *Show, holds []Reservation) {
		t.Helper()
		if got := ids(s.Holds()); !slices.Equal(got, ids(holds)) {
			t.Fatalf("live holds %v, want %v", got, ids(holds))
		}
		for i, h := range holds {
			if i > 0 && h.ExpiresAt.Before(holds[i-1].ExpiresAt) {
				t.Errorf("%s expires at %s, before %s made earlier (%s)", h.ID, h.ExpiresAt, holds[i-1].ID, holds[i-1].ExpiresAt)
			}
		}
		for _, h := range holds {
			at := due(h)
			var want []HoldID
			for _, o := range holds {
				if !due(o).After(at) {
					want = append(want, o.ID)
				}
			}
			got := ids(s.Due(at, nil))
			if !slices.Contains(got, h.ID) || !slices.Equal(got, want) {
				t.Errorf("Due at %s's ExpiresAt+grace (%s) = %v, want %v", h.ID, at, got, want)
			}
			if slices.Contains(ids(s.Due(at.Add(-time.Nanosecond), nil)), h.ID) {
				t.Errorf("%s due before its ExpiresAt+grace", h.ID)
			}
		}
		var expired []HoldID
		for _, h := range holds {
			at := due(h)
			for _, r := range s.ExpireDue(at) {
				if r.Status != Expired || !r.EndedAt.Equal(at) || due(r).After(at) {
					t.Errorf("ExpireDue at %s ended %+v", at, r)
				}
				expired = append(expired, r.ID)
			}
			if !slices.Contains(expired, h.ID) {
				t.Errorf("%s still live at its ExpiresAt+grace %s after ExpireDue; live holds %v", h.ID, at, ids(s.Holds()))
			}
			checkInvariants(t, s)
		}
		if !slices.Equal(expired, ids(holds)) {
			t.Errorf("expired %v, want %v in that order", expired, ids(holds))
		}
		if live := s.Holds(); len(live) != 0 {
			t.Errorf("holds left live after the last due time: %v", ids(live))
		}
	}

	tests := []struct {
		name string
		at   []time.Duration // when each hold is made, from t0
	}{
		{"clock goes back and forth", []time.Duration{0, -time.Minute, -10 * time.Minute, 5 * time.Second}},
		{"clock goes back at every hold", []time.Duration{0, -time.Second, -2 * time.Second, -time.Hour}},
		{"back by more than the TTL, then past the first expiry", []time.Duration{
			0, -time.Hour, DefaultHoldTTL + time.Minute, DefaultHoldTTL + time.Minute - time.Second}},
		{"clock goes forward", []time.Duration{0, time.Second, time.Minute, 2 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShow(t)
			var holds []Reservation
			for i, d := range tt.at {
				now := t0.Add(d)
				r := mustHold(t, s, HoldID(fmt.Sprintf("h%d", i)), UserID(fmt.Sprintf("u%d", i)),
					seatIDs(fmt.Sprintf("A-%d", i+1)), now)
				if !r.CreatedAt.Equal(now) || r.ExpiresAt.Before(now.Add(DefaultHoldTTL)) {
					t.Errorf("hold at %s: created %s, expires %s; want created then, expiring no earlier than %s",
						now, r.CreatedAt, r.ExpiresAt, now.Add(DefaultHoldTTL))
				}
				holds = append(holds, r)
			}
			checkExpiryOrder(t, s, holds) // checks the invariants as it expires the holds
		})
	}

	t.Run("after Restore", func(t *testing.T) {
		// Rows written by an owner whose clock ran 20 minutes ahead.
		s := newShow(t)
		ahead := t0.Add(20 * time.Minute)
		var holds []Reservation
		for i, d := range []time.Duration{-10 * time.Minute, -time.Minute, 0} {
			r := Reservation{ID: HoldID(fmt.Sprintf("r%d", i)), Show: s.ID(), User: UserID(fmt.Sprintf("u%d", i)),
				Seats: seatIDs(fmt.Sprintf("B-%d", i+1)), Status: Held,
				CreatedAt: ahead.Add(d), ExpiresAt: ahead.Add(d + DefaultHoldTTL)}
			if err := s.Restore(r); err != nil {
				t.Fatalf("Restore(%+v): %v", r, err)
			}
			holds = append(holds, r)
		}
		booked := Reservation{ID: "b0", Show: s.ID(), User: "u9", Seats: seatIDs("C-1"), Status: Booked,
			CreatedAt: ahead, ExpiresAt: ahead.Add(DefaultHoldTTL), BookedAt: ahead, PaymentRef: "pay"}
		if err := s.Restore(booked); err != nil {
			t.Fatalf("Restore(%+v): %v", booked, err)
		}
		last := holds[len(holds)-1]
		for i, now := range []time.Time{t0, t0.Add(time.Second)} {
			r := mustHold(t, s, HoldID(fmt.Sprintf("h%d", i)), UserID(fmt.Sprintf("n%d", i)), seatIDs(fmt.Sprintf("A-%d", i+1)), now)
			if r.ExpiresAt.Before(last.ExpiresAt) {
				t.Errorf("new hold at %s expires at %s, before the last restored hold %s (%s)", now, r.ExpiresAt, last.ID, last.ExpiresAt)
			}
			if r.ExpiresAt.Before(now.Add(DefaultHoldTTL)) {
				t.Errorf("new hold at %s expires at %s, before now+TTL", now, r.ExpiresAt)
			}
			holds = append(holds, r)
		}
		checkExpiryOrder(t, s, holds)
		if b, ok := s.Reservation("b0"); !ok || b.Status != Booked {
			t.Errorf("the restored booking is %+v, %v after every expiry", b, ok)
		}
	})
}

// TestSeatIndexFindsExactIDs: the parsed seat index finds every seat of a
// layout by its exact ID, and nothing else.
func TestSeatIndexFindsExactIDs(t *testing.T) {
	s, err := NewShow(Config{ID: "s", Rows: []Row{{Label: "A", SeatCount: 12}, {Label: "B-2", SeatCount: 3}, {Label: "10", SeatCount: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Capacity() {
		id, _ := s.Seat(i)
		if _, ok := s.SeatStatus(id); !ok {
			t.Errorf("seat %d, %s, not found", i, id)
		}
		if got, ok := s.index(id); !ok || int(got) != i {
			t.Errorf("index(%s) = %d, %t; want %d", id, got, ok, i)
		}
	}
	for _, id := range []SeatID{"", "A", "A-", "-1", "A-0", "A-01", "A-13", "a-1", "A-1 ", " A-1", "A-+1", "A--1", "A-1-1",
		"B-2-0", "B-2-4", "B-1", "B-3", "B", "10-2", "10-01", "A-99999999999999999999", "A-4294967297", "A-x", "A-1\x00"} {
		if _, ok := s.SeatStatus(id); ok {
			t.Errorf("%q found", id)
		}
	}
}
