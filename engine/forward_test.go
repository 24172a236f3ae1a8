package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/ring"
)

// Tests of forwarding (engine/forward.go): a call for a show owned by
// another node is sent to the owner, one hop, with the caller's deadline and
// metadata, and its answer comes back as the owner gave it.

// fwdShowOwnedBy returns the first ID prefix0, prefix1, ... that every
// ring of nodes gives to owner. The show need not exist.
func fwdShowOwnedBy(t testing.TB, nodes []*tc.Node, owner, prefix string) string {
	t.Helper()
	for i := range 1000 {
		id := fmt.Sprintf("%s%d", prefix, i)
		agree := true
		for _, n := range nodes {
			agree = agree && n.Ring.Owner(id).Name == owner
		}
		if agree {
			return id
		}
	}
	t.Fatalf("no show %s<n> owned by %s on every ring", prefix, owner)
	return ""
}

// fwdMetric returns the sum of n's samples of metric name whose labels
// include every one of labels (each `key="value"`); 0 if there are none.
func fwdMetric(t testing.TB, n *tc.Node, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	for k, v := range scrape(t, n) {
		metric, rest, _ := strings.Cut(k, "{")
		if metric != name {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all {
			sum += v
		}
	}
	return sum
}

// fwdCalls returns how many unary calls of method n served, of any code or
// (if code is not empty) of that code; forwarded ones count where they
// land and at the owner.
func fwdCalls(t testing.TB, n *tc.Node, method, code string) float64 {
	t.Helper()
	labels := []string{`method="` + method + `"`}
	if code != "" {
		labels = append(labels, `code="`+code+`"`)
	}
	return fwdMetric(t, n, "boxoffice_rpc_requests_total", labels...)
}

// fwdForwarded returns how many calls n forwarded to another node.
func fwdForwarded(t testing.TB, n *tc.Node) float64 {
	t.Helper()
	return fwdMetric(t, n, "boxoffice_forwarded_calls_total")
}

// fwdCtx returns a context with the service token and the timeout,
// cancelled at the end of the test.
func fwdCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), d)
	t.Cleanup(cancel)
	return ctx
}

// fwdStatus returns err's status as a message, for comparing two answers
// exactly (code, message and every detail).
func fwdStatus(t testing.TB, err error) proto.Message {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a gRPC status: %v", err)
	}
	return st.Proto()
}

// fwdEntry returns e without its estimated wait, which depends on when it
// was computed, for comparing entries of two streams.
func fwdEntry(e *pb.WaitlistEntry) *pb.WaitlistEntry {
	e = proto.Clone(e).(*pb.WaitlistEntry)
	e.EstimatedWait = nil
	return e
}

// fwdWatchGoroutines counts the goroutines of this process serving
// WatchWaitlist (the owner's handler) and relaying it (a forwarding node's
// routeStream waiting on the owner's stream, without a local handler). All
// nodes of these tests live in this process, and no other test runs
// alongside a test that is not parallel.
func fwdWatchGoroutines() (served, relayed int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		watch := strings.Contains(g, "engine.waitlistServer.WatchWaitlist")
		switch {
		case watch:
			served++
		case strings.Contains(g, "engine.(*Server).routeStream"):
			relayed++
		}
	}
	return served, relayed
}

