package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// TestHoldRace sends 2,000 concurrent HoldSeats over gRPC for overlapping
// seats of one show and checks every answer against every other answer and
// against PostgreSQL: each seat is held at most once, every success is
// durable, every refusal names seats that a success really holds (or is a
// repeated user at the per-user limit), and the seat map equals the rows.
func TestHoldRace(t *testing.T) {
	const (
		show     = "race"
		calls    = 2000
		repUsers = 4 // users who call repeatedly, to reach the per-user limit
	)
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 10, 20, 0) // rows A-J of 20 seats

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var hot, rep []string
	for row := 0; row < 2; row++ { // A-B: 40 seats for everybody
		for k := 1; k <= 20; k++ {
			hot = append(hot, tc.SeatID(row, k))
		}
	}
	for row := 1; row < 6; row++ { // B-F: the repeated users' seats; B overlaps hot
		for k := 1; k <= 20; k++ {
			rep = append(rep, tc.SeatID(row, k))
		}
	}
	pick := func(from []string) []string {
		p := rng.Perm(len(from))[:1+rng.IntN(4)]
		out := make([]string, len(p))
		for i, j := range p {
			out[i] = from[j]
		}
		return out
	}
	type call struct {
		user     string
		seats    []string
		repeated bool
		resp     *pb.HoldSeatsResponse
		err      error
	}
	cs := make([]call, calls)
	for i := range cs {
		if i%10 == 0 {
			cs[i] = call{user: fmt.Sprintf("rep-%d", (i/10)%repUsers), seats: pick(rep), repeated: true}
		} else {
			cs[i] = call{user: fmt.Sprintf("user-%d", i), seats: pick(hot)}
		}
	}

	// A few connections, so the calls do not all share one transport.
	conns := []pb.ReservationServiceClient{n.Reservations}
	for range 3 {
		conn, err := tc.Dial(n.Server.GRPCAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, pb.NewReservationServiceClient(conn))
	}
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 60*time.Second)
	defer cancel()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		go func(c *call, client pb.ReservationServiceClient) {
			defer wg.Done()
			<-start
			c.resp, c.err = client.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: c.user, SeatIds: c.seats}, grpc.WaitForReady(true))
		}(&cs[i], conns[i%len(conns)])
	}
	began := time.Now()
	close(start)
	wg.Wait()
	t.Logf("%d concurrent holds answered in %s", calls, time.Since(began))

	// Successes: no seat twice, each answer is the request.
	holder := map[string]string{} // seat → hold ID
	userSeats := map[string]int{} // user → seats held
	holds := map[string]*call{}   // hold ID → call
	for i := range cs {
		c := &cs[i]
		if c.err != nil {
			continue
		}
		r := c.resp
		if r.GetShowId() != show || r.GetUserId() != c.user || !slices.Equal(r.GetSeatIds(), c.seats) || r.GetHoldId() == "" {
			t.Errorf("hold of %s %v answered %v", c.user, c.seats, r)
		}
		if _, dup := holds[r.GetHoldId()]; dup {
			t.Errorf("hold ID %s given twice", r.GetHoldId())
		}
		holds[r.GetHoldId()] = c
		for _, s := range c.seats {
			if prev, ok := holder[s]; ok {
				t.Errorf("seat %s held by both %s and %s", s, prev, r.GetHoldId())
			}
			holder[s] = r.GetHoldId()
		}
		userSeats[c.user] += len(c.seats)
	}
	for u, k := range userSeats {
		if k > ar.MaxSeatsPerUser {
			t.Errorf("user %s holds %d seats", u, k)
		}
	}

	// Refusals: seats taken by a success, or a repeated user at the limit.
	var taken, limited int
	for i := range cs {
		c := &cs[i]
		if c.err == nil {
			continue
		}
		e := apiErrorOf(c.err)
		switch {
		case e.Code == codes.AlreadyExists && e.Reason == "SEATS_TAKEN":
			taken++
			named := strings.Split(e.Meta["seats"], ",")
			if e.Meta["seats"] == "" {
				t.Errorf("%s %v: SEATS_TAKEN names no seats (%s)", c.user, c.seats, e)
				continue
			}
			for _, s := range named {
				if !slices.Contains(c.seats, s) {
					t.Errorf("%s %v: SEATS_TAKEN names %s, which it did not ask for", c.user, c.seats, s)
				}
				if _, ok := holder[s]; !ok {
					t.Errorf("%s %v: SEATS_TAKEN names %s, which no successful hold has", c.user, c.seats, s)
				}
			}
		case e.Code == codes.ResourceExhausted && e.Reason == "USER_SEAT_LIMIT":
			limited++
			if !c.repeated {
				t.Errorf("%s %v: USER_SEAT_LIMIT for a user with one call", c.user, c.seats)
			}
			// Holds only grow here, so the user's final count is at least
			// what it was when refused.
			if userSeats[c.user]+len(c.seats) <= ar.MaxSeatsPerUser {
				t.Errorf("%s %v: USER_SEAT_LIMIT, but the user holds only %d seats", c.user, c.seats, userSeats[c.user])
			}
		default:
			t.Errorf("%s %v: unexpected refusal %s", c.user, c.seats, e)
		}
	}
	t.Logf("%d held (%d seats), %d refused as taken, %d at the user limit", len(holds), len(holder), taken, limited)
	if len(holds) == 0 || taken == 0 || limited == 0 {
		t.Errorf("the race did not exercise every outcome: %d held, %d taken, %d limited", len(holds), taken, limited)
	}

	// PostgreSQL has exactly the successes, with their seats claimed.
	rows := dbReservations(t, db, show)
	if len(rows) != len(holds) {
		t.Errorf("database has %d reservations, %d holds succeeded", len(rows), len(holds))
	}
	for id, c := range holds {
		r, ok := rows[id]
		switch {
		case !ok:
			t.Errorf("acknowledged hold %s (%s %v) is not in the database", id, c.user, c.seats)
		case r.Status != "HELD" || r.User != c.user || !slices.Equal(r.Seats, c.seats):
			t.Errorf("hold %s: database has %s %s %v, want HELD %s %v", id, r.Status, r.User, r.Seats, c.user, c.seats)
		}
	}
	claims := dbClaims(t, db, show)
	if len(claims) != len(holder) {
		t.Errorf("database has %d seat claims, successes hold %d seats", len(claims), len(holder))
	}
	for s, id := range holder {
		if claims[s] != id {
			t.Errorf("seat %s: claimed by %q in the database, held by %s", s, claims[s], id)
		}
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
	if sm := getSeatMap(t, n, show); int(sm.GetHeld()) != len(holder) {
		t.Errorf("seat map has %d held seats, successes hold %d", sm.GetHeld(), len(holder))
	}
}

