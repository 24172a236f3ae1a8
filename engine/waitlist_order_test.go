package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// Tests of the waitlist's order and ends under an injected clock: turns in
// acknowledged join order while 1,000 users join and holds come free in
// waves, lapsed turns passing on, and the SOLD_OUT and TIMED_OUT ends as
// the streams and polls see them.

// createWaitShow creates a show of rows of seatsPerRow seats with the given
// hold TTL, offer window and longest wait (zero: the defaults).
func createWaitShow(t testing.TB, n *tc.Node, id string, rows, seatsPerRow int, ttl, offerWindow, maxWait time.Duration) {
	t.Helper()
	req := tc.ShowRequest(id, rows, seatsPerRow, ttl)
	if offerWindow > 0 {
		req.OfferWindow = durationpb.New(offerWindow)
	}
	if maxWait > 0 {
		req.MaxWait = durationpb.New(maxWait)
	}
	if _, err := n.Catalog.CreateShow(tc.AdminCtx(context.Background()), req); err != nil {
		t.Fatalf("CreateShow %s: %v", id, err)
	}
}

// capped reports the first few failures of a check that may fail once per
// user, then how many there were in all (at Done).
type capped struct {
	t    testing.TB
	what string
	n    int
}

func (c *capped) Errorf(format string, args ...any) {
	c.t.Helper()
	if c.n++; c.n <= 5 {
		c.t.Errorf(c.what+": "+format, args...)
	}
}

func (c *capped) Done() {
	c.t.Helper()
	if c.n > 5 {
		c.t.Errorf("%s: %d failures in all", c.what, c.n)
	}
}

// waitTurnEvent is a WAIT_TURN audit event.
type waitTurnEvent struct {
	ID    int64
	User  string
	Seats []string
}

// dbWaitTurns returns the show's WAIT_TURN events after event afterID, in
// commit order.
func dbWaitTurns(t testing.TB, db *pgxpool.Pool, show string, afterID int64) []waitTurnEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, _ := db.Query(ctx, `SELECT event_id, user_id, seat_ids FROM reservation_events
		WHERE show_id = $1 AND kind = 'WAIT_TURN' AND event_id > $2 ORDER BY event_id`, show, afterID)
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (waitTurnEvent, error) {
		var e waitTurnEvent
		err := r.Scan(&e.ID, &e.User, &e.Seats)
		return e, err
	})
	if err != nil {
		t.Fatalf("WAIT_TURN events of %s: %v", show, err)
	}
	return evs
}

// dbKindCounts returns how many audit events of each kind the show has.
func dbKindCounts(t testing.TB, db *pgxpool.Pool, show string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, e := range dbEvents(t, db, show) {
		out[e.Kind]++
	}
	return out
}

// pollWait long-polls user's entry from version since, for at most wait.
func pollWait(t testing.TB, n *tc.Node, show, user string, since uint64, wait time.Duration) *pb.WaitlistEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), wait+10*time.Second)
	defer cancel()
	r, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: user, SinceVersion: since, Wait: durationpb.New(wait)})
	if err != nil {
		t.Fatalf("poll %s from version %d: %v", user, since, err)
	}
	return r.GetEntry()
}

// watchStream is a WatchWaitlist stream read on a goroutine of its own.
type watchStream struct {
	msgs chan *pb.WaitlistEntry // closed at the stream's end
	err  error                  // the stream's end: nil for io.EOF; read after msgs closes
}

func watch(t testing.TB, n *tc.Node, show, user string) *watchStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), time.Minute)
	t.Cleanup(cancel)
	st, err := n.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: user})
	if err != nil {
		t.Fatalf("watch %s: %v", user, err)
	}
	w := &watchStream{msgs: make(chan *pb.WaitlistEntry, 64)}
	go func() {
		defer close(w.msgs)
		for {
			m, err := st.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					w.err = err
				}
				return
			}
			w.msgs <- m.GetEntry()
		}
	}()
	return w
}

// next returns the stream's next message; nil if the stream ended (then
// w.err says how). It fails the test if none comes within timeout.
func (w *watchStream) next(t testing.TB, timeout time.Duration) *pb.WaitlistEntry {
	t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			return nil
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no watch message within %s", timeout)
		return nil
	}
}

// until reads the stream until a message in state and returns it, failing
// the test if the stream ends or another end state comes first.
func (w *watchStream) until(t testing.TB, user string, state pb.WaitlistState, timeout time.Duration) *pb.WaitlistEntry {
	t.Helper()
	for {
		m := w.next(t, timeout)
		if m == nil {
			t.Fatalf("watch of %s ended (%v) before state %v", user, w.err, state)
		}
		if m.GetState() == state {
			return m
		}
		if m.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING && m.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN {
			t.Fatalf("watch of %s: %v, want %v", user, m, state)
		}
	}
}

