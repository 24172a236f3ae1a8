package engine_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// roomShow creates a show of 2 rows of 10 seats with a waiting room.
func roomShow(t *testing.T, n *tc.Node, id string, room *pb.WaitingRoom) *pb.Show {
	t.Helper()
	req := tc.ShowRequest(id, 2, 10, time.Minute)
	req.WaitingRoom = room
	resp, err := n.Catalog.CreateShow(tc.AdminCtx(context.Background()), req)
	if err != nil {
		t.Fatalf("CreateShow %s with a waiting room: %v", id, err)
	}
	return resp.GetShow()
}

// admit queues user in show's waiting room and returns the admission token
// the room hands out, once it admits them; round, if set, runs an
// admission round (a test clock's), else the node's own rounds do.
func admit(t *testing.T, n *tc.Node, show, user string, round func()) string {
	t.Helper()
	ctx := tc.Ctx(context.Background())
	if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: show, UserId: user}); err != nil {
		t.Fatalf("%s joins the queue of %s: %v", user, show, err)
	}
	var token string
	pollUntil(t, 10*time.Second, user+" admitted to "+show, func() bool {
		if round != nil {
			round()
		}
		r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: show, UserId: user})
		if err != nil {
			t.Fatalf("poll %s: %v", user, err)
		}
		token = r.GetEntry().GetAdmissionToken()
		return r.GetEntry().GetState() == pb.QueueState_QUEUE_STATE_ADMITTED
	})
	return token
}

// TestWaitingRoomConfig: CreateShow keeps a valid waiting room (defaults
// filled in) and GetShow answers it; a bad one, or one on a node without
// an admission key, is refused and creates nothing.
func TestWaitingRoomConfig(t *testing.T) {
	n, url := newNode(t, tc.Options{})
	ctx := tc.Ctx(context.Background())
	opens := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	got := roomShow(t, n, "room-cfg", &pb.WaitingRoom{OpensAt: timestamppb.New(opens), AdmitPerSecond: 2.5, MaxActiveShoppers: 100})
	want := &pb.WaitingRoom{OpensAt: timestamppb.New(opens), AdmitPerSecond: 2.5, MaxActiveShoppers: 100, ShoppingWindow: durationpb.New(wu.DefaultShoppingWindow)}
	for _, sh := range []*pb.Show{got, mustGetShow(t, n, "room-cfg")} {
		r := sh.GetWaitingRoom()
		if !r.GetOpensAt().AsTime().Equal(opens) || r.GetAdmitPerSecond() != want.GetAdmitPerSecond() ||
			r.GetMaxActiveShoppers() != want.GetMaxActiveShoppers() || r.GetShoppingWindow().AsDuration() != wu.DefaultShoppingWindow {
			t.Errorf("waiting room %v, want %v", r, want)
		}
	}
	if r := mustGetShow(t, n, "room-cfg"); r.GetWaitingRoom() == nil {
		t.Error("GetShow lost the room")
	}
	if sh := n.CreateShow(t, "no-room", 1, 5, 0); sh.GetWaitingRoom() != nil {
		t.Errorf("a show without a room answers %v", sh.GetWaitingRoom())
	}

	for name, room := range map[string]*pb.WaitingRoom{
		"no rate":           {},
		"negative rate":     {AdmitPerSecond: -1},
		"rate too high":     {AdmitPerSecond: wu.MaxAdmitPerSecond * 2},
		"negative cap":      {AdmitPerSecond: 1, MaxActiveShoppers: -1},
		"window too short":  {AdmitPerSecond: 1, ShoppingWindow: durationpb.New(30 * time.Second)},
		"window too long":   {AdmitPerSecond: 1, ShoppingWindow: durationpb.New(48 * time.Hour)},
		"malformed window":  {AdmitPerSecond: 1, ShoppingWindow: &durationpb.Duration{Seconds: 1, Nanos: -1}},
		"malformed opening": {AdmitPerSecond: 1, OpensAt: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}},
	} {
		req := tc.ShowRequest("bad-room", 1, 5, 0)
		req.WaitingRoom = room
		_, err := n.Catalog.CreateShow(tc.AdminCtx(context.Background()), req)
		if e := apiErrorOf(err); e.Code != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if _, err := n.Catalog.GetShow(ctx, &pb.GetShowRequest{ShowId: "bad-room"}); apiErrorOf(err).Code != codes.NotFound {
		t.Errorf("a refused show exists: %v", err)
	}

	keyless := tc.StartNode(t, url, tc.Options{NodeID: "keyless", Engine: func(c *engine.Config) { c.AdmissionKey = nil }})
	req := tc.ShowRequest("keyless-room", 1, 5, 0)
	req.WaitingRoom = &pb.WaitingRoom{AdmitPerSecond: 1}
	if _, err := keyless.Catalog.CreateShow(tc.AdminCtx(context.Background()), req); apiErrorOf(err).Code != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "admission key") {
		t.Errorf("a room on a node without an admission key: %v, want InvalidArgument naming the key", err)
	}
}