// TestForwardUnaryExact: a call through a node that does not own the show
// answers exactly what the owner answers: a hold's fields, a replay of its
// idempotency key, a reservation, a seat map, a confirm; and each refusal
// with the same code, message and ErrorInfo (reason and metadata).
func TestForwardUnaryExact(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "fx")
	missing := fwdShowOwnedBy(t, nodes, "c1", "fxmissing") // owned by c1, never created
	other.CreateShow(t, show, 2, 5, 0)
	ctx := fwdCtx(t, 30*time.Second)

	fwd0 := fwdForwarded(t, other)
	req := &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"A-1", "A-2"}, IdempotencyKey: "fx-k1"}
	start := time.Now()
	viaOther, err := other.Reservations.HoldSeats(ctx, req)
	if err != nil {
		t.Fatalf("hold through the non-owner: %v", err)
	}
	if viaOther.GetShowId() != show || viaOther.GetUserId() != "u1" || !slices.Equal(viaOther.GetSeatIds(), req.SeatIds) ||
		!strings.HasPrefix(viaOther.GetHoldId(), show+":") || !viaOther.GetExpiresAt().AsTime().After(start) {
		t.Fatalf("hold through the non-owner: %v", viaOther)
	}
	viaOwner, err := owner.Reservations.HoldSeats(ctx, req) // a replay of the key
	if err != nil {
		t.Fatalf("replay through the owner: %v", err)
	}
	if !proto.Equal(viaOther, viaOwner) {
		t.Errorf("hold through the non-owner %v, its replay through the owner %v", viaOther, viaOwner)
	}
	again, err := other.Reservations.HoldSeats(ctx, req)
	if err != nil || !proto.Equal(again, viaOwner) {
		t.Errorf("replay through the non-owner: %v, %v; want %v", again, err, viaOwner)
	}
	if got := fwdForwarded(t, other) - fwd0; got != 2 {
		t.Errorf("c0 forwarded %v calls, want 2", got)
	}
	if got := fwdForwarded(t, owner); got != 0 {
		t.Errorf("the owner forwarded %v calls, want 0", got)
	}
	if !slices.Contains(owner.Engine.LoadedShows(), ar.ShowID(show)) || slices.Contains(other.Engine.LoadedShows(), ar.ShowID(show)) {
		t.Errorf("loaded: owner %v, other %v; want the show on the owner only", owner.Engine.LoadedShows(), other.Engine.LoadedShows())
	}

	same := func(what string, call func(n *tc.Node) (proto.Message, error)) {
		t.Helper()
		a, errA := call(owner)
		b, errB := call(other)
		if errA != nil || errB != nil {
			t.Fatalf("%s: through the owner %v, through the non-owner %v", what, errA, errB)
		}
		if !proto.Equal(a, b) {
			t.Errorf("%s: through the owner %v, through the non-owner %v", what, a, b)
		}
	}
	same("GetReservation", func(n *tc.Node) (proto.Message, error) {
		return n.Reservations.GetReservation(ctx, &pb.GetReservationRequest{HoldId: viaOther.GetHoldId()})
	})
	same("GetSeatMap", func(n *tc.Node) (proto.Message, error) {
		return n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show, IncludeLayout: true})
	})

	hold := viaOther.GetHoldId()
	for _, c := range []struct {
		name   string
		call   func(n *tc.Node) error
		code   codes.Code
		reason string
		meta   map[string]string
	}{
		{"SEATS_TAKEN", func(n *tc.Node) error {
			_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u2", SeatIds: []string{"A-3", "A-2"}})
			return err
		}, codes.AlreadyExists, "SEATS_TAKEN", map[string]string{"seats": "A-2"}},
		{"NOT_HOLDER release", func(n *tc.Node) error {
			_, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: hold, UserId: "u2"})
			return err
		}, codes.PermissionDenied, "NOT_HOLDER", nil},
		{"NOT_HOLDER confirm", func(n *tc.Node) error {
			_, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: hold, UserId: "u2", PaymentRef: "p"})
			return err
		}, codes.PermissionDenied, "NOT_HOLDER", nil},
		{"HOLD_NOT_FOUND", func(n *tc.Node) error {
			_, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: show + ":no-such-hold", UserId: "u1", PaymentRef: "p"})
			return err
		}, codes.NotFound, "HOLD_NOT_FOUND", nil},
		{"INVALID_SEAT_COUNT", func(n *tc.Node) error {
			_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u2"})
			return err
		}, codes.InvalidArgument, "INVALID_SEAT_COUNT", nil},
		{"IDEMPOTENCY_KEY_REUSED", func(n *tc.Node) error {
			_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"B-1"}, IdempotencyKey: "fx-k1"})
			return err
		}, codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", nil},
		{"SHOW_NOT_FOUND", func(n *tc.Node) error {
			_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: missing, UserId: "u2", SeatIds: []string{"A-1"}})
			return err
		}, codes.NotFound, "SHOW_NOT_FOUND", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fwd := fwdForwarded(t, other)
			errOwner, errOther := c.call(owner), c.call(other)
			e := wantAPIError(t, "through the owner", errOwner, c.code, c.reason)
			wantAPIError(t, "through the non-owner", errOther, c.code, c.reason)
			if len(e.Meta) != len(c.meta) {
				t.Errorf("metadata %v, want %v", e.Meta, c.meta)
			}
			for k, v := range c.meta {
				if e.Meta[k] != v {
					t.Errorf("metadata %v, want %v", e.Meta, c.meta)
				}
			}
			if a, b := fwdStatus(t, errOwner), fwdStatus(t, errOther); !proto.Equal(a, b) {
				t.Errorf("through the owner %v\nthrough the non-owner %v", a, b)
			}
			if got := fwdForwarded(t, other) - fwd; got != 1 {
				t.Errorf("c0 forwarded %v calls, want 1 (the refusal came from the owner)", got)
			}
		})
	}

	// The refusals changed nothing; the holder confirms through the
	// non-owner.
	conf, err := other.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: hold, UserId: "u1", PaymentRef: "pay-1"})
	if err != nil {
		t.Fatalf("confirm through the non-owner: %v", err)
	}
	if r := conf.GetReservation(); r.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED || r.GetHoldId() != hold {
		t.Fatalf("confirm through the non-owner: %v", r)
	}
	got, err := owner.Reservations.GetReservation(ctx, &pb.GetReservationRequest{HoldId: hold})
	if err != nil || !proto.Equal(got.GetReservation(), conf.GetReservation()) {
		t.Errorf("reservation at the owner: %v, %v; the confirm answered %v", got, err, conf.GetReservation())
	}
	if sm := getSeatMap(t, owner, show); sm.GetHeld() != 0 || sm.GetBooked() != 2 {
		t.Errorf("seat map after the confirm: %d held, %d booked; want 0, 2", sm.GetHeld(), sm.GetBooked())
	}
}

