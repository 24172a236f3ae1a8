package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// Shape of the waitlist crash test.
const (
	wlCrashShow      = "crash-waitlist"
	wlCrashRows      = 6
	wlCrashRowSeats  = 100 // 600 seats, every one held by the holders before anyone joins
	wlCrashHolders   = 60  // 10 seats each, the most one user may hold
	wlCrashHoldSize  = 10
	wlCrashWaiters   = 500
	wlCrashReleased  = 3 // holds released before the snapshot: their 30 seats go to the head of the queue
	wlCrashWorkers   = 32
	wlCrashOpWorkers = 6 // clients of the operations in flight at the kill

	// Operations in flight at the kill, taken in order from one list: new
	// joins and leaves of waiting users, shuffled, with releases at fixed
	// places near where the kill comes (after wlCrashKillAfter answers).
	wlCrashLateJoins  = 40
	wlCrashLateLeaves = 30
	wlCrashKillAfter  = 18

	wlCrashPhaseTimeout = 45 * time.Second // bounds each phase's calls
	wlCrashTurnTimeout  = 20 * time.Second // for a stream to show a turn
)

// wlCrashLateReleaseAt are the places of the in-flight list's releases, of
// holds wlCrashReleased, wlCrashReleased+1, ...
var wlCrashLateReleaseAt = []int{19, 22, 25}