// wantEnd reads the stream's last message, which must be in state, and
// then the stream's clean end (io.EOF).
func (w *watchStream) wantEnd(t testing.TB, user string, state pb.WaitlistState) *pb.WaitlistEntry {
	t.Helper()
	m := w.until(t, user, state, 10*time.Second)
	if extra := w.next(t, 10*time.Second); extra != nil {
		t.Fatalf("watch of %s sent %v after the end state", user, extra)
	}
	if w.err != nil {
		t.Fatalf("watch of %s ended with %v, want io.EOF", user, w.err)
	}
	return m
}

// TestWaitlistOrderUnderConcurrency: 1,000 users join a show's waitlist
// concurrently over gRPC while the holds on all its seats come free in
// waves, by expiry under an injected clock and by release. Seats are freed
// only while the acknowledged joins want at least as many (so no seat goes
// back to everyone and no join is refused SEATS_AVAILABLE), then all of
// them, more than the demand. Half the users take their turns. It checks,
// from the audit log's WAIT_TURN events in commit order: every user gets
// one turn; turns come in join sequence order; a user whose join was
// acknowledged before another's was sent has its turn first and a smaller
// sequence; every turn offers exactly the seats wanted; no seat is offered
// twice. Watch streams of a sample see positions only fall and the turn the
// audit log has. At the end the seat map matches the database.
func TestWaitlistOrderUnderConcurrency(t *testing.T) {
	const (
		show        = "wl-order"
		users       = 1000
		perHold     = 10
		seatsPerRow = 50
		ttl         = 10 * time.Minute
		inFlight    = 128 // joins in flight at once
		takers      = 8   // turn takes in flight at once
		watchEvery  = 50  // one user in watchEvery is watched
	)
	rng := rand.New(rand.NewPCG(7, 1000))
	wanted := make([]int, users)
	demand := 0
	for i := range wanted {
		wanted[i] = 1 + rng.IntN(3)
		demand += wanted[i]
	}
	// Holds of perHold seats on every seat: 100 seats beyond the demand,
	// rounded up to whole rows.
	holdsPerRow := seatsPerRow / perHold
	rows := (demand/perHold + 10 + holdsPerRow - 1) / holdsPerRow
	nHolds := rows * holdsPerRow
	seats := nHolds * perHold

	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: 50 * time.Millisecond})
	db := openDB(t, url)
	// The offer window outlasts every clock move, so no turn lapses.
	createWaitShow(t, n, show, rows, seatsPerRow, ttl, time.Hour, 0)
	ctx := tc.Ctx(context.Background())

	// Hold i is made a second after hold i-1, so moving the clock expires
	// a prefix of them.
	type holding struct {
		id, user  string
		expiresAt time.Time
	}
	holds := make([]holding, nHolds)
	started := time.Now()
	for i := range holds {
		clock.Advance(time.Second)
		ids := make([]string, perHold)
		for k := range ids {
			ids[k] = tc.SeatID(i/holdsPerRow, i%holdsPerRow*perHold+k+1)
		}
		user := fmt.Sprintf("holder-%03d", i)
		h, err := hold(t, n, show, user, ids...)
		if err != nil {
			t.Fatalf("hold %d: %v", i, err)
		}
		holds[i] = holding{h.GetHoldId(), user, h.GetExpiresAt().AsTime()}
	}
	t.Logf("%d holds on %d seats in %s; %d users want %d seats", nHolds, seats, time.Since(started).Round(time.Millisecond), users, demand)

	// The joins: all users at once, inFlight of them in flight.
	type joined struct {
		sent, acked time.Time
		seq         int64
		err         error
	}
	joins := make([]joined, users)
	var ackedDemand atomic.Int64
	var joinWG sync.WaitGroup
	joinsDone := make(chan struct{})
	sem := make(chan struct{}, inFlight)
	var watchWG sync.WaitGroup
	type watched struct {
		positions []int32
		last      *pb.WaitlistEntry
		err       error
	}
	watches := make([]*watched, users)
	started = time.Now()
	for i := range users {
		if i%watchEvery == 0 {
			watches[i] = &watched{}
		}
		joinWG.Add(1)
		go func() {
			defer joinWG.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			user := fmt.Sprintf("u%04d", i)
			j := &joins[i]
			j.sent = time.Now()
			r, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: show, UserId: user, SeatsWanted: int32(wanted[i])})
			j.acked = time.Now()
			if err == nil && (r.GetExisted() || r.GetEntry().GetSeatsWanted() != int32(wanted[i]) ||
				(r.GetEntry().GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING && r.GetEntry().GetState() != pb.WaitlistState_WAITLIST_STATE_TURN)) {
				err = fmt.Errorf("join answered %v", r)
			}
			if err != nil {
				j.err = err
				return
			}
			j.seq = r.GetEntry().GetSequence()
			ackedDemand.Add(int64(wanted[i]))
			if w := watches[i]; w != nil {
				watchWG.Add(1)
				go func() {
					defer watchWG.Done()
					w.last, w.positions, w.err = watchToTurn(ctx, n, show, user)
				}()
			}
		}()
	}
	go func() { joinWG.Wait(); close(joinsDone) }()

	// The turns, from the audit log; every other user takes its turn.
	order := map[string]int{}        // user → index of its turn
	var turns []waitTurnEvent        // in commit order
	offeredTo := map[string]string{} // seat → user
	var lastEvent int64
	var takeWG sync.WaitGroup
	takeSem := make(chan struct{}, takers)
	var takeErrs sync.Map
	took := 0
	twice := &capped{t: t, what: "turns given twice"}
	readTurns := func() {
		for _, e := range dbWaitTurns(t, db, show, lastEvent) {
			lastEvent = e.ID
			if _, dup := order[e.User]; dup {
				twice.Errorf("%s got a second turn: event %d", e.User, e.ID)
				continue
			}
			order[e.User] = len(turns)
			turns = append(turns, e)
			for _, s := range e.Seats {
				if prev, dup := offeredTo[s]; dup {
					twice.Errorf("seat %s offered to %s and again to %s (event %d)", s, prev, e.User, e.ID)
				}
				offeredTo[s] = e.User
			}
			if len(turns)%2 == 1 {
				continue
			}
			took++
			takeWG.Add(1)
			go func() {
				defer takeWG.Done()
				takeSem <- struct{}{}
				defer func() { <-takeSem }()
				if _, err := hold(t, n, show, e.User, e.Seats...); err != nil {
					takeErrs.Store(e.User, err)
				}
			}()
		}
	}

	// The waves: expiries from the oldest hold up, releases from the
	// newest down, each of 1-4 holds, as long as the acknowledged joins
	// want at least as many seats as have been freed; once every join is
	// answered, all the rest. Until then no freed seat goes back to
	// everyone (so no join is refused SEATS_AVAILABLE): that takes seats
	// set aside with nobody waiting, every joined user served, and so
	// more seats freed than the joined users want, at least the
	// acknowledged demand.
	var releaseWG sync.WaitGroup
	var releaseErrs sync.Map
	front, back, freed, expiries, releases, waves, wavesDuringJoins := 0, nHolds-1, 0, 0, 0, 0, 0
	lastRead := time.Time{}
	deadline := time.Now().Add(2 * time.Minute)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for front <= back {
		if time.Now().After(deadline) {
			t.Fatalf("waves not done by the deadline: %d of %d holds freed, %d seats wanted by acknowledged joins",
				front+nHolds-1-back, nHolds, ackedDemand.Load())
		}
		if time.Since(lastRead) > 20*time.Millisecond {
			readTurns()
			lastRead = time.Now()
		}
		budget := int(ackedDemand.Load()) - freed
		select {
		case <-joinsDone:
			budget = seats
		default:
			wavesDuringJoins = waves
		}
		k := min(1+rng.IntN(4), budget/perHold, back-front+1)
		if k == 0 {
			select {
			case <-tick.C:
			case <-joinsDone:
			}
			continue
		}
		if waves%2 == 0 {
			setClock(clock, holds[front+k-1].expiresAt.Add(ar.ConfirmGrace))
			front += k
			expiries += k
			n.Engine.ExpireDue()
		} else {
			for range k {
				h := holds[back]
				back--
				releaseWG.Add(1)
				go func() {
					defer releaseWG.Done()
					if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.id, UserId: h.user}); err != nil {
						releaseErrs.Store(h.id, err)
					}
				}()
			}
			releases += k
		}
		freed += k * perHold
		waves++
	}
	<-joinsDone
	joinTime := time.Since(started)
	releaseWG.Wait()
	n.Engine.ExpireDue()
	var joinedUsers, failed int
	for i, j := range joins {
		if j.err != nil {
			if failed++; failed <= 5 {
				t.Errorf("join of u%04d: %v", i, j.err)
			}
			continue
		}
		joinedUsers++
	}
	if failed > 0 {
		t.Fatalf("%d of %d joins failed", failed, users)
	}
	releaseErrs.Range(func(id, err any) bool { t.Errorf("release of %s: %v", id, err); return true })
	pollUntil(t, 30*time.Second, "every user's turn in the audit log", func() bool {
		readTurns()
		return len(turns) >= joinedUsers
	})
	twice.Done()
	takeWG.Wait()
	watchWG.Wait()
	takeErrs.Range(func(user, err any) bool { t.Errorf("%s taking its turn: %v", user, err); return true })
	t.Logf("%d joins in %s (%d in flight at most), %d waves (%d while joins were in flight): %d holds expired, %d released; %d turns, %d taken",
		users, joinTime.Round(time.Millisecond), inFlight, waves, wavesDuringJoins, expiries, releases, len(turns), took)
	if wavesDuringJoins < 2 {
		t.Errorf("only %d waves while the joins were in flight: the joins did not race the expiries and releases", wavesDuringJoins)
	}

	// (a) Turns come in join sequence order, (d) each offering exactly
	// the seats wanted.
	seqOf := func(user string) (int, int64) {
		var i int
		if _, err := fmt.Sscanf(user, "u%04d", &i); err != nil || i < 0 || i >= users {
			t.Fatalf("turn for unknown user %q", user)
		}
		return i, joins[i].seq
	}
	counts, seqOrder := &capped{t: t, what: "seats offered"}, &capped{t: t, what: "turn order"}
	for k, e := range turns {
		i, seq := seqOf(e.User)
		if len(e.Seats) != wanted[i] {
			counts.Errorf("turn %d of %s offers %d seats %v, want %d", k, e.User, len(e.Seats), e.Seats, wanted[i])
		}
		if k > 0 {
			if _, prev := seqOf(turns[k-1].User); prev >= seq {
				seqOrder.Errorf("turn %d: %s (sequence %d) after %s (sequence %d)", k, e.User, seq, turns[k-1].User, prev)
			}
		}
	}
	counts.Done()
	seqOrder.Done()
	// (b), (c): a join answered before another was sent has the earlier
	// turn and the smaller sequence. Sorted by answer, each user's
	// predecessors are a prefix; the prefix's latest turn and largest
	// sequence must be below the user's.
	byAck := make([]int, users)
	for i := range byAck {
		byAck[i] = i
	}
	sort.Slice(byAck, func(a, b int) bool { return joins[byAck[a]].acked.Before(joins[byAck[b]].acked) })
	maxTurn, maxSeq := make([]int, users), make([]int, users) // user with the latest turn, largest sequence in byAck[:k+1]
	for k, i := range byAck {
		maxTurn[k], maxSeq[k] = i, i
		if k > 0 {
			if p := maxTurn[k-1]; order[fmt.Sprintf("u%04d", p)] > order[fmt.Sprintf("u%04d", i)] {
				maxTurn[k] = p
			}
			if p := maxSeq[k-1]; joins[p].seq > joins[i].seq {
				maxSeq[k] = p
			}
		}
	}
	pairs := 0
	ackTurn, ackSeq := &capped{t: t, what: "turns in acknowledged order"}, &capped{t: t, what: "sequences in acknowledged order"}
	for v := range users {
		before := sort.Search(users, func(k int) bool { return !joins[byAck[k]].acked.Before(joins[v].sent) })
		if before == 0 {
			continue
		}
		pairs += before
		if u := maxTurn[before-1]; order[fmt.Sprintf("u%04d", u)] >= order[fmt.Sprintf("u%04d", v)] {
			ackTurn.Errorf("u%04d answered before u%04d was sent, but its turn came %d, after %d", u, v,
				order[fmt.Sprintf("u%04d", u)], order[fmt.Sprintf("u%04d", v)])
		}
		if u := maxSeq[before-1]; joins[u].seq >= joins[v].seq {
			ackSeq.Errorf("u%04d answered before u%04d was sent, but has sequence %d, not below %d", u, v, joins[u].seq, joins[v].seq)
		}
	}
	ackTurn.Done()
	ackSeq.Done()
	if pairs < users {
		t.Errorf("only %d pairs of joins with one answered before the other was sent: the order check says little", pairs)
	}
	t.Logf("%d ordered pairs of joins (answered before sent) checked", pairs)

	// The watched users saw their positions only fall, and the turn the
	// audit log has.
	for i, w := range watches {
		if w == nil {
			continue
		}
		user := fmt.Sprintf("u%04d", i)
		if w.err != nil {
			t.Errorf("watch of %s: %v", user, w.err)
			continue
		}
		for k := 1; k < len(w.positions); k++ {
			if w.positions[k] > w.positions[k-1] {
				t.Errorf("watch of %s: position went up, %v", user, w.positions)
				break
			}
		}
		if got, want := w.last.GetTurn().GetSeatIds(), turns[order[user]].Seats; !slices.Equal(got, want) {
			t.Errorf("watch of %s: turn %v (%v), audit log %v", user, got, w.last.GetState(), want)
		}
	}

	// (e) The end: the turns not taken still hold their seats, no one
	// waits, the seats beyond the demand went back to everyone, and the
	// seat map matches the database.
	offered, taken := 0, 0
	for k, e := range turns {
		if k%2 == 1 {
			taken += len(e.Seats)
		} else {
			offered += len(e.Seats)
		}
	}
	sm := getSeatMap(t, n, show)
	if int(sm.GetAvailable()) != seats-demand || int(sm.GetHeld()) != taken || int(sm.GetOffered()) != offered ||
		sm.GetBooked() != 0 || int(sm.GetWaiting()) != len(turns)-took {
		t.Errorf("seat map available/held/offered/booked/waiting %d/%d/%d/%d/%d, want %d/%d/%d/0/%d",
			sm.GetAvailable(), sm.GetHeld(), sm.GetOffered(), sm.GetBooked(), sm.GetWaiting(),
			seats-demand, taken, offered, len(turns)-took)
	}
	checkSeatMapEqualsDB(t, n, db, show)
	checkDBInvariants(t, db, show)
	kinds := dbKindCounts(t, db, show)
	if kinds["EXPIRED"] != expiries || kinds["RELEASED"] != releases || kinds["WAIT_JOINED"] != users ||
		kinds["WAIT_TAKEN"] != took || kinds["WAIT_TURN"] != users {
		t.Errorf("audit events %v; want %d EXPIRED, %d RELEASED, %d WAIT_JOINED, WAIT_TURN, %d WAIT_TAKEN",
			kinds, expiries, releases, users, took)
	}
}