// TestWaitingRoomTokens: while a show has a waiting room, a hold (unary or
// in a pipeline) or a waitlist join without the user's valid admission
// token for that show is refused NOT_ADMITTED and changes nothing; with
// the one the room handed out it is decided as usual; an idempotent replay
// needs none.
func TestWaitingRoomTokens(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	ctx := tc.Ctx(context.Background())
	roomShow(t, n, "room-tok", &pb.WaitingRoom{AdmitPerSecond: 10})
	roomShow(t, n, "room-other", &pb.WaitingRoom{AdmitPerSecond: 10})
	key := tc.AdmissionKey()
	valid := time.Now().Add(5 * time.Minute)
	alice := admit(t, n, "room-tok", "alice", nil)
	raw := []byte(alice)
	raw[len(raw)-3] ^= 1 // still base64url, another signature
	tampered := string(raw)

	hold := func(user, token, key string, seats ...string) error {
		_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-tok", UserId: user, SeatIds: seats, IdempotencyKey: key, AdmissionToken: token})
		return err
	}
	version := func() uint64 {
		sm, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "room-tok"})
		if err != nil {
			t.Fatal(err)
		}
		return sm.GetVersion()
	}
	before := version()
	for name, token := range map[string]string{
		"no token":                "",
		"another user's":          key.Sign("room-tok", "bob", valid),
		"another show's":          key.Sign("room-other", "alice", valid),
		"expired":                 key.Sign("room-tok", "alice", time.Now().Add(-time.Second)),
		"tampered":                tampered,
		"signed with another key": wu.TokenKey("some other cluster's key").Sign("room-tok", "alice", valid),
		"garbage":                 "not a token",
	} {
		if e := apiErrorOf(hold("alice", token, "", "A-1")); e.Code != codes.FailedPrecondition || e.Reason != "NOT_ADMITTED" {
			t.Errorf("hold with %s: %v %s, want FailedPrecondition NOT_ADMITTED", name, e.Code, e.Reason)
		}
	}
	if v := version(); v != before {
		t.Fatalf("refused holds moved the seat map from version %d to %d", before, v)
	}

	if err := hold("alice", alice, "k1", "A-1", "A-2"); err != nil {
		t.Fatalf("hold with alice's token: %v", err)
	}
	if e := apiErrorOf(hold("alice", alice, "", "A-2")); e.Reason != "SEATS_TAKEN" {
		t.Errorf("an admitted hold of a taken seat: %v %s, want the usual SEATS_TAKEN", e.Code, e.Reason)
	}
	if err := hold("alice", "", "k1", "A-1", "A-2"); err != nil {
		t.Errorf("a replay of the held request without a token: %v, want the first answer", err)
	}

	// Pipeline holds are checked the same way.
	p := openPipe(t, n.Reservations)
	withToken := pipeHold(2, "room-tok", "alice", "", "B-1")
	withToken.GetHold().AdmissionToken = alice
	p.send(pipeHold(1, "room-tok", "alice", "", "B-1"), withToken)
	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	if e := p.one(1).GetError(); e.GetReason() != "NOT_ADMITTED" || codes.Code(e.GetCode()) != codes.FailedPrecondition {
		t.Errorf("pipeline hold without a token: %v", p.one(1))
	}
	if p.one(2).GetHold() == nil {
		t.Errorf("pipeline hold with alice's token: %v", p.one(2))
	}

	// So are waitlist joins: with the token the join is decided (here: seats
	// are available, so there is no need to wait).
	join := func(token string) error {
		_, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "room-tok", UserId: "alice", SeatsWanted: 1, AdmissionToken: token})
		return err
	}
	if e := apiErrorOf(join("")); e.Reason != "NOT_ADMITTED" {
		t.Errorf("waitlist join without a token: %v %s", e.Code, e.Reason)
	}
	if e := apiErrorOf(join(alice)); e.Reason != "SEATS_AVAILABLE" {
		t.Errorf("waitlist join with alice's token: %v %s, want SEATS_AVAILABLE", e.Code, e.Reason)
	}

	// A show without a room needs no token.
	n.CreateShow(t, "room-free", 1, 5, 0)
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-free", UserId: "alice", SeatIds: []string{"A-1"}}); err != nil {
		t.Errorf("hold of a show without a room: %v", err)
	}
}