// TestCrashWaitlist is the acceptance test of the waitlist's durability:
// with every seat of a show held, 500 users join its waitlist and some of
// them hold turns (seats released before were offered to them); the built
// binary is killed with kill -9 while more joins, leaves and releases are
// in flight, and started again on the same database. Then every waiting
// user whose join was acknowledged is there with the same sequence, so in
// the same order, and positions that count the users ahead; every turn
// offers the same seats until the same deadline, to the microsecond; the
// seat map's offered seats are the turns' and the set-aside ones, and its
// waiting count is the users on the waitlist; what PostgreSQL holds agrees;
// and WatchWaitlist streams, cut by the kill, open again, answer the same
// entry first, and show the next user its turn when another hold is
// released. Operations cut off by the kill may or may not have landed: the
// checks allow both for exactly the users (and holds) they touch, and
// nothing for operations never sent.
func TestCrashWaitlist(t *testing.T) {
	start := time.Now()
	bin := buildBinary(t)
	t.Logf("binary built (or reused) in %s", time.Since(start).Round(time.Millisecond))
	url := pgclustertest.Shared(t)
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(db.Close)

	first := startServe(t, bin, serveOptions{DatabaseURL: url, NodeID: "crash-wl-1", Migrate: true})
	conn := dialServe(t, first)
	rs, ws := pb.NewReservationServiceClient(conn), pb.NewWaitlistServiceClient(conn)
	adminCtx, cancel := context.WithTimeout(tc.AdminCtx(t.Context()), wlCrashPhaseTimeout)
	_, err = pb.NewCatalogServiceClient(conn).CreateShow(adminCtx, tc.ShowRequest(wlCrashShow, wlCrashRows, wlCrashRowSeats, time.Hour))
	cancel()
	if err != nil {
		t.Fatalf("CreateShow: %v", err)
	}
	ctx, cancel := context.WithTimeout(tc.Ctx(t.Context()), wlCrashPhaseTimeout)
	defer cancel()

	// Every seat held: holder i holds the i-th ten seats.
	phase := time.Now()
	holds := make([]wlHold, wlCrashHolders)
	if err := wlParallel(wlCrashHolders, wlCrashWorkers, func(i int) error {
		h := wlHold{User: fmt.Sprintf("wl-holder-%02d", i)}
		for n := range wlCrashHoldSize {
			h.Seats = append(h.Seats, tc.SeatID(i*wlCrashHoldSize/wlCrashRowSeats, i*wlCrashHoldSize%wlCrashRowSeats+n+1))
		}
		resp, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: wlCrashShow, UserId: h.User, SeatIds: h.Seats, IdempotencyKey: "hold-" + h.User})
		if err != nil {
			return fmt.Errorf("HoldSeats %s %v: %v", h.User, h.Seats, err)
		}
		h.ID, h.Seats = resp.GetHoldId(), sortedCopy(h.Seats)
		holds[i] = h
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sm := wlSeatMap(t, ctx, rs)
	if sm.GetAvailable() != 0 || sm.GetHeld() != wlCrashHolders*wlCrashHoldSize {
		t.Fatalf("after the holds: %d available, %d held; want 0 and %d", sm.GetAvailable(), sm.GetHeld(), wlCrashHolders*wlCrashHoldSize)
	}

	// 500 users join at once, each acknowledged.
	rng := rand.New(rand.NewPCG(7, 0x5eed))
	users := make([]string, wlCrashWaiters)
	wanted := map[string]int32{}
	for i := range users {
		users[i] = fmt.Sprintf("wl-u%03d", i)
		wanted[users[i]] = 1 + rng.Int32N(2)
	}
	joined := make([]wlEntry, len(users))
	if err := wlParallel(len(users), wlCrashWorkers, func(i int) error {
		u := users[i]
		resp, err := ws.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: wlCrashShow, UserId: u, SeatsWanted: wanted[u]})
		if err != nil {
			return fmt.Errorf("JoinWaitlist %s: %v", u, err)
		}
		e := wlEntryOf(resp.GetEntry())
		if resp.GetExisted() || e.User != u || e.State != pb.WaitlistState_WAITLIST_STATE_WAITING || e.Wanted != wanted[u] || e.Seq <= 0 {
			return fmt.Errorf("JoinWaitlist %s wanting %d answered existed %v, %s", u, wanted[u], resp.GetExisted(), e)
		}
		joined[i] = e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// queue is the users in join order, as the sequences the joins answered.
	slices.SortFunc(joined, func(a, b wlEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	queue := make([]string, len(joined))
	for i, e := range joined {
		queue[i] = e.User
		if i > 0 && e.Seq == joined[i-1].Seq {
			t.Fatalf("%s and %s joined with the same sequence %d", joined[i-1].User, e.User, e.Seq)
		}
	}
	t.Logf("%d holds and %d joins acknowledged in %s", len(holds), len(users), time.Since(phase).Round(time.Millisecond))

	// Three holds released: their 30 seats give the head of the queue its
	// turns, in join order, as long as they suffice; what is left over is
	// set aside for the next user.
	released := map[string]bool{}
	for _, h := range holds[:wlCrashReleased] {
		resp, err := rs.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.ID, UserId: h.User})
		if err != nil || resp.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_RELEASED {
			t.Fatalf("ReleaseHold %s: %v, %v", h.ID, resp.GetReservation(), err)
		}
		for _, s := range h.Seats {
			released[s] = true
		}
	}
	turns, offeredSeats := 0, 0
	for turns < len(queue) && offeredSeats+int(wanted[queue[turns]]) <= len(released) {
		offeredSeats += int(wanted[queue[turns]])
		turns++
	}
	asideWant := len(released) - offeredSeats

	// The snapshot: every entry as the engine answers it, nothing in flight.
	snap := wlPollAll(t, ctx, ws, queue)
	snapAt := time.Now()
	var problems []string
	var lastOffer time.Time
	turnSeats := map[string]string{}
	for i, u := range queue {
		e := snap[u]
		switch {
		case e == nil:
			problems = append(problems, fmt.Sprintf("%s: acknowledged join, not on the waitlist", u))
		case i < turns:
			if p := wlTurnProblem(*e, wanted[u], turnSeats); p != "" {
				problems = append(problems, fmt.Sprintf("%s, %d in line: %s", u, i, p))
			}
			for _, s := range e.Seats {
				if !released[s] {
					problems = append(problems, fmt.Sprintf("%s: offered %s, not a released seat", u, s))
				}
			}
			lastOffer = wlLater(lastOffer, e.OfferedAt)
		case e.State != pb.WaitlistState_WAITLIST_STATE_WAITING || e.Position != int32(i-turns):
			problems = append(problems, fmt.Sprintf("%s, %d in line after %d turns: %s, want WAITING at position %d", u, i, turns, e, i-turns))
		}
	}
	wlReport(t, "before the kill", problems)
	sm = wlSeatMap(t, ctx, rs)
	aside := wlAside(sm, turnSeats)
	if sm.GetOffered() != int32(len(released)) || sm.GetHeld() != int32((wlCrashHolders-wlCrashReleased)*wlCrashHoldSize) ||
		sm.GetAvailable() != 0 || sm.GetWaiting() != int32(len(queue)) || len(aside) != asideWant {
		t.Fatalf("before the kill: seat map %d offered (%d set aside), %d held, %d available, %d waiting; want %d (%d), %d, 0, %d",
			sm.GetOffered(), len(aside), sm.GetHeld(), sm.GetAvailable(), sm.GetWaiting(),
			len(released), asideWant, (wlCrashHolders-wlCrashReleased)*wlCrashHoldSize, len(queue))
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("snapshot: %d turns offering %d seats, %d set aside, %d waiting", turns, offeredSeats, len(aside), len(queue)-turns)

	// Streams open at the kill: a turn, the head of the queue, one further
	// back. Each answers its entry first.
	streamed := []string{queue[0], queue[turns], queue[turns+200]}
	streamCtx, cancelStreams := context.WithTimeout(tc.Ctx(t.Context()), wlCrashPhaseTimeout)
	defer cancelStreams()
	var cut []pb.WaitlistService_WatchWaitlistClient
	for _, u := range streamed {
		s, err := ws.WatchWaitlist(streamCtx, &pb.WatchWaitlistRequest{ShowId: wlCrashShow, UserId: u})
		if err != nil {
			t.Fatalf("WatchWaitlist %s: %v", u, err)
		}
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("WatchWaitlist %s: first message: %v", u, err)
		}
		if got := wlEntryOf(m.GetEntry()); got.diff(*snap[u], true) != "" {
			t.Fatalf("WatchWaitlist %s answered %s first, PollWaitlist %s", u, got, snap[u])
		}
		cut = append(cut, s)
	}

	// The operations in flight at the kill.
	var leaveOf []string // leave targets: waiting users from 30 behind the head on, none of them streamed
	for i := turns + 30; len(leaveOf) < wlCrashLateLeaves && i < len(queue); i += 14 {
		if !slices.Contains(streamed, queue[i]) {
			leaveOf = append(leaveOf, queue[i])
		}
	}
	var ops []wlOp
	for i := range wlCrashLateJoins {
		u := fmt.Sprintf("wl-late-%02d", i)
		wanted[u] = 1 + rng.Int32N(2)
		ops = append(ops, wlOp{Kind: "join", User: u, Wanted: wanted[u]})
	}
	for _, u := range leaveOf {
		ops = append(ops, wlOp{Kind: "leave", User: u})
	}
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	for i, at := range wlCrashLateReleaseAt {
		h := holds[wlCrashReleased+i]
		ops = slices.Insert(ops, at, wlOp{Kind: "release", User: h.User, Hold: h})
	}
	// A gate at COMMIT of the waitlist's writes, open until just before the
	// kill: closed then, the writes that reach it are in flight for sure
	// when the node dies (without it, the kill could land after every
	// operation in flight had been answered).
	for _, q := range []string{
		`CREATE FUNCTION wl_crash_gate() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN PERFORM pg_advisory_xact_lock_shared(4243); RETURN NULL; END $$`,
		`CREATE CONSTRAINT TRIGGER wl_crash_gate AFTER INSERT OR UPDATE OR DELETE ON waitlist_entries
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION wl_crash_gate()`,
	} {
		if _, err := db.Exec(t.Context(), q); err != nil {
			t.Fatalf("commit gate: %v", err)
		}
	}
	gate, err := db.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Release()
	late := startWLOps(ws, rs, ops)
	t.Cleanup(late.wait)
	pollFor(t, wlCrashPhaseTimeout, func() error {
		if err := late.firstError(); err != nil {
			t.Fatalf("before the kill: %v", err)
		}
		if n := late.acked.Load(); n < wlCrashKillAfter {
			return fmt.Errorf("%d of %d operations answered, want %d", n, len(ops), wlCrashKillAfter)
		}
		return nil
	})
	if _, err := gate.Exec(t.Context(), `SELECT pg_advisory_lock(4243)`); err != nil {
		t.Fatal(err)
	}
	pollFor(t, wlCrashPhaseTimeout, func() error {
		var n int
		if err := db.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND query ILIKE 'commit' AND wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return fmt.Errorf("no waitlist write waiting at the gate (%d operations answered)", late.acked.Load())
		}
		return nil
	})
	late.killed.Store(true)
	inFlight := late.inFlight.Load()
	first.Kill(t)
	// Open the gate and take it away: the writes held at it commit or
	// not, as a COMMIT in flight at a crash does.
	for _, q := range []string{`SELECT pg_advisory_unlock(4243)`, `DROP TRIGGER wl_crash_gate ON waitlist_entries`, `DROP FUNCTION wl_crash_gate()`} {
		if _, err := gate.Exec(t.Context(), q); err != nil {
			t.Fatalf("commit gate: %v", err)
		}
	}
	late.wait()
	if err := late.firstError(); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	var nAcked, nCut, nUnsent int
	for i := range ops {
		switch late.outcome[i] {
		case wlAcked:
			nAcked++
		case wlCutOff:
			nCut++
		default:
			nUnsent++
		}
	}
	t.Logf("killed pid %d with %d operations in flight: %d answered, %d cut off, %d never sent (releases: %s)",
		first.cmd.Process.Pid, inFlight, nAcked, nCut, nUnsent, late.releaseOutcomes())
	if nCut == 0 {
		t.Errorf("no operation was cut off by the kill: nothing was in flight")
	}
	for i, s := range cut {
		if err := wlDrain(s); err == nil || errors.Is(err, io.EOF) {
			t.Errorf("WatchWaitlist %s across the kill ended with %v, want an error", streamed[i], err)
		}
	}

	// The restart, on the same database.
	phase = time.Now()
	second := startServe(t, bin, serveOptions{DatabaseURL: url, NodeID: "crash-wl-1"})
	t.Logf("restarted serve ready in %s", time.Since(phase).Round(time.Millisecond))
	conn2 := dialServe(t, second)
	rs, ws = pb.NewReservationServiceClient(conn2), pb.NewWaitlistServiceClient(conn2)
	ctx2, cancel2 := context.WithTimeout(tc.Ctx(t.Context()), wlCrashPhaseTimeout)
	defer cancel2()
	sm2 := wlSeatMap(t, ctx2, rs) // loads the show
	everyone := slices.Clone(queue)
	for _, op := range ops {
		if op.Kind == "join" {
			everyone = append(everyone, op.User)
		}
	}
	after := wlPollAll(t, ctx2, ws, everyone)

	// Which in-flight releases landed, from PostgreSQL.
	stored := dbShowReservations(t, ctx2, db, wlCrashShow)
	landed := 0
	problems = nil
	for i, op := range ops {
		if op.Kind != "release" {
			continue
		}
		st := stored[op.Hold.ID].Status
		switch {
		case st == "RELEASED":
			landed++
			if late.outcome[i] == wlUnsent {
				problems = append(problems, fmt.Sprintf("hold %s RELEASED, but its release was never sent", op.Hold.ID))
			}
		case st != "HELD":
			problems = append(problems, fmt.Sprintf("hold %s is %q, want HELD or RELEASED", op.Hold.ID, st))
		case late.outcome[i] == wlAcked:
			problems = append(problems, fmt.Sprintf("hold %s HELD, but its release was acknowledged", op.Hold.ID))
		}
	}
	outcomeOf := map[string]wlOutcome{}
	for i, op := range ops {
		outcomeOf[op.Kind+" "+op.User] = late.outcome[i]
	}

	// Every entry of the snapshot, and of the joins in flight.
	maxSeq := joined[len(joined)-1].Seq
	var waiting, turned []wlEntry
	present := map[string]bool{}
	newTurns := 0
	turnSeats = map[string]string{}
	for _, u := range everyone {
		e, was := after[u], snap[u]
		if e != nil {
			present[u] = true
			if e.State == pb.WaitlistState_WAITLIST_STATE_WAITING {
				waiting = append(waiting, *e)
			} else {
				turned = append(turned, *e)
			}
		}
		switch {
		case was != nil && was.State == pb.WaitlistState_WAITLIST_STATE_TURN:
			if e == nil {
				problems = append(problems, fmt.Sprintf("%s: turn %s lost", u, was))
			} else if d := e.diff(*was, false); d != "" {
				problems = append(problems, fmt.Sprintf("%s: turn %s, after the restart %s: %s", u, was, e, d))
			} else if p := wlTurnProblem(*e, wanted[u], turnSeats); p != "" {
				problems = append(problems, fmt.Sprintf("%s: turn after the restart: %s", u, p))
			}
			continue
		case was != nil: // waiting at the snapshot
			switch leave := outcomeOf["leave "+u]; {
			case e == nil && leave == wlAcked, e == nil && leave == wlCutOff:
				continue
			case e == nil:
				problems = append(problems, fmt.Sprintf("%s: acknowledged join (%s), not on the waitlist", u, was))
				continue
			case leave == wlAcked:
				problems = append(problems, fmt.Sprintf("%s: acknowledged leave, still on the waitlist: %s", u, e))
				continue
			}
			// Its join as it was; a turn given since is checked below.
			same := *e
			if e.State == pb.WaitlistState_WAITLIST_STATE_TURN {
				same.State, same.Seats, same.OfferedAt, same.TurnDeadline = was.State, was.Seats, was.OfferedAt, was.TurnDeadline
			}
			if d := same.durableDiff(*was); d != "" {
				problems = append(problems, fmt.Sprintf("%s: %s before the kill, %s after: %s", u, was, e, d))
				continue
			}
		default: // a join in flight
			switch join := outcomeOf["join "+u]; {
			case e == nil && join == wlAcked:
				problems = append(problems, fmt.Sprintf("%s: acknowledged join (%s), not on the waitlist", u, late.joinAnswer(u)))
				continue
			case e == nil:
				continue
			case join == wlUnsent:
				problems = append(problems, fmt.Sprintf("%s: never joined, on the waitlist: %s", u, e))
				continue
			case join == wlAcked && e.Seq != late.joinAnswer(u).Seq:
				problems = append(problems, fmt.Sprintf("%s: joined as %s, after the restart %s", u, late.joinAnswer(u), e))
				continue
			case e.Seq <= maxSeq || e.Wanted != wanted[u]:
				problems = append(problems, fmt.Sprintf("%s: joined after sequence %d wanting %d, after the restart %s", u, maxSeq, wanted[u], e))
				continue
			}
		}
		if e.State == pb.WaitlistState_WAITLIST_STATE_TURN { // a turn given by an operation in flight
			newTurns++
			if p := wlTurnProblem(*e, e.Wanted, turnSeats); p != "" {
				problems = append(problems, fmt.Sprintf("%s: new turn: %s", u, p))
			}
			if !e.OfferedAt.After(snapAt.Add(-time.Second)) || e.OfferedAt.Before(lastOffer) {
				problems = append(problems, fmt.Sprintf("%s: new turn offered at %s, before the snapshot (%s, last turn offered at %s)",
					u, e.OfferedAt, snapAt, lastOffer))
			}
		} else if e.State != pb.WaitlistState_WAITLIST_STATE_WAITING {
			problems = append(problems, fmt.Sprintf("%s: %s, want WAITING or TURN", u, e))
		}
	}

	// Order: the waiting users' positions count those ahead by sequence,
	// turns went to users ahead of every waiting one, and a waiting user of
	// the snapshot is as far back as before minus the users ahead of it who
	// left or got a turn.
	slices.SortFunc(waiting, func(a, b wlEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	for i, e := range waiting {
		if e.Position != int32(i) {
			problems = append(problems, fmt.Sprintf("%s: position %d, but %d waiting users have smaller sequences", e.User, e.Position, i))
		}
	}
	for _, e := range turned {
		if len(waiting) > 0 && e.Seq > waiting[0].Seq {
			problems = append(problems, fmt.Sprintf("%s holds a turn (%s) behind %s, who waits (%s)", e.User, e, waiting[0].User, waiting[0]))
		}
	}
	gone, samePosition := 0, 0
	for _, u := range queue[turns:] {
		e := after[u]
		if e == nil || e.State != pb.WaitlistState_WAITLIST_STATE_WAITING {
			gone++
			continue
		}
		if want := snap[u].Position - int32(gone); e.Position != want {
			problems = append(problems, fmt.Sprintf("%s: position %d, want %d (%d before the kill, %d ahead left or got a turn)",
				u, e.Position, want, snap[u].Position, gone))
		} else if gone == 0 {
			samePosition++
		}
	}

	// The seat map: offered seats are the turns' and the set-aside ones,
	// every released seat went to the waitlist, and the waiting count is
	// the users on it.
	aside2 := wlAside(sm2, turnSeats)
	for s := range turnSeats {
		if wlSeatStatus(sm2)[s] != pb.SeatStatus_SEAT_STATUS_OFFERED {
			problems = append(problems, fmt.Sprintf("turn seat %s (%s) is %v in the seat map", s, turnSeats[s], wlSeatStatus(sm2)[s]))
		}
	}
	for i, op := range ops {
		if op.Kind != "release" || stored[op.Hold.ID].Status != "RELEASED" {
			continue
		}
		var free []string
		for _, s := range op.Hold.Seats {
			if wlSeatStatus(sm2)[s] == pb.SeatStatus_SEAT_STATUS_AVAILABLE {
				free = append(free, s)
			}
		}
		if len(free) > 0 {
			names := [...]string{wlUnsent: "never sent", wlAcked: "answered", wlCutOff: "cut off by the kill"}
			problems = append(problems, fmt.Sprintf("hold %s is RELEASED (its release %s) and its seats %v are AVAILABLE to anyone, "+
				"with %d users waiting: the release committed without handing its seats to the waitlist", op.Hold.ID, names[late.outcome[i]], free, len(present)))
		}
	}
	wantOffered := len(released) + landed*wlCrashHoldSize
	wantHeld := (wlCrashHolders - wlCrashReleased - landed) * wlCrashHoldSize
	if sm2.GetOffered() != int32(len(turnSeats)+len(aside2)) || sm2.GetOffered() != int32(wantOffered) ||
		sm2.GetHeld() != int32(wantHeld) || sm2.GetAvailable() != 0 || sm2.GetWaiting() != int32(len(present)) {
		problems = append(problems, fmt.Sprintf("seat map: %d offered, %d held, %d available, %d on the waitlist; want %d offered "+
			"(%d in %d turns + %d set aside), %d held (%d in-flight releases landed), 0 available, %d on the waitlist",
			sm2.GetOffered(), sm2.GetHeld(), sm2.GetAvailable(), sm2.GetWaiting(), wantOffered, len(turnSeats), len(turned), len(aside2),
			wantHeld, landed, len(present)))
	}
	if len(waiting) > 0 && len(aside2) >= int(waiting[0].Wanted) {
		problems = append(problems, fmt.Sprintf("%d seats set aside %v, but the head %s wants only %d", len(aside2), aside2, waiting[0].User, waiting[0].Wanted))
	}

	// PostgreSQL agrees with what the engine answers.
	problems = append(problems, wlVersusDB(t, ctx2, db, after, aside2)...)
	wlReport(t, "after the restart", problems)
	t.Logf("after the restart: %d turns (%d new), %d waiting, %d set aside; %d waiting users kept their position exactly, %d moved up",
		len(turned), newTurns, len(waiting), len(aside2), samePosition, len(queue)-turns-gone-samePosition)
	if len(waiting) < 2 {
		t.Fatalf("after the restart only %d users wait", len(waiting))
	}

	// Streams open again: the users streamed across the kill, the head of
	// the queue and one halfway back. Each answers its entry first; then a
	// released hold gives the head its turn, on its stream, and moves the
	// others up.
	streamCtx2, cancelStreams2 := context.WithTimeout(tc.Ctx(t.Context()), wlCrashPhaseTimeout)
	defer cancelStreams2()
	head, mid := waiting[0], waiting[len(waiting)/2]
	watch := map[string]pb.WaitlistService_WatchWaitlistClient{}
	for _, u := range append(slices.Clone(streamed), head.User, mid.User) {
		if _, ok := watch[u]; ok || after[u] == nil {
			continue
		}
		s, err := ws.WatchWaitlist(streamCtx2, &pb.WatchWaitlistRequest{ShowId: wlCrashShow, UserId: u})
		if err != nil {
			t.Fatalf("WatchWaitlist %s after the restart: %v", u, err)
		}
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("WatchWaitlist %s after the restart: first message: %v", u, err)
		}
		if got := wlEntryOf(m.GetEntry()); got.diff(*after[u], true) != "" {
			t.Errorf("WatchWaitlist %s after the restart answered %s first, PollWaitlist %s", u, got, after[u])
		}
		watch[u] = s
	}
	next := holds[wlCrashReleased+len(wlCrashLateReleaseAt)]
	if _, err := rs.ReleaseHold(ctx2, &pb.ReleaseHoldRequest{HoldId: next.ID, UserId: next.User}); err != nil {
		t.Fatalf("ReleaseHold %s after the restart: %v", next.ID, err)
	}
	turn, err := wlRecvUntil(watch[head.User], wlCrashTurnTimeout, func(e wlEntry) bool { return e.State != pb.WaitlistState_WAITLIST_STATE_WAITING })
	if err != nil {
		t.Fatalf("head %s's stream after the release of %s: %v", head.User, next.ID, err)
	}
	usable := map[string]bool{}
	for _, s := range next.Seats {
		usable[s] = true
	}
	for _, s := range aside2 {
		usable[s] = true
	}
	if p := wlTurnProblem(turn, head.Wanted, map[string]string{}); p != "" || turn.Seq != head.Seq {
		t.Errorf("head %s (%s) after the release of %s: stream answered %s: %s", head.User, head, next.ID, turn, p)
	}
	for _, s := range turn.Seats {
		if !usable[s] {
			t.Errorf("head %s's turn offers %s, neither released just now nor set aside", head.User, s)
		}
	}
	if e := wlPoll(t, ctx2, ws, head.User); e == nil || e.diff(turn, true) != "" {
		t.Errorf("head %s: stream answered %s, PollWaitlist %s", head.User, turn, e)
	}
	moved, err := wlRecvUntil(watch[mid.User], wlCrashTurnTimeout, func(e wlEntry) bool { return e.Position != mid.Position })
	if err != nil || moved.State != pb.WaitlistState_WAITLIST_STATE_WAITING || moved.Position >= mid.Position {
		t.Errorf("%s's stream after the release of %s: %s, %v; want WAITING ahead of position %d", mid.User, next.ID, moved, err, mid.Position)
	}

	// Operations cut off by the kill, tried again: a join that landed
	// answers its entry as existing, one that did not joins now; a leave
	// that landed finds the user gone.
	for i, op := range ops {
		if late.outcome[i] != wlCutOff || op.Kind == "release" {
			continue
		}
		was := after[op.User]
		switch op.Kind {
		case "join":
			resp, err := ws.JoinWaitlist(ctx2, &pb.JoinWaitlistRequest{ShowId: wlCrashShow, UserId: op.User, SeatsWanted: op.Wanted})
			e := wlEntryOf(resp.GetEntry())
			if status.Code(err) == codes.FailedPrecondition && sm2.GetAvailable() > 0 {
				t.Logf("retried join of %s refused, the seats left available by the lost hand-over (reported above): %v", op.User, err)
				continue
			}
			if err != nil || resp.GetExisted() != (was != nil) || (was != nil && e.Seq != was.Seq) || (was == nil && e.Seq <= maxSeq) {
				t.Errorf("retried join of %s (on the waitlist after the restart: %v): existed %v, %s, %v", op.User, was, resp.GetExisted(), e, err)
			}
		case "leave":
			resp, err := ws.LeaveWaitlist(ctx2, &pb.LeaveWaitlistRequest{ShowId: wlCrashShow, UserId: op.User})
			if was != nil && (err != nil || resp.GetEntry().GetState() != pb.WaitlistState_WAITLIST_STATE_LEFT) {
				t.Errorf("retried leave of %s, on the waitlist after the restart: %v, %v", op.User, resp.GetEntry(), err)
			}
			if was == nil && status.Code(err) != codes.NotFound {
				t.Errorf("retried leave of %s, not on the waitlist after the restart: %v, %v; want NotFound", op.User, resp.GetEntry(), err)
			}
		}
	}
	t.Logf("the head's turn came on its reopened stream; %d cut-off operations retried; %s in all",
		nCut, time.Since(start).Round(time.Millisecond))
}