// TestHoldWaitsForUncommittedHold: a hold asking for a seat that another
// hold took but has not committed is not refused on it. While u1's hold of
// A-1 waits at its commit (the ownership row is locked), u2's hold of A-1
// is not answered; u1's write then fails before COMMIT (its connection is
// terminated), memory takes u1's hold back, and u2 gets the seat — the
// only answer a history in which u1's hold never happened allows. The
// wait is counted in boxoffice_hold_waits_total.
func TestHoldWaitsForUncommittedHold(t *testing.T) {
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, "pend", 1, 4, 0)
	getSeatMap(t, n, "pend")
	lock := lockOwnerRow(t, db, "pend")

	first := make(chan error, 1)
	go func() {
		_, err := hold(t, n, "pend", "u1", "A-1")
		first <- err
	}()
	pollUntil(t, 10*time.Second, "u1's hold to reach the writer", func() bool { return lockWaiters(t, db) > 0 })
	second := make(chan error, 1)
	go func() {
		_, err := hold(t, n, "pend", "u2", "A-1")
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("u2's hold answered while u1's was uncommitted: %v", err)
	case <-time.After(200 * time.Millisecond): // it must still wait: u1's commit is blocked
	}
	if v, _ := sample(scrape(t, n), "boxoffice_hold_waits_total"); v != 1 {
		t.Errorf("boxoffice_hold_waits_total = %v while u2's hold waits, want 1", v)
	}
	// u1's transaction dies waiting for the lock, before COMMIT.
	if _, err := db.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
		t.Fatal(err)
	}
	if err := <-first; apiErrorOf(err).Code != codes.Unavailable {
		t.Fatalf("u1's hold: %v, want Unavailable", err)
	}
	if err := lock.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("u2's hold after u1's failed: %v", err)
	}
	if claims := dbClaims(t, db, "pend"); len(claims) != 1 {
		t.Errorf("claims: %v", claims)
	}
	checkSeatMapEqualsDB(t, n, db, "pend")
}