func mustGetShow(t *testing.T, n *tc.Node, id string) *pb.Show {
	t.Helper()
	resp, err := n.Catalog.GetShow(tc.Ctx(context.Background()), &pb.GetShowRequest{ShowId: id})
	if err != nil {
		t.Fatalf("GetShow %s: %v", id, err)
	}
	return resp.GetShow()
}

// TestWaitingRoomQueue walks a room over gRPC with a test clock: joins
// before the opening with positions and estimated waits, admissions at the
// rate from the opening and under the cap, tokens that hold seats, leaves
// and lapses that make room, and a restart that keeps every place and
// admission.
func TestWaitingRoomQueue(t *testing.T) {
	clk := tc.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	opts := tc.Options{Clock: clk, ExpiryInterval: time.Hour} // the test runs the rounds
	n, url := newNode(t, opts)
	ctx := tc.Ctx(context.Background())
	opens := clk.Now().Add(10 * time.Second)
	roomShow(t, n, "room-q", &pb.WaitingRoom{OpensAt: timestamppb.New(opens), AdmitPerSecond: 2, MaxActiveShoppers: 3, ShoppingWindow: durationpb.New(time.Minute)})

	users := []string{"u0", "u1", "u2", "u3", "u4"}
	for i, u := range users {
		r, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-q", UserId: u})
		if err != nil {
			t.Fatalf("join %s: %v", u, err)
		}
		e := r.GetEntry()
		wantWait := 10*time.Second + time.Duration(i)*500*time.Millisecond // the first at the opening
		if e.GetState() != pb.QueueState_QUEUE_STATE_QUEUED || e.GetPosition() != int32(i) || e.GetEstimatedWait().AsDuration() != wantWait || r.GetExisted() {
			t.Fatalf("join %s: %v, want queued at %d, wait %v", u, e, i, wantWait)
		}
	}
	if r, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-q", UserId: "u2"}); err != nil || !r.GetExisted() || r.GetEntry().GetPosition() != 2 {
		t.Fatalf("join again: %v, %v", r, err)
	}
	state := func(u string) *pb.QueueEntry {
		t.Helper()
		r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-q", UserId: u})
		if err != nil {
			t.Fatalf("poll %s: %v", u, err)
		}
		return r.GetEntry()
	}
	admitted := func() []string {
		var out []string
		for _, u := range users {
			if state(u).GetState() == pb.QueueState_QUEUE_STATE_ADMITTED {
				out = append(out, u)
			}
		}
		return out
	}
	round := func(d time.Duration) []string {
		clk.Advance(d)
		n.Engine.ExpireDue()
		return admitted()
	}
	if got := round(9 * time.Second); len(got) != 0 {
		t.Fatalf("admitted before the opening: %v", got)
	}
	if got := round(time.Second); !slicesEqual(got, "u0") {
		t.Fatalf("at the opening: %v admitted, want u0", got)
	}
	e := state("u0")
	if e.GetAdmissionToken() == "" || !e.GetAdmissionDeadline().AsTime().Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("u0 admitted: %v", e)
	}
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-q", UserId: "u0", SeatIds: []string{"A-1"}, AdmissionToken: e.GetAdmissionToken()}); err != nil {
		t.Fatalf("u0 holds with its token: %v", err)
	}
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-q", UserId: "u1", SeatIds: []string{"A-2"}, AdmissionToken: e.GetAdmissionToken()}); apiErrorOf(err).Reason != "NOT_ADMITTED" {
		t.Fatalf("u1 with u0's token: %v, want NOT_ADMITTED", err)
	}
	if got := round(time.Second); !slicesEqual(got, "u0", "u1", "u2") {
		t.Fatalf("a second later: %v admitted, want u0 u1 u2", got)
	}
	if p := state("u3").GetPosition(); p != 0 {
		t.Fatalf("u3 at position %d, want 0", p)
	}
	if got := round(time.Second); !slicesEqual(got, "u0", "u1", "u2") {
		t.Fatalf("the cap of 3: %v admitted", got)
	}
	left, err := n.Room.LeaveQueue(ctx, &pb.LeaveQueueRequest{ShowId: "room-q", UserId: "u0"})
	if err != nil || left.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_LEFT {
		t.Fatalf("u0 leaves: %v, %v", left, err)
	}
	if got := round(time.Second); !slicesEqual(got, "u1", "u2", "u3") {
		t.Fatalf("after u0 left: %v admitted, want u1 u2 u3", got)
	}
	// u0's token has not run out, but u0 no longer counts under the cap:
	// it admits no more holds, or u0 would shop beside three others.
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-q", UserId: "u0", SeatIds: []string{"A-3"}, AdmissionToken: e.GetAdmissionToken()}); apiErrorOf(err).Reason != "NOT_ADMITTED" {
		t.Fatalf("u0 holds with its token after leaving: %v, want NOT_ADMITTED", err)
	}
	if _, err := n.Room.LeaveQueue(ctx, &pb.LeaveQueueRequest{ShowId: "room-q", UserId: "u0"}); apiErrorOf(err).Reason != "NOT_WAITING" {
		t.Fatalf("u0 leaves twice: %v, want NOT_WAITING", err)
	}
	if got := round(58 * time.Second); !slicesEqual(got, "u3", "u4") || state("u1").GetState() != pb.QueueState_QUEUE_STATE_LAPSED {
		t.Fatalf("a minute after: %v admitted, u1 %v; want u3 u4, u1 lapsed", got, state("u1").GetState())
	}
	before := map[string]*pb.QueueEntry{}
	for _, u := range []string{"u3", "u4"} {
		before[u] = state(u)
	}

	// A restart keeps the admissions, their deadlines and tokens.
	n.Stop()
	n = tc.StartNode(t, url, opts)
	for u, b := range before {
		a := state(u)
		if a.GetState() != b.GetState() || !a.GetAdmissionDeadline().AsTime().Equal(b.GetAdmissionDeadline().AsTime()) || a.GetAdmissionToken() != b.GetAdmissionToken() || a.GetSequence() != b.GetSequence() {
			t.Errorf("%s after the restart: %v, before %v", u, a, b)
		}
	}
	if r, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-q", UserId: "u5"}); err != nil || r.GetEntry().GetSequence() != 6 {
		t.Errorf("a join after the restart: %v, %v; want sequence 6", r, err)
	}

	n.CreateShow(t, "room-none", 1, 5, 0)
	if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-none", UserId: "u0"}); apiErrorOf(err).Reason != "NO_WAITING_ROOM" {
		t.Errorf("joining a show without a room: %v, want NO_WAITING_ROOM", err)
	}
	if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-q", UserId: ""}); apiErrorOf(err).Code != codes.InvalidArgument {
		t.Errorf("joining without a user: %v, want InvalidArgument", err)
	}
}