// wlHold is an acknowledged hold.
type wlHold struct {
	ID, User string
	Seats    []string // sorted
}

// wlEntry is a waitlist entry as answered, with times as time.Time and the
// turn's seats sorted.
type wlEntry struct {
	User                    string
	State                   pb.WaitlistState
	Seq                     int64
	Wanted, Position        int32
	JoinedAt, Deadline      time.Time
	Seats                   []string // the turn's
	OfferedAt, TurnDeadline time.Time
}

func wlEntryOf(e *pb.WaitlistEntry) wlEntry {
	w := wlEntry{User: e.GetUserId(), State: e.GetState(), Seq: e.GetSequence(), Wanted: e.GetSeatsWanted(), Position: e.GetPosition()}
	if e.GetJoinedAt() != nil {
		w.JoinedAt = e.GetJoinedAt().AsTime()
	}
	if e.GetDeadline() != nil {
		w.Deadline = e.GetDeadline().AsTime()
	}
	if t := e.GetTurn(); t != nil {
		w.Seats = sortedCopy(t.GetSeatIds())
		if t.GetOfferedAt() != nil {
			w.OfferedAt = t.GetOfferedAt().AsTime()
		}
		if t.GetDeadline() != nil {
			w.TurnDeadline = t.GetDeadline().AsTime()
		}
	}
	return w
}

