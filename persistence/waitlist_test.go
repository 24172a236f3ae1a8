package persistence_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/persistence"
)

// waitM is a mutation of the waitlist alone.
func waitM(epoch int64, show string, c persistence.WaitlistChange) persistence.Mutation {
	return persistence.Mutation{Kind: persistence.Waitlist, Epoch: epoch, ShowID: show, Waitlist: &c}
}

// waiting is an entry of a user waiting since t0+seq seconds.
func waiting(user string, seq int64, seats int) persistence.WaitEntry {
	joined := t0.Add(time.Duration(seq) * time.Second)
	return persistence.WaitEntry{UserID: user, Seq: seq, SeatsWanted: seats, JoinedAt: joined, Deadline: joined.Add(time.Hour)}
}

// withTurn is e holding a turn offering seats, from at.
func withTurn(e persistence.WaitEntry, at time.Time, seats ...string) persistence.WaitEntry {
	e.OfferSeats, e.OfferedAt, e.OfferDeadline = seats, at, at.Add(2*time.Minute)
	return e
}

// waitlistOf loads a show's waitlist, its times in UTC.
func waitlistOf(t *testing.T, s *persistence.Store, show string) ([]persistence.WaitEntry, []string) {
	t.Helper()
	snap, err := s.LoadShow(context.Background(), show)
	if err != nil {
		t.Fatalf("load %s: %v", show, err)
	}
	utc := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC()
	}
	for i := range snap.Waiting {
		e := &snap.Waiting[i]
		e.JoinedAt, e.Deadline, e.OfferedAt, e.OfferDeadline = utc(e.JoinedAt), utc(e.Deadline), utc(e.OfferedAt), utc(e.OfferDeadline)
	}
	return snap.Waiting, snap.Aside
}

func checkWaitlist(t *testing.T, s *persistence.Store, show string, want []persistence.WaitEntry, wantAside []string) {
	t.Helper()
	got, aside := waitlistOf(t, s, show)
	if len(got) == 0 && len(want) == 0 {
		got, want = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("waiting of %s\n got %+v\nwant %+v", show, got, want)
	}
	if !slices.Equal(aside, wantAside) || (aside == nil) != (len(wantAside) == 0) {
		t.Errorf("aside of %s: %q, want %q", show, aside, wantAside)
	}
}

// TestWaitlistRoundTrip writes entries, waiting and holding a turn, and the
// seats set aside; LoadShow returns them by Seq with every field.
func TestWaitlistRoundTrip(t *testing.T) {
	s := openStore(t, newDB(t), nil)
	e := ownShow(t, s, "s")
	ownShow(t, s, "other")
	if got := persistence.Waitlist.String(); got != "WAITLIST" {
		t.Fatalf("Waitlist.String() = %q", got)
	}
	checkWaitlist(t, s, "s", nil, nil)

	u3 := waiting("u3", 3, 10)
	u1 := withTurn(waiting("u1", 1, 2), t0.Add(time.Minute), "A-3", "A-4")
	u2 := waiting("u2", 2, 1)
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{u3, u1}, SetAside: true, Aside: []string{"A-3", "A-4"}}))
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{u2}}))
	checkWaitlist(t, s, "s", []persistence.WaitEntry{u1, u2, u3}, []string{"A-3", "A-4"})
	checkWaitlist(t, s, "other", nil, nil)

	// A Put replaces the row: the turn ends, u2 gets one.
	u1.OfferSeats, u1.OfferedAt, u1.OfferDeadline = nil, time.Time{}, time.Time{}
	u2 = withTurn(u2, t0.Add(2*time.Minute), "A-4")
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{u1, u2}, SetAside: true, Aside: []string{"A-4"}}))
	checkWaitlist(t, s, "s", []persistence.WaitEntry{u1, u2, u3}, []string{"A-4"})

	// An empty aside; a Delete of a missing row; a change of nothing.
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Delete: []string{"u3", "nobody"}, SetAside: true}))
	write(t, s, waitM(e, "s", persistence.WaitlistChange{}))
	write(t, s, persistence.Mutation{Kind: persistence.Waitlist, Epoch: e, ShowID: "s"})
	checkWaitlist(t, s, "s", []persistence.WaitEntry{u1, u2}, nil)

	// Without events, a waitlist mutation writes no audit row.
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservation_events`); n != 0 {
		t.Fatalf("%d events, want 0", n)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservations`) + count(t, s.Pool(), `SELECT count(*) FROM seat_claims`) +
		count(t, s.Pool(), `SELECT count(*) FROM idempotency_keys`); n != 0 {
		t.Fatalf("waitlist mutations wrote %d reservation rows", n)
	}
}

