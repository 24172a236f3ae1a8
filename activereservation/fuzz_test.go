package activereservation

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// fuzzRows is the small show of FuzzHold: 15 seats, so that holds collide
// and 4 users reach the 10-seat limit.
var fuzzRows = []Row{{Label: "A", SeatCount: 5}, {Label: "B", SeatCount: 5}, {Label: "C", SeatCount: 5}}

// bogusSeats are seat IDs that look like seats of fuzzRows but are not.
var bogusSeats = seatIDs("", "A-0", "A-6", "D-1", "a-1", "A-01", "A1", "B-", "-1", "C-5 ")

// model is an independent, deliberately naive account of what a Show over
// fuzzRows must contain: who claims each seat, every live reservation, the
// holds in creation order, each user's seats and the version.
type model struct {
	seats   []SeatID
	index   map[SeatID]int
	claim   []HoldID // by seat index; "" = available
	live    map[HoldID]*Reservation
	order   []HoldID // live holds, oldest first
	users   map[UserID]int
	version uint64
}

func newModel(rows []Row, version uint64) *model {
	m := &model{index: map[SeatID]int{}, live: map[HoldID]*Reservation{}, users: map[UserID]int{}, version: version}
	for _, r := range rows {
		for _, id := range rowSeats(r.Label, 1, r.SeatCount) {
			m.index[id] = len(m.seats)
			m.seats = append(m.seats, id)
		}
	}
	m.claim = make([]HoldID, len(m.seats))
	return m
}

// pickSeat decodes a fuzz byte into a seat ID: below 100 the n-th seat
// still available and not in chosen (so that holds often succeed and users
// reach the limit), below 225 any seat, else a bogus ID.
func (m *model) pickSeat(b int, chosen []SeatID) SeatID {
	if b < 100 {
		var avail []SeatID
		for i, h := range m.claim {
			if h == "" && !slices.Contains(chosen, m.seats[i]) {
				avail = append(avail, m.seats[i])
			}
		}
		if len(avail) > 0 {
			return avail[b%len(avail)]
		}
	}
	if b < 225 {
		return m.seats[b%len(m.seats)]
	}
	return bogusSeats[(b-225)%len(bogusSeats)]
}

// hold predicts Hold: the error class, the taken seats, or the reservation.
func (m *model) hold(id HoldID, user UserID, seats []SeatID, now time.Time) (Reservation, []SeatID, error) {
	if len(seats) < 1 || len(seats) > MaxSeatsPerHold {
		return Reservation{}, nil, ErrSeatCount
	}
	for i, a := range seats {
		for _, b := range seats[i+1:] {
			if a == b {
				return Reservation{}, nil, ErrDuplicateSeat
			}
		}
	}
	for _, a := range seats {
		if _, ok := m.index[a]; !ok {
			return Reservation{}, nil, ErrUnknownSeat
		}
	}
	var taken []SeatID
	for _, a := range seats {
		if m.claim[m.index[a]] != "" {
			taken = append(taken, a)
		}
	}
	if taken != nil {
		return Reservation{}, taken, ErrSeatTaken
	}
	if m.users[user]+len(seats) > MaxSeatsPerUser {
		return Reservation{}, nil, ErrUserLimit
	}
	if m.live[id] != nil {
		return Reservation{}, nil, ErrCorrupt
	}
	r := &Reservation{ID: id, Show: "fuzz", User: user, Seats: slices.Clone(seats), Status: Held,
		CreatedAt: now, ExpiresAt: now.Add(DefaultHoldTTL)}
	for _, a := range seats {
		m.claim[m.index[a]] = id
	}
	m.live[id] = r
	m.order = append(m.order, id)
	m.users[user] += len(seats)
	m.version++
	return *r, nil, nil
}

