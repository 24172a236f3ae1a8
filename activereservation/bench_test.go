package activereservation

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// holdDecider is what BenchmarkHoldDecision drives, so that other designs of
// the hold decision can be measured against Show with the same workload.
type holdDecider interface {
	Hold(id HoldID, user UserID, seats []SeatID, now time.Time) (Reservation, error)
	Cancel(id HoldID) bool
}

// benchRows is a 15,000-seat venue: 100 rows of 150.
func benchRows() []Row {
	rows := make([]Row, 100)
	for i := range rows {
		rows[i] = Row{Label: "R" + strconv.Itoa(i+1), SeatCount: 150, Category: "std"}
	}
	return rows
}

// holdRequest is one pre-generated hold attempt.
type holdRequest struct {
	user  UserID
	seats []SeatID
}

// flashSale returns n hold attempts (n a power of two) of 1–4 adjacent seats
// at random places of rows, by random users among users.
func flashSale(rng *rand.Rand, rows []Row, users, n int) []holdRequest {
	names := make([]UserID, users)
	for i := range names {
		names[i] = UserID("user-" + strconv.Itoa(i))
	}
	reqs := make([]holdRequest, n)
	for i := range reqs {
		row := rows[rng.IntN(len(rows))]
		k := 1 + rng.IntN(4)
		first := 1 + rng.IntN(row.SeatCount-k+1)
		reqs[i] = holdRequest{
			user:  names[rng.IntN(users)],
			seats: rowSeats(row.Label, first, first+k-1),
		}
	}
	return reqs
}

// BenchmarkHoldDecision measures hold decisions per second on a 15,000-seat
// show during a flash sale of random 1–4 adjacent seats to 200,000 users.
//
// The show is first filled to the target share of held seats (untimed).
// Then each iteration is one Hold attempt, winner or loser; after a win that
// takes the show above the target, the oldest holds are cancelled (Cancel,
// the undo of a hold) inside the timed loop until it is back under it — as
// expiries would in a real sale — so the holds/s figure includes that undo
// work and is conservative. StopTimer around the undo would cost more than
// the undo itself. "win%" is the share of attempts that got their seats.
func BenchmarkHoldDecision(b *testing.B) {
	rows := benchRows()
	reqs := flashSale(rand.New(rand.NewPCG(1, 2)), rows, 200_000, 1<<17)
	for _, target := range []int{50, 90} {
		b.Run(fmt.Sprintf("held=%d%%", target), func(b *testing.B) {
			s, err := NewShow(Config{ID: "bench", Rows: rows})
			if err != nil {
				b.Fatal(err)
			}
			benchHoldDecision(b, s, reqs, s.Capacity()*target/100)
		})
	}
}

func benchHoldDecision(b *testing.B, d holdDecider, reqs []holdRequest, maxHeld int) {
	now := t0
	// live is a FIFO ring of the live holds and their seat counts, at most
	// maxHeld of them; free holds the IDs no live hold uses.
	type liveHold struct {
		id    HoldID
		seats int
	}
	live := make([]liveHold, maxHeld+1)
	free := make([]HoldID, maxHeld+1)
	for i := range free {
		free[i] = HoldID("hold-" + strconv.Itoa(i))
	}
	head, n, held := 0, 0, 0
	next := 0
	attempt := func() bool {
		r := &reqs[next&(len(reqs)-1)]
		next++
		id := free[len(free)-1]
		if _, err := d.Hold(id, r.user, r.seats, now); err != nil {
			if !errors.Is(err, ErrSeatTaken) && !errors.Is(err, ErrUserLimit) {
				b.Fatalf("Hold: %v", err)
			}
			return false
		}
		free = free[:len(free)-1]
		live[(head+n)%len(live)] = liveHold{id, len(r.seats)}
		n++
		held += len(r.seats)
		for held > maxHeld {
			h := live[head]
			if !d.Cancel(h.id) {
				b.Fatalf("Cancel(%s) found no hold", h.id)
			}
			free = append(free, h.id)
			head = (head + 1) % len(live)
			n--
			held -= h.seats
		}
		return true
	}
	for held < maxHeld*9/10 { // fill, untimed
		attempt()
	}
	b.ReportAllocs()
	attempts, wins := 0, 0
	for b.Loop() {
		if attempt() {
			wins++
		}
		attempts++
	}
	b.ReportMetric(float64(attempts)/b.Elapsed().Seconds(), "holds/s")
	b.ReportMetric(100*float64(wins)/float64(attempts), "win%")
}

// BenchmarkSeatMap measures a seat-map snapshot of 15,000 seats into a
// reused buffer, as GetSeatMap would take it under the show's lock.
func BenchmarkSeatMap(b *testing.B) {
	rows := benchRows()
	s, err := NewShow(Config{ID: "bench", Rows: rows})
	if err != nil {
		b.Fatal(err)
	}
	for i, r := range flashSale(rand.New(rand.NewPCG(3, 4)), rows, 200_000, 1<<13) {
		id := HoldID("hold-" + strconv.Itoa(i))
		if _, err := s.Hold(id, r.user, r.seats, t0); err == nil && i%3 == 0 {
			if _, err := s.Confirm(id, r.user, "pay", t0); err != nil {
				b.Fatal(err)
			}
		}
	}
	buf := make([]byte, 0, s.Capacity())
	b.SetBytes(int64(s.Capacity()))
	b.ReportAllocs()
	var m SeatMap
	for b.Loop() {
		m = s.SeatMap(buf)
		buf = m.Statuses
	}
	if len(m.Statuses) != s.Capacity() || m.Available+m.Held+m.Booked != s.Capacity() || m.Booked == 0 {
		b.Fatalf("seat map %d seats, counts %d/%d/%d", len(m.Statuses), m.Available, m.Held, m.Booked)
	}
}