func (e wlEntry) String() string {
	s := fmt.Sprintf("%s seq %d wanting %d", strings.TrimPrefix(e.State.String(), "WAITLIST_STATE_"), e.Seq, e.Wanted)
	if e.State == pb.WaitlistState_WAITLIST_STATE_WAITING {
		s += fmt.Sprintf(" at position %d", e.Position)
	}
	if len(e.Seats) > 0 {
		s += fmt.Sprintf(" offered %v at %s until %s", e.Seats, e.OfferedAt.Format(time.StampMicro), e.TurnDeadline.Format(time.StampMicro))
	}
	return s
}

// durableDiff describes how e differs from was in what a restart must
// keep: state, sequence, seats wanted, join time and deadline, and the
// turn's seats, offer time and deadline, all to the microsecond. "" if in
// nothing.
func (e wlEntry) durableDiff(was wlEntry) string {
	var d []string
	if e.State != was.State {
		d = append(d, fmt.Sprintf("state %v, was %v", e.State, was.State))
	}
	if e.Seq != was.Seq || e.Wanted != was.Wanted {
		d = append(d, fmt.Sprintf("sequence %d wanting %d, was %d wanting %d", e.Seq, e.Wanted, was.Seq, was.Wanted))
	}
	for _, tm := range []struct {
		what     string
		got, was time.Time
	}{{"joined at", e.JoinedAt, was.JoinedAt}, {"deadline", e.Deadline, was.Deadline},
		{"offered at", e.OfferedAt, was.OfferedAt}, {"turn deadline", e.TurnDeadline, was.TurnDeadline}} {
		if !tm.got.Equal(tm.was) {
			d = append(d, fmt.Sprintf("%s %s, was %s", tm.what, tm.got.Format(time.RFC3339Nano), tm.was.Format(time.RFC3339Nano)))
		}
	}
	if !slices.Equal(e.Seats, was.Seats) {
		d = append(d, fmt.Sprintf("turn seats %v, were %v", e.Seats, was.Seats))
	}
	return strings.Join(d, "; ")
}