// TestForwardDeadline: a call through the non-owner that waits at the owner
// (a 10 s long poll) with a 300 ms deadline ends with DeadlineExceeded after
// about 300 ms, and the owner stops waiting then too, not after 10 s.
func TestForwardDeadline(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "fd")
	other.CreateShow(t, show, 1, 1, 0)
	if _, err := hold(t, owner, show, "h", "A-1"); err != nil {
		t.Fatal(err)
	}
	join(t, other, show, "w", 1)
	e := pollEntry(t, owner, show, "w")

	before := fwdCalls(t, owner, "PollWaitlist", "")
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := other.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{
		ShowId: show, UserId: "w", SinceVersion: e.GetVersion(), Wait: durationpb.New(10 * time.Second),
	})
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("long poll through the non-owner: %v, want DeadlineExceeded", err)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("long poll through the non-owner ended after %v, want about 300ms", took)
	}
	// The owner's handler ends with the caller's deadline (or the relay's
	// cancellation right after it), not at the end of the 10 s wait.
	pollUntil(t, 3*time.Second, "the owner's long poll to end", func() bool {
		return fwdCalls(t, owner, "PollWaitlist", "") > before
	})
	ended := fwdCalls(t, owner, "PollWaitlist", "DeadlineExceeded") + fwdCalls(t, owner, "PollWaitlist", "Canceled")
	if ended != 1 {
		t.Errorf("the owner's long poll: %v ended DeadlineExceeded or Canceled, want 1", ended)
	}
	t.Logf("answered after %v, owner done after %v", took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestForwardMetadata: the caller's token goes with a forwarded call. A
// missing or wrong token is refused Unauthenticated by the first node, and
// nothing reaches the owner; a valid one is accepted by the owner.
func TestForwardMetadata(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "fm")
	other.CreateShow(t, show, 1, 5, 0)

	bg, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
	}{
		{"no token", bg},
		{"wrong token", metadata.AppendToOutgoingContext(bg, "authorization", "Bearer nope")},
		{"not bearer", metadata.AppendToOutgoingContext(bg, "authorization", "Basic "+tc.Token)},
	} {
		t.Run(c.name, func(t *testing.T) {
			fwd, atOwner := fwdForwarded(t, other), fwdCalls(t, owner, "HoldSeats", "")
			refused := fwdCalls(t, other, "HoldSeats", "Unauthenticated")
			_, err := other.Reservations.HoldSeats(c.ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u", SeatIds: []string{"A-1"}})
			wantAPIError(t, "hold", err, codes.Unauthenticated, "UNAUTHENTICATED")
			w, err := other.Waitlist.WatchWaitlist(c.ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "u"})
			if err == nil {
				_, err = w.Recv()
			}
			wantAPIError(t, "watch", err, codes.Unauthenticated, "UNAUTHENTICATED")
			if got := fwdCalls(t, other, "HoldSeats", "Unauthenticated") - refused; got != 1 {
				t.Errorf("c0 refused %v holds Unauthenticated, want 1", got)
			}
			if got := fwdForwarded(t, other) - fwd; got != 0 {
				t.Errorf("c0 forwarded %v calls, want 0", got)
			}
			if got := fwdCalls(t, owner, "HoldSeats", "") - atOwner; got != 0 {
				t.Errorf("the owner saw %v holds, want 0", got)
			}
		})
	}

	fwd, atOwner := fwdForwarded(t, other), fwdCalls(t, owner, "HoldSeats", "OK")
	if _, err := hold(t, other, show, "u", "A-1"); err != nil {
		t.Fatalf("hold with the token through the non-owner: %v", err)
	}
	if got := fwdForwarded(t, other) - fwd; got != 1 {
		t.Errorf("c0 forwarded %v calls, want 1", got)
	}
	if got := fwdCalls(t, owner, "HoldSeats", "OK") - atOwner; got != 1 {
		t.Errorf("the owner served %v holds, want 1", got)
	}
}

// TestForwardWatchRelay: WatchWaitlist through the non-owner relays the
// owner's stream message by message, as a stream opened at the owner sends
// it: the entry, the turn after a release, the end after the user holds,
// then io.EOF. Cancelling a relayed stream ends both the relay and the
// owner's stream.
func TestForwardWatchRelay(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "fw")
	other.CreateShow(t, show, 1, 1, 0)
	h, err := hold(t, owner, show, "h", "A-1")
	if err != nil {
		t.Fatal(err)
	}
	join(t, owner, show, "w", 1)
	ctx := fwdCtx(t, 20*time.Second)

	fwd := fwdForwarded(t, other)
	relayed, err := other.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := owner.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	next := func(what string, want pb.WaitlistState) {
		t.Helper()
		r, err := relayed.Recv()
		if err != nil {
			t.Fatalf("%s, relayed: %v", what, err)
		}
		d, err := direct.Recv()
		if err != nil {
			t.Fatalf("%s, direct: %v", what, err)
		}
		if r.GetEntry().GetState() != want {
			t.Fatalf("%s, relayed: %v, want %v", what, r.GetEntry(), want)
		}
		if a, b := fwdEntry(r.GetEntry()), fwdEntry(d.GetEntry()); !proto.Equal(a, b) {
			t.Errorf("%s: relayed %v, direct %v", what, a, b)
		}
	}
	next("first message", pb.WaitlistState_WAITLIST_STATE_WAITING)
	if _, err := owner.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "h"}); err != nil {
		t.Fatal(err)
	}
	next("after the release", pb.WaitlistState_WAITLIST_STATE_TURN)
	if _, err := hold(t, other, show, "w", "A-1"); err != nil {
		t.Fatalf("w takes the turn: %v", err)
	}
	next("after the take", pb.WaitlistState_WAITLIST_STATE_DONE)
	if _, err := relayed.Recv(); err != io.EOF {
		t.Errorf("relayed stream after the end: %v, want io.EOF", err)
	}
	if _, err := direct.Recv(); err != io.EOF {
		t.Errorf("direct stream after the end: %v, want io.EOF", err)
	}
	if got := fwdForwarded(t, other) - fwd; got != 2 {
		t.Errorf("c0 forwarded %v calls (the watch and the hold), want 2", got)
	}

	t.Run("cancel", func(t *testing.T) {
		show := fwdShowOwnedBy(t, nodes, "c1", "fwc")
		other.CreateShow(t, show, 1, 1, 0)
		if _, err := hold(t, owner, show, "h", "A-1"); err != nil {
			t.Fatal(err)
		}
		join(t, owner, show, "w", 1)
		served0, relayed0 := fwdWatchGoroutines()
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := other.Waitlist.WatchWaitlist(wctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "w"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, 5*time.Second, "the owner's watch and c0's relay", func() bool {
			served, relayed := fwdWatchGoroutines()
			return served == served0+1 && relayed == relayed0+1
		})
		cancel()
		if _, err := s.Recv(); status.Code(err) != codes.Canceled {
			t.Errorf("cancelled stream: %v, want Canceled", err)
		}
		pollUntil(t, 5*time.Second, "the owner's watch and c0's relay to end", func() bool {
			served, relayed := fwdWatchGoroutines()
			return served == served0 && relayed == relayed0
		})
	})
}

