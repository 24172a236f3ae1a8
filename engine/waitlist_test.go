package engine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// poll asks for user's entry, answered at once.
func pollEntry(t testing.TB, n *tc.Node, show, user string) *pb.WaitlistEntry {
	t.Helper()
	r, err := n.Waitlist.PollWaitlist(tc.Ctx(context.Background()), &pb.PollWaitlistRequest{ShowId: show, UserId: user})
	if err != nil {
		t.Fatalf("poll %s: %v", user, err)
	}
	return r.GetEntry()
}

func join(t testing.TB, n *tc.Node, show, user string, wanted int32) *pb.WaitlistEntry {
	t.Helper()
	r, err := n.Waitlist.JoinWaitlist(tc.Ctx(context.Background()), &pb.JoinWaitlistRequest{ShowId: show, UserId: user, SeatsWanted: wanted})
	if err != nil {
		t.Fatalf("join %s: %v", user, err)
	}
	return r.GetEntry()
}

func hold(t testing.TB, n *tc.Node, show, user string, seats ...string) (*pb.HoldSeatsResponse, error) {
	t.Helper()
	return n.Reservations.HoldSeats(tc.Ctx(context.Background()), &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats})
}

// TestWaitlistTurnFlow walks one show through the waitlist's life: joins,
// a release that gives the head its turn, a stranger refused the offered
// seats, a partial take that passes the rest on, and a restart that keeps
// the turn with its seats and deadline.
func TestWaitlistTurnFlow(t *testing.T) {
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, "wl", 1, 3, 0)
	ctx := tc.Ctx(context.Background())

	a, err := hold(t, n, "wl", "a", "A-1", "A-2", "A-3")
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "wl", UserId: "b", SeatsWanted: 4})
	wantAPIError(t, "join for more seats than the show has", err, codes.ResourceExhausted, "SOLD_OUT")
	if e := join(t, n, "wl", "b", 2); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || e.GetPosition() != 0 {
		t.Fatalf("b joined: %v", e)
	}
	if e := join(t, n, "wl", "c", 2); e.GetPosition() != 1 {
		t.Fatalf("c joined: %v", e)
	}
	again, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "wl", UserId: "b", SeatsWanted: 1})
	if err != nil || !again.GetExisted() || again.GetEntry().GetSeatsWanted() != 2 {
		t.Fatalf("b joins again: %v %v", again, err)
	}
	before := pollEntry(t, n, "wl", "b")

	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: a.GetHoldId(), UserId: "a"}); err != nil {
		t.Fatal(err)
	}
	// A long poll from the version before the release answers the turn.
	r, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: "wl", UserId: "b", SinceVersion: before.GetVersion(), Wait: durationpb.New(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	turn := r.GetEntry()
	if turn.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || len(turn.GetTurn().GetSeatIds()) != 2 {
		t.Fatalf("b after the release: %v", turn)
	}
	if c := pollEntry(t, n, "wl", "c"); c.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || c.GetPosition() != 0 {
		t.Fatalf("c after b's turn: %v", c)
	}
	sm := getSeatMap(t, n, "wl")
	if sm.GetOffered() != 3 || sm.GetAvailable() != 0 || sm.GetWaiting() != 2 {
		t.Fatalf("seat map: %d offered, %d available, %d waiting", sm.GetOffered(), sm.GetAvailable(), sm.GetWaiting())
	}
	checkSeatMapEqualsDB(t, n, db, "wl")

	offered := turn.GetTurn().GetSeatIds()
	_, err = hold(t, n, "wl", "c", offered[0])
	wantAPIError(t, "c holds a seat offered to b", err, codes.AlreadyExists, "SEATS_TAKEN")
	_, err = hold(t, n, "wl", "stranger", offered[1])
	wantAPIError(t, "a stranger holds a seat offered to b", err, codes.AlreadyExists, "SEATS_TAKEN")

	if _, err := hold(t, n, "wl", "b", offered[0]); err != nil {
		t.Fatalf("b takes the turn: %v", err)
	}
	if b := pollEntry(t, n, "wl", "b"); b.GetState() != pb.WaitlistState_WAITLIST_STATE_DONE {
		t.Fatalf("b after the take: %v", b)
	}
	cTurn := pollEntry(t, n, "wl", "c")
	if cTurn.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || len(cTurn.GetTurn().GetSeatIds()) != 2 {
		t.Fatalf("c after b took one seat: %v", cTurn)
	}
	checkSeatMapEqualsDB(t, n, db, "wl")

	// A restart keeps c's turn, its seats and its deadline.
	n.Stop()
	n2 := tc.StartNode(t, url, tc.Options{})
	got := pollEntry(t, n2, "wl", "c")
	if got.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN ||
		!got.GetTurn().GetDeadline().AsTime().Equal(cTurn.GetTurn().GetDeadline().AsTime()) ||
		len(got.GetTurn().GetSeatIds()) != 2 || got.GetSequence() != cTurn.GetSequence() {
		t.Fatalf("c after a restart: %v, before %v", got, cTurn)
	}
	checkSeatMapEqualsDB(t, n2, db, "wl")
	if _, err := hold(t, n2, "wl", "c", got.GetTurn().GetSeatIds()...); err != nil {
		t.Fatalf("c takes the turn after the restart: %v", err)
	}
	checkSeatMapEqualsDB(t, n2, db, "wl")
	if sm := getSeatMap(t, n2, "wl"); sm.GetWaiting() != 0 || sm.GetOffered() != 0 || sm.GetHeld() != 3 {
		t.Fatalf("seat map at the end: %v", sm)
	}
}

