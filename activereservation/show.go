// Package activereservation holds the seat states and active holds of one
// show and decides every change to them: hold, confirm, release, expire. It
// does no I/O and reads no clock: the caller passes the time in, persists what
// changed, and serializes calls (a Show is not safe for concurrent use).
package activereservation

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/boxoffice/boxoffice/internal/ordmap"
)

// Identifiers of the domain. They are opaque strings to this package.
type (
	// ShowID names a show.
	ShowID string
	// SeatID names a seat of a show: "<row label>-<number>", numbers from 1.
	SeatID string
	// HoldID names a reservation; the engine makes them unique.
	HoldID string
	// UserID names an end user as the web tier authenticated them.
	UserID string
)

// Limits of the rules.
const (
	// MaxSeatsPerHold is the most seats one hold may cover.
	MaxSeatsPerHold = 10
	// MaxSeatsPerUser is the most seats of one show a user may have, held
	// plus booked.
	MaxSeatsPerUser = 10
	// ConfirmGrace is how long after ExpiresAt a hold stays confirmable, for
	// clients whose clocks drift. The hold expires after it.
	ConfirmGrace = 5 * time.Second
	// DefaultHoldTTL is the hold lifetime when a show sets none.
	DefaultHoldTTL = 5 * time.Minute
)

// SeatStatus is the state of one seat. The values are those of the API's
// SeatStatus enum, so a status slice is the seat map's wire form.
type SeatStatus uint8

// Seat states.
const (
	SeatAvailable SeatStatus = 1
	SeatHeld      SeatStatus = 2
	SeatBooked    SeatStatus = 3
	// SeatOffered is a seat held back for the waitlist: set aside for the
	// user at its head, or offered to a user whose turn it is. Nobody else
	// may hold it; the user it is offered to may (see Offer).
	SeatOffered SeatStatus = 4
)

// Status is the state of a reservation: Held, then one of the others.
type Status uint8

// Reservation states.
const (
	Held Status = iota + 1
	Booked
	Released
	Expired
)

var statusNames = [...]string{Held: "HELD", Booked: "BOOKED", Released: "RELEASED", Expired: "EXPIRED"}