// TestForwardOneHop: a call marked forwarded that reaches a node not owning
// its show is answered Unavailable SHOW_MOVED naming the owner in its
// ErrorInfo, and is not forwarded again: the owner never sees it. A marked
// call that reaches the owner is served.
func TestForwardOneHop(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "f1")
	other.CreateShow(t, show, 1, 2, 0)
	ctx := metadata.AppendToOutgoingContext(fwdCtx(t, 30*time.Second), "x-boxoffice-forwarded-by", "test")

	moved := func(t *testing.T, what string, err error) {
		t.Helper()
		st, ok := status.FromError(err)
		if !ok || st.Code() != codes.Unavailable {
			t.Fatalf("%s: %v, want Unavailable SHOW_MOVED", what, err)
		}
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			if i, ok := d.(*errdetails.ErrorInfo); ok {
				info = i
			}
		}
		if info == nil || info.GetDomain() != engine.ErrorDomain || info.GetReason() != "SHOW_MOVED" ||
			info.GetMetadata()["owner"] != "c1" || info.GetMetadata()["owner_addr"] != owner.Server.GRPCAddr() {
			t.Fatalf("%s: ErrorInfo %v, want SHOW_MOVED naming c1 at %s", what, info, owner.Server.GRPCAddr())
		}
	}
	fwd, atOwner := fwdForwarded(t, other), fwdCalls(t, owner, "HoldSeats", "")
	_, err := other.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u", SeatIds: []string{"A-1"}})
	moved(t, "hold", err)
	_, err = other.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: show + ":x", UserId: "u", PaymentRef: "p"})
	moved(t, "confirm by hold ID", err)
	w, err := other.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "u"})
	if err == nil {
		_, err = w.Recv()
	}
	moved(t, "watch", err)

	if got := fwdForwarded(t, other) - fwd; got != 0 {
		t.Errorf("c0 forwarded %v calls, want 0", got)
	}
	if got := fwdCalls(t, owner, "HoldSeats", "") + fwdCalls(t, owner, "ConfirmHold", "") - atOwner; got != 0 {
		t.Errorf("the owner saw %v of the calls, want 0", got)
	}
	if l := owner.Engine.LoadedShows(); slices.Contains(l, ar.ShowID(show)) {
		t.Errorf("the owner loaded the show: %v", l)
	}

	// Served where it lands when that is the owner.
	if _, err := owner.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u", SeatIds: []string{"A-2"}}); err != nil {
		t.Fatalf("marked hold at the owner: %v", err)
	}
	if sm := getSeatMap(t, owner, show); sm.GetHeld() != 1 || seatStatuses(t, sm)["A-1"] != ar.SeatAvailable {
		t.Errorf("seat map: %v; want only A-2 held", sm)
	}
}

// TestForwardOwnerUnreachable: right after a show's owner crashed, while
// the others still have it in their rings, a call through a survivor is
// answered Unavailable SHOW_MOVED naming the crashed owner, within the
// caller's deadline; once the survivors dropped it and its lease ran out,
// the same call succeeds at the new owner, and the hold taken before the
// crash is still there.
func TestForwardOwnerUnreachable(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	// Slower failure detection than the default (~1 s), so the calls
	// below run well before the survivors drop the crashed node.
	slow := func(c *ring.Config) {
		c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult = 500*time.Millisecond, 250*time.Millisecond, 4
	}
	nodes := []*tc.Node{tc.StartNode(t, url, tc.Options{NodeID: "c0", Cluster: &tc.ClusterOptions{Ring: slow}})}
	for i := 1; i < 3; i++ {
		nodes = append(nodes, tc.StartNode(t, url, tc.Options{
			NodeID: fmt.Sprintf("c%d", i), Cluster: &tc.ClusterOptions{Join: []string{nodes[0].Ring.GossipAddr()}, Ring: slow},
		}))
	}
	waitMembers(t, nodes, 3)
	victim, survivors := nodes[2], nodes[:2]
	show := fwdShowOwnedBy(t, nodes, "c2", "fu")
	nodes[0].CreateShow(t, show, 1, 4, 0)
	before, err := hold(t, nodes[0], show, "early", "A-1") // loads the show on c2
	if err != nil {
		t.Fatal(err)
	}
	addr := victim.Server.GRPCAddr()
	req := &pb.HoldSeatsRequest{ShowId: show, UserId: "late", SeatIds: []string{"A-2"}, IdempotencyKey: "fu-late"}

	crashed := time.Now()
	victim.Crash()
	t.Logf("crash took %v", time.Since(crashed).Round(time.Millisecond))
	stillOwner := func() bool {
		for _, n := range survivors {
			if n.Ring.Owner(show).Name != "c2" {
				return false
			}
		}
		return true
	}
	if !stillOwner() {
		t.Fatalf("the survivors dropped c2 %v after the crash, before the test could call", time.Since(crashed))
	}
	const deadline = 3 * time.Second
	for _, n := range survivors {
		name := n.Engine.NodeID()
		movedTo := func(what string, err error, took time.Duration) {
			t.Helper()
			e := wantAPIError(t, what+" through "+name, err, codes.Unavailable, "SHOW_MOVED")
			if e.Meta["owner"] != "c2" || e.Meta["owner_addr"] != addr {
				t.Errorf("%s through %s: metadata %v, want owner c2 at %s", what, name, e.Meta, addr)
			}
			if took >= deadline {
				t.Errorf("%s through %s answered after %v, not within the caller's deadline", what, name, took)
			}
		}
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), deadline)
		start := time.Now()
		_, err := n.Reservations.HoldSeats(ctx, req)
		if apiErrorOf(err).Reason == "OUTCOME_UNKNOWN" {
			// The forwarder's connection to c2 had not seen the crash yet:
			// the call was sent, then the connection failed, which is
			// OUTCOME_UNKNOWN. A retry with the same key finds c2 gone.
			t.Logf("hold through %s: %v; retried", name, err)
			start = time.Now()
			_, err = n.Reservations.HoldSeats(ctx, req)
		}
		movedTo("hold", err, time.Since(start))
		start = time.Now()
		w, err := n.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "late"})
		if err == nil {
			_, err = w.Recv()
		}
		movedTo("watch", err, time.Since(start))
		cancel()
	}
	if !stillOwner() {
		t.Fatalf("the survivors dropped c2 %v after the crash, during the calls: the answers may not be the forwarder's", time.Since(crashed))
	}

	waitMembers(t, survivors, 2)
	detected := time.Since(crashed)
	var resp *pb.HoldSeatsResponse
	pollUntil(t, 10*time.Second, "the hold at the new owner", func() bool {
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), deadline)
		defer cancel()
		resp, err = survivors[0].Reservations.HoldSeats(ctx, req)
		if err != nil && apiErrorOf(err).Code != codes.Unavailable {
			t.Fatalf("hold after the crash: %v", err)
		}
		return err == nil
	})
	t.Logf("c2 dropped %v after the crash, served again after %v by %s", detected.Round(time.Millisecond),
		time.Since(crashed).Round(time.Millisecond), survivors[0].Ring.Owner(show).Name)
	if !slices.Equal(resp.GetSeatIds(), req.SeatIds) {
		t.Errorf("hold after the crash: %v", resp)
	}
	r, err := survivors[1].Reservations.GetReservation(fwdCtx(t, 10*time.Second), &pb.GetReservationRequest{HoldId: before.GetHoldId()})
	if err != nil || r.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD {
		t.Errorf("the hold taken before the crash: %v, %v", r, err)
	}
}

