package engine_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// Tests of the node under database faults injected by a proxy between the
// node and PostgreSQL: a connection cut while COMMIT is in flight, and a
// black hole.

// proxiedNode starts a node whose store reaches the database at dbURL
// through a fault-injecting proxy, with the given commit and query
// timeouts. Its connections carry application_name app, so the test can
// find them in pg_stat_activity.
func proxiedNode(t *testing.T, dbURL, app string, commit, query time.Duration) (*tc.Node, *tc.Proxy) {
	t.Helper()
	px := tc.NewDBProxy(t, dbURL)
	n := tc.StartNode(t, px.URL()+"&application_name="+app, tc.Options{
		Store: persistence.Config{CommitTimeout: commit, QueryTimeout: query},
	})
	return n, px
}

// waitForBackend polls pg_stat_activity until a backend of application app
// matches cond (an SQL condition), and fails the test after timeout.
func waitForBackend(t *testing.T, db *pgxpool.Pool, app, cond string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var n int
		err := db.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND `+cond, app).Scan(&n)
		if err != nil {
			t.Fatalf("pg_stat_activity: %v", err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backend of %s with %s after %s", app, cond, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// userSeats returns how many seats user holds or booked in show, by the
// database.
func userSeats(t *testing.T, db *pgxpool.Pool, show, user string) int {
	t.Helper()
	n := 0
	for _, r := range dbReservations(t, db, show) {
		if r.User == user && (r.Status == "HELD" || r.Status == "BOOKED") {
			n += len(r.Seats)
		}
	}
	return n
}

// commitGate closes a gate at COMMIT: a deferred trigger on new
// reservations (those matching when, an SQL condition on NEW, or all when
// it is empty) waits for an advisory lock that the gate holds until open
// is called. PostgreSQL has then received a gated transaction's COMMIT and
// completes it once the gate opens, whatever became of the node's
// connection.
func commitGate(t *testing.T, db *pgxpool.Pool, when string) (open func()) {
	t.Helper()
	ctx := context.Background()
	if when != "" {
		when = "WHEN (" + when + ")"
	}
	for _, q := range []string{
		`CREATE FUNCTION commit_gate() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$`,
		`CREATE CONSTRAINT TRIGGER commit_gate AFTER INSERT ON reservations
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW ` + when + ` EXECUTE FUNCTION commit_gate()`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	gate, err := db.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gate.Release)
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCommitCutKeepsMemoryConservative cuts the node's connection to
// PostgreSQL while the COMMIT of a user's 10-seat hold is in flight, after
// PostgreSQL applied it. The hold is answered Unavailable OUTCOME_UNKNOWN,
// memory keeps its seats taken, and requests of the same user — one of them
// already waiting while the commit was in flight — cannot take 10 more:
// after the reload memory equals PostgreSQL, the over-limit hold is refused,
// and a retry with the hold's idempotency key answers the hold that was
// committed.
func TestCommitCutKeepsMemoryConservative(t *testing.T) {
	const show, user, app = "commitcut", "u-ten", "commitcut-node"
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	db := openDB(t, dbURL)
	// A gate at COMMIT, closed while hold A commits.
	openGate := commitGate(t, db, "")
	n, px := proxiedNode(t, dbURL, app, 2*time.Second, 2*time.Second)
	n.CreateShow(t, show, 3, 10, 0)
	bg := tc.Ctx(context.Background())
	rs := n.Reservations
	getSeatMap(t, n, show) // loaded

	rowA := []string{"A-1", "A-2", "A-3", "A-4", "A-5", "A-6", "A-7", "A-8", "A-9", "A-10"}
	rowB := []string{"B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "B-7", "B-8", "B-9", "B-10"}
	holdA := &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: rowA, IdempotencyKey: "hold-a"}

	type answer struct {
		r   *pb.HoldSeatsResponse
		err error
	}
	answerA := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		r, err := rs.HoldSeats(ctx, holdA)
		answerA <- answer{r, err}
	}()
	waitForBackend(t, db, app, `query ILIKE 'commit' AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, 10*time.Second)
	// The same user asks for 10 more seats over and over while hold A's
	// COMMIT is in flight and after: none of these may ever be committed.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var moreMu sync.Mutex
	var more []string // hold IDs granted to the user for row B
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(bg, 3*time.Second)
				r, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: rowB})
				cancel()
				if err == nil {
					moreMu.Lock()
					more = append(more, r.GetHoldId())
					moreMu.Unlock()
				}
			}
		}()
	}

	px.Cut()
	openGate()
	a := <-answerA
	wantAPIError(t, "hold whose COMMIT was cut", a.err, codes.Unavailable, "OUTCOME_UNKNOWN")

	// PostgreSQL applied it: the cut came after COMMIT reached the server.
	pollUntil(t, 10*time.Second, "hold A to be in the database", func() bool { return userSeats(t, db, show, user) == 10 })

	// While the database is unreachable, memory keeps the seats taken.
	st := seatStatuses(t, getSeatMap(t, n, show))
	for _, s := range rowA {
		if st[s] != ar.SeatHeld {
			t.Errorf("seat %s is %d in memory after the cut commit, want held", s, st[s])
		}
	}

	px.Reconnect()
	// The over-limit hold is refused once the show has been reloaded.
	pollUntil(t, 20*time.Second, "the over-limit hold to be refused for the limit", func() bool {
		ctx, cancel := context.WithTimeout(bg, 3*time.Second)
		defer cancel()
		_, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: rowB})
		if err == nil {
			t.Fatal("a hold of 10 more seats was granted to a user who has 10")
		}
		return apiErrorOf(err).Reason == "USER_SEAT_LIMIT"
	})
	close(stop)
	wg.Wait()
	if len(more) > 0 {
		t.Errorf("holds of 10 more seats were granted to the user: %v", more)
	}
	if got := userSeats(t, db, show, user); got != 10 {
		t.Errorf("the user has %d seats in the database, want 10", got)
	}

	// A retry with the same key gets the true outcome: the committed hold.
	r, err := rs.HoldSeats(bg, holdA)
	if err != nil {
		t.Fatalf("retry of hold A: %v", err)
	}
	if r.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD || len(r.GetSeatIds()) != 10 {
		t.Errorf("retry of hold A answered %v", r)
	}
	if row, ok := dbReservationOf(t, db, show, r.GetHoldId()); !ok || row.User != user || row.Status != "HELD" {
		t.Errorf("retry of hold A answered %s, which the database has as %+v", r.GetHoldId(), row)
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
}

