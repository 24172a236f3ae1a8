package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// twoNodes starts nodes "node-a" and "node-b" on one fresh database, with
// leases of 1 ms: either may take a show from the other at any moment, as
// if the other had lost its lease (a partition, a starved process), so
// these tests exercise the epoch fencing, which is what keeps writes safe
// whatever the leases do.
func twoNodes(t *testing.T) (a, b *tc.Node, db *pgxpool.Pool) {
	t.Helper()
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	short := persistence.Config{LeaseDuration: time.Millisecond}
	a = tc.StartNode(t, url, tc.Options{NodeID: "node-a", Store: short})
	b = tc.StartNode(t, url, tc.Options{NodeID: "node-b", Store: short})
	return a, b, openDB(t, url)
}

func loaded(n *tc.Node, show string) bool {
	return slices.Contains(n.Engine.LoadedShows(), ar.ShowID(show))
}

// checkEventsFenced checks the show's audit log against its ownership
// history: events come in non-decreasing epoch order, each epoch's events
// come from one node, and from owners (epoch → node, where known).
func checkEventsFenced(t *testing.T, db *pgxpool.Pool, show string, owners map[int64]string) {
	t.Helper()
	byEpoch := map[int64]string{}
	var last int64
	for _, e := range dbEvents(t, db, show) {
		if e.Epoch < last {
			t.Errorf("event %d (%s by %s) has epoch %d after an event of epoch %d", e.ID, e.Kind, e.Node, e.Epoch, last)
		}
		last = e.Epoch
		if n, ok := byEpoch[e.Epoch]; ok && n != e.Node {
			t.Errorf("epoch %d has events from %s and %s", e.Epoch, n, e.Node)
		}
		byEpoch[e.Epoch] = e.Node
		if n, ok := owners[e.Epoch]; ok && n != e.Node {
			t.Errorf("event %d (%s) at epoch %d is from %s, but %s took that epoch", e.ID, e.Kind, e.Epoch, e.Node, n)
		}
	}
}

// takeOver makes n load show by reading its seat map, and checks that n
// became its owner at a higher epoch. It returns the new epoch and the last
// event ID at that moment.
func takeOver(t *testing.T, n *tc.Node, nodeID string, db *pgxpool.Pool, show string, prev int64) (int64, int64) {
	t.Helper()
	getSeatMap(t, n, show)
	owner, epoch := dbOwner(t, db, show)
	if owner != nodeID || epoch <= prev {
		t.Fatalf("after %s read the show: owner %s at epoch %d, want %s above %d", nodeID, owner, epoch, nodeID, prev)
	}
	return epoch, dbLastEventID(t, db, show)
}

// noEventsFrom fails if the show has an event from node after event ID mark.
func noEventsFrom(t *testing.T, db *pgxpool.Pool, show, node string, mark int64) {
	t.Helper()
	for _, e := range dbEvents(t, db, show) {
		if e.ID > mark && e.Node == node {
			t.Errorf("event %d (%s of %s) from %s after it lost the show", e.ID, e.Kind, e.Reservation, node)
		}
	}
}