func (m *model) confirm(id HoldID, user UserID, ref string, now time.Time) (Reservation, error) {
	r := m.live[id]
	switch {
	case r == nil:
		return Reservation{}, ErrHoldNotFound
	case r.User != user:
		return Reservation{}, ErrNotHolder
	case r.Status == Booked && r.PaymentRef == ref:
		return *r, nil
	case r.Status == Booked:
		return Reservation{}, ErrHoldEnded
	case now.Sub(r.ExpiresAt) > ConfirmGrace:
		return Reservation{}, ErrHoldExpired
	}
	r.Status, r.BookedAt, r.PaymentRef = Booked, now, ref
	m.order = slices.DeleteFunc(m.order, func(h HoldID) bool { return h == id })
	m.version++
	return *r, nil
}

// end removes live hold id with status st at now.
func (m *model) end(id HoldID, st Status, now time.Time) Reservation {
	r := m.live[id]
	delete(m.live, id)
	m.order = slices.DeleteFunc(m.order, func(h HoldID) bool { return h == id })
	for _, a := range r.Seats {
		m.claim[m.index[a]] = ""
	}
	m.users[r.User] -= len(r.Seats)
	m.version++
	r.Status, r.EndedAt = st, now
	return *r
}

func (m *model) release(id HoldID, user UserID, now time.Time) (Reservation, error) {
	r := m.live[id]
	switch {
	case r == nil:
		return Reservation{}, ErrHoldNotFound
	case r.User != user:
		return Reservation{}, ErrNotHolder
	case r.Status == Booked:
		return Reservation{}, ErrHoldEnded
	}
	return m.end(id, Released, now), nil
}

func (m *model) due(r *Reservation, now time.Time) bool {
	return now.Sub(r.ExpiresAt) >= ConfirmGrace
}

func (m *model) expire(id HoldID, now time.Time) (Reservation, error) {
	r := m.live[id]
	switch {
	case r == nil || r.Status != Held:
		return Reservation{}, ErrHoldNotFound
	case !m.due(r, now):
		return Reservation{}, ErrHoldEnded
	}
	return m.end(id, Expired, now), nil
}

// dueList predicts Due: live holds past their grace, oldest first.
func (m *model) dueList(now time.Time, skip func(HoldID) bool) []Reservation {
	var out []Reservation
	for _, id := range m.order {
		if r := m.live[id]; m.due(r, now) && (skip == nil || !skip(id)) {
			out = append(out, *r)
		}
	}
	return out
}

// check compares s with the model, seat by seat and reservation by
// reservation, then checks s against itself.
func (m *model) check(t *testing.T, s *Show, step string) {
	t.Helper()
	sm := s.SeatMap(nil)
	if sm.Version != m.version {
		t.Fatalf("%s: version %d, model %d", step, sm.Version, m.version)
	}
	var counts [4]int
	for i, id := range m.seats {
		want := SeatAvailable
		if h := m.claim[i]; h != "" {
			want = SeatHeld
			if m.live[h].Status == Booked {
				want = SeatBooked
			}
		}
		counts[want]++
		if got, ok := s.SeatStatus(id); !ok || got != want || SeatStatus(sm.Statuses[i]) != want {
			t.Fatalf("%s: seat %s status %d (map %d), model %d", step, id, got, sm.Statuses[i], want)
		}
	}
	if sm.Available != counts[SeatAvailable] || sm.Held != counts[SeatHeld] || sm.Booked != counts[SeatBooked] {
		t.Fatalf("%s: counts %d/%d/%d, model %v", step, sm.Available, sm.Held, sm.Booked, counts[1:])
	}
	var holds, bookings []Reservation
	for _, id := range m.order {
		holds = append(holds, *m.live[id])
	}
	for _, r := range m.live {
		if r.Status == Booked {
			bookings = append(bookings, *r)
		}
	}
	if got := s.Holds(); !reflect.DeepEqual(got, holds) && len(got)+len(holds) > 0 {
		t.Fatalf("%s: holds\n%+v\nmodel\n%+v", step, got, holds)
	}
	if got := sortedByID(s.Bookings()); !reflect.DeepEqual(got, sortedByID(bookings)) && len(got)+len(bookings) > 0 {
		t.Fatalf("%s: bookings\n%+v\nmodel\n%+v", step, got, bookings)
	}
	for u := range 4 {
		user := fuzzUser(u)
		if got := s.UserSeats(user); got != m.users[user] || got > MaxSeatsPerUser {
			t.Fatalf("%s: UserSeats(%s) = %d, model %d", step, user, got, m.users[user])
		}
	}
	checkInvariants(t, s)
}