// diff is durableDiff and, if position, the position.
func (e wlEntry) diff(was wlEntry, position bool) string {
	d := e.durableDiff(was)
	if position && e.Position != was.Position {
		d += fmt.Sprintf("; position %d, was %d", e.Position, was.Position)
	}
	return d
}

// wlTurnProblem checks that e is a turn of wanted seats, none of them in
// seats (the seats of other turns, to whom), with a deadline an offer
// window or more after its offer; it adds e's seats to seats, and
// describes what is wrong ("" if nothing).
func wlTurnProblem(e wlEntry, wanted int32, seats map[string]string) string {
	var bad []string
	if e.State != pb.WaitlistState_WAITLIST_STATE_TURN || len(e.Seats) != int(wanted) {
		bad = append(bad, fmt.Sprintf("%s, want TURN offering %d seats", e, wanted))
	}
	if e.TurnDeadline.Before(e.OfferedAt.Add(wu.DefaultOfferWindow)) || e.OfferedAt.IsZero() {
		bad = append(bad, fmt.Sprintf("offered at %s until %s, less than the offer window %s", e.OfferedAt, e.TurnDeadline, wu.DefaultOfferWindow))
	}
	for _, s := range e.Seats {
		if other, ok := seats[s]; ok {
			bad = append(bad, fmt.Sprintf("seat %s offered to %s too", s, other))
		}
		seats[s] = e.User
	}
	return strings.Join(bad, "; ")
}