// TestWaitingRoomFairness: 2,000 users join concurrently over gRPC; each is
// admitted in the order the joins were acknowledged: a user whose join was
// answered before another's was sent is admitted no later than that one.
func TestWaitingRoomFairness(t *testing.T) {
	clk := tc.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	n, _ := newNode(t, tc.Options{Clock: clk, ExpiryInterval: time.Hour, Quiet: true})
	ctx := tc.Ctx(context.Background())
	roomShow(t, n, "room-fair", &pb.WaitingRoom{OpensAt: timestamppb.New(clk.Now().Add(time.Second)), AdmitPerSecond: 400})

	const users = 2000
	type join struct {
		sent, acked time.Time
		seq         int64
	}
	joins := make([]join, users)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sent := time.Now()
			r, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-fair", UserId: fmt.Sprint("user-", i)})
			acked := time.Now()
			if err != nil {
				t.Errorf("join %d: %v", i, err)
				return
			}
			joins[i] = join{sent, acked, r.GetEntry().GetSequence()}
		})
	}
	wg.Wait()
	// Admit in rounds of 400 and note each user's round.
	round := make([]int, users)
	for k := 1; k <= users/400+1; k++ {
		clk.Advance(time.Second)
		n.Engine.ExpireDue()
		for i := range users {
			if round[i] != 0 {
				continue
			}
			r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-fair", UserId: fmt.Sprint("user-", i)})
			if err != nil {
				t.Fatal(err)
			}
			if r.GetEntry().GetState() == pb.QueueState_QUEUE_STATE_ADMITTED {
				round[i] = k
			}
		}
	}
	inversions := 0
	for a := range users {
		if round[a] == 0 {
			t.Fatalf("user %d never admitted", a)
		}
		for b := range users {
			if joins[a].acked.Before(joins[b].sent) && (round[a] > round[b] || joins[a].seq > joins[b].seq) {
				inversions++
			}
		}
	}
	if inversions > 0 {
		t.Fatalf("%d pairs admitted against the order their joins were acknowledged", inversions)
	}
	bySeq := make([]int, users)
	for i := range users {
		bySeq[i] = i
	}
	slices.SortFunc(bySeq, func(a, b int) int { return cmp.Compare(joins[a].seq, joins[b].seq) })
	for k := 1; k < users; k++ {
		if round[bySeq[k]] < round[bySeq[k-1]] {
			t.Fatalf("sequence %d admitted in round %d, before sequence %d (round %d)", joins[bySeq[k]].seq, round[bySeq[k]], joins[bySeq[k-1]].seq, round[bySeq[k-1]])
		}
	}
}

func slicesEqual(got []string, want ...string) bool { return slices.Equal(got, want) }