func (s Status) String() string {
	if int(s) < len(statusNames) && statusNames[s] != "" {
		return statusNames[s]
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// ParseStatus is the inverse of Status.String.
func ParseStatus(s string) (Status, error) {
	for i, n := range statusNames {
		if n != "" && n == s {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("unknown reservation status %q", s)
}

// Row is one row of a layout.
type Row struct {
	Label     string
	SeatCount int
	Category  string
}

// Reservation is a hold of 1–10 seats and what became of it. Values handed
// out by a Show are copies; Seats is never modified after creation.
type Reservation struct {
	ID         HoldID
	Show       ShowID
	User       UserID
	Seats      []SeatID
	Status     Status
	CreatedAt  time.Time
	ExpiresAt  time.Time
	BookedAt   time.Time // zero unless Booked
	EndedAt    time.Time // zero unless Released or Expired
	PaymentRef string    // empty unless Booked
}

// Config describes a show to NewShow.
type Config struct {
	ID ShowID
	// Rows in layout order; labels distinct, each with at least one seat.
	Rows []Row
	// HoldTTL is the lifetime of a hold. Zero means DefaultHoldTTL.
	HoldTTL time.Duration
	// VersionBase is the first seat-map version. A new owner passes a base
	// above any version an earlier owner could have shown (e.g. epoch<<32),
	// so versions never go back.
	VersionBase uint64
}

// Show is the live state of one show: every seat's status, the active holds
// in expiry order, and the bookings. Not safe for concurrent use.
type Show struct {
	id     ShowID
	ttl    time.Duration
	rows   []Row
	seats  []SeatID                          // by seat index, layout order
	byRow  map[string]rowSpan                // row label → its seats (see index)
	status []byte                            // by seat index: SeatStatus values
	holds  *ordmap.Map[HoldID, *Reservation] // live holds; the front expires next
	booked map[HoldID]*Reservation
	// perUser counts each user's seats, held plus booked.
	perUser map[UserID]int
	// offeredTo names, for each SeatOffered seat, the user who may hold it;
	// "" for a seat set aside for nobody yet.
	offeredTo map[int32]UserID
	counts    [5]int // by SeatStatus
	version   uint64
	// shared is the statuses as of sharedVersion, handed out by
	// SharedSeatMap and never modified.
	shared        []byte
	sharedVersion uint64
}

// NewShow returns a show whose seats are all available.
func NewShow(cfg Config) (*Show, error) {
	if len(cfg.Rows) == 0 {
		return nil, fmt.Errorf("%w: no rows", ErrInvalidLayout)
	}
	n := 0
	labels := make(map[string]bool, len(cfg.Rows))
	for _, r := range cfg.Rows {
		if r.Label == "" || r.SeatCount < 1 {
			return nil, fmt.Errorf("%w: row %q with %d seats", ErrInvalidLayout, r.Label, r.SeatCount)
		}
		if labels[r.Label] {
			return nil, fmt.Errorf("%w: duplicate row %q", ErrInvalidLayout, r.Label)
		}
		labels[r.Label] = true
		n += r.SeatCount
	}
	ttl := cfg.HoldTTL
	if ttl == 0 {
		ttl = DefaultHoldTTL
	}
	s := &Show{
		id:      cfg.ID,
		ttl:     ttl,
		rows:    append([]Row(nil), cfg.Rows...),
		seats:   make([]SeatID, 0, n),
		byRow:   make(map[string]rowSpan, len(cfg.Rows)),
		status:  make([]byte, n),
		holds:   ordmap.New[HoldID, *Reservation](64),
		booked:  make(map[HoldID]*Reservation),
		perUser: make(map[UserID]int),
		version: cfg.VersionBase,

		offeredTo: make(map[int32]UserID),
	}
	for _, r := range cfg.Rows {
		s.byRow[r.Label] = rowSpan{first: int32(len(s.seats)), count: int32(r.SeatCount)}
		for i := 1; i <= r.SeatCount; i++ {
			s.seats = append(s.seats, SeatID(r.Label+"-"+strconv.Itoa(i)))
		}
	}
	for i := range s.status {
		s.status[i] = byte(SeatAvailable)
	}
	s.counts[SeatAvailable] = n
	return s, nil
}

// ID returns the show's ID.
func (s *Show) ID() ShowID { return s.id }

// HoldTTL returns the lifetime of a hold.
func (s *Show) HoldTTL() time.Duration { return s.ttl }

// Capacity returns the number of seats.
func (s *Show) Capacity() int { return len(s.seats) }

// Hold holds seats for user, all or nothing, as reservation id; the hold
// expires at now+HoldTTL, or with the newest live hold if that expires
// later (now went back: a clock set back, or holds replayed from a node
// whose clock ran ahead), so the live holds stay in expiry order whatever
// the clock does. Each seat must be available, or offered to user. Refusals,
// in order of precedence: ErrSeatCount, ErrDuplicateSeat, ErrUnknownSeat,
// *SeatsTakenError (also for seats set aside or offered to another user),
// ErrUserLimit.
func (s *Show) Hold(id HoldID, user UserID, seats []SeatID, now time.Time) (Reservation, error) {
	idx, err := s.checkHold(id, user, seats)
	if err != nil {
		return Reservation{}, err
	}
	r := &Reservation{
		ID:        id,
		Show:      s.id,
		User:      user,
		Seats:     append([]SeatID(nil), seats...),
		Status:    Held,
		CreatedAt: now,
		ExpiresAt: now.Add(s.ttl),
	}
	if _, last, ok := s.holds.Back(); ok && last.ExpiresAt.After(r.ExpiresAt) {
		r.ExpiresAt = last.ExpiresAt
	}
	for _, i := range idx {
		delete(s.offeredTo, i)
		s.setSeat(i, SeatHeld)
	}
	s.holds.Put(id, r)
	s.perUser[user] += len(seats)
	s.version++
	return *r, nil
}

// CheckHold reports whether Hold would succeed, without changing anything.
func (s *Show) CheckHold(id HoldID, user UserID, seats []SeatID) error {
	_, err := s.checkHold(id, user, seats)
	return err
}

func (s *Show) checkHold(id HoldID, user UserID, seats []SeatID) ([]int32, error) {
	if len(seats) < 1 || len(seats) > MaxSeatsPerHold {
		return nil, ErrSeatCount
	}
	var buf [MaxSeatsPerHold]int32
	idx := buf[:0]
	unknown := -1 // first unknown seat; reported only if no seat is duplicated
	for k, seat := range seats {
		i, ok := s.index(seat)
		if !ok {
			for _, prev := range seats[:k] {
				if prev == seat {
					return nil, fmt.Errorf("%w: %s", ErrDuplicateSeat, seat)
				}
			}
			if unknown < 0 {
				unknown = k
			}
			continue
		}
		for _, j := range idx {
			if j == i {
				return nil, fmt.Errorf("%w: %s", ErrDuplicateSeat, seat)
			}
		}
		idx = append(idx, i)
	}
	if unknown >= 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownSeat, seats[unknown])
	}
	var taken []SeatID
	take := func(k int) {
		if taken == nil { // one allocation, however many are taken
			taken = make([]SeatID, 0, len(idx)-k)
		}
		taken = append(taken, seats[k])
	}
	for k, i := range idx {
		switch SeatStatus(s.status[i]) {
		case SeatAvailable:
		case SeatOffered:
			if to := s.offeredTo[i]; to == "" || to != user {
				take(k)
			}
		default:
			take(k)
		}
	}
	if taken != nil {
		return nil, &SeatsTakenError{Seats: taken}
	}
	if s.perUser[user]+len(seats) > MaxSeatsPerUser {
		return nil, ErrUserLimit
	}
	if _, ok := s.find(id); ok {
		return nil, fmt.Errorf("%w: hold %s exists", ErrCorrupt, id)
	}
	return append([]int32(nil), idx...), nil
}

// Cancel removes a live hold as if it had never been made: the undo of a Hold
// whose write did not commit. It reports whether there was such a hold.
func (s *Show) Cancel(id HoldID) bool {
	r, ok := s.holds.Get(id)
	if !ok {
		return false
	}
	s.dropHold(r)
	return true
}

// CheckConfirm reports whether user may confirm hold id with paymentRef at
// now. already is true when the hold is booked with that same reference,
// so a repeated confirm answers the booking again. Refusals:
// ErrHoldNotFound, ErrNotHolder, ErrHoldEnded (booked with another
// reference), ErrHoldExpired (past ExpiresAt+ConfirmGrace).
func (s *Show) CheckConfirm(id HoldID, user UserID, paymentRef string, now time.Time) (r Reservation, already bool, err error) {
	p, ok := s.find(id)
	if !ok {
		return Reservation{}, false, ErrHoldNotFound
	}
	if p.User != user {
		return Reservation{}, false, ErrNotHolder
	}
	if p.Status == Booked {
		if p.PaymentRef == paymentRef {
			return *p, true, nil
		}
		return Reservation{}, false, fmt.Errorf("%w: booked with another payment reference", ErrHoldEnded)
	}
	if now.After(p.ExpiresAt.Add(ConfirmGrace)) {
		return Reservation{}, false, ErrHoldExpired
	}
	return *p, false, nil
}

// Confirm books hold id with paymentRef at now, after the same checks as
// CheckConfirm. Confirming a booking again with its own reference changes
// nothing and returns it.
func (s *Show) Confirm(id HoldID, user UserID, paymentRef string, now time.Time) (Reservation, error) {
	r, already, err := s.CheckConfirm(id, user, paymentRef, now)
	if err != nil || already {
		return r, err
	}
	p, _ := s.holds.Get(id)
	s.holds.Delete(id)
	p.Status = Booked
	p.BookedAt = now
	p.PaymentRef = paymentRef
	s.booked[id] = p
	for _, seat := range p.Seats {
		i, _ := s.index(seat) // a hold's seats are the show's
		s.setSeat(i, SeatBooked)
	}
	s.version++
	return *p, nil
}

// CheckRelease reports whether user may release hold id. Refusals:
// ErrHoldNotFound, ErrNotHolder, ErrHoldEnded (booked).
func (s *Show) CheckRelease(id HoldID, user UserID) (Reservation, error) {
	p, ok := s.find(id)
	if !ok {
		return Reservation{}, ErrHoldNotFound
	}
	if p.User != user {
		return Reservation{}, ErrNotHolder
	}
	if p.Status == Booked {
		return Reservation{}, fmt.Errorf("%w: booked", ErrHoldEnded)
	}
	return *p, nil
}

// Release ends hold id at now and makes its seats available, after the same
// checks as CheckRelease.
func (s *Show) Release(id HoldID, user UserID, now time.Time) (Reservation, error) {
	if _, err := s.CheckRelease(id, user); err != nil {
		return Reservation{}, err
	}
	p, _ := s.holds.Get(id)
	s.dropHold(p)
	p.Status = Released
	p.EndedAt = now
	return *p, nil
}

// Due returns, oldest first, the live holds whose ExpiresAt+ConfirmGrace is
// not after now, skipping those for which skip returns true (skip may be
// nil). It changes nothing; Expire ends them.
func (s *Show) Due(now time.Time, skip func(HoldID) bool) []Reservation {
	var due []Reservation
	for id, r := range s.holds.All() {
		if r.ExpiresAt.Add(ConfirmGrace).After(now) {
			// Live holds are in expiry order (Hold and Restore keep it), so
			// the rest expire later.
			break
		}
		if skip == nil || !skip(id) {
			due = append(due, *r)
		}
	}
	return due
}

// Expire ends hold id as expired at now and makes its seats available.
// ErrHoldNotFound if it is not a live hold; ErrHoldEnded if it is not due.
func (s *Show) Expire(id HoldID, now time.Time) (Reservation, error) {
	p, ok := s.holds.Get(id)
	if !ok {
		return Reservation{}, ErrHoldNotFound
	}
	if p.ExpiresAt.Add(ConfirmGrace).After(now) {
		return Reservation{}, fmt.Errorf("%w: not due until %s", ErrHoldEnded, p.ExpiresAt.Add(ConfirmGrace))
	}
	s.dropHold(p)
	p.Status = Expired
	p.EndedAt = now
	return *p, nil
}

// ExpireDue expires every due hold and returns them, oldest first.
func (s *Show) ExpireDue(now time.Time) []Reservation {
	due := s.Due(now, nil)
	for i, r := range due {
		due[i], _ = s.Expire(r.ID, now)
	}
	return due
}

// Restore puts back a persisted live reservation (Held or Booked) when a
// show is rebuilt from its rows. Held ones must be restored in ExpiresAt
// order. It enforces the seat invariants but not the per-user limit, which
// the rows already obeyed; rows that claim a taken seat give ErrCorrupt.
func (s *Show) Restore(r Reservation) error {
	if r.Status != Held && r.Status != Booked {
		return fmt.Errorf("%w: restore of a %s reservation %s", ErrCorrupt, r.Status, r.ID)
	}
	if _, ok := s.find(r.ID); ok {
		return fmt.Errorf("%w: reservation %s twice", ErrCorrupt, r.ID)
	}
	idx := make([]int32, len(r.Seats))
	unmark := func(marked []int32) { // a refused Restore changes nothing
		for _, i := range marked {
			s.status[i] = byte(SeatAvailable)
		}
	}
	for k, seat := range r.Seats {
		i, ok := s.index(seat)
		if !ok {
			unmark(idx[:k])
			return fmt.Errorf("%w: reservation %s names unknown seat %s", ErrCorrupt, r.ID, seat)
		}
		if SeatStatus(s.status[i]) != SeatAvailable {
			unmark(idx[:k])
			return fmt.Errorf("%w: seat %s claimed twice (reservation %s)", ErrCorrupt, seat, r.ID)
		}
		idx[k] = i
		s.status[i] = byte(SeatHeld) // marks it taken for the duplicate check; set properly below
	}
	p := r
	p.Seats = append([]SeatID(nil), r.Seats...)
	st := SeatHeld
	if r.Status == Booked {
		st = SeatBooked
		s.booked[r.ID] = &p
	} else {
		s.holds.Put(r.ID, &p)
	}
	for _, i := range idx {
		s.status[i] = byte(SeatAvailable)
		s.setSeat(i, st)
	}
	s.perUser[r.User] += len(r.Seats)
	s.version++
	return nil
}

// Reservation returns a live hold or booking.
func (s *Show) Reservation(id HoldID) (Reservation, bool) {
	p, ok := s.find(id)
	if !ok {
		return Reservation{}, false
	}
	return *p, true
}

// Holds returns the live holds in expiry order, and Bookings the bookings
// in no particular order; both for inspection and tests.
func (s *Show) Holds() []Reservation {
	out := make([]Reservation, 0, s.holds.Len())
	for _, r := range s.holds.All() {
		out = append(out, *r)
	}
	return out
}

// Bookings returns the booked reservations in no particular order.
func (s *Show) Bookings() []Reservation {
	out := make([]Reservation, 0, len(s.booked))
	for _, r := range s.booked {
		out = append(out, *r)
	}
	return out
}

// LiveHolds returns the number of live holds.
func (s *Show) LiveHolds() int { return s.holds.Len() }

// UserSeats returns how many seats user has in this show, held plus booked.
func (s *Show) UserSeats(user UserID) int { return s.perUser[user] }

func (s *Show) find(id HoldID) (*Reservation, bool) {
	if r, ok := s.holds.Get(id); ok {
		return r, true
	}
	r, ok := s.booked[id]
	return r, ok
}

func (s *Show) dropHold(r *Reservation) {
	s.holds.Delete(r.ID)
	for _, seat := range r.Seats {
		i, _ := s.index(seat) // a hold's seats are the show's
		s.setSeat(i, SeatAvailable)
	}
	if s.perUser[r.User] -= len(r.Seats); s.perUser[r.User] <= 0 {
		delete(s.perUser, r.User)
	}
	s.version++
}

// Offer holds seats back for the waitlist, all or nothing: offered to user,
// who alone may then hold them, or set aside for nobody when user is "".
// Each seat must be available or already offered (it is then offered anew,
// to user). ErrUnknownSeat, or *SeatsTakenError for held or booked seats.
func (s *Show) Offer(seats []SeatID, user UserID) error {
	idx := make([]int32, len(seats))
	var taken []SeatID
	for k, seat := range seats {
		i, ok := s.index(seat)
		if !ok {
			return fmt.Errorf("%w: %s", ErrUnknownSeat, seat)
		}
		if st := SeatStatus(s.status[i]); st != SeatAvailable && st != SeatOffered {
			taken = append(taken, seat)
		}
		idx[k] = i
	}
	if taken != nil {
		return &SeatsTakenError{Seats: taken}
	}
	for _, i := range idx {
		s.offeredTo[i] = user
		if SeatStatus(s.status[i]) != SeatOffered {
			s.setSeat(i, SeatOffered)
		}
	}
	if len(idx) > 0 {
		s.version++
	}
	return nil
}

// Unoffer makes offered seats available to everyone again. Seats that are
// not offered are left as they are, and reported false.
func (s *Show) Unoffer(seats []SeatID) bool {
	all := true
	for _, seat := range seats {
		i, ok := s.index(seat)
		if !ok || SeatStatus(s.status[i]) != SeatOffered {
			all = false
			continue
		}
		delete(s.offeredTo, i)
		s.setSeat(i, SeatAvailable)
		s.version++
	}
	return all
}

// OfferedTo returns who an offered seat is offered to ("" when set aside
// for nobody yet), and false if the seat is not offered.
func (s *Show) OfferedTo(seat SeatID) (UserID, bool) {
	i, ok := s.index(seat)
	if !ok || SeatStatus(s.status[i]) != SeatOffered {
		return "", false
	}
	return s.offeredTo[i], true
}

// rowSpan is where a row's seats are among the show's: seat n of the row
// (1-based) has index first+n-1.
type rowSpan struct{ first, count int32 }

// index returns the index of seat id, "<label>-<n>", and false if the show
// has no such seat. It parses the ID rather than looking it up among all
// the seats: the rows' map is small enough to stay in cache, where a map of
// every seat's ID is not (BenchmarkHoldDecision). A seat's ID is its row's
// label, a dash and its number in decimal without leading zeros, so a
// number that starts with 0 is refused ("A-01") and nothing else needs
// comparing with the seat's own ID, which, one string among 15,000, is
// seldom in cache.
func (s *Show) index(id SeatID) (int32, bool) {
	dash := strings.LastIndexByte(string(id), '-')
	if dash < 0 || dash == len(id)-1 || len(id)-dash > 11 || id[dash+1] == '0' {
		return 0, false
	}
	row, ok := s.byRow[string(id[:dash])]
	if !ok {
		return 0, false
	}
	n := int64(0)
	for _, c := range []byte(id[dash+1:]) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n < 1 || n > int64(row.count) {
		return 0, false
	}
	return row.first + int32(n) - 1, true
}

func (s *Show) setSeat(i int32, st SeatStatus) {
	s.counts[s.status[i]]--
	s.status[i] = byte(st)
	s.counts[st]++
}