// wlOutcome is what became of an operation in flight at the kill.
type wlOutcome uint8

const (
	wlUnsent wlOutcome = iota // never sent: it must not have landed
	wlAcked                   // answered: it landed
	wlCutOff                  // sent, and its answer lost to the kill: it may or may not have landed
)

// wlOp is an operation of the in-flight phase: a join of a new user, a
// leave of a waiting user, or a release of a hold.
type wlOp struct {
	Kind   string // "join", "leave", "release"
	User   string
	Wanted int32  // of a join
	Hold   wlHold // of a release
}

// wlOps runs a list of operations, in order, on a few clients until the
// list ends or the kill; it records each one's outcome.
type wlOps struct {
	ws       pb.WaitlistServiceClient
	rs       pb.ReservationServiceClient
	ops      []wlOp
	next     atomic.Int64 // the next operation to send
	killed   atomic.Bool  // set just before SIGKILL is sent
	inFlight atomic.Int64 // sent and not yet answered
	acked    atomic.Int64
	wg       sync.WaitGroup

	mu      sync.Mutex // guards the fields below, until wait returns
	outcome []wlOutcome
	joins   map[string]wlEntry // the answers of acknowledged joins
	errs    []error            // unexpected answers before the kill
}

func startWLOps(ws pb.WaitlistServiceClient, rs pb.ReservationServiceClient, ops []wlOp) *wlOps {
	l := &wlOps{ws: ws, rs: rs, ops: ops, outcome: make([]wlOutcome, len(ops)), joins: map[string]wlEntry{}}
	for range wlCrashOpWorkers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client()
		}()
	}
	return l
}