// TestWaitingRoomDoneAndSoldOut: a shopper who books stops counting under
// the cap, so the next user is admitted, and their token admits no more
// holds; once every seat is booked,
// everyone still queued ends SOLD_OUT, nobody may join, and whoever asks
// is told SOLD_OUT.
func TestWaitingRoomDoneAndSoldOut(t *testing.T) {
	clk := tc.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	n, _ := newNode(t, tc.Options{Clock: clk, ExpiryInterval: time.Hour})
	ctx := tc.Ctx(context.Background())
	req := tc.ShowRequest("room-end", 1, 2, time.Minute)
	req.WaitingRoom = &pb.WaitingRoom{OpensAt: timestamppb.New(clk.Now()), AdmitPerSecond: 100, MaxActiveShoppers: 2}
	if _, err := n.Catalog.CreateShow(tc.AdminCtx(context.Background()), req); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u0", "u1", "u2", "u3"} {
		if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-end", UserId: u}); err != nil {
			t.Fatal(err)
		}
	}
	entry := func(u string) *pb.QueueEntry {
		t.Helper()
		r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-end", UserId: u})
		if err != nil {
			t.Fatalf("poll %s: %v", u, err)
		}
		return r.GetEntry()
	}
	round := func() {
		clk.Advance(time.Second)
		n.Engine.ExpireDue()
	}
	book := func(u, seat string) {
		t.Helper()
		h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-end", UserId: u, SeatIds: []string{seat}, AdmissionToken: entry(u).GetAdmissionToken()})
		if err != nil {
			t.Fatalf("%s holds %s: %v", u, seat, err)
		}
		if _, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: u, PaymentRef: "pay-" + u}); err != nil {
			t.Fatalf("%s pays: %v", u, err)
		}
	}
	round()
	if entry("u1").GetState() != pb.QueueState_QUEUE_STATE_ADMITTED || entry("u2").GetState() != pb.QueueState_QUEUE_STATE_QUEUED {
		t.Fatalf("the cap of 2: u1 %v, u2 %v", entry("u1").GetState(), entry("u2").GetState())
	}
	token0 := entry("u0").GetAdmissionToken()
	book("u0", "A-1")
	if s := entry("u0").GetState(); s != pb.QueueState_QUEUE_STATE_DONE {
		t.Fatalf("u0 after booking: %v, want DONE", s)
	}
	// u0 no longer counts under the cap, so its token, not run out yet,
	// admits no more holds: more seats take another place in the queue.
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-end", UserId: "u0", SeatIds: []string{"A-2"}, AdmissionToken: token0}); apiErrorOf(err).Reason != "NOT_ADMITTED" {
		t.Fatalf("u0 holds with its token after booking: %v, want NOT_ADMITTED", err)
	}
	round()
	if s := entry("u2").GetState(); s != pb.QueueState_QUEUE_STATE_ADMITTED {
		t.Fatalf("u2 once u0 booked: %v, want ADMITTED", s)
	}
	book("u1", "A-2") // the last seat
	round()
	if s := entry("u3").GetState(); s != pb.QueueState_QUEUE_STATE_SOLD_OUT {
		t.Fatalf("u3 queued at the sell-out: %v, want SOLD_OUT", s)
	}
	if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-end", UserId: "u4"}); apiErrorOf(err).Reason != "SOLD_OUT" {
		t.Fatalf("a join after the sell-out: %v, want SOLD_OUT", err)
	}
	// A user whose entry is not kept (more were queued than the recent
	// ends keep; here one who never joined) learns the sell-out too.
	if e := entry("u9"); e.GetState() != pb.QueueState_QUEUE_STATE_SOLD_OUT || e.GetSequence() != 0 {
		t.Fatalf("a user without an entry after the sell-out: %v, want SOLD_OUT without a sequence", e)
	}
	m := scrape(t, n)
	for event, want := range map[string]float64{"joined": 4, "admitted": 3, "done": 2, "sold_out": 1} {
		if v, _ := sample(m, "boxoffice_room_events_total", `event="`+event+`"`); v != want {
			t.Errorf("boxoffice_room_events_total{event=%q} = %v, want %v", event, v, want)
		}
	}
	if v, _ := sample(m, "boxoffice_room_wait_seconds_count"); v != 3 {
		t.Errorf("%v admissions timed, want 3", v)
	}
}