// TestWaitlistLastWriterWins queues mutations changing the same rows into
// one batch: each row and each show's aside ends as the last change in
// queue order left it.
func TestWaitlistLastWriterWins(t *testing.T) {
	url := newDB(t)
	var obs batches
	s := openStore(t, url, func(c *persistence.Config) { c.Observer = obs.observe })
	e, e2 := ownShow(t, s, "s"), ownShow(t, s, "s2")
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("old", 1, 1), waiting("v", 2, 1)}}))
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))

	uLast := withTurn(waiting("u", 9, 4), t0.Add(time.Hour), "B-1", "B-2")
	uLast.Deadline = t0.Add(3 * time.Hour)
	wLast := waiting("w", 12, 3)
	hold := holdM(e, "s", "s:r1", "x", t0, "A-1")
	hold.Waitlist = &persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("w", 11, 2)}, Delete: []string{"old"}}
	ms := []persistence.Mutation{
		waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("u", 3, 1)}, SetAside: true, Aside: []string{"A-9"}}),
		waitM(e, "s", persistence.WaitlistChange{Delete: []string{"u", "v"}}),
		hold,
		waitM(e2, "s2", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("u", 1, 1)}, SetAside: true, Aside: []string{"C-1"}}),
		waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{uLast, wLast}, SetAside: true, Aside: []string{"B-1", "B-2"}}),
		waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("gone", 13, 1)}}),
		waitM(e, "s", persistence.WaitlistChange{Delete: []string{"gone"}}),
		waitM(e2, "s2", persistence.WaitlistChange{SetAside: true}),
	}
	ps := enqueueAll(t, s, ms...)
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(ps) {
		if err != nil {
			t.Errorf("mutation %d: %v", i, err)
		}
	}
	if b := obs.last(); b.Mutations != len(ms) || b.Transactions != 1 || b.Err != nil {
		t.Fatalf("the batch's stats %+v, want %d mutations in one transaction", b, len(ms))
	}
	checkWaitlist(t, s, "s", []persistence.WaitEntry{uLast, wLast}, []string{"B-1", "B-2"})
	checkWaitlist(t, s, "s2", []persistence.WaitEntry{waiting("u", 1, 1)}, nil)
	if r := reservation(t, s, "s", "s:r1"); r.Status != "HELD" {
		t.Fatalf("the hold is %+v", r)
	}
}