// TestFencingTakeover lets two nodes take one show from each other in turn;
// each time, the node that lost it has its next write (hold, confirm,
// release) refused with SHOW_MOVED, commits nothing, and drops the show.
func TestFencingTakeover(t *testing.T) {
	const show = "fence"
	a, b, db := twoNodes(t)
	a.CreateShow(t, show, 4, 10, 0)
	ctx := tc.Ctx(context.Background())
	owners := map[int64]string{}

	h1, err := a.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatal(err)
	}
	owner, e1 := dbOwner(t, db, show)
	if owner != "node-a" {
		t.Fatalf("owner %s, want node-a", owner)
	}
	owners[e1] = "node-a"

	// B reads the show: it replays A's hold and takes the show.
	e2, mark := takeOver(t, b, "node-b", db, show, e1)
	owners[e2] = "node-b"
	if st := seatStatuses(t, getSeatMap(t, b, show)); st["A-1"] != ar.SeatHeld || st["A-2"] != ar.SeatHeld {
		t.Fatalf("B's seat map does not show A's hold: A-1 %d, A-2 %d", st["A-1"], st["A-2"])
	}
	// A's next write (a hold) is fenced.
	_, err = a.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u2", SeatIds: []string{"A-3"}})
	wantAPIError(t, "hold on the node that lost the show", err, codes.Unavailable, "SHOW_MOVED")
	if loaded(a, show) {
		t.Error("A still has the show loaded after its write was fenced")
	}
	if id, ok := dbClaims(t, db, show)["A-3"]; ok {
		t.Errorf("A's fenced hold claimed A-3 (%s)", id)
	}
	// B can hold the very seat A tried.
	hb, err := b.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u3", SeatIds: []string{"A-3"}})
	if err != nil {
		t.Fatalf("hold on the new owner: %v", err)
	}
	noEventsFrom(t, db, show, "node-a", mark)
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, b, db, show)

	// A takes it back; B's next write (a confirm) is fenced.
	e3, mark := takeOver(t, a, "node-a", db, show, e2)
	owners[e3] = "node-a"
	_, err = b.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: hb.GetHoldId(), UserId: "u3", PaymentRef: "pay-b"})
	wantAPIError(t, "confirm on the node that lost the show", err, codes.Unavailable, "SHOW_MOVED")
	if loaded(b, show) {
		t.Error("B still has the show loaded after its write was fenced")
	}
	if r, _ := dbReservationOf(t, db, show, hb.GetHoldId()); r.Status != "HELD" || r.PaymentRef != nil {
		t.Errorf("fenced confirm changed the row: %+v", r)
	}
	if _, err := a.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: hb.GetHoldId(), UserId: "u3", PaymentRef: "pay-a"}); err != nil {
		t.Fatalf("confirm on the new owner: %v", err)
	}
	noEventsFrom(t, db, show, "node-b", mark)

	// B takes it back; A's next write (a release) is fenced.
	e4, mark := takeOver(t, b, "node-b", db, show, e3)
	owners[e4] = "node-b"
	_, err = a.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h1.GetHoldId(), UserId: "u1"})
	wantAPIError(t, "release on the node that lost the show", err, codes.Unavailable, "SHOW_MOVED")
	if loaded(a, show) {
		t.Error("A still has the show loaded after its write was fenced")
	}
	if r, _ := dbReservationOf(t, db, show, h1.GetHoldId()); r.Status != "HELD" {
		t.Errorf("fenced release changed the row: %+v", r)
	}
	if _, err := b.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h1.GetHoldId(), UserId: "u1"}); err != nil {
		t.Fatalf("release on the new owner: %v", err)
	}
	noEventsFrom(t, db, show, "node-a", mark)

	if owner, epoch := dbOwner(t, db, show); owner != "node-b" || epoch != e4 {
		t.Errorf("final owner %s at %d, want node-b at %d", owner, epoch, e4)
	}
	rows := dbReservations(t, db, show)
	if len(rows) != 2 || rows[h1.GetHoldId()].Status != "RELEASED" || rows[hb.GetHoldId()].Status != "BOOKED" ||
		*rows[hb.GetHoldId()].PaymentRef != "pay-a" {
		t.Errorf("final rows: %+v", rows)
	}
	checkEventsFenced(t, db, show, owners)
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, b, db, show)
}