// TestWaitingRoomBrake: the operator changes the rate and the cap (admin
// token only, refused out of range), GetShow answers them, before and after
// a restart; closing the room ends the queue CLOSED and lets holds through
// without a token.
func TestWaitingRoomBrake(t *testing.T) {
	clk := tc.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	opts := tc.Options{Clock: clk, ExpiryInterval: time.Hour}
	n, url := newNode(t, opts)
	ctx, admin := tc.Ctx(context.Background()), tc.AdminCtx(context.Background())
	roomShow(t, n, "room-brake", &pb.WaitingRoom{OpensAt: timestamppb.New(clk.Now()), AdmitPerSecond: 10})
	for _, u := range []string{"u0", "u1", "u2"} {
		if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-brake", UserId: u}); err != nil {
			t.Fatal(err)
		}
	}
	one, rate := int32(1), 1.0
	if _, err := n.Room.SetWaitingRoom(ctx, &pb.SetWaitingRoomRequest{ShowId: "room-brake", MaxActiveShoppers: &one}); apiErrorOf(err).Code != codes.PermissionDenied && apiErrorOf(err).Code != codes.Unauthenticated {
		t.Fatalf("the brake with the service token: %v, want refused", err)
	}
	zero := 0.0
	if _, err := n.Room.SetWaitingRoom(admin, &pb.SetWaitingRoomRequest{ShowId: "room-brake", AdmitPerSecond: &zero}); apiErrorOf(err).Code != codes.InvalidArgument {
		t.Fatalf("a rate of 0: %v, want InvalidArgument", err)
	}
	r, err := n.Room.SetWaitingRoom(admin, &pb.SetWaitingRoomRequest{ShowId: "room-brake", AdmitPerSecond: &rate, MaxActiveShoppers: &one})
	if err != nil || r.GetRoom().GetAdmitPerSecond() != 1 || r.GetRoom().GetMaxActiveShoppers() != 1 || r.GetQueued() != 3 || r.GetClosed() {
		t.Fatalf("the brake: %v, %v", r, err)
	}
	if got := mustGetShow(t, n, "room-brake").GetWaitingRoom(); got.GetAdmitPerSecond() != 1 || got.GetMaxActiveShoppers() != 1 {
		t.Fatalf("GetShow after the brake: %v", got)
	}
	clk.Advance(5 * time.Second)
	n.Engine.ExpireDue()
	state := func(u string) pb.QueueState {
		t.Helper()
		r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-brake", UserId: u})
		if err != nil {
			t.Fatalf("poll %s: %v", u, err)
		}
		return r.GetEntry().GetState()
	}
	if state("u0") != pb.QueueState_QUEUE_STATE_ADMITTED || state("u1") != pb.QueueState_QUEUE_STATE_QUEUED {
		t.Fatalf("under the cap of 1: u0 %v, u1 %v", state("u0"), state("u1"))
	}

	r, err = n.Room.SetWaitingRoom(admin, &pb.SetWaitingRoomRequest{ShowId: "room-brake", Close: true})
	if err != nil || !r.GetClosed() || r.GetQueued() != 0 {
		t.Fatalf("close: %v, %v", r, err)
	}
	if state("u1") != pb.QueueState_QUEUE_STATE_CLOSED || state("u8") != pb.QueueState_QUEUE_STATE_CLOSED {
		t.Fatalf("after the close: u1 %v, u8 (never joined) %v; want CLOSED", state("u1"), state("u8"))
	}
	if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-brake", UserId: "u9"}); apiErrorOf(err).Reason != "ROOM_CLOSED" {
		t.Fatalf("join a closed room: %v, want ROOM_CLOSED", err)
	}
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-brake", UserId: "u1", SeatIds: []string{"B-1"}}); err != nil {
		t.Fatalf("a hold without a token once the room closed: %v", err)
	}

	n.Stop()
	n = tc.StartNode(t, url, opts)
	if got := mustGetShow(t, n, "room-brake").GetWaitingRoom(); got.GetAdmitPerSecond() != 1 || got.GetMaxActiveShoppers() != 1 {
		t.Errorf("GetShow after a restart: %v", got)
	}
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "room-brake", UserId: "u2", SeatIds: []string{"B-2"}}); err != nil {
		t.Errorf("a hold without a token after a restart of the closed room: %v", err)
	}
}