// client sends operations until the list ends, the kill, or a failure;
// after a cut-off call it stops, the server being gone.
func (l *wlOps) client() {
	ctx := tc.Ctx(context.Background())
	for !l.killed.Load() {
		i := int(l.next.Add(1) - 1)
		if i >= len(l.ops) {
			return
		}
		l.mu.Lock()
		l.outcome[i] = wlCutOff // until answered
		l.mu.Unlock()
		l.inFlight.Add(1)
		entry, err := l.send(ctx, l.ops[i])
		l.inFlight.Add(-1)
		l.mu.Lock()
		switch {
		case err == nil:
			l.outcome[i] = wlAcked
			if l.ops[i].Kind == "join" {
				l.joins[l.ops[i].User] = entry
			}
		case !l.killed.Load():
			l.errs = append(l.errs, err)
		}
		l.mu.Unlock()
		if err != nil {
			return
		}
		l.acked.Add(1)
	}
}

// send makes op's call and checks its answer.
func (l *wlOps) send(ctx context.Context, op wlOp) (wlEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, wlCrashPhaseTimeout)
	defer cancel()
	switch op.Kind {
	case "join":
		resp, err := l.ws.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: wlCrashShow, UserId: op.User, SeatsWanted: op.Wanted})
		if err != nil {
			return wlEntry{}, fmt.Errorf("JoinWaitlist %s: %w", op.User, err)
		}
		e := wlEntryOf(resp.GetEntry())
		if resp.GetExisted() || e.User != op.User || e.State != pb.WaitlistState_WAITLIST_STATE_WAITING || e.Wanted != op.Wanted {
			return wlEntry{}, fmt.Errorf("JoinWaitlist %s wanting %d answered existed %v, %s", op.User, op.Wanted, resp.GetExisted(), e)
		}
		return e, nil
	case "leave":
		resp, err := l.ws.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: wlCrashShow, UserId: op.User})
		if err != nil {
			return wlEntry{}, fmt.Errorf("LeaveWaitlist %s: %w", op.User, err)
		}
		if e := wlEntryOf(resp.GetEntry()); e.State != pb.WaitlistState_WAITLIST_STATE_LEFT {
			return wlEntry{}, fmt.Errorf("LeaveWaitlist %s answered %s", op.User, e)
		}
		return wlEntry{}, nil
	default:
		resp, err := l.rs.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: op.Hold.ID, UserId: op.Hold.User})
		if err != nil {
			return wlEntry{}, fmt.Errorf("ReleaseHold %s: %w", op.Hold.ID, err)
		}
		if st := resp.GetReservation().GetStatus(); st != pb.ReservationStatus_RESERVATION_STATUS_RELEASED {
			return wlEntry{}, fmt.Errorf("ReleaseHold %s answered %v", op.Hold.ID, st)
		}
		return wlEntry{}, nil
	}
}

// wait waits for the clients; it is idempotent. The outcomes are final
// after it.
func (l *wlOps) wait() { l.wg.Wait() }

func (l *wlOps) firstError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d unexpected answers, the first: %w", len(l.errs), l.errs[0])
}

func (l *wlOps) joinAnswer(user string) wlEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.joins[user]
}

func (l *wlOps) releaseOutcomes() string {
	names := [...]string{wlUnsent: "never sent", wlAcked: "answered", wlCutOff: "cut off"}
	var out []string
	for i, op := range l.ops {
		if op.Kind == "release" {
			out = append(out, fmt.Sprintf("%d. %s", i, names[l.outcome[i]]))
		}
	}
	return strings.Join(out, ", ")
}

// wlParallel calls f(0) ... f(n-1) on workers goroutines and returns their
// errors, the first few.
func wlParallel(n, workers int, f func(i int) error) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex // guards errs
		errs []error
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return errors.Join(errs...)
}

// wlPoll answers user's entry at once; nil if the user is not on the
// waitlist (NotFound).
func wlPoll(t testing.TB, ctx context.Context, ws pb.WaitlistServiceClient, user string) *wlEntry {
	t.Helper()
	resp, err := ws.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: wlCrashShow, UserId: user})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("PollWaitlist %s: %v", user, err)
	}
	e := wlEntryOf(resp.GetEntry())
	if e.User != user {
		t.Fatalf("PollWaitlist %s answered the entry of %s", user, e.User)
	}
	return &e
}