// TestFencingConcurrent has two nodes hammer one show at once, so its
// ownership moves back and forth under load. Every acknowledged change must
// be in PostgreSQL, no seat may get two live claims, and once one node has
// settled as owner its seat map equals the database.
func TestFencingConcurrent(t *testing.T) {
	const (
		show      = "fence-race"
		workers   = 6  // per node
		perWorker = 40 // holds each
	)
	a, b, db := twoNodes(t)
	a.CreateShow(t, show, 5, 20, 0)
	nodes := []*tc.Node{a, b}
	var region []string // rows A-D: 80 contended seats; row E is left for settling
	for row := 0; row < 4; row++ {
		for k := 1; k <= 20; k++ {
			region = append(region, tc.SeatID(row, k))
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	// outcome is what the caller was told about one hold.
	type outcome struct {
		user   string
		seats  []string
		status string // HELD, BOOKED or RELEASED: the last acknowledged state
	}
	var (
		mu       sync.Mutex // guards acked and refusals
		acked    = map[string]*outcome{}
		refusals = map[string]int{}
	)
	refused := func(what string, err error) {
		e := apiErrorOf(err)
		key := fmt.Sprintf("%s: %v %s", what, e.Code, e.Reason)
		mu.Lock()
		refusals[key]++
		mu.Unlock()
		switch {
		case e.Code == codes.Unavailable && e.Reason == "SHOW_MOVED":
		case what == "hold" && e.Code == codes.AlreadyExists && e.Reason == "SEATS_TAKEN":
		default:
			t.Errorf("%s: unexpected refusal %s", what, e)
		}
	}
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for ni, n := range nodes {
		for w := range workers {
			wg.Add(1)
			go func(n *tc.Node, id int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, uint64(id)))
				for i := range perWorker {
					user := fmt.Sprintf("u-%d-%d", id, i)
					p := rng.Perm(len(region))[:1+rng.IntN(3)]
					seats := make([]string, len(p))
					for k, j := range p {
						seats[k] = region[j]
					}
					h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats})
					if err != nil {
						refused("hold", err)
						continue
					}
					o := &outcome{user: user, seats: seats, status: "HELD"}
					mu.Lock()
					acked[h.GetHoldId()] = o
					mu.Unlock()
					// Mostly end it, through either node; releases recycle seats.
					other := nodes[rng.IntN(2)]
					switch rng.IntN(4) {
					case 0:
						_, err := other.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: user, PaymentRef: "pay-" + user})
						if err != nil {
							refused("confirm", err)
						} else {
							mu.Lock()
							o.status = "BOOKED"
							mu.Unlock()
						}
					case 1, 2:
						_, err := other.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: user})
						if err != nil {
							refused("release", err)
						} else {
							mu.Lock()
							o.status = "RELEASED"
							mu.Unlock()
						}
					}
				}
			}(n, ni*workers+w)
		}
	}
	wg.Wait()
	t.Logf("%d holds acknowledged; refusals: %v", len(acked), refusals)
	if len(acked) == 0 {
		t.Fatal("no hold succeeded")
	}

	// Every acknowledged change is in the database, exactly; a refused
	// confirm or release (SHOW_MOVED) changed nothing.
	rows := dbReservations(t, db, show)
	if len(rows) != len(acked) {
		t.Errorf("database has %d reservations, %d holds were acknowledged", len(rows), len(acked))
	}
	live := map[string]string{}
	for id, o := range acked {
		r, ok := rows[id]
		switch {
		case !ok:
			t.Errorf("acknowledged hold %s (%s %v) is not in the database", id, o.user, o.seats)
			continue
		case r.Status != o.status || r.User != o.user || !slices.Equal(r.Seats, o.seats):
			t.Errorf("hold %s: database has %s %s %v, acknowledged %s %s %v", id, r.Status, r.User, r.Seats, o.status, o.user, o.seats)
		}
		if o.status != "RELEASED" {
			for _, s := range o.seats {
				if prev, ok := live[s]; ok {
					t.Errorf("seat %s acknowledged to two live reservations, %s and %s", s, prev, id)
				}
				live[s] = id
			}
		}
	}
	checkDBInvariants(t, db, show)
	checkEventsFenced(t, db, show, nil)

	// Settle: a hold through A that succeeds makes A the owner with memory
	// rebuilt from the database; its seat map must then equal the rows.
	var free string
	for _, s := range []string{"E-20", "E-19", "E-18"} {
		if _, ok := live[s]; !ok {
			free = s
			break
		}
	}
	pollUntil(t, 10*time.Second, "a hold through A to succeed", func() bool {
		_, err := a.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "settle", SeatIds: []string{free}})
		if err != nil && apiErrorOf(err).Reason != "SHOW_MOVED" {
			t.Fatalf("settling hold: %v", err)
		}
		return err == nil
	})
	if owner, _ := dbOwner(t, db, show); owner != "node-a" {
		t.Errorf("owner after settling: %s", owner)
	}
	checkSeatMapEqualsDB(t, a, db, show)
}