// TestWaitingRoomPollWakesItsUserOnly: a long poll on a queued user's
// entry is not answered when others join or are admitted (its version is
// the entry's, not the room's), and is answered at once when the user is
// admitted, with the token; the version then differs.
func TestWaitingRoomPollWakesItsUserOnly(t *testing.T) {
	clk := tc.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	n, _ := newNode(t, tc.Options{Clock: clk, ExpiryInterval: time.Hour}) // the test runs the rounds
	ctx := tc.Ctx(context.Background())
	roomShow(t, n, "room-wake", &pb.WaitingRoom{OpensAt: timestamppb.New(clk.Now().Add(time.Second)), AdmitPerSecond: 1})
	join := func(u string) *pb.QueueEntry {
		t.Helper()
		r, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "room-wake", UserId: u})
		if err != nil {
			t.Fatalf("join %s: %v", u, err)
		}
		return r.GetEntry()
	}
	join("u0")
	e1 := join("u1")
	answered := make(chan *pb.QueueEntry, 1)
	go func() {
		r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-wake", UserId: "u1", SinceVersion: e1.GetVersion(), Wait: durationpb.New(engine.MaxPollWait)})
		if err != nil {
			t.Errorf("poll u1: %v", err)
		}
		answered <- r.GetEntry()
	}()
	for i := 2; i < 50; i++ {
		join(fmt.Sprint("u", i))
	}
	clk.Advance(time.Second)
	n.Engine.ExpireDue()
	if r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-wake", UserId: "u0"}); err != nil || r.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_ADMITTED {
		t.Fatalf("u0 at the opening: %v, %v; want admitted", r, err)
	}
	clk.Advance(time.Second)
	n.Engine.ExpireDue()
	select {
	case e := <-answered:
		if e.GetState() != pb.QueueState_QUEUE_STATE_ADMITTED || e.GetAdmissionToken() == "" || e.GetVersion() == e1.GetVersion() || e.GetSequence() != e1.GetSequence() {
			t.Fatalf("u1's poll answered %v; want its admission, at a new version", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("u1's poll was not answered at its admission")
	}
	// A poll at the version it has waits; one at an old version answers.
	r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-wake", UserId: "u2", SinceVersion: 1, Wait: durationpb.New(engine.MaxPollWait)})
	if err != nil || r.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_QUEUED || r.GetEntry().GetPosition() != 0 {
		t.Fatalf("u2 polled at another version: %v, %v; want queued at the head at once", r, err)
	}
}

// TestWaitingRoomPipelineJoins: joins in a pipeline batch are answered as
// JoinQueue answers them (the calls of one batch run concurrently, so in
// either order): each its own place, a second join of the same user with
// its entry (existed), and a show without a room NO_WAITING_ROOM; the
// joins are durable, as a restart shows.
func TestWaitingRoomPipelineJoins(t *testing.T) {
	n, url := newNode(t, tc.Options{})
	ctx := tc.Ctx(context.Background())
	roomShow(t, n, "room-pipe", &pb.WaitingRoom{OpensAt: timestamppb.New(time.Now().Add(time.Hour)), AdmitPerSecond: 1})
	n.CreateShow(t, "pipe-noroom", 1, 5, 0)
	join := func(id uint64, show, user string) *pb.PipelineCall {
		return &pb.PipelineCall{CallId: id, Call: &pb.PipelineCall_Join{Join: &pb.JoinQueueRequest{ShowId: show, UserId: user}}}
	}
	p := openPipe(t, n.Reservations)
	p.send(join(1, "room-pipe", "ana"), join(2, "room-pipe", "ben"), join(3, "pipe-noroom", "ana"))
	p.waitFor(3)
	p.send(join(4, "room-pipe", "ana"))
	p.waitFor(4)
	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	a, b, again := p.one(1).GetJoin(), p.one(2).GetJoin(), p.one(4).GetJoin()
	seqs := []int64{a.GetEntry().GetSequence(), b.GetEntry().GetSequence()}
	slices.Sort(seqs)
	if !slices.Equal(seqs, []int64{1, 2}) || a.GetExisted() || b.GetExisted() {
		t.Fatalf("joins: %v, %v; want places 1 and 2", a, b)
	}
	if !again.GetExisted() || again.GetEntry().GetSequence() != a.GetEntry().GetSequence() {
		t.Fatalf("ana joins again: %v, want her entry, existed", again)
	}
	wantCallError(t, "a join of a show without a room", p.one(3), codes.FailedPrecondition, "NO_WAITING_ROOM")

	n.Stop()
	n = tc.StartNode(t, url, tc.Options{})
	r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "room-pipe", UserId: "ben"})
	if err != nil || r.GetEntry().GetSequence() != b.GetEntry().GetSequence() || r.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_QUEUED {
		t.Fatalf("ben after a restart: %v, %v; want queued at place %d", r, err, b.GetEntry().GetSequence())
	}
}