// TestWaitlistFenced: a waitlist change carrying a stale epoch, alone or
// with a hold, gets ErrNotOwner and changes nothing.
func TestWaitlistFenced(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	stale := ownShow(t, s, "s")
	u := waiting("u", 1, 2)
	write(t, s, waitM(stale, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{u}, SetAside: true, Aside: []string{"A-1"}}))
	current, err := s.AcquireShow(ctx, "s") // another node took it
	if err != nil {
		t.Fatal(err)
	}
	events := []persistence.WaitEvent{{UserID: "u", Kind: "WAIT_LEFT", At: t0}}
	hold := holdM(stale, "s", "s:r1", "u", t0, "A-2")
	hold.Waitlist = &persistence.WaitlistChange{Delete: []string{"u"}, Events: events}
	for _, m := range []persistence.Mutation{
		waitM(stale, "s", persistence.WaitlistChange{Delete: []string{"u"}, Put: []persistence.WaitEntry{waiting("v", 2, 1)},
			SetAside: true, Events: events}),
		waitM(current+1, "s", persistence.WaitlistChange{Delete: []string{"u"}}),
		hold,
	} {
		if err := s.Write(m); !errors.Is(err, persistence.ErrNotOwner) {
			t.Errorf("write at epoch %d: %v, want ErrNotOwner", m.Epoch, err)
		}
	}
	checkWaitlist(t, s, "s", []persistence.WaitEntry{u}, []string{"A-1"})
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservation_events`) + count(t, s.Pool(), `SELECT count(*) FROM reservations`); n != 0 {
		t.Fatalf("fenced writes left %d rows", n)
	}
}

// TestWaitlistWithHold: a hold taking a turn deletes the entry and records
// the event in its transaction; a refused hold leaves the waitlist as it
// was; a release can hand the seats to the next user.
func TestWaitlistWithHold(t *testing.T) {
	s := openStore(t, newDB(t), nil)
	e := ownShow(t, s, "s")
	write(t, s, holdM(e, "s", "s:r0", "z", t0, "A-1"))
	u := withTurn(waiting("u", 1, 2), t0, "A-2", "A-3")
	v := waiting("v", 2, 1)
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{u, v}, SetAside: true, Aside: []string{"A-2", "A-3"},
		Events: []persistence.WaitEvent{{UserID: "u", Kind: "WAIT_JOINED", At: u.JoinedAt}, {UserID: "v", Kind: "WAIT_JOINED", At: v.JoinedAt}}}))

	take := holdM(e, "s", "s:r1", "u", t0.Add(time.Second), "A-2", "A-3")
	take.Waitlist = &persistence.WaitlistChange{Delete: []string{"u"}, SetAside: true,
		Events: []persistence.WaitEvent{{UserID: "u", Kind: "WAIT_TAKEN", SeatIDs: take.SeatIDs, ReservationID: "s:r1", At: take.At}}}
	write(t, s, take)
	checkWaitlist(t, s, "s", []persistence.WaitEntry{v}, nil)

	refused := holdM(e, "s", "s:r2", "v", t0.Add(2*time.Second), "A-1") // held by s:r0
	refused.Waitlist = &persistence.WaitlistChange{Delete: []string{"v"}, SetAside: true, Aside: []string{"B-1"},
		Events: []persistence.WaitEvent{{UserID: "v", Kind: "WAIT_TAKEN", SeatIDs: refused.SeatIDs, ReservationID: "s:r2", At: refused.At}}}
	if err := s.Write(refused); !errors.Is(err, persistence.ErrConflict) {
		t.Fatalf("hold of a claimed seat: %v, want ErrConflict", err)
	}
	checkWaitlist(t, s, "s", []persistence.WaitEntry{v}, nil)

	free := endM(persistence.Release, e, "s", "s:r0", "z", t0.Add(3*time.Second), "A-1")
	vTurn := withTurn(v, free.At, "A-1")
	free.Waitlist = &persistence.WaitlistChange{Put: []persistence.WaitEntry{vTurn}, SetAside: true, Aside: []string{"A-1"},
		Events: []persistence.WaitEvent{{UserID: "v", Kind: "WAIT_TURN", SeatIDs: []string{"A-1"}, At: free.At}}}
	write(t, s, free)
	checkWaitlist(t, s, "s", []persistence.WaitEntry{vTurn}, []string{"A-1"})

	want := []string{"s:r0 HELD", " WAIT_JOINED", " WAIT_JOINED", "s:r1 HELD", "s:r1 WAIT_TAKEN", "s:r0 RELEASED", " WAIT_TURN"}
	if ev := eventKinds(t, s, "s"); !slices.Equal(ev, want) {
		t.Fatalf("events %q, want %q", ev, want)
	}
}

// TestWaitlistEvents checks the fields of waitlist events as ListEvents
// returns them, an empty seat list included.
func TestWaitlistEvents(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	e := ownShow(t, s, "s")
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("u", 1, 2)},
		Events: []persistence.WaitEvent{{UserID: "u", Kind: "WAIT_JOINED", At: t0}}}))
	take := holdM(e, "s", "s:r1", "u", t0.Add(time.Second), "A-1", "A-2")
	take.Waitlist = &persistence.WaitlistChange{Delete: []string{"u"},
		Events: []persistence.WaitEvent{{UserID: "u", Kind: "WAIT_TAKEN", SeatIDs: take.SeatIDs, ReservationID: "s:r1", At: take.At}}}
	write(t, s, take)
	write(t, s, waitM(e, "s", persistence.WaitlistChange{
		Events: []persistence.WaitEvent{{UserID: "w", Kind: "WAIT_SOLD_OUT", At: t0.Add(2 * time.Second)}}}))

	evs, err := s.ListEvents(ctx, persistence.EventFilter{UserID: "u", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("%d events of u, want 3: %+v", len(evs), evs)
	}
	taken, held, joined := evs[0], evs[1], evs[2]
	if taken.Kind != "WAIT_TAKEN" || taken.ShowID != "s" || taken.ReservationID != "s:r1" || taken.UserID != "u" ||
		!slices.Equal(taken.SeatIDs, []string{"A-1", "A-2"}) || taken.PaymentRef != "" || taken.NodeID != "node-1" ||
		taken.Epoch != e || !taken.At.Equal(t0.Add(time.Second)) {
		t.Errorf("taken event %+v", taken)
	}
	if held.Kind != "HELD" || held.ReservationID != "s:r1" {
		t.Errorf("hold event %+v", held)
	}
	if joined.Kind != "WAIT_JOINED" || joined.ReservationID != "" || joined.SeatIDs == nil || len(joined.SeatIDs) != 0 ||
		joined.Epoch != e || !joined.At.Equal(t0) {
		t.Errorf("joined event %+v (seats %#v)", joined, joined.SeatIDs)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservation_events WHERE kind = 'WAIT_SOLD_OUT' AND user_id = 'w'
		AND cardinality(seat_ids) = 0 AND payment_ref IS NULL`); n != 1 {
		t.Errorf("%d WAIT_SOLD_OUT events of w, want 1", n)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservation_events WHERE kind = 'WAITLIST'`); n != 0 {
		t.Errorf("%d events of kind WAITLIST, want none", n)
	}
}

// TestWaitlistRefused queues refused waitlist changes among good mutations
// in one batch: each fails with ErrConflict (each on a show of its own),
// and the good ones of other shows commit. Changes of one row on both
// sides of other shows' culprits end as the last one left them. A good
// change of a show after a refused change of its waitlist is not tried
// (ErrUnavailable): it may depend on the refused one.
func TestWaitlistRefused(t *testing.T) {
	url := newDB(t)
	var obs batches
	s := openStore(t, url, func(c *persistence.Config) { c.Observer = obs.observe })
	e := ownShow(t, s, "s")
	epochs := map[string]int64{"s": e}
	for _, show := range []string{"b1", "b2", "b3", "b4", "b5", "b6", "c"} {
		epochs[show] = ownShow(t, s, show)
	}
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))

	put := func(show string, es ...persistence.WaitEntry) persistence.Mutation {
		return waitM(epochs[show], show, persistence.WaitlistChange{Put: es})
	}
	noDeadline := withTurn(waiting("bad", 5, 1), t0, "A-5")
	noDeadline.OfferDeadline = time.Time{}
	hold := holdM(epochs["b5"], "b5", "b5:r1", "h", t0, "A-1")
	hold.Waitlist = &persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("bad", 6, 11)}}
	u2 := withTurn(waiting("u", 2, 3), t0, "A-7", "A-8")
	cases := []struct {
		name string
		m    persistence.Mutation
		want error
	}{
		{"good put", put("s", waiting("u", 1, 1)), nil},
		{"11 seats wanted", put("b1", waiting("bad", 2, 11)), persistence.ErrConflict},
		{"good aside", waitM(e, "s", persistence.WaitlistChange{SetAside: true, Aside: []string{"A-9"}}), nil},
		{"0 seats wanted", put("b2", waiting("bad", 3, 0)), persistence.ErrConflict},
		{"seats wanted past int4", put("b3", waiting("bad", 4, 1<<40)), persistence.ErrConflict},
		{"an offer without a deadline", put("b4", noDeadline), persistence.ErrConflict},
		{"a hold with a bad entry", hold, persistence.ErrConflict},
		{"good put again", put("s", u2, waiting("v", 7, 1)), nil},
		{"11 seats offered", put("b6", withTurn(waiting("bad", 8, 10), t0, "B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "B-7", "B-8", "B-9", "B-10", "B-11")),
			persistence.ErrConflict},
		{"good put before a culprit", put("c", waiting("w", 9, 1)), nil},
		{"the culprit", put("c", waiting("bad", 10, 0)), persistence.ErrConflict},
		{"good put after the culprit", put("c", waiting("x", 11, 1)), persistence.ErrUnavailable},
	}
	var ms []persistence.Mutation
	for _, c := range cases {
		ms = append(ms, c.m)
	}
	ps := enqueueAll(t, s, ms...)
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(ps) {
		if !isErr(err, cases[i].want) {
			t.Errorf("%s: %v, want %v", cases[i].name, err, cases[i].want)
		}
	}
	if b := obs.last(); b.Mutations != len(cases) || b.Transactions < 2 {
		t.Fatalf("the batch's stats %+v, want %d mutations, split", b, len(cases))
	}
	checkWaitlist(t, s, "s", []persistence.WaitEntry{u2, waiting("v", 7, 1)}, []string{"A-9"})
	checkWaitlist(t, s, "c", []persistence.WaitEntry{waiting("w", 9, 1)}, nil)
	if _, err := s.GetReservation(context.Background(), "b5", "b5:r1"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("the refused hold: %v, want ErrNotFound", err)
	}
}

// TestCreateShowWaitlistTimings: zero OfferWindow and MaxWait are stored as
// the defaults, others as given; negative ones are refused, as a negative
// HoldTTL is.
func TestCreateShowWaitlistTimings(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	for _, c := range []struct {
		name                 string
		offer, wait, holdTTL time.Duration
		wantOffer, wantWait  time.Duration
		want                 error
	}{
		{"defaults", 0, 0, time.Minute, persistence.DefaultOfferWindow, persistence.DefaultMaxWait, nil},
		{"given", 45 * time.Second, 10 * time.Minute, time.Minute, 45 * time.Second, 10 * time.Minute, nil},
		{"one given", 0, 3 * time.Hour, time.Minute, persistence.DefaultOfferWindow, 3 * time.Hour, nil},
		{"negative offer window", -time.Second, 0, time.Minute, 0, 0, persistence.ErrConflict},
		{"negative max wait", 0, -time.Second, time.Minute, 0, 0, persistence.ErrConflict},
		{"negative hold TTL", 0, 0, -time.Second, 0, 0, persistence.ErrConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			sh := testShow(c.name)
			sh.OfferWindow, sh.MaxWait, sh.HoldTTL = c.offer, c.wait, c.holdTTL
			created, err := s.CreateShow(ctx, sh)
			if !isErr(err, c.want) {
				t.Fatalf("CreateShow: %v, want %v", err, c.want)
			}
			if c.want != nil {
				if _, err := s.GetShow(ctx, c.name); !errors.Is(err, persistence.ErrNotFound) {
					t.Fatalf("a refused show was stored: %v", err)
				}
				return
			}
			if created.OfferWindow != c.wantOffer || created.MaxWait != c.wantWait {
				t.Errorf("CreateShow returned %v, %v; want %v, %v", created.OfferWindow, created.MaxWait, c.wantOffer, c.wantWait)
			}
			got, err := s.GetShow(ctx, c.name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.AcquireShow(ctx, c.name); err != nil {
				t.Fatal(err)
			}
			snap, err := s.LoadShow(ctx, c.name)
			if err != nil {
				t.Fatal(err)
			}
			for _, sh := range []persistence.Show{got, snap.Show} {
				if sh.OfferWindow != c.wantOffer || sh.MaxWait != c.wantWait {
					t.Errorf("read back %v, %v; want %v, %v", sh.OfferWindow, sh.MaxWait, c.wantOffer, c.wantWait)
				}
			}
		})
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM shows WHERE offer_window_ms = 120000 AND max_wait_ms = 3600000`); n != 1 {
		t.Errorf("%d shows store the defaults explicitly, want 1", n)
	}
}