// TestStaleShowsReloadTogether makes several shows stale — the COMMIT of
// the transaction that held a seat of each was cut, its outcome unknown —
// and keeps the database black-holed. A round of ExpireDue starts their
// reloads together and waits for them once, about ExpiryInterval*10, not
// that long once per stale show, which kept the expiries and waitlists of
// every other show waiting. Once the database is back the shows are
// reloaded by the expiry loop, and each equals the database.
func TestStaleShowsReloadTogether(t *testing.T) {
	const app, stale = "stale-node", 8
	const interval = 100 * time.Millisecond // a round waits 1 s for reloads
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	db := openDB(t, dbURL)
	ctx := context.Background()
	openGate := commitGate(t, db, "NEW.show_id LIKE 'stale-%'") // the stale shows' reservations only
	px := tc.NewDBProxy(t, dbURL)
	n := tc.StartNode(t, px.URL()+"&application_name="+app, tc.Options{
		ExpiryInterval: interval,
		Store:          persistence.Config{CommitTimeout: time.Second, QueryTimeout: time.Second},
	})
	shows := []string{"plug"}
	for i := range stale {
		shows = append(shows, fmt.Sprintf("stale-%d", i))
	}
	for _, id := range shows {
		n.CreateShow(t, id, 1, 10, 0)
		getSeatMap(t, n, id) // loaded
	}

	// The plug's hold waits for its show's ownership row, so the stale
	// shows' holds queue meanwhile and are then committed together, in
	// one transaction that the gate stops at COMMIT.
	plug := lockOwnerRow(t, db, "plug")
	errs := make(chan error, len(shows))
	for i, id := range shows {
		go func() {
			ctx, cancel := context.WithTimeout(tc.Ctx(ctx), 10*time.Second)
			defer cancel()
			_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: id, UserId: "u", SeatIds: []string{"A-1"}})
			errs <- err
		}()
		if i == 0 {
			waitForBackend(t, db, app, `wait_event_type = 'Lock'`, 10*time.Second)
		}
	}
	pollUntil(t, 10*time.Second, "the stale shows' holds to be queued", func() bool { return n.Store.QueueLen() >= stale })
	if err := plug.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitForBackend(t, db, app, `query ILIKE 'commit' AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, 10*time.Second)
	px.BlackHole()
	unknown := 0
	for range shows {
		if err := <-errs; err != nil {
			if e := apiErrorOf(err); e.Reason != "OUTCOME_UNKNOWN" {
				t.Fatalf("a hold whose COMMIT was cut: %s, want OUTCOME_UNKNOWN", e)
			}
			unknown++
		}
	}
	if unknown != stale {
		t.Fatalf("%d holds answered OUTCOME_UNKNOWN, want %d", unknown, stale)
	}

	start := time.Now()
	n.Engine.ExpireDue()
	if took, bound := time.Since(start), 4*10*interval; took > bound {
		t.Errorf("ExpireDue took %s with %d stale shows and the database black-holed, want under %s", took, stale, bound)
	}

	loads := func() float64 {
		v, _ := sample(scrape(t, n), "boxoffice_show_replay_seconds_count")
		return v
	}
	before := loads()
	px.Lift()
	openGate()
	pollUntil(t, 30*time.Second, "the stale shows to be reloaded", func() bool { return loads() >= before+stale })
	for _, id := range shows {
		checkDBInvariants(t, db, id)
		checkSeatMapEqualsDB(t, n, db, id)
	}
}

// TestBlackHoleAnswersPromptly black-holes PostgreSQL under 256 concurrent
// holds, at the worst moment: a batch of them has just been refused by the
// database (one seat claimed behind the node's back), so the writer commits
// it in parts. Every call is answered within CommitTimeout plus a
// second, Unavailable (or, for the culprit, the conflict that reloads the
// show); once the black hole is lifted the node takes holds again without
// a restart and memory equals PostgreSQL.
func TestBlackHoleAnswersPromptly(t *testing.T) {
	const show, app, callers = "blackhole", "blackhole-node", 256
	const commitTimeout = 5 * time.Second
	const bound = commitTimeout + time.Second
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	db := openDB(t, dbURL)
	n, px := proxiedNode(t, dbURL, app, commitTimeout, commitTimeout)
	n.CreateShow(t, show, 20, 20, 0)
	bg := tc.Ctx(context.Background())
	rs := n.Reservations
	getSeatMap(t, n, show)

	// plug holds the show's ownership row, so the writer's first batch (the
	// plug hold) waits while all the callers' holds queue behind it; rogue
	// claims seat T-1 without committing, so the callers' batch waits for it
	// and then fails on the unique constraint.
	ctx := context.Background()
	plug := lockOwnerRow(t, db, show)
	rogue, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Rollback(ctx) //nolint:errcheck
	if _, err := rogue.Exec(ctx, `INSERT INTO seat_claims (show_id, seat_id, reservation_id) VALUES ($1, 'T-1', 'rogue')`, show); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		took time.Duration
		err  error
	}
	answers := make(chan answer, callers+1)
	call := func(user, seat string) {
		ctx, cancel := context.WithTimeout(bg, 4*bound)
		defer cancel()
		start := time.Now()
		_, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: []string{seat}})
		answers <- answer{time.Since(start), err}
	}
	go call("plug", "A-1")
	waitForBackend(t, db, app, `wait_event_type = 'Lock'`, 10*time.Second)
	for i := 0; i < callers; i++ {
		seat := tc.SeatID(1+i/20, 1+i%20) // rows B..., the last caller takes T-1
		if i == callers-1 {
			seat = "T-1"
		}
		go call(fmt.Sprintf("u%d", i), seat)
	}
	pollUntil(t, 10*time.Second, "the callers' holds to be queued", func() bool { return n.Store.QueueLen() >= callers })
	if err := plug.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The callers' batch now waits for the rogue claim.
	waitForBackend(t, db, app, `wait_event_type = 'Lock' AND query ILIKE '%seat_claims%'`, 10*time.Second)
	px.BlackHole()
	if err := rogue.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	codesSeen := map[string]int{}
	for i := 0; i < callers+1; i++ {
		a := <-answers
		if a.err == nil {
			codesSeen["OK"]++
			continue
		}
		e := apiErrorOf(a.err)
		codesSeen[e.Code.String()+" "+e.Reason]++
		if a.took > bound {
			t.Errorf("a hold was answered after %s (bound %s): %s", a.took, bound, e)
		}
		if e.Code != codes.Unavailable {
			t.Errorf("a hold with the database black-holed: %s, want Unavailable", e)
		}
	}
	t.Logf("answers: %v", codesSeen)

	px.Lift()
	if _, err := db.Exec(ctx, `DELETE FROM seat_claims WHERE reservation_id = 'rogue'`); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "a hold to succeed after the black hole", func() bool {
		ctx, cancel := context.WithTimeout(bg, 2*time.Second)
		defer cancel()
		_, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "after", SeatIds: []string{"T-20"}})
		return err == nil
	})
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
}

// TestClusterNodeCutFromDatabaseStopsAnsweringFromMemory black-holes the
// database of a node in a cluster: once its lease on a show may have run
// out (renewals fail), another node may take the show, so the node stops
// answering it from memory: its seat map, fresh until then, is refused
// Unavailable rather than served stale. Once the database answers again
// the node loads the show and serves it, the hold taken before intact.
func TestClusterNodeCutFromDatabaseStopsAnsweringFromMemory(t *testing.T) {
	const show = "cutlease"
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	px := tc.NewDBProxy(t, dbURL)
	n := tc.StartNode(t, px.URL(), tc.Options{
		NodeID:  "cut-c0",
		Cluster: &tc.ClusterOptions{},
		Store:   persistence.Config{CommitTimeout: time.Second, QueryTimeout: time.Second},
	})
	n.CreateShow(t, show, 1, 4, 0)
	if _, err := hold(t, n, show, "u", "A-1"); err != nil {
		t.Fatal(err)
	}
	lease := n.Store.LeaseDuration()
	px.BlackHole()
	cut := time.Now()
	var err error
	pollUntil(t, lease+10*time.Second, "the seat map refused", func() bool {
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 3*time.Second)
		defer cancel()
		_, err = n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show})
		return err != nil
	})
	took := time.Since(cut)
	t.Logf("seat map refused %v after the cut (lease %v): %v", took.Round(time.Millisecond), lease, err)
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("seat map after the lease may have run out: %v, want Unavailable", err)
	}
	if took > lease+5*time.Second {
		t.Errorf("the seat map was served from memory for %v after the cut, with a lease of %v", took, lease)
	}
	px.Lift()
	pollUntil(t, 20*time.Second, "the show served again", func() bool {
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 3*time.Second)
		defer cancel()
		r, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show})
		return err == nil && r.GetHeld() == 1
	})
}

// TestClusterCutNodeAnswersNothingFromMemoryAfterItsLease black-holes the
// database of a node in a cluster and probes every way it reads a loaded
// show from memory, each on a show of its own: GetSeatMap, GetReservation,
// a Pipeline hold of a taken seat (refused from memory while the show is
// loaded) and a new WatchSeatMap. Every lease the node has was asked for
// before the cut, so it runs out by the cut plus the lease, after which
// another node may take the show: no probe started after that may be
// answered, and a watch stream opened before the cut must end. The renewal
// interval is near half the lease, so a hung renewal gives up late: the
// node must check the lease on each read, not leave it to the renewals
// (before it did, GetReservation and Pipeline answered past the lease's
// end).
func TestClusterCutNodeAnswersNothingFromMemoryAfterItsLease(t *testing.T) {
	const lease, interval = 3 * time.Second, 1400 * time.Millisecond
	dbURL := pgclustertest.Shared(t)
	tc.Migrate(t, dbURL)
	px := tc.NewDBProxy(t, dbURL)
	n := tc.StartNode(t, px.URL(), tc.Options{
		NodeID:  "cut-probes",
		Cluster: &tc.ClusterOptions{},
		Store:   persistence.Config{CommitTimeout: time.Second, QueryTimeout: time.Second, LeaseDuration: lease},
		Engine:  func(c *engine.Config) { c.LeaseRenewInterval = interval },
	})
	// Each probe reads a show of its own: a read that drops a lapsed show
	// must not hide another read that would answer.
	kinds := []string{"GetSeatMap", "GetReservation", "WatchSeatMap", "Pipeline"}
	holds := map[string]string{}
	for _, k := range kinds {
		n.CreateShow(t, "cut-"+k, 1, 4, 0)
		h, err := hold(t, n, "cut-"+k, "u", "A-1")
		if err != nil {
			t.Fatal(err)
		}
		holds[k] = h.GetHoldId()
	}
	p := openPipe(t, n.Reservations)
	var callID atomic.Uint64

	// Each probe reports whether it was answered from memory.
	probes := map[string]func(ctx context.Context) bool{
		"GetSeatMap": func(ctx context.Context) bool {
			_, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "cut-GetSeatMap"})
			return err == nil
		},
		"GetReservation": func(ctx context.Context) bool {
			_, err := n.Reservations.GetReservation(ctx, &pb.GetReservationRequest{HoldId: holds["GetReservation"]})
			return err == nil
		},
		"WatchSeatMap": func(ctx context.Context) bool {
			s, err := n.Reservations.WatchSeatMap(ctx, &pb.WatchSeatMapRequest{ShowId: "cut-WatchSeatMap"})
			if err != nil {
				return false
			}
			_, err = s.Recv()
			return err == nil
		},
		"Pipeline": func(ctx context.Context) bool {
			id := callID.Add(1)
			p.send(&pb.PipelineCall{CallId: id, Timeout: durationpb.New(2 * time.Second),
				Call: &pb.PipelineCall_Hold{Hold: &pb.HoldSeatsRequest{ShowId: "cut-Pipeline", UserId: "v", SeatIds: []string{"A-1"}}}})
			for ctx.Err() == nil {
				if a := p.answers(id); len(a) > 0 {
					return a[0].GetError().GetReason() == "SEATS_TAKEN"
				}
				time.Sleep(5 * time.Millisecond)
			}
			return false
		},
	}
	probe := func() (started time.Time, fromMemory map[string]bool) {
		started = time.Now()
		fromMemory = map[string]bool{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, f := range probes {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 3*time.Second)
				defer cancel()
				ok := f(ctx)
				mu.Lock()
				fromMemory[name] = ok
				mu.Unlock()
			})
		}
		wg.Wait()
		return started, fromMemory
	}
	if _, got := probe(); len(got) != len(probes) || slices.Contains(slices.Collect(maps.Values(got)), false) {
		t.Fatalf("before the cut, answered from memory: %v, want every probe", got)
	}

	// A watcher of a show of its own, whose stream must end once the lease
	// may have run out, as soon as the node's try to load the show again
	// (bounded by the query timeout) fails: the end is the replica's sign
	// that its map may no longer be current.
	n.CreateShow(t, "cut-watcher", 1, 4, 0)
	ws, err := n.Reservations.WatchSeatMap(tc.Ctx(t.Context()), &pb.WatchSeatMapRequest{ShowId: "cut-watcher"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	watchEnded := make(chan time.Time, 1)
	go func() {
		for {
			if _, err := ws.Recv(); err != nil {
				watchEnded <- time.Now()
				return
			}
		}
	}()

	px.BlackHole()
	end := time.Now().Add(lease) // no lease the node holds runs later than this
	lastAnswered := map[string]time.Time{}
	for time.Now().Before(end.Add(3 * time.Second)) {
		started, got := probe()
		for name, ok := range got {
			if !ok {
				continue
			}
			lastAnswered[name] = started
			if started.After(end) {
				t.Errorf("%s started %v after the lease's end was answered from memory", name, started.Sub(end).Round(time.Millisecond))
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for name := range probes {
		t.Logf("%s: the last probe answered from memory started %v from the lease's end", name, lastAnswered[name].Sub(end).Round(time.Millisecond))
	}

	select {
	case at := <-watchEnded:
		t.Logf("the watch stream opened before the cut ended %v from the lease's end", at.Sub(end).Round(time.Millisecond))
		if late := at.Sub(end); late > 2*time.Second {
			t.Errorf("the watch stream opened before the cut ended %v after the lease's end, want within the reload's query timeout (1 s) and a margin", late)
		}
	default:
		t.Errorf("the watch stream opened before the cut is still open %v after the lease's end", time.Since(end).Round(time.Millisecond))
	}

	px.Lift()
	for _, k := range kinds {
		pollUntil(t, 20*time.Second, k+" served again", func() bool {
			ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 3*time.Second)
			defer cancel()
			r, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "cut-" + k})
			return err == nil && r.GetHeld() == 1
		})
	}
}