// wlPollAll answers every user's entry; nil for a user not on the
// waitlist.
func wlPollAll(t testing.TB, ctx context.Context, ws pb.WaitlistServiceClient, users []string) map[string]*wlEntry {
	t.Helper()
	got := make([]*wlEntry, len(users))
	if err := wlParallel(len(users), 8, func(i int) error {
		resp, err := ws.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: wlCrashShow, UserId: users[i]})
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err != nil {
			return fmt.Errorf("PollWaitlist %s: %v", users[i], err)
		}
		e := wlEntryOf(resp.GetEntry())
		got[i] = &e
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*wlEntry{}
	for i, u := range users {
		out[u] = got[i]
	}
	return out
}

func wlSeatMap(t testing.TB, ctx context.Context, rs pb.ReservationServiceClient) *pb.GetSeatMapResponse {
	t.Helper()
	sm, err := rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: wlCrashShow, IncludeLayout: true})
	if err != nil {
		t.Fatalf("GetSeatMap: %v", err)
	}
	return sm
}

// wlSeatStatus returns every seat's status in sm, which has its layout.
func wlSeatStatus(sm *pb.GetSeatMapResponse) map[string]pb.SeatStatus {
	out := map[string]pb.SeatStatus{}
	i := 0
	for _, r := range sm.GetRows() {
		for n := 1; n <= int(r.GetSeatCount()) && i < len(sm.GetStatuses()); n++ {
			out[fmt.Sprintf("%s-%d", r.GetLabel(), n)] = pb.SeatStatus(sm.GetStatuses()[i])
			i++
		}
	}
	return out
}

// wlAside returns the OFFERED seats of sm that no turn offers, sorted:
// those set aside for the head of the queue.
func wlAside(sm *pb.GetSeatMapResponse, turnSeats map[string]string) []string {
	var out []string
	for s, st := range wlSeatStatus(sm) {
		if _, ok := turnSeats[s]; st == pb.SeatStatus_SEAT_STATUS_OFFERED && !ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// wlVersusDB compares the entries the engine answers (nil: not on the
// waitlist) and the seats set aside with the show's rows in PostgreSQL,
// and describes the differences.
func wlVersusDB(t testing.TB, ctx context.Context, db *pgxpool.Pool, entries map[string]*wlEntry, aside []string) []string {
	t.Helper()
	rows, _ := db.Query(ctx, `SELECT user_id, seq, seats_wanted, joined_at, deadline, offer_seats, offered_at, offer_deadline
		FROM waitlist_entries WHERE show_id = $1`, wlCrashShow)
	stored := map[string]wlEntry{}
	var (
		e                 wlEntry
		wanted            int32
		offered, deadline *time.Time
	)
	if _, err := pgx.ForEachRow(rows, []any{&e.User, &e.Seq, &wanted, &e.JoinedAt, &e.Deadline, &e.Seats, &offered, &deadline}, func() error {
		e.Wanted, e.State = wanted, pb.WaitlistState_WAITLIST_STATE_WAITING
		if len(e.Seats) > 0 {
			e.State = pb.WaitlistState_WAITLIST_STATE_TURN
		} else {
			e.Seats = nil
		}
		if offered != nil && deadline != nil {
			e.OfferedAt, e.TurnDeadline = *offered, *deadline
		}
		e.Seats = sortedCopy(e.Seats)
		stored[e.User] = e
		e = wlEntry{}
		return nil
	}); err != nil {
		t.Fatalf("waitlist entries of %s: %v", wlCrashShow, err)
	}
	var storedAside []string
	err := db.QueryRow(ctx, `SELECT seat_ids FROM waitlist_aside WHERE show_id = $1`, wlCrashShow).Scan(&storedAside)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("waitlist aside of %s: %v", wlCrashShow, err)
	}

	var diffs []string
	for u, e := range entries {
		s, ok := stored[u]
		switch {
		case e == nil && ok:
			diffs = append(diffs, fmt.Sprintf("postgres: %s has a row (%s), but the engine does not answer it", u, s))
		case e != nil && !ok:
			diffs = append(diffs, fmt.Sprintf("postgres: %s (%s) has no row", u, e))
		case e != nil:
			if d := s.durableDiff(*e); d != "" {
				diffs = append(diffs, fmt.Sprintf("postgres: %s has %s, the engine answers %s: %s", u, s, e, d))
			}
		}
	}
	for u, s := range stored {
		if _, ok := entries[u]; !ok {
			diffs = append(diffs, fmt.Sprintf("postgres: row of %s (%s), a user the test never joined", u, s))
		}
	}
	if storedAside = sortedCopy(storedAside); !slices.Equal(storedAside, aside) {
		diffs = append(diffs, fmt.Sprintf("postgres: seats set aside %v, the seat map's offered seats outside turns %v", storedAside, aside))
	}
	return diffs
}

// wlReport fails the test with problems, if any, the first 40 of them.
func wlReport(t testing.TB, when string, problems []string) {
	t.Helper()
	if len(problems) == 0 {
		return
	}
	n := len(problems)
	if n > 40 {
		problems = append(problems[:40], "...")
	}
	t.Errorf("%s, %d problems:\n%s", when, n, strings.Join(problems, "\n"))
}

// wlDrain reads s until it ends and returns how.
func wlDrain(s pb.WaitlistService_WatchWaitlistClient) error {
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

// wlRecvUntil reads s until an entry satisfies cond, and returns it; an
// error if the stream ends first or timeout passes.
func wlRecvUntil(s pb.WaitlistService_WatchWaitlistClient, timeout time.Duration, cond func(wlEntry) bool) (wlEntry, error) {
	type msg struct {
		e   wlEntry
		err error
	}
	ch := make(chan msg, 1)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				ch <- msg{err: err}
				return
			}
			if e := wlEntryOf(m.GetEntry()); cond(e) {
				ch <- msg{e: e}
				return
			}
		}
	}()
	select {
	case m := <-ch:
		return m.e, m.err
	case <-time.After(timeout):
		return wlEntry{}, fmt.Errorf("no such entry within %s", timeout)
	}
}

func wlLater(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