// watchToTurn watches user's entry until its turn (or the end that
// follows it), and returns that message and the positions seen before.
func watchToTurn(ctx context.Context, n *tc.Node, show, user string) (*pb.WaitlistEntry, []int32, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := n.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: user})
	if err != nil {
		return nil, nil, err
	}
	var positions []int32
	for {
		m, err := st.Recv()
		if err != nil {
			return nil, positions, fmt.Errorf("after positions %v: %w", positions, err)
		}
		e := m.GetEntry()
		switch e.GetState() {
		case pb.WaitlistState_WAITLIST_STATE_WAITING:
			positions = append(positions, e.GetPosition())
		case pb.WaitlistState_WAITLIST_STATE_TURN, pb.WaitlistState_WAITLIST_STATE_DONE:
			return e, positions, nil
		default:
			return nil, positions, fmt.Errorf("state %v", e)
		}
	}
}

// TestWaitlistLapsePassesOn: a turn not taken within the show's offer
// window lapses at its deadline — not a second before — as PollWaitlist
// sees it, and its seats go to the next waiting user, whose turn's
// deadline is a window from then; when that turn lapses with nobody
// waiting, the seats go back to everyone.
func TestWaitlistLapsePassesOn(t *testing.T) {
	const (
		show   = "wl-lapse"
		window = 10 * time.Second
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: time.Hour})
	db := openDB(t, url)
	createWaitShow(t, n, show, 1, 4, 0, window, 0)
	ctx := tc.Ctx(context.Background())

	a, err := hold(t, n, show, "a", "A-1", "A-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold(t, n, show, "b", "A-3", "A-4"); err != nil {
		t.Fatal(err)
	}
	join(t, n, show, "first", 2)
	second := join(t, n, show, "second", 2)
	before := pollEntry(t, n, show, "first")
	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: a.GetHoldId(), UserId: "a"}); err != nil {
		t.Fatal(err)
	}
	turn := pollWait(t, n, show, "first", before.GetVersion(), 5*time.Second)
	offered := turn.GetTurn().GetSeatIds()
	if turn.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || !slices.Equal(offered, []string{"A-1", "A-2"}) ||
		!turn.GetTurn().GetDeadline().AsTime().Equal(clock.Now().Add(window)) {
		t.Fatalf("first after the release: %v; want a turn of A-1, A-2 until %s", turn, clock.Now().Add(window))
	}

	// A second before the deadline the turn stands.
	clock.Advance(window - time.Second)
	n.Engine.ExpireDue()
	if e := pollEntry(t, n, show, "first"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN {
		t.Fatalf("first a second before the deadline: %v", e)
	}

	// At the deadline it lapses and the seats go to second.
	clock.Advance(time.Second)
	lapsedAt := clock.Now()
	n.Engine.ExpireDue()
	lapsed := pollWait(t, n, show, "first", turn.GetVersion(), 5*time.Second)
	if lapsed.GetState() != pb.WaitlistState_WAITLIST_STATE_LAPSED || !slices.Equal(lapsed.GetTurn().GetSeatIds(), offered) {
		t.Fatalf("first at the deadline: %v; want LAPSED with its turn's seats", lapsed)
	}
	if again := pollWait(t, n, show, "first", lapsed.GetVersion(), 5*time.Second); again.GetState() != pb.WaitlistState_WAITLIST_STATE_LAPSED {
		t.Fatalf("first polled again after the lapse: %v", again)
	}
	next := pollWait(t, n, show, "second", second.GetVersion(), 5*time.Second)
	if next.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || !slices.Equal(next.GetTurn().GetSeatIds(), offered) ||
		!next.GetTurn().GetOfferedAt().AsTime().Equal(lapsedAt) || !next.GetTurn().GetDeadline().AsTime().Equal(lapsedAt.Add(window)) {
		t.Fatalf("second after first's lapse: %v; want a turn of %v from %s until %s", next, offered, lapsedAt, lapsedAt.Add(window))
	}
	_, err = hold(t, n, show, "first", offered...)
	wantAPIError(t, "first holds its lapsed turn's seats, now second's", err, codes.AlreadyExists, "SEATS_TAKEN")
	if sm := getSeatMap(t, n, show); sm.GetOffered() != 2 || sm.GetAvailable() != 0 || sm.GetWaiting() != 1 {
		t.Fatalf("seat map with second's turn: %d offered, %d available, %d waiting", sm.GetOffered(), sm.GetAvailable(), sm.GetWaiting())
	}
	checkSeatMapEqualsDB(t, n, db, show)

	// second lets it lapse too; nobody waits, so the seats go back to
	// everyone.
	clock.Advance(window)
	n.Engine.ExpireDue()
	if e := pollWait(t, n, show, "second", next.GetVersion(), 5*time.Second); e.GetState() != pb.WaitlistState_WAITLIST_STATE_LAPSED {
		t.Fatalf("second after its deadline: %v", e)
	}
	if sm := getSeatMap(t, n, show); sm.GetOffered() != 0 || sm.GetAvailable() != 2 || sm.GetHeld() != 2 || sm.GetWaiting() != 0 {
		t.Fatalf("seat map after the last lapse: %d offered, %d available, %d held, %d waiting",
			sm.GetOffered(), sm.GetAvailable(), sm.GetHeld(), sm.GetWaiting())
	}
	checkSeatMapEqualsDB(t, n, db, show)
	if _, err := hold(t, n, show, "stranger", offered...); err != nil {
		t.Fatalf("a stranger holding the seats back with everyone: %v", err)
	}
	kinds := dbKindCounts(t, db, show)
	if kinds["WAIT_TURN"] != 2 || kinds["WAIT_LAPSED"] != 2 || kinds["WAIT_TAKEN"] != 0 {
		t.Errorf("audit events %v; want 2 WAIT_TURN, 2 WAIT_LAPSED", kinds)
	}
}