// TestForwardServedWhereLanded: calls that name no show
// (ListUserReservations without a show) and the services that are not
// routed (CatalogService, AdminService) are served by the node they reach,
// even when they concern a show owned by another node.
func TestForwardServedWhereLanded(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "fl")
	other.CreateShow(t, show, 1, 5, 0)
	h, err := hold(t, owner, show, "lu", "A-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := fwdCtx(t, 30*time.Second)
	bg, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := tc.AdminCtx(bg)

	for _, c := range []struct {
		name, method string
		forwarded    bool
		call         func(n *tc.Node) (proto.Message, error)
		check        func(m proto.Message) bool
	}{
		{"ListUserReservations", "ListUserReservations", false, func(n *tc.Node) (proto.Message, error) {
			return n.Reservations.ListUserReservations(ctx, &pb.ListUserReservationsRequest{UserId: "lu"})
		}, func(m proto.Message) bool {
			rs := m.(*pb.ListUserReservationsResponse).GetReservations()
			return len(rs) == 1 && rs[0].GetHoldId() == h.GetHoldId()
		}},
		// With a show, the request names one and goes to its owner.
		{"ListUserReservations of a show", "ListUserReservations", true, func(n *tc.Node) (proto.Message, error) {
			return n.Reservations.ListUserReservations(ctx, &pb.ListUserReservationsRequest{UserId: "lu", ShowId: show})
		}, func(m proto.Message) bool {
			rs := m.(*pb.ListUserReservationsResponse).GetReservations()
			return len(rs) == 1 && rs[0].GetHoldId() == h.GetHoldId()
		}},
		{"CatalogService.GetShow", "GetShow", false, func(n *tc.Node) (proto.Message, error) {
			return n.Catalog.GetShow(ctx, &pb.GetShowRequest{ShowId: show})
		}, func(m proto.Message) bool { return m.(*pb.GetShowResponse).GetShow().GetShowId() == show }},
		{"AdminService.ListReservationEvents", "ListReservationEvents", false, func(n *tc.Node) (proto.Message, error) {
			return n.Admin.ListReservationEvents(admin, &pb.ListReservationEventsRequest{ShowId: show})
		}, func(m proto.Message) bool {
			evs := m.(*pb.ListReservationEventsResponse).GetEvents()
			return len(evs) == 1 && evs[0].GetHoldId() == h.GetHoldId()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fwd, here, there := fwdForwarded(t, other), fwdCalls(t, other, c.method, ""), fwdCalls(t, owner, c.method, "")
			got, err := c.call(other)
			if err != nil {
				t.Fatalf("through c0: %v", err)
			}
			if !c.check(got) {
				t.Errorf("through c0: %v", got)
			}
			want := 0.0
			if c.forwarded {
				want = 1
			}
			if d := fwdForwarded(t, other) - fwd; d != want {
				t.Errorf("c0 forwarded %v calls, want %v", d, want)
			}
			if d := fwdCalls(t, other, c.method, "") - here; d != 1 {
				t.Errorf("c0 served %v calls of %s, want 1", d, c.method)
			}
			if d := fwdCalls(t, owner, c.method, "") - there; d != want {
				t.Errorf("the owner saw %v calls of %s, want %v", d, c.method, want)
			}
			direct, err := c.call(owner)
			if err != nil || !proto.Equal(direct, got) {
				t.Errorf("through the owner: %v, %v; through c0: %v", direct, err, got)
			}
		})
	}
}

// recOwner is a ring member whose gRPC server is the test's: it records the
// metadata and deadline of every call it gets and answers as the request's
// user ID says, so that a test can see exactly what a forwarded call
// carries and what becomes of any answer.
type recOwner struct {
	name, addr string
	mu         sync.Mutex // guards calls
	calls      []recCall
	ended      chan error // receives ctx.Err() when a blocking call ends
}

type recCall struct {
	method   string
	md       metadata.MD
	left     time.Duration // until the deadline, at arrival
	deadline bool
}

func (o *recOwner) record(ctx context.Context, method string) {
	md, _ := metadata.FromIncomingContext(ctx)
	c := recCall{method: method, md: md}
	if d, ok := ctx.Deadline(); ok {
		c.left, c.deadline = time.Until(d), true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, c)
}