func fuzzUser(n int) UserID { return UserID("u" + strconv.Itoa(n%4)) }

// fuzzInput hands out the fuzz bytes; past the end it reports done.
type fuzzInput struct {
	data []byte
	pos  int
}

func (in *fuzzInput) done() bool { return in.pos >= len(in.data) }

func (in *fuzzInput) next() int {
	if in.done() {
		return 0
	}
	in.pos++
	return int(in.data[in.pos-1])
}

// sameErr reports whether got is of class want (nil: success).
func sameErr(got, want error) bool {
	if want == nil {
		return got == nil
	}
	return errors.Is(got, want)
}

// FuzzHold decodes the input into operations on a 15-seat show (hold with
// arbitrary seat lists, confirm, release, cancel, expire, due, time
// advancing, rebuild by Restore) and checks every outcome and the whole
// state against the model after each step. A refusal must change nothing.
func FuzzHold(f *testing.F) {
	// Operations: hold = 0, idFlag, user, n, n seat bytes; confirm = 2,
	// hold pick, user pick, ref; release = 4, hold pick, user pick;
	// expire = 5, hold pick, user pick; due = 6, mask; cancel = 7, hold pick,
	// user pick; advance = 8, b; replay = 9, b. A user pick of 1 or 2 means
	// the holder; a seat byte below 100 the n-th available seat.
	const (
		opHold, opConfirm, opRelease, opExpire, opDue, opCancel, opAdvance, opReplay = 0, 2, 4, 5, 6, 7, 8, 9
		holder, other, bogus                                                         = 1, 3, 230
		advanceTTL, advanceNs, dueExactly                                            = 3, 4, 10 // dueExactly: the oldest hold's ExpiresAt+grace
	)
	for _, seed := range [][]byte{
		// u0 reaches 10 seats in three holds; an 11th seat is refused, also
		// with some booked; after a release u0 can hold up to 10 again.
		{opHold, 0, 0, 4, 0, 0, 0, 0, opHold, 0, 0, 3, 0, 0, 0, opHold, 0, 0, 3, 0, 0, 0, opHold, 0, 0, 1, 0,
			opConfirm, 0, holder, 0, opHold, 0, 0, 1, 0, opRelease, 1, holder, opHold, 0, 0, 4, 0, 0, 0, 0, opHold, 0, 0, 3, 0, 0, 0},
		// Every refusal of a hold: count, duplicate, unknown, taken, an ID
		// in use; an ID whose hold was refused may be used again.
		{opHold, 0, 1, 0, opHold, 0, 1, 11, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, opHold, 0, 1, 2, 100, 100,
			opHold, 0, 1, 2, bogus, 100, opHold, 0, 1, 2, bogus, bogus, opHold, 0, 1, 3, 100, 101, 102,
			opHold, 0, 2, 2, 103, 101, opHold, 7, 0, 2, 1, 0, opHold, 7, 5, 0, 1, 0},
		// Confirm by holder, again, with another ref, by another user; release refused.
		{opHold, 0, 0, 2, 0, 0, opConfirm, 0, other, 0, opConfirm, 0, holder, 0, opConfirm, 0, holder, 0,
			opConfirm, 0, holder, 1, opRelease, 0, holder, opRelease, 0, other, opExpire, 0, 0},
		// Holds expire around the grace boundary: h0 cannot expire early and
		// is confirmed exactly on it; h2 is due exactly on it, and a confirm
		// 4ns later is refused.
		{opHold, 0, 0, 1, 0, opExpire, 0, 0, opAdvance, 1, opHold, 0, 1, 2, 0, 0, opAdvance, dueExactly,
			opConfirm, 0, holder, 0, opAdvance, dueExactly, opDue, 1, opAdvance, advanceNs,
			opConfirm, 1, holder, 0, opExpire, 0, 0, opExpire, 1, 0, opDue, 0},
		// The show moves between operations.
		{opHold, 0, 3, 3, 0, 0, 0, opHold, 0, 2, 1, 0, opConfirm, 0, holder, 1, opReplay, 7,
			opConfirm, 0, holder, 1, opRelease, 1, holder, opCancel, 0, holder, opReplay, 0, opAdvance, advanceTTL,
			opAdvance, 1, opDue, 0},
		// Cancel, then the hold ID used again.
		{opHold, 0, 0, 2, 0, 0, opCancel, 0, holder, opCancel, 0, holder, opHold, 7, 0, 0, 1, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := NewShow(Config{ID: "fuzz", Rows: fuzzRows})
		if err != nil {
			t.Fatal(err)
		}
		m := newModel(fuzzRows, 0)
		in := &fuzzInput{data: data}
		now := t0
		var issued []HoldID // every hold ID ever tried, live or not
		owner := map[HoldID]UserID{}
		pickHold := func() (HoldID, UserID) {
			if len(issued) == 0 {
				return "nope", fuzzUser(in.next())
			}
			id := issued[in.next()%len(issued)]
			if u := in.next(); u%3 == 0 {
				return id, fuzzUser(u / 3)
			}
			return id, owner[id]
		}
		for step := 0; step < 300 && !in.done(); step++ {
			var (
				name   string
				before = capture(t, s)
				err    error
				want   error
				got    Reservation
				wantR  Reservation
			)
			switch in.next() % 10 {
			case 0, 1: // hold
				id := HoldID("h" + strconv.Itoa(step))
				if b := in.next(); b%8 == 7 && len(issued) > 0 {
					id = issued[in.next()%len(issued)]
				}
				user := fuzzUser(in.next())
				seats := make([]SeatID, in.next()%13)
				for i := range seats {
					seats[i] = m.pickSeat(in.next(), seats[:i])
				}
				name = "Hold(" + string(id) + ", " + string(user) + ", " + strconv.Quote(joinSeats(seats)) + ")"
				checkErr := s.CheckHold(id, user, seats)
				assertSame(t, "CheckHold", before, capture(t, s))
				got, err = s.Hold(id, user, seats, now)
				if !sameErr(checkErr, errClass(err)) {
					t.Fatalf("%s: CheckHold %v, Hold %v", name, checkErr, err)
				}
				var taken []SeatID
				wantR, taken, want = m.hold(id, user, seats, now)
				var ste *SeatsTakenError
				if errors.As(err, &ste) != (want == ErrSeatTaken) || ste != nil && !slices.Equal(ste.Seats, taken) {
					t.Fatalf("%s: %v, model taken %v", name, err, taken)
				}
				if err == nil {
					for _, seat := range seats {
						if st, _ := s.SeatStatus(seat); st != SeatHeld {
							t.Fatalf("%s: seat %s not held", name, seat)
						}
					}
				}
				if !slices.Contains(issued, id) {
					issued = append(issued, id)
					owner[id] = user
				}
			case 2, 3: // confirm
				id, user := pickHold()
				ref := "pay-" + strconv.Itoa(in.next()%2)
				name = "Confirm(" + string(id) + ", " + string(user) + ", " + ref + ")"
				_, _, checkErr := s.CheckConfirm(id, user, ref, now)
				got, err = s.Confirm(id, user, ref, now)
				if !sameErr(checkErr, errClass(err)) {
					t.Fatalf("%s: CheckConfirm %v, Confirm %v", name, checkErr, err)
				}
				wantR, want = m.confirm(id, user, ref, now)
			case 4: // release
				id, user := pickHold()
				name = "Release(" + string(id) + ", " + string(user) + ")"
				_, checkErr := s.CheckRelease(id, user)
				got, err = s.Release(id, user, now)
				if !sameErr(checkErr, errClass(err)) {
					t.Fatalf("%s: CheckRelease %v, Release %v", name, checkErr, err)
				}
				wantR, want = m.release(id, user, now)
			case 5: // expire one
				id, _ := pickHold()
				name = "Expire(" + string(id) + ")"
				got, err = s.Expire(id, now)
				wantR, want = m.expire(id, now)
			case 6: // expire all due, or look at them
				mask := in.next()
				skip := func(id HoldID) bool { return (len(id)+mask)%3 == 0 }
				name = "Due"
				if due, wantDue := s.Due(now, skip), m.dueList(now, skip); !reflect.DeepEqual(due, wantDue) && len(due)+len(wantDue) > 0 {
					t.Fatalf("Due = %+v, model %+v", due, wantDue)
				}
				assertSame(t, "Due", before, capture(t, s))
				if mask%2 == 0 {
					name = "ExpireDue"
					var wantDue []Reservation
					for _, r := range m.dueList(now, nil) {
						r, _ = m.expire(r.ID, now)
						wantDue = append(wantDue, r)
					}
					if due := s.ExpireDue(now); !reflect.DeepEqual(due, wantDue) && len(due)+len(wantDue) > 0 {
						t.Fatalf("ExpireDue = %+v, model %+v", due, wantDue)
					}
				}
			case 7: // cancel
				id, _ := pickHold()
				name = "Cancel(" + string(id) + ")"
				r := m.live[id]
				wantOK := r != nil && r.Status == Held
				if s.Cancel(id) != wantOK {
					t.Fatalf("%s = %v, model %v", name, !wantOK, wantOK)
				}
				if wantOK {
					m.end(id, Released, now)
				} else {
					assertSame(t, name, before, capture(t, s))
				}
			case 8: // advance time, often to just around the next due instant
				b := in.next()
				name = "advance"
				switch b % 4 {
				case 0:
					now = now.Add(time.Duration(b) * time.Nanosecond)
				case 1:
					now = now.Add(time.Duration(b) * time.Second)
				case 2:
					if len(m.order) > 0 {
						at := m.live[m.order[(b/4)%len(m.order)]].ExpiresAt.Add(ConfirmGrace + time.Duration(b%3-1))
						if at.After(now) {
							now = at
						}
					}
				case 3:
					now = now.Add(DefaultHoldTTL)
				}
			case 9: // the show moves: rebuild it from its live reservations
				name = "replay"
				base := s.Version() + 1 + uint64(in.next())
				r, err := NewShow(Config{ID: "fuzz", Rows: fuzzRows, VersionBase: base})
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range append(s.Holds(), s.Bookings()...) {
					if err := r.Restore(h); err != nil {
						t.Fatalf("Restore(%+v): %v", h, err)
					}
				}
				s = r
				m.version = base + uint64(len(m.live))
			}
			if !sameErr(err, want) {
				t.Fatalf("step %d %s at %v: %v, model %v", step, name, now, err, want)
			}
			if !reflect.DeepEqual(got, wantR) {
				t.Fatalf("step %d %s: %+v, model %+v", step, name, got, wantR)
			}
			if err != nil {
				assertSame(t, name+" refused", before, capture(t, s))
			}
			m.check(t, s, "step "+strconv.Itoa(step)+" "+name)
		}
	})
}

// errClass maps an error to its sentinel, so that Check* and the operation
// can be compared.
func errClass(err error) error {
	for _, e := range []error{ErrSeatCount, ErrDuplicateSeat, ErrUnknownSeat, ErrSeatTaken, ErrUserLimit,
		ErrHoldNotFound, ErrNotHolder, ErrHoldExpired, ErrHoldEnded, ErrCorrupt} {
		if errors.Is(err, e) {
			return e
		}
	}
	return err
}

func joinSeats(seats []SeatID) string {
	var b []byte
	for i, s := range seats {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, s...)
	}
	return string(b)
}
