package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
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
// one it is decided as usual; an idempotent replay needs none.
func TestWaitingRoomTokens(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	ctx := tc.Ctx(context.Background())
	roomShow(t, n, "room-tok", &pb.WaitingRoom{AdmitPerSecond: 10})
	roomShow(t, n, "room-other", &pb.WaitingRoom{AdmitPerSecond: 10})
	key := tc.AdmissionKey()
	valid := time.Now().Add(5 * time.Minute)
	alice := key.Sign("room-tok", "alice", valid)
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