// TestWaitingRoomRepeatedJoinWaitsForTheFirst is
// TestWaitlistRepeatedJoinWaitsForTheFirst for the waiting room: a second
// JoinQueue of a user whose first join's write is in flight waits for it,
// and after that write failed joins anew, durably.
func TestWaitingRoomRepeatedJoinWaitsForTheFirst(t *testing.T) {
	const show, user = "room-twice", "u-twice"
	n, url := newNode(t, tc.Options{Store: persistence.Config{CommitTimeout: time.Second}})
	db := openDB(t, url)
	roomShow(t, n, show, &pb.WaitingRoom{OpensAt: timestamppb.New(time.Now().Add(time.Hour)), AdmitPerSecond: 1})
	getSeatMap(t, n, show)
	second := joinTwiceAcrossAFailedWrite(t, db, show, func(ctx context.Context) (proto.Message, error) {
		return n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: show, UserId: user})
	})
	var k int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM room_entries WHERE show_id = $1 AND user_id = $2`, show, user).Scan(&k); err != nil {
		t.Fatal(err)
	}
	if k != 1 {
		t.Fatalf("the second join was answered %v, but the database has %d room entries for the user", second, k)
	}
}

// TestWaitingRoomPollFollowsReload: a PollQueue parked when the show is
// reloaded (found stale: a room write failed) follows the reloaded show,
// so the user's leave, made on it, answers the poll at once. Before, the
// reload woke the waitlist's waiters but not the room's, and the poll
// stayed on the replaced show until its wait (30 s) ran out.
func TestWaitingRoomPollFollowsReload(t *testing.T) {
	const show = "room-reload"
	n, url := newNode(t, tc.Options{Store: persistence.Config{CommitTimeout: time.Second}})
	db := openDB(t, url)
	roomShow(t, n, show, &pb.WaitingRoom{OpensAt: timestamppb.New(time.Now().Add(time.Hour)), AdmitPerSecond: 1})
	ctx := tc.Ctx(context.Background())
	j, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: show, UserId: "y"})
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan *pb.PollQueueResponse, 1)
	go func() {
		r, err := n.Room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: show, UserId: "y",
			SinceVersion: j.GetEntry().GetVersion(), Wait: durationpb.New(30 * time.Second)})
		if err != nil {
			t.Errorf("PollQueue: %v", err)
		}
		polled <- r
	}()

	// A join whose write fails leaves the show stale; the next change
	// reloads it.
	plug := lockOwnerRow(t, db, show)
	if _, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: show, UserId: "x"}); err == nil {
		t.Fatal("a join committed through the lock")
	}
	if err := plug.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Room.LeaveQueue(ctx, &pb.LeaveQueueRequest{ShowId: show, UserId: "y"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-polled:
		if st := r.GetEntry().GetState(); st != pb.QueueState_QUEUE_STATE_LEFT {
			t.Errorf("the poll answered %v, want LEFT", r.GetEntry())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the poll was not answered within 10 s of the leave on the reloaded show")
	}
}

// TestWaitingRoomTurnAfterAdmissionRanOut: a user admitted to a room show
// who joined its waitlist gets a turn after the admission token ran out;
// a hold of the turn's seats needs no token (the turn is the admission),
// while a hold that also asks for a seat outside the turn still does.
func TestWaitingRoomTurnAfterAdmissionRanOut(t *testing.T) {
	clk := tc.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	n, _ := newNode(t, tc.Options{Clock: clk, ExpiryInterval: time.Hour}) // the test runs the rounds
	ctx := tc.Ctx(context.Background())
	const show = "room-turn"
	roomShow(t, n, show, &pb.WaitingRoom{AdmitPerSecond: 10, ShoppingWindow: durationpb.New(time.Minute)})
	round := func() {
		clk.Advance(100 * time.Millisecond)
		n.Engine.ExpireDue()
	}
	token := func(user string) string { return admit(t, n, show, user, round) }
	for user, row := range map[string]string{"h1": "A", "h2": "B"} {
		var seats []string
		for i := 1; i <= 10; i++ {
			seats = append(seats, fmt.Sprintf("%s-%d", row, i))
		}
		if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats, AdmissionToken: token(user)}); err != nil {
			t.Fatalf("hold of row %s: %v", row, err)
		}
	}
	stale := token("w")
	if _, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: show, UserId: "w", SeatsWanted: 1, AdmissionToken: stale}); err != nil {
		t.Fatalf("w joins the waitlist: %v", err)
	}
	clk.Advance(2 * time.Minute) // w's token ran out; the holds expire
	n.Engine.ExpireDue()
	e := pollEntry(t, n, show, "w")
	if e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || len(e.GetTurn().GetSeatIds()) != 1 {
		t.Fatalf("w after the expiries: %v; want a turn of 1 seat", e)
	}
	seat := e.GetTurn().GetSeatIds()[0]
	other := "A-1"
	if seat == other {
		other = "A-2"
	}
	_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "w", SeatIds: []string{seat, other}, AdmissionToken: stale})
	wantAPIError(t, "w holds its turn's seat and another with a token that ran out", err, codes.FailedPrecondition, "NOT_ADMITTED")
	if _, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "w", SeatIds: []string{seat}, AdmissionToken: stale}); err != nil {
		t.Fatalf("w holds its turn's seat with a token that ran out: %v", err)
	}
	if e := pollEntry(t, n, show, "w"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_DONE {
		t.Fatalf("w after taking the turn: %v", e)
	}
}