// TestWaitlistSoldOutAndTimedOut: a booking that leaves a show fewer seats
// than a waiting user wants ends that user SOLD_OUT at once, while a user
// wanting fewer waits on (a place further up); a user who waits the show's
// max_wait ends TIMED_OUT at the expiry round after it, not before. Each
// end is the last message of the user's WatchWaitlist stream, which then
// ends cleanly, and what PollWaitlist answers from the last version seen,
// at once.
func TestWaitlistSoldOutAndTimedOut(t *testing.T) {
	const maxWait = time.Minute
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: time.Hour})
	db := openDB(t, url)
	ctx := tc.Ctx(context.Background())
	createWaitShow(t, n, "wl-soldout", 1, 4, 0, 0, 0)
	createWaitShow(t, n, "wl-timeout", 1, 2, 0, 0, maxWait)

	// SOLD_OUT: 4 seats, all held; big wants 3, small 1. Booking 2 leaves
	// 2 that could come free.
	a, err := hold(t, n, "wl-soldout", "a", "A-1", "A-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold(t, n, "wl-soldout", "b", "A-3", "A-4"); err != nil {
		t.Fatal(err)
	}
	join(t, n, "wl-soldout", "big", 3)
	if e := join(t, n, "wl-soldout", "small", 1); e.GetPosition() != 1 {
		t.Fatalf("small joined: %v", e)
	}
	bigW, smallW := watch(t, n, "wl-soldout", "big"), watch(t, n, "wl-soldout", "small")
	if m := bigW.next(t, 10*time.Second); m.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || m.GetPosition() != 0 {
		t.Fatalf("big's first watch message: %v", m)
	}
	if m := smallW.next(t, 10*time.Second); m.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || m.GetPosition() != 1 {
		t.Fatalf("small's first watch message: %v", m)
	}
	bigBefore := pollEntry(t, n, "wl-soldout", "big")
	if _, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: a.GetHoldId(), UserId: "a", PaymentRef: "pay-a"}); err != nil {
		t.Fatal(err)
	}
	bigEnd := bigW.wantEnd(t, "big", pb.WaitlistState_WAITLIST_STATE_SOLD_OUT)
	if bigEnd.GetSeatsWanted() != 3 || bigEnd.GetSequence() != bigBefore.GetSequence() || bigEnd.GetTurn() != nil {
		t.Errorf("big's last watch message: %v", bigEnd)
	}
	for _, since := range []uint64{bigBefore.GetVersion(), bigEnd.GetVersion()} {
		start := time.Now()
		if e := pollWait(t, n, "wl-soldout", "big", since, 20*time.Second); e.GetState() != pb.WaitlistState_WAITLIST_STATE_SOLD_OUT {
			t.Errorf("big polled from version %d: %v", since, e)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("big's poll from version %d of its end answered after %s, not at once", since, d)
		}
	}
	if m := smallW.until(t, "small", pb.WaitlistState_WAITLIST_STATE_WAITING, 10*time.Second); m.GetPosition() != 0 {
		t.Errorf("small after big sold out: %v", m)
	}
	if e := pollEntry(t, n, "wl-soldout", "small"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || e.GetPosition() != 0 {
		t.Errorf("small polled after big sold out: %v", e)
	}
	_, err = n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "wl-soldout", UserId: "late", SeatsWanted: 3})
	wantAPIError(t, "a join for 3 after the booking", err, codes.ResourceExhausted, "SOLD_OUT")
	checkSeatMapEqualsDB(t, n, db, "wl-soldout")

	// TIMED_OUT: the show's max_wait passes without a turn.
	if _, err := hold(t, n, "wl-timeout", "c", "A-1", "A-2"); err != nil {
		t.Fatal(err)
	}
	joinedAt := clock.Now()
	e := join(t, n, "wl-timeout", "patient", 1)
	if !e.GetDeadline().AsTime().Equal(joinedAt.Add(maxWait)) {
		t.Errorf("patient's deadline %s, want %s", e.GetDeadline().AsTime(), joinedAt.Add(maxWait))
	}
	pw := watch(t, n, "wl-timeout", "patient")
	if m := pw.next(t, 10*time.Second); m.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING {
		t.Fatalf("patient's first watch message: %v", m)
	}
	clock.Advance(maxWait - time.Second)
	n.Engine.ExpireDue()
	before := pollEntry(t, n, "wl-timeout", "patient")
	if before.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING {
		t.Fatalf("patient a second before max_wait: %v", before)
	}
	clock.Advance(time.Second)
	n.Engine.ExpireDue()
	end := pw.wantEnd(t, "patient", pb.WaitlistState_WAITLIST_STATE_TIMED_OUT)
	if end.GetSequence() != e.GetSequence() || end.GetTurn() != nil {
		t.Errorf("patient's last watch message: %v", end)
	}
	if got := pollWait(t, n, "wl-timeout", "patient", before.GetVersion(), 20*time.Second); got.GetState() != pb.WaitlistState_WAITLIST_STATE_TIMED_OUT {
		t.Errorf("patient polled from the version before: %v", got)
	}
	start := time.Now()
	if got := pollWait(t, n, "wl-timeout", "patient", end.GetVersion(), 20*time.Second); got.GetState() != pb.WaitlistState_WAITLIST_STATE_TIMED_OUT {
		t.Errorf("patient polled from the end's version: %v", got)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("patient's poll from the end's version answered after %s, not at once", d)
	}
	// A watch opened after the end sends the end and ends.
	watch(t, n, "wl-timeout", "patient").wantEnd(t, "patient", pb.WaitlistState_WAITLIST_STATE_TIMED_OUT)
	if sm := getSeatMap(t, n, "wl-timeout"); sm.GetWaiting() != 0 || sm.GetHeld() != 2 {
		t.Errorf("seat map after the timeout: %d waiting, %d held", sm.GetWaiting(), sm.GetHeld())
	}
	checkSeatMapEqualsDB(t, n, db, "wl-timeout")
	for show, kind := range map[string]string{"wl-soldout": "WAIT_SOLD_OUT", "wl-timeout": "WAIT_TIMED_OUT"} {
		if k := dbKindCounts(t, db, show); k[kind] != 1 {
			t.Errorf("audit events of %s: %v; want one %s", show, k, kind)
		}
	}
}