// last returns the last call recorded, failing the test if there is none.
func (o *recOwner) last(t testing.TB) recCall {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.calls) == 0 {
		t.Fatal("the recording owner got no call")
	}
	return o.calls[len(o.calls)-1]
}

func (o *recOwner) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.calls)
}

// recErrors are the answers of the recording owner by user ID.
var recErrors = map[string]func() error{
	"taken": func() error {
		st, _ := status.New(codes.AlreadyExists, "SEATS_TAKEN: seats taken: A-1").WithDetails(
			&errdetails.ErrorInfo{Reason: "SEATS_TAKEN", Domain: engine.ErrorDomain, Metadata: map[string]string{"seats": "A-1"}},
			&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
		return st.Err()
	},
	"shutting": func() error { // an engine answer: passed on as it is
		st, _ := status.New(codes.Unavailable, "SHUTTING_DOWN: node shutting down").WithDetails(
			&errdetails.ErrorInfo{Reason: "SHUTTING_DOWN", Domain: engine.ErrorDomain})
		return st.Err()
	},
	"bare":     func() error { return status.Error(codes.Unavailable, "not from the engine") }, // looks like the transport's
	"internal": func() error { return status.Error(codes.Internal, "boom") },
}

// recEntry is the recording owner's i-th message of a watch.
func recEntry(i int) *pb.WaitlistEntry {
	return &pb.WaitlistEntry{ShowId: "rec", UserId: "w", State: pb.WaitlistState_WAITLIST_STATE_WAITING,
		Position: int32(3 - i), Version: uint64(10 + i), EstimatedWait: durationpb.New(time.Duration(i) * time.Second)}
}

type recReservations struct {
	pb.UnimplementedReservationServiceServer
	o *recOwner
}

func (s recReservations) HoldSeats(ctx context.Context, req *pb.HoldSeatsRequest) (*pb.HoldSeatsResponse, error) {
	if f, ok := recErrors[req.GetUserId()]; ok {
		return nil, f()
	}
	return &pb.HoldSeatsResponse{HoldId: req.GetShowId() + ":rec", SeatIds: req.GetSeatIds(), ShowId: req.GetShowId(),
		UserId: req.GetUserId(), ExpiresAt: timestamppb.New(time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC))}, nil
}

// GetSeatMap answers as the transport would: a bare Unavailable.
func (s recReservations) GetSeatMap(ctx context.Context, req *pb.GetSeatMapRequest) (*pb.GetSeatMapResponse, error) {
	return nil, recErrors["bare"]()
}

type recWaitlist struct {
	pb.UnimplementedWaitlistServiceServer
	o *recOwner
}

func (s recWaitlist) PollWaitlist(ctx context.Context, req *pb.PollWaitlistRequest) (*pb.PollWaitlistResponse, error) {
	<-ctx.Done()
	s.o.ended <- ctx.Err()
	return nil, status.FromContextError(ctx.Err()).Err()
}

func (s recWaitlist) WatchWaitlist(req *pb.WatchWaitlistRequest, stream pb.WaitlistService_WatchWaitlistServer) error {
	user := req.GetUserId()
	if user == "bare" {
		return recErrors[user]()
	}
	for i := range 3 {
		if err := stream.Send(&pb.WatchWaitlistResponse{Entry: recEntry(i)}); err != nil {
			return err
		}
		if user == "block" {
			<-stream.Context().Done()
			s.o.ended <- stream.Context().Err()
			return stream.Context().Err()
		}
	}
	if f, ok := recErrors[user]; ok {
		return f()
	}
	return nil
}

// startRecOwner adds a recording owner named name to the cluster of nodes
// and waits until every ring has it.
func startRecOwner(t *testing.T, nodes []*tc.Node, name string) *recOwner {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &recOwner{name: name, addr: lis.Addr().String(), ended: make(chan error, 8)}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			o.record(ctx, info.FullMethod)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			o.record(ss.Context(), info.FullMethod)
			return h(srv, ss)
		}))
	pb.RegisterReservationServiceServer(srv, recReservations{o: o})
	pb.RegisterWaitlistServiceServer(srv, recWaitlist{o: o})
	go srv.Serve(lis) //nolint:errcheck // ends at Stop
	t.Cleanup(srv.Stop)
	r, err := ring.New(ring.Config{Name: name, GRPCAddr: o.addr, Join: []string{nodes[0].Ring.GossipAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown() })
	waitMembers(t, nodes, len(nodes)+1)
	return o
}