// TestWaitlistFailureFailsWhatIsQueuedBehind: when a change of a show's
// waitlist fails, the show's mutations queued behind it fail untried
// (ErrUnavailable), as they may depend on it: waitlist rows are written
// whole, so a later change committed after the failure would write a
// waitlist the engine never had. A mutation queued after the failure is
// answered is tried as usual.
func TestWaitlistFailureFailsWhatIsQueuedBehind(t *testing.T) {
	url := newDB(t)
	s := openStore(t, url, nil)
	e := ownShow(t, s, "s")
	ctx := context.Background()
	// The show's ownership row locked: the writer's transaction of the
	// first change waits for it, in flight, while the second is queued.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	lock, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, lock, `SELECT count(*) FROM (SELECT 1 FROM show_owners WHERE show_id = 's' FOR UPDATE) l`); n != 1 {
		t.Fatalf("%d ownership rows", n)
	}
	bad := waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("u", 1, 11)}}) // refused: 11 seats
	first, err := s.Enqueue(bad)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); count(t, s.Pool(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%show_owners%'`) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the writer did not wait for the ownership row")
		}
		time.Sleep(time.Millisecond)
	}
	behind := enqueueAll(t, s,
		waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("v", 2, 1)}}),
		holdM(e, "s", "s:r1", "h", t0, "A-1"))
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); !errors.Is(err, persistence.ErrConflict) {
		t.Fatalf("the bad change: %v, want ErrConflict", err)
	}
	for i, err := range waitAll(behind) {
		if !errors.Is(err, persistence.ErrUnavailable) {
			t.Errorf("mutation %d queued behind it: %v, want ErrUnavailable", i, err)
		}
	}
	checkWaitlist(t, s, "s", nil, nil)
	if _, err := s.GetReservation(ctx, "s", "s:r1"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("the hold queued behind: %v, want ErrNotFound", err)
	}
	write(t, s, waitM(e, "s", persistence.WaitlistChange{Put: []persistence.WaitEntry{waiting("v", 2, 1)}}))
	checkWaitlist(t, s, "s", []persistence.WaitEntry{waiting("v", 2, 1)}, nil)
}