// TestWaitlistTakeWaitsForCommittingRelease: a release that gives a turn is
// held at its commit (the show's ownership row is locked). Meanwhile the
// turn is not shown (its seat cannot be held yet), and a hold of the seat by
// the turn's user waits for the commit instead of being refused; once the
// release commits, the turn shows and the hold takes it.
func TestWaitlistTakeWaitsForCommittingRelease(t *testing.T) {
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, "wlc", 1, 1, 0)
	ctx := tc.Ctx(context.Background())
	h, err := hold(t, n, "wlc", "h", "A-1")
	if err != nil {
		t.Fatal(err)
	}
	join(t, n, "wlc", "w", 1)

	lock := lockOwnerRow(t, db, "wlc")
	released := make(chan error, 1)
	go func() {
		_, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "h"})
		released <- err
	}()
	pollUntil(t, 10*time.Second, "the release to reach the writer", func() bool { return lockWaiters(t, db) > 0 })
	if e := pollEntry(t, n, "wlc", "w"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING {
		t.Fatalf("w while the release commits: %v", e)
	}
	took := make(chan error, 1)
	go func() {
		_, err := hold(t, n, "wlc", "w", "A-1")
		took <- err
	}()
	select {
	case err := <-took:
		t.Fatalf("w's hold answered while the release was committing: %v", err)
	case <-time.After(200 * time.Millisecond): // it must still be waiting; the commit is blocked
	}
	if err := lock.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := <-took; err != nil {
		t.Fatalf("w's hold after the release committed: %v", err)
	}
	if e := pollEntry(t, n, "wlc", "w"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_DONE {
		t.Fatalf("w after the take: %v", e)
	}
	checkSeatMapEqualsDB(t, n, db, "wlc")
}

// TestWaitlistFull: a show's waitlist takes at most MaxWaitlist users; the
// next join is refused with WAITLIST_FULL and changes nothing, and a place
// that frees up can be taken again.
func TestWaitlistFull(t *testing.T) {
	n, url := newNode(t, tc.Options{Engine: func(c *engine.Config) { c.MaxWaitlist = 2 }})
	db := openDB(t, url)
	n.CreateShow(t, "wlf", 1, 2, 0)
	ctx := tc.Ctx(context.Background())
	if _, err := hold(t, n, "wlf", "h", "A-1", "A-2"); err != nil {
		t.Fatal(err)
	}
	join(t, n, "wlf", "w1", 1)
	join(t, n, "wlf", "w2", 1)
	_, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "wlf", UserId: "w3", SeatsWanted: 1})
	wantAPIError(t, "a third join", err, codes.ResourceExhausted, "WAITLIST_FULL")
	var rows int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM waitlist_entries WHERE show_id = 'wlf'`).Scan(&rows); err != nil || rows != 2 {
		t.Fatalf("waitlist rows after the refused join: %d, %v", rows, err)
	}
	if _, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: "wlf", UserId: "w3"}); status.Code(err) != codes.NotFound {
		t.Fatalf("poll of the refused user: %v", err)
	}
	if sm := getSeatMap(t, n, "wlf"); sm.GetWaiting() != 2 {
		t.Fatalf("waiting after the refused join: %d", sm.GetWaiting())
	}
	if _, err := n.Waitlist.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: "wlf", UserId: "w1"}); err != nil {
		t.Fatal(err)
	}
	if e := join(t, n, "wlf", "w3", 1); e.GetPosition() != 1 {
		t.Fatalf("w3 after a place freed up: %v", e)
	}
}

// TestWaitlistPollWakesItsUserOnly: a long poll on a waiting user's entry
// is not answered when others join, when a user ahead leaves (the
// position moves, the state does not), or when another user's turn ends;
// it is answered at once when the user's own turn comes, at a new
// version. A watch of the same user is sent the turn too.
func TestWaitlistPollWakesItsUserOnly(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, "wl-wake", 1, 2, 0)
	ctx := tc.Ctx(context.Background())
	a, err := hold(t, n, "wl-wake", "a", "A-1", "A-2")
	if err != nil {
		t.Fatal(err)
	}
	join(t, n, "wl-wake", "ahead", 2)
	b := join(t, n, "wl-wake", "b", 2)
	watch, err := n.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: "wl-wake", UserId: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || first.GetEntry().GetPosition() != 1 {
		t.Fatalf("b's watch opens with %v, %v; want waiting at 1", first, err)
	}
	answered := make(chan *pb.WaitlistEntry, 1)
	go func() {
		r, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: "wl-wake", UserId: "b", SinceVersion: b.GetVersion(), Wait: durationpb.New(engine.MaxPollWait)})
		if err != nil {
			t.Errorf("poll b: %v", err)
		}
		answered <- r.GetEntry()
	}()
	for i := range 50 {
		join(t, n, "wl-wake", fmt.Sprint("w", i), 1)
	}
	if _, err := n.Waitlist.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: "wl-wake", UserId: "ahead"}); err != nil {
		t.Fatal(err)
	}
	if e := pollEntry(t, n, "wl-wake", "b"); e.GetPosition() != 0 || e.GetVersion() != b.GetVersion() {
		t.Fatalf("b after the leave ahead: %v; want waiting at the head, at version %d", e, b.GetVersion())
	}
	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: a.GetHoldId(), UserId: "a"}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-answered:
		if e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || len(e.GetTurn().GetSeatIds()) != 2 || e.GetVersion() == b.GetVersion() || e.GetSequence() != b.GetSequence() {
			t.Fatalf("b's poll answered %v; want its turn, at a new version", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b's poll was not answered at its turn")
	}
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("b's watch: %v", err)
		}
		if m.GetEntry().GetState() == pb.WaitlistState_WAITLIST_STATE_TURN {
			break
		}
		if m.GetEntry().GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING {
			t.Fatalf("b's watch sent %v before the turn", m.GetEntry())
		}
	}
	// A poll at the version it has waits; one at an old version answers.
	r, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: "wl-wake", UserId: "w0", SinceVersion: 1, Wait: durationpb.New(engine.MaxPollWait)})
	if err != nil || r.GetEntry().GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || r.GetEntry().GetPosition() != 0 {
		t.Fatalf("w0 polled at another version: %v, %v; want waiting at the head at once", r, err)
	}
}
