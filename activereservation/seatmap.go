package activereservation

// SeatMap is a snapshot of every seat's status.
type SeatMap struct {
	// Version changes whenever any seat changes status; it never goes back
	// while the show stays loaded.
	Version uint64
	// Available, Held, Booked and Offered count the seats in each status.
	Available, Held, Booked, Offered int
	// Statuses has one SeatStatus byte per seat in layout order.
	Statuses []byte
}

// SharedSeatMap returns a snapshot whose Statuses is shared with every
// other caller until a seat changes: callers must not modify it. It copies
// the statuses only when they changed since the last call, so many readers
// of a busy show (a page of users refreshing its map) cost one copy per
// change instead of one per read.
func (s *Show) SharedSeatMap() SeatMap {
	if s.shared == nil || s.sharedVersion != s.version {
		s.shared = append([]byte(nil), s.status...)
		s.sharedVersion = s.version
	}
	return s.snapshot(s.shared)
}

// snapshot returns the seat map with the given statuses, a copy of s.status.
func (s *Show) snapshot(statuses []byte) SeatMap {
	return SeatMap{
		Version:   s.version,
		Available: s.counts[SeatAvailable],
		Held:      s.counts[SeatHeld],
		Booked:    s.counts[SeatBooked],
		Offered:   s.counts[SeatOffered],
		Statuses:  statuses,
	}
}

// SeatMap returns a snapshot; its Statuses is appended to buf[:0], so a
// caller may reuse a buffer.
func (s *Show) SeatMap(buf []byte) SeatMap {
	return s.snapshot(append(buf[:0], s.status...))
}

// Version returns the current seat-map version.
func (s *Show) Version() uint64 { return s.version }

// Counts returns how many seats are available, held, booked and offered.
func (s *Show) Counts() (available, held, booked, offered int) {
	return s.counts[SeatAvailable], s.counts[SeatHeld], s.counts[SeatBooked], s.counts[SeatOffered]
}

// Rows returns the layout.
func (s *Show) Rows() []Row { return s.rows }

// Seat returns the ID and status of the seat at index i in layout order.
func (s *Show) Seat(i int) (SeatID, SeatStatus) { return s.seats[i], SeatStatus(s.status[i]) }

// SeatStatus returns the status of a seat, and false if the show has no such seat.
func (s *Show) SeatStatus(id SeatID) (SeatStatus, bool) {
	i, ok := s.index(id)
	if !ok {
		return 0, false
	}
	return SeatStatus(s.status[i]), true
}