// TestForwardToRecordingOwner forwards calls to an owner that records what
// it gets and answers what the test wants: a forwarded call carries the
// caller's deadline and metadata (token, other keys, binary values) and
// the forwarding node's name under x-boxoffice-forwarded-by; the owner's
// answers (a reply, a refusal with several details, an engine Unavailable,
// an Internal; a stream that ends, or fails) come back unchanged, except an
// Unavailable without the engine's ErrorInfo, which is the transport's: it
// becomes OUTCOME_UNKNOWN for a hold (the owner may have done it) and
// SHOW_MOVED naming the owner for a read. A relayed stream that the caller
// cancels ends at the owner too.
func TestForwardToRecordingOwner(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	rec := startRecOwner(t, nodes, "rec")
	show := fwdShowOwnedBy(t, nodes, "rec", "fr")
	via := nodes[0]

	t.Run("metadata and deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-trace", "t-1", "x-trace", "t-2", "x-blob-bin", string([]byte{0, 1, 255}))
		req := &pb.HoldSeatsRequest{ShowId: show, UserId: "ok", SeatIds: []string{"A-1", "B-2"}, IdempotencyKey: "k"}
		got, err := via.Reservations.HoldSeats(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := recReservations{}.HoldSeats(ctx, req)
		if !proto.Equal(got, want) {
			t.Errorf("answer %v, want the owner's %v", got, want)
		}
		c := rec.last(t)
		if c.method != pb.ReservationService_HoldSeats_FullMethodName {
			t.Errorf("method %s", c.method)
		}
		for k, want := range map[string][]string{
			"authorization":            {"Bearer " + tc.Token},
			"x-trace":                  {"t-1", "t-2"},
			"x-blob-bin":               {string([]byte{0, 1, 255})},
			"x-boxoffice-forwarded-by": {"c0"},
		} {
			if got := c.md.Get(k); !slices.Equal(got, want) {
				t.Errorf("owner's metadata %s: %q, want %q", k, got, want)
			}
		}
		if !c.deadline || c.left > 5*time.Second || c.left < 4*time.Second {
			t.Errorf("owner's deadline: %v left (set: %v), want a little under 5s", c.left, c.deadline)
		}
	})

	t.Run("answers", func(t *testing.T) {
		for user, answer := range recErrors {
			t.Run(user, func(t *testing.T) {
				_, err := via.Reservations.HoldSeats(fwdCtx(t, 5*time.Second), &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: []string{"A-1"}})
				if user == "bare" {
					// The owner may have done the hold: its outcome is
					// unknown. A read is not done twice by a retry.
					wantAPIError(t, "bare Unavailable to a hold", err, codes.Unavailable, "OUTCOME_UNKNOWN")
					_, err := via.Reservations.GetSeatMap(fwdCtx(t, 5*time.Second), &pb.GetSeatMapRequest{ShowId: show})
					e := wantAPIError(t, "bare Unavailable to a read", err, codes.Unavailable, "SHOW_MOVED")
					if e.Meta["owner"] != "rec" || e.Meta["owner_addr"] != rec.addr {
						t.Errorf("metadata %v, want owner rec at %s", e.Meta, rec.addr)
					}
					return
				}
				if a, b := fwdStatus(t, err), fwdStatus(t, answer()); !proto.Equal(a, b) {
					t.Errorf("answer %v\nwant the owner's %v", a, b)
				}
			})
		}
	})

	t.Run("long poll deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := via.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: "w", Wait: durationpb.New(10 * time.Second)})
		if took := time.Since(start); status.Code(err) != codes.DeadlineExceeded || took > 3*time.Second {
			t.Errorf("long poll: %v after %v, want DeadlineExceeded after about 300ms", err, took)
		}
		if c := rec.last(t); !c.deadline || c.left > 300*time.Millisecond || c.left <= 0 {
			t.Errorf("owner's deadline: %v left (set: %v), want under 300ms", c.left, c.deadline)
		}
		select {
		case err := <-rec.ended:
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Errorf("owner's long poll ended with %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("the owner's long poll did not end")
		}
	})

	t.Run("streams", func(t *testing.T) {
		for _, c := range []struct {
			user string
			n    int
			end  func() error // nil: io.EOF
		}{
			{"ok", 3, nil},
			{"taken", 3, recErrors["taken"]},
			{"internal", 3, recErrors["internal"]},
		} {
			t.Run(c.user, func(t *testing.T) {
				s, err := via.Waitlist.WatchWaitlist(fwdCtx(t, 5*time.Second), &pb.WatchWaitlistRequest{ShowId: show, UserId: c.user})
				if err != nil {
					t.Fatal(err)
				}
				for i := range c.n {
					m, err := s.Recv()
					if err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
					if !proto.Equal(m.GetEntry(), recEntry(i)) {
						t.Errorf("message %d: %v, want %v", i, m.GetEntry(), recEntry(i))
					}
				}
				_, err = s.Recv()
				switch {
				case c.end == nil && err != io.EOF:
					t.Errorf("end: %v, want io.EOF", err)
				case c.end != nil:
					if a, b := fwdStatus(t, err), fwdStatus(t, c.end()); !proto.Equal(a, b) {
						t.Errorf("end %v\nwant the owner's %v", a, b)
					}
				}
			})
		}
		t.Run("bare", func(t *testing.T) {
			s, err := via.Waitlist.WatchWaitlist(fwdCtx(t, 5*time.Second), &pb.WatchWaitlistRequest{ShowId: show, UserId: "bare"})
			if err == nil {
				_, err = s.Recv()
			}
			e := wantAPIError(t, "bare Unavailable", err, codes.Unavailable, "SHOW_MOVED")
			if e.Meta["owner"] != "rec" || e.Meta["owner_addr"] != rec.addr {
				t.Errorf("metadata %v, want owner rec at %s", e.Meta, rec.addr)
			}
		})
		t.Run("cancel", func(t *testing.T) {
			ctx, cancel := context.WithCancel(fwdCtx(t, 10*time.Second))
			defer cancel()
			s, err := via.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "block"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
			cancel()
			if _, err := s.Recv(); status.Code(err) != codes.Canceled {
				t.Errorf("cancelled stream: %v, want Canceled", err)
			}
			select {
			case err := <-rec.ended:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("owner's stream ended with %v, want context.Canceled", err)
				}
			case <-time.After(3 * time.Second):
				t.Error("the owner's stream did not end after the caller cancelled")
			}
		})
	})

	t.Run("not forwarded twice", func(t *testing.T) {
		calls := rec.count()
		ctx := metadata.AppendToOutgoingContext(fwdCtx(t, 5*time.Second), "x-boxoffice-forwarded-by", "test")
		_, err := via.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "ok", SeatIds: []string{"A-1"}})
		e := wantAPIError(t, "marked hold", err, codes.Unavailable, "SHOW_MOVED")
		if e.Meta["owner"] != "rec" || e.Meta["owner_addr"] != rec.addr {
			t.Errorf("metadata %v, want owner rec at %s", e.Meta, rec.addr)
		}
		if got := rec.count(); got != calls {
			t.Errorf("the owner got %d calls, want none", got-calls)
		}
	})
}