// TestWaitlistTurnShowsOnceDurable: a turn given by a write of the waitlist
// (here the lapse of the turn before, which passes its seats on) shows only
// once that write committed: while it is held at COMMIT the next user's
// entry is still WAITING, a long poll of it waits, and the commit answers
// that poll with the turn. Before, the turn showed, and its user was woken,
// as the write was queued, though it might never commit.
func TestWaitlistTurnShowsOnceDurable(t *testing.T) {
	const (
		show   = "wl-durable"
		window = 10 * time.Second
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: time.Hour})
	db := openDB(t, url)
	createWaitShow(t, n, show, 1, 2, 0, window, 0)
	ctx := tc.Ctx(context.Background())

	a, err := hold(t, n, show, "a", "A-1", "A-2")
	if err != nil {
		t.Fatal(err)
	}
	join(t, n, show, "first", 2)
	join(t, n, show, "second", 2)
	before := pollEntry(t, n, show, "first")
	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: a.GetHoldId(), UserId: "a"}); err != nil {
		t.Fatal(err)
	}
	if turn := pollWait(t, n, show, "first", before.GetVersion(), 5*time.Second); turn.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN {
		t.Fatalf("first after the release: %v, want its turn", turn)
	}

	// A gate at COMMIT of this show's waitlist writes.
	for _, q := range []string{
		`CREATE FUNCTION wl_durable_gate() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN PERFORM pg_advisory_xact_lock_shared(4244); RETURN NULL; END $$`,
		`CREATE CONSTRAINT TRIGGER wl_durable_gate AFTER INSERT OR UPDATE ON waitlist_entries
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.show_id = 'wl-durable') EXECUTE FUNCTION wl_durable_gate()`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	gate, err := db.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Release()
	t.Cleanup(func() {
		for _, q := range []string{`DROP TRIGGER IF EXISTS wl_durable_gate ON waitlist_entries`, `DROP FUNCTION IF EXISTS wl_durable_gate()`} {
			if _, err := db.Exec(context.Background(), q); err != nil {
				t.Error(err)
			}
		}
	})
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_lock(4244)`); err != nil {
		t.Fatal(err)
	}

	clock.Advance(window) // first's turn lapses: its seats go to second
	lapsed := make(chan struct{})
	go func() {
		defer close(lapsed)
		n.Engine.ExpireDue() // returns once the lapse's write has its outcome
	}()
	pollUntil(t, 10*time.Second, "the lapse's write held at the gate", func() bool {
		var waiting int
		err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&waiting)
		return err == nil && waiting > 0
	})
	held := pollEntry(t, n, show, "second")
	if held.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || held.GetTurn() != nil {
		t.Fatalf("second while the write giving its turn is in flight: %v, want WAITING", held)
	}
	polled := make(chan *pb.WaitlistEntry, 1)
	go func() {
		r, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: "second", SinceVersion: held.GetVersion(), Wait: durationpb.New(20 * time.Second)})
		if err != nil {
			t.Errorf("long poll of second: %v", err)
		}
		polled <- r.GetEntry()
	}()
	select {
	case e := <-polled:
		t.Fatalf("the long poll of second was answered while the turn's write was in flight: %v", e)
	case <-time.After(300 * time.Millisecond):
	}

	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4244)`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lapsed:
	case <-time.After(10 * time.Second):
		t.Fatal("the lapse's write did not end once the gate opened")
	}
	select {
	case e := <-polled:
		if e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || !slices.Equal(e.GetTurn().GetSeatIds(), []string{"A-1", "A-2"}) {
			t.Fatalf("the long poll of second after the commit: %v, want its turn of A-1, A-2", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll of second was not answered once the turn's write committed")
	}
	checkSeatMapEqualsDB(t, n, db, show)
}