// TestForwardRelayEndsAtShutdown: a relayed WatchWaitlist ends with
// SHUTTING_DOWN when the relaying node shuts down, and its Shutdown does not
// wait for the owner's stream, which goes on.
func TestForwardRelayEndsAtShutdown(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	owner, other := nodes[1], nodes[0]
	show := fwdShowOwnedBy(t, nodes, "c1", "fs")
	other.CreateShow(t, show, 1, 1, 0)
	if _, err := hold(t, owner, show, "h", "A-1"); err != nil {
		t.Fatal(err)
	}
	join(t, owner, show, "w", 1)
	ctx := fwdCtx(t, 20*time.Second)
	relayed, err := other.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relayed.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := other.Server.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown of the relaying node: %v (after %v)", err, time.Since(start))
	}
	_, err = relayed.Recv()
	wantAPIError(t, "the relayed stream at shutdown", err, codes.Unavailable, "SHUTTING_DOWN")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v with a relayed stream open", d)
	}
	if e := pollEntry(t, owner, show, "w"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING {
		t.Errorf("w at the owner after the relay ended: %v", e)
	}
}

// TestForwardCutAfterSendIsOutcomeUnknown cuts the connection from the
// forwarding node to the owner while a forwarded hold, sent without an
// idempotency key, waits at the owner for its COMMIT. The owner commits
// it all the same, so the forwarder must not answer SHOW_MOVED (not done:
// go to the owner), which would have the caller take it again: it answers
// Unavailable OUTCOME_UNKNOWN. A hold or a read forwarded once the owner
// cannot be reached at all was never sent: SHOW_MOVED.
func TestForwardCutAfterSendIsOutcomeUnknown(t *testing.T) {
	const app = "fwd-cut-owner"
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	db := openDB(t, url)
	nodes := []*tc.Node{tc.StartNode(t, url, tc.Options{NodeID: "c0", Cluster: &tc.ClusterOptions{}})}
	var px *tc.Proxy // in front of c1's gRPC address, as c1 advertises it
	nodes = append(nodes, tc.StartNode(t, url+"&application_name="+app, tc.Options{
		NodeID: "c1",
		Cluster: &tc.ClusterOptions{Join: []string{nodes[0].Ring.GossipAddr()}, Ring: func(c *ring.Config) {
			px = tc.NewProxy(t, c.GRPCAddr)
			c.GRPCAddr = px.Addr()
		}},
	}))
	waitMembers(t, nodes, 2)
	show := fwdShowOwnedBy(t, nodes, "c1", "fcut")
	nodes[0].CreateShow(t, show, 1, 4, 0)
	if _, err := hold(t, nodes[0], show, "early", "A-1"); err != nil { // loads the show on c1
		t.Fatal(err)
	}
	openGate := commitGate(t, db, "NEW.user_id = 'cut'")

	answered := make(chan error, 1)
	go func() {
		_, err := nodes[0].Reservations.HoldSeats(fwdCtx(t, 20*time.Second), &pb.HoldSeatsRequest{ShowId: show, UserId: "cut", SeatIds: []string{"A-2"}})
		answered <- err
	}()
	waitForBackend(t, db, app, `query ILIKE 'commit' AND wait_event_type = 'Lock' AND wait_event = 'advisory'`, 10*time.Second)
	px.Cut()
	err := <-answered
	openGate()
	wantAPIError(t, "the hold whose connection to the owner was cut", err, codes.Unavailable, "OUTCOME_UNKNOWN")
	var rows int
	pollUntil(t, 10*time.Second, "the cut hold committed at the owner", func() bool {
		if err := db.QueryRow(context.Background(), `SELECT count(*) FROM reservations WHERE show_id = $1 AND user_id = 'cut'`, show).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		return rows == 1
	})

	_, err = nodes[0].Reservations.HoldSeats(fwdCtx(t, 5*time.Second), &pb.HoldSeatsRequest{ShowId: show, UserId: "later", SeatIds: []string{"A-3"}})
	wantAPIError(t, "a hold forwarded to the unreachable owner", err, codes.Unavailable, "SHOW_MOVED")
	_, err = nodes[0].Reservations.GetSeatMap(fwdCtx(t, 5*time.Second), &pb.GetSeatMapRequest{ShowId: show})
	wantAPIError(t, "a seat map forwarded to the unreachable owner", err, codes.Unavailable, "SHOW_MOVED")
}

// TestForwardClosesConnectionsToDepartedNodes: a node keeps one connection
// for forwarded calls per other node it forwarded to, and closes the one to
// a node that left the ring at its next forwarded call, so nodes that come
// and go leave no connections behind.
func TestForwardClosesConnectionsToDepartedNodes(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	via := nodes[0]
	const gauge = "boxoffice_forward_connections"
	shows := map[string]string{}
	for _, owner := range []string{"c1", "c2"} {
		shows[owner] = fwdShowOwnedBy(t, nodes, owner, "fconn-"+owner)
		via.CreateShow(t, shows[owner], 1, 4, 0)
		for range 2 {
			getSeatMap(t, via, shows[owner])
		}
	}
	if got := fwdMetric(t, via, gauge); got != 2 {
		t.Fatalf("%s on c0 after forwarding to c1 and c2: %v, want 2", gauge, got)
	}
	nodes[2].Stop()
	waitMembers(t, nodes[:2], 2)
	getSeatMap(t, via, shows["c1"])
	if got := fwdMetric(t, via, gauge); got != 1 {
		t.Fatalf("%s on c0 after c2 left and a call forwarded to c1: %v, want 1", gauge, got)
	}
	if fwdForwarded(t, via) < 5 {
		t.Fatalf("c0 forwarded %v calls, want 5", fwdForwarded(t, via))
	}
}
