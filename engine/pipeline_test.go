package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/internal/wirecodec"
)

// pipe is a client's Pipeline stream; a goroutine of its own collects the
// answers.
type pipe struct {
	t      testing.TB
	stream pb.ReservationService_PipelineClient
	cancel context.CancelFunc // cuts the stream
	done   chan struct{}      // closed when the stream ended; err says how
	err    error              // nil when it ended OK

	mu   sync.Mutex // guards the fields below
	byID map[uint64][]*pb.PipelineResult
	n    int   // answers received
	msgs []int // answers per response message, in arrival order
}

// openPipe opens a Pipeline on rs with the service token.
func openPipe(t testing.TB, rs pb.ReservationServiceClient) *pipe {
	t.Helper()
	return openPipeCtx(t, rs, tc.Ctx(context.Background()))
}

func openPipeCtx(t testing.TB, rs pb.ReservationServiceClient, ctx context.Context) *pipe {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := rs.Pipeline(ctx)
	if err != nil {
		t.Fatalf("Pipeline: %v", err)
	}
	p := &pipe{t: t, stream: stream, cancel: cancel, done: make(chan struct{}), byID: map[uint64][]*pb.PipelineResult{}}
	go p.receive()
	return p
}

func (p *pipe) receive() {
	defer close(p.done)
	for {
		resp, err := p.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				p.err = err
			}
			return
		}
		p.mu.Lock()
		p.msgs = append(p.msgs, len(resp.GetResults()))
		for _, r := range resp.GetResults() {
			p.byID[r.GetCallId()] = append(p.byID[r.GetCallId()], r)
			p.n++
		}
		p.mu.Unlock()
	}
}

// send sends calls in one request message.
func (p *pipe) send(calls ...*pb.PipelineCall) {
	p.t.Helper()
	if err := p.stream.Send(&pb.PipelineRequest{Calls: calls}); err != nil {
		p.t.Fatalf("Pipeline send: %v", err)
	}
}

// count returns the number of answers received.
func (p *pipe) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// waitFor waits until at least n answers arrived.
func (p *pipe) waitFor(n int) {
	p.t.Helper()
	pollUntil(p.t, 30*time.Second, fmt.Sprintf("%d pipeline answers", n), func() bool { return p.count() >= n })
}

// answers returns the answers to call id.
func (p *pipe) answers(id uint64) []*pb.PipelineResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.byID[id])
}

// one returns the one answer to call id, failing the test unless there
// is exactly one.
func (p *pipe) one(id uint64) *pb.PipelineResult {
	p.t.Helper()
	a := p.answers(id)
	if len(a) != 1 {
		p.t.Fatalf("call %d: %d answers, want 1: %v", id, len(a), a)
	}
	return a[0]
}

// end closes the client's side and returns how the stream ended (nil: OK).
func (p *pipe) end() error {
	p.t.Helper()
	if err := p.stream.CloseSend(); err != nil {
		p.t.Fatalf("CloseSend: %v", err)
	}
	return p.wait()
}

// wait waits for the stream's end and returns how it ended.
func (p *pipe) wait() error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(30 * time.Second):
		p.t.Fatalf("the pipeline stream did not end")
		return nil
	}
}

// messages returns the number of answers of each response message.
func (p *pipe) messages() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.msgs)
}

func pipeHold(id uint64, show, user, key string, seats ...string) *pb.PipelineCall {
	return &pb.PipelineCall{CallId: id, Call: &pb.PipelineCall_Hold{Hold: &pb.HoldSeatsRequest{
		ShowId: show, UserId: user, SeatIds: seats, IdempotencyKey: key}}}
}

func pipeConfirm(id uint64, hold, user, ref string) *pb.PipelineCall {
	return &pb.PipelineCall{CallId: id, Call: &pb.PipelineCall_Confirm{Confirm: &pb.ConfirmHoldRequest{
		HoldId: hold, UserId: user, PaymentRef: ref}}}
}

func pipeRelease(id uint64, hold, user string) *pb.PipelineCall {
	return &pb.PipelineCall{CallId: id, Call: &pb.PipelineCall_Release{Release: &pb.ReleaseHoldRequest{HoldId: hold, UserId: user}}}
}

func withTimeout(c *pb.PipelineCall, d *durationpb.Duration) *pb.PipelineCall {
	c.Timeout = d
	return c
}

// wantCallError returns r's error, failing the test unless it is one with
// code and reason, its message prefixed with the reason.
func wantCallError(t testing.TB, what string, r *pb.PipelineResult, code codes.Code, reason string) *pb.CallError {
	t.Helper()
	e := r.GetError()
	if e == nil {
		t.Fatalf("%s: answered %v, want %v %s", what, r, code, reason)
	}
	if codes.Code(e.GetCode()) != code || e.GetReason() != reason || !strings.HasPrefix(e.GetMessage(), reason+": ") {
		t.Fatalf("%s: %v %s (%s), want %v %s", what, codes.Code(e.GetCode()), e.GetReason(), e.GetMessage(), code, reason)
	}
	return e
}

// unaryCall makes c's call through the unary RPC, bounded by c's timeout.
func unaryCall(ctx context.Context, rs pb.ReservationServiceClient, c *pb.PipelineCall) (proto.Message, error) {
	if d := c.GetTimeout(); d != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.AsDuration())
		defer cancel()
	}
	switch x := c.GetCall().(type) {
	case *pb.PipelineCall_Hold:
		return rs.HoldSeats(ctx, x.Hold)
	case *pb.PipelineCall_Confirm:
		return rs.ConfirmHold(ctx, x.Confirm)
	case *pb.PipelineCall_Release:
		return rs.ReleaseHold(ctx, x.Release)
	}
	return nil, fmt.Errorf("no unary RPC for %v", c)
}

// twin is one of two shows given the same state; holds names its holds.
type twin struct {
	show  string
	holds map[string]string // name → hold ID
}

// hold is a hold ID as the twins can compare it: the name of a hold of the
// set-up, or <new> for another hold of the show.
func (w twin) hold(id string) string {
	for name, h := range w.holds {
		if h == id {
			return "<" + name + ">"
		}
	}
	if strings.HasPrefix(id, w.show+":") {
		return "<new>"
	}
	return id
}

func (w twin) showID(id string) string {
	if id == w.show {
		return "<show>"
	}
	return id
}

func (w twin) reservation(r *pb.Reservation) string {
	return fmt.Sprintf("%s show=%s user=%s seats=%v %v pay=%q created=%t expires=%t booked=%t ended=%t",
		w.hold(r.GetHoldId()), w.showID(r.GetShowId()), r.GetUserId(), r.GetSeatIds(), r.GetStatus(), r.GetPaymentRef(),
		r.GetCreatedAt() != nil, r.GetExpiresAt() != nil, r.GetBookedAt() != nil, r.GetEndedAt() != nil)
}

// success is an answer as the twins can compare it.
func (w twin) success(m proto.Message) string {
	switch r := m.(type) {
	case *pb.HoldSeatsResponse:
		return fmt.Sprintf("OK hold %s show=%s user=%s seats=%v %v expires=%t", w.hold(r.GetHoldId()), w.showID(r.GetShowId()),
			r.GetUserId(), r.GetSeatIds(), r.GetStatus(), r.GetExpiresAt().AsTime().After(time.Now()))
	case *pb.ConfirmHoldResponse:
		return "OK confirm " + w.reservation(r.GetReservation())
	case *pb.ReleaseHoldResponse:
		return "OK release " + w.reservation(r.GetReservation())
	}
	return fmt.Sprintf("OK %T", m)
}

func refusal(code codes.Code, reason string, meta map[string]string) string {
	s := code.String() + " " + reason
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		s += fmt.Sprintf(" %s=%s", k, meta[k])
	}
	return s
}

// pipeOutcome is the pipeline's answer r to c as the twins compare it; a
// compact SEATS_TAKEN is expanded as the client expands it.
func (w twin) pipeOutcome(c *pb.PipelineCall, r *pb.PipelineResult) string {
	switch x := r.GetResult().(type) {
	case *pb.PipelineResult_Hold:
		return w.success(x.Hold)
	case *pb.PipelineResult_Confirm:
		return w.success(x.Confirm)
	case *pb.PipelineResult_Release:
		return w.success(x.Release)
	case *pb.PipelineResult_Error:
		e := x.Error.Expanded(c.GetHold().GetSeatIds())
		return refusal(codes.Code(e.GetCode()), e.GetReason(), e.GetMetadata())
	}
	return fmt.Sprintf("no result: %v", r)
}

// unaryOutcome is a unary answer as the twins compare it.
func (w twin) unaryOutcome(m proto.Message, err error) string {
	if err != nil {
		e := apiErrorOf(err)
		return refusal(e.Code, e.Reason, e.Meta)
	}
	return w.success(m)
}

// TestPipelineAnswersAsUnary: a batch with holds on overlapping seats,
// confirms, releases, bad calls and expired deadlines gets exactly one
// answer per call, the same answers the unary RPCs give. The calls run once
// through one Pipeline message and once, one by one, through the unary RPCs
// on a twin show with the same state. Calls of a race group contend for
// seats, so which of them wins depends on the order: their answers are
// compared as a multiset of codes and reasons. A call with an expired
// deadline never reaches the server by the unary RPC (the client refuses
// it), so only its code is compared.
func TestPipelineAnswersAsUnary(t *testing.T) {
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	ctx := tc.Ctx(context.Background())
	rs := n.Reservations

	setUp := func(show string) twin {
		t.Helper()
		n.CreateShow(t, show, 6, 12, 0)
		w := twin{show: show, holds: map[string]string{}}
		hold := func(name, user, key string, seats ...string) {
			r, err := rs.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats, IdempotencyKey: key})
			if err != nil {
				t.Fatalf("set-up hold %s: %v", name, err)
			}
			w.holds[name] = r.GetHoldId()
		}
		hold("h1", "u1", "", "A-1", "A-2")
		hold("h2", "u2", "", "B-1")
		if _, err := rs.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: w.holds["h2"], UserId: "u2", PaymentRef: "pay-2"}); err != nil {
			t.Fatal(err)
		}
		hold("h3", "u3", "", "C-1")
		if _, err := rs.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: w.holds["h3"], UserId: "u3"}); err != nil {
			t.Fatal(err)
		}
		hold("h4", "u8", "", "D-1")
		hold("h5", "u9", "", "D-2")
		hold("hk", "u4", "k1", "A-5")
		return w
	}
	pw, uw := setUp("pipe-twin-p"), setUp("pipe-twin-u")

	elevenSeats := seatRange("F", 1, 11)
	zero, long := durationpb.New(0), durationpb.New(30*time.Second)
	cases := []struct {
		name  string
		group string // a race: compared as a multiset with the group's other calls
		call  func(w twin) *pb.PipelineCall
		want  string // the answer's code and reason (a prefix of its outcome); "" for a race
		// pipelineOnly: no unary RPC has this call.
		pipelineOnly bool
		// deadline: only the code is compared (see above).
		deadline bool
	}{
		{name: "hold free seats", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u5", "", "A-3", "A-4") },
			want: "OK hold <new>"},
		{name: "hold a held seat", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u6", "", "D-1", "E-1") },
			want: "AlreadyExists SEATS_TAKEN seats=D-1"},
		{name: "hold an unknown seat", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u7", "", "Z-99") },
			want: "NotFound SEAT_NOT_FOUND"},
		{name: "hold a seat twice", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u7", "", "A-6", "A-6") },
			want: "InvalidArgument DUPLICATE_SEAT"},
		{name: "hold no seats", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u7", "") },
			want: "InvalidArgument INVALID_SEAT_COUNT"},
		{name: "hold 11 seats", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u7", "", elevenSeats...) },
			want: "InvalidArgument INVALID_SEAT_COUNT"},
		{name: "hold without a user", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "", "", "E-2") },
			want: "InvalidArgument INVALID_ARGUMENT"},
		{name: "hold on a malformed show ID", call: func(w twin) *pb.PipelineCall { return pipeHold(0, "-bad show", "u7", "", "E-2") },
			want: "InvalidArgument INVALID_ARGUMENT"},
		{name: "hold on an unknown show", call: func(w twin) *pb.PipelineCall { return pipeHold(0, "pipe-no-such-show", "u7", "", "A-1") },
			want: "NotFound SHOW_NOT_FOUND"},
		{name: "hold again with the idempotency key", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u4", "k1", "A-5") },
			want: "OK hold <hk>"},
		{name: "idempotency key reused for other seats", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "u4", "k1", "A-9") },
			want: "InvalidArgument IDEMPOTENCY_KEY_REUSED"},
		{name: "hold within a timeout", call: func(w twin) *pb.PipelineCall {
			return withTimeout(pipeHold(0, w.show, "u11", "", "F-12"), long)
		}, want: "OK hold <new>"},
		{name: "race for one seat, r1", group: "A-7", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "r1", "", "A-7") }},
		{name: "race for one seat, r2", group: "A-7", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "r2", "", "A-7") }},
		{name: "race for one seat, r3", group: "A-7", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "r3", "", "A-7") }},
		{name: "race for one seat, r4", group: "A-7", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "r4", "", "A-7") }},
		{name: "overlapping holds, r5", group: "E-9", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "r5", "", "E-8", "E-9") }},
		{name: "overlapping holds, r6", group: "E-9", call: func(w twin) *pb.PipelineCall { return pipeHold(0, w.show, "r6", "", "E-9", "E-10") }},
		{name: "confirm a hold", call: func(w twin) *pb.PipelineCall { return pipeConfirm(0, w.holds["h1"], "u1", "pay-1") },
			want: "OK confirm <h1>"},
		{name: "confirm another user's hold", call: func(w twin) *pb.PipelineCall { return pipeConfirm(0, w.holds["h4"], "u99", "pay-x") },
			want: "PermissionDenied NOT_HOLDER"},
		{name: "confirm a booked hold again", call: func(w twin) *pb.PipelineCall { return pipeConfirm(0, w.holds["h2"], "u2", "pay-2") },
			want: "OK confirm <h2>"},
		{name: "confirm an unknown hold", call: func(w twin) *pb.PipelineCall { return pipeConfirm(0, w.show+":nosuchhold", "u1", "pay-1") },
			want: "NotFound HOLD_NOT_FOUND"},
		{name: "confirm without a payment reference", call: func(w twin) *pb.PipelineCall { return pipeConfirm(0, w.holds["h4"], "u8", "") },
			want: "InvalidArgument INVALID_ARGUMENT"},
		{name: "release a hold", call: func(w twin) *pb.PipelineCall { return pipeRelease(0, w.holds["h5"], "u9") },
			want: "OK release <h5>"},
		{name: "release a released hold again", call: func(w twin) *pb.PipelineCall { return pipeRelease(0, w.holds["h3"], "u3") },
			want: "OK release <h3>"},
		{name: "release a booked hold", call: func(w twin) *pb.PipelineCall { return pipeRelease(0, w.holds["h2"], "u2") },
			want: "FailedPrecondition HOLD_ENDED"},
		{name: "release another user's hold", call: func(w twin) *pb.PipelineCall { return pipeRelease(0, w.holds["h4"], "u1") },
			want: "PermissionDenied NOT_HOLDER"},
		{name: "release a malformed hold ID", call: func(w twin) *pb.PipelineCall { return pipeRelease(0, "nocolon", "u1") },
			want: "NotFound HOLD_NOT_FOUND"},
		{name: "hold with an expired deadline", deadline: true, call: func(w twin) *pb.PipelineCall {
			return withTimeout(pipeHold(0, w.show, "u10", "", "F-1"), zero)
		}, want: "DeadlineExceeded DEADLINE_EXCEEDED"},
		{name: "confirm with an expired deadline", deadline: true, call: func(w twin) *pb.PipelineCall {
			return withTimeout(pipeConfirm(0, w.holds["h4"], "u8", "pay-late"), zero)
		}, want: "DeadlineExceeded DEADLINE_EXCEEDED"},
		{name: "a call of no kind", pipelineOnly: true, call: func(w twin) *pb.PipelineCall { return &pb.PipelineCall{} },
			want: "InvalidArgument INVALID_ARGUMENT"},
		{name: "a negative timeout", pipelineOnly: true, call: func(w twin) *pb.PipelineCall {
			return withTimeout(pipeHold(0, w.show, "u10", "", "F-2"), durationpb.New(-time.Second))
		}, want: "InvalidArgument INVALID_ARGUMENT"},
	}

	// The pipeline: every call in one message, call IDs from 1.
	p := openPipe(t, rs)
	var calls []*pb.PipelineCall
	for i, c := range cases {
		call := c.call(pw)
		call.CallId = uint64(i + 1)
		calls = append(calls, call)
	}
	p.send(calls...)
	if err := p.end(); err != nil {
		t.Fatalf("the pipeline ended with %v, want OK", err)
	}
	if got := p.count(); got != len(cases) {
		t.Fatalf("%d answers to %d calls", got, len(cases))
	}

	// The unary RPCs, one by one in the table's order.
	pipeGot, unaryGot := make([]string, len(cases)), make([]string, len(cases))
	compact := 0
	for i, c := range cases {
		if p.one(uint64(i+1)).GetError().GetTakenSeats() != 0 {
			compact++
		}
		pipeGot[i] = pw.pipeOutcome(calls[i], p.one(uint64(i+1)))
		if !c.pipelineOnly {
			unaryGot[i] = uw.unaryOutcome(unaryCall(ctx, rs, c.call(uw)))
		}
	}

	if compact == 0 {
		t.Error("no SEATS_TAKEN answer came compact")
	}

	races := map[string][2][]string{}
	for i, c := range cases {
		switch {
		case c.group != "":
			// Who wins differs; what is answered must not.
			code := func(s string) string {
				if strings.HasPrefix(s, "OK") {
					return "OK"
				}
				return s
			}
			r := races[c.group]
			r[0], r[1] = append(r[0], code(pipeGot[i])), append(r[1], code(unaryGot[i]))
			races[c.group] = r
			continue
		case c.deadline:
			if pc, uc := strings.Fields(pipeGot[i])[0], strings.Fields(unaryGot[i])[0]; pc != uc {
				t.Errorf("%s: pipeline %s, unary %s", c.name, pipeGot[i], unaryGot[i])
			}
		case !c.pipelineOnly && pipeGot[i] != unaryGot[i]:
			t.Errorf("%s:\n pipeline %s\n unary    %s", c.name, pipeGot[i], unaryGot[i])
		}
		if !strings.HasPrefix(pipeGot[i], c.want) {
			t.Errorf("%s: pipeline %s, want %s", c.name, pipeGot[i], c.want)
		}
	}
	wantRaces := map[string][]string{
		"A-7": {"AlreadyExists SEATS_TAKEN seats=A-7", "AlreadyExists SEATS_TAKEN seats=A-7", "AlreadyExists SEATS_TAKEN seats=A-7", "OK"},
		"E-9": {"AlreadyExists SEATS_TAKEN seats=E-9", "OK"},
	}
	for g, r := range races {
		slices.Sort(r[0])
		slices.Sort(r[1])
		if !slices.Equal(r[0], wantRaces[g]) || !slices.Equal(r[1], wantRaces[g]) {
			t.Errorf("race %s: pipeline %q, unary %q, want %q", g, r[0], r[1], wantRaces[g])
		}
	}

	// The twins still have the same state, and the calls whose deadline
	// had passed changed nothing.
	ps, us := getSeatMap(t, n, pw.show), getSeatMap(t, n, uw.show)
	if ps.GetAvailable() != us.GetAvailable() || ps.GetHeld() != us.GetHeld() || ps.GetBooked() != us.GetBooked() {
		t.Errorf("counts: pipeline show %d/%d/%d, unary show %d/%d/%d (available/held/booked)",
			ps.GetAvailable(), ps.GetHeld(), ps.GetBooked(), us.GetAvailable(), us.GetHeld(), us.GetBooked())
	}
	for _, w := range []twin{pw, uw} {
		if st := seatStatuses(t, getSeatMap(t, n, w.show))["F-1"]; st != ar.SeatAvailable {
			t.Errorf("%s: F-1 (held with an expired deadline) is %v, want available", w.show, st)
		}
		if r, ok := dbReservationOf(t, db, w.show, w.holds["h4"]); !ok || r.Status != "HELD" {
			t.Errorf("%s: h4 (confirmed with an expired deadline) is %+v, want HELD", w.show, r)
		}
		checkDBInvariants(t, db, w.show)
		checkSeatMapEqualsDB(t, n, db, w.show)
	}
}

// TestPipelineStreamCut: a stream cut mid-batch loses no acknowledged call
// and double-applies none. Holds with idempotency keys go out on a stream;
// after some are answered, the commits of the rest are held up and the
// client cuts the stream. A second stream sends every call again with the
// same keys: every call is answered, the answers of the calls answered on
// both streams agree, and PostgreSQL has each hold exactly once.
func TestPipelineStreamCut(t *testing.T) {
	const show, calls, perMsg = "pipe-cut", 600, 50
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 20, 40, 0)
	getSeatMap(t, n, show)
	call := func(i int) *pb.PipelineCall {
		return pipeHold(uint64(i+1), show, fmt.Sprintf("cut-u%d", i), fmt.Sprintf("cut-k%d", i), tc.SeatID(i/40, 1+i%40))
	}
	sendRange := func(p *pipe, from, to int) {
		for i := from; i < to; i += perMsg {
			var batch []*pb.PipelineCall
			for j := i; j < min(i+perMsg, to); j++ {
				batch = append(batch, call(j))
			}
			p.send(batch...)
		}
	}

	p1 := openPipe(t, n.Reservations)
	sendRange(p1, 0, calls/2)
	p1.waitFor(calls / 10)
	plug := lockOwnerRow(t, db, show) // the next commits wait
	sendRange(p1, calls/2, calls)
	pollUntil(t, 10*time.Second, "every hold decided", func() bool { return getSeatMap(t, n, show).GetHeld() == calls })
	p1.cancel()
	if err := p1.wait(); err == nil {
		t.Fatal("the cut stream ended OK")
	}
	if err := plug.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	acked := map[int]string{} // call → hold ID, as the cut stream answered
	for i := 0; i < calls; i++ {
		a := p1.answers(uint64(i + 1))
		if len(a) > 1 {
			t.Fatalf("call %d: %d answers on the cut stream", i+1, len(a))
		}
		if len(a) == 1 {
			if a[0].GetHold() == nil {
				t.Fatalf("call %d on the cut stream: %v", i+1, a[0])
			}
			acked[i] = a[0].GetHold().GetHoldId()
		}
	}
	if len(acked) < calls/10 || len(acked) == calls {
		t.Fatalf("%d of %d calls answered before the cut; want some, not all", len(acked), calls)
	}
	t.Logf("%d of %d calls answered before the cut", len(acked), calls)

	p2 := openPipe(t, n.Reservations)
	sendRange(p2, 0, calls)
	if err := p2.end(); err != nil {
		t.Fatalf("the second stream ended with %v", err)
	}
	holds := map[string]int{} // hold ID → call
	for i := 0; i < calls; i++ {
		r := p2.one(uint64(i + 1))
		h := r.GetHold()
		if h == nil {
			t.Fatalf("call %d on the second stream: %v", i+1, r)
		}
		if want, ok := acked[i]; ok && h.GetHoldId() != want {
			t.Errorf("call %d: hold %s on the second stream, %s on the first", i+1, h.GetHoldId(), want)
		}
		holds[h.GetHoldId()] = i
	}
	if len(holds) != calls {
		t.Fatalf("%d distinct holds for %d calls", len(holds), calls)
	}
	rows := dbReservations(t, db, show)
	if len(rows) != calls {
		t.Errorf("%d reservations in PostgreSQL, want %d", len(rows), calls)
	}
	for id, i := range holds {
		r, ok := rows[id]
		want := call(i).GetHold()
		if !ok || r.User != want.GetUserId() || r.Status != "HELD" || !slices.Equal(r.Seats, want.GetSeatIds()) {
			t.Errorf("hold %s of call %d in PostgreSQL: %+v (found %t), want %s holding %v", id, i+1, r, ok, want.GetUserId(), want.GetSeatIds())
		}
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
}

// TestPipelineInFlightBound: beyond the stream's bound on calls in flight
// (PipelineMaxInFlight), calls are answered OVERLOADED at once, while the
// calls in flight wait for their commit; once they are answered the stream
// takes calls again.
func TestPipelineInFlightBound(t *testing.T) {
	const show, bound = "pipe-bound", 8
	if _, err := engine.NewServer(nil, engine.ServerConfig{Insecure: true, PipelineMaxInFlight: -1}); err == nil {
		t.Error("NewServer took a negative PipelineMaxInFlight")
	}
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	srv := startServer(t, n, engine.ServerConfig{PipelineMaxInFlight: bound})
	conn, err := tc.Dial(srv.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rs := pb.NewReservationServiceClient(conn)
	n.CreateShow(t, show, 4, 10, 0)
	getSeatMap(t, n, show)

	plug := lockOwnerRow(t, db, show) // the holds stay in flight
	p := openPipe(t, rs)
	var calls []*pb.PipelineCall
	for i := 1; i <= bound+5; i++ {
		calls = append(calls, pipeHold(uint64(i), show, fmt.Sprintf("b%d", i), "", tc.SeatID(0, i)))
	}
	p.send(calls...)
	p.waitFor(5)
	p.send(pipeHold(bound+6, show, "late1", "", "B-1"), pipeRelease(bound+7, show+":nosuchhold", "late2"))
	p.waitFor(7)
	for i := 1; i <= bound+7; i++ {
		if i <= bound {
			if a := p.answers(uint64(i)); len(a) != 0 {
				t.Fatalf("call %d answered while its commit is held up: %v", i, a)
			}
			continue
		}
		e := wantCallError(t, fmt.Sprintf("call %d beyond the bound", i), p.one(uint64(i)), codes.ResourceExhausted, "OVERLOADED")
		if !strings.Contains(e.GetMessage(), "in flight") {
			t.Errorf("call %d: message %q does not say why", i, e.GetMessage())
		}
	}
	if err := plug.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.waitFor(bound + 7)
	for i := 1; i <= bound; i++ {
		if r := p.one(uint64(i)); r.GetHold() == nil {
			t.Errorf("call %d in flight: %v", i, r)
		}
	}
	p.send(pipeHold(bound+8, show, "again", "", "C-1"))
	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	if r := p.one(bound + 8); r.GetHold() == nil {
		t.Errorf("a call after the calls in flight were answered: %v", r)
	}
	checkDBInvariants(t, db, show)
}

// TestPipelineRefusesBadCalls: call ID 0, the ID of a call in flight, a call
// of no kind and a bad timeout are refused with InvalidArgument, and change
// nothing; an ID is free again once its call is answered. A Pipeline
// without the token, or with a wrong one, is Unauthenticated.
func TestPipelineRefusesBadCalls(t *testing.T) {
	const show = "pipe-bad"
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 2, 10, 0)

	p := openPipe(t, n.Reservations)
	p.send(
		pipeHold(0, show, "u0", "", "A-9"),
		pipeHold(1, show, "u1", "", "A-1"),
		pipeHold(1, show, "u1", "", "A-2"), // while the first call 1 is in flight
		&pb.PipelineCall{CallId: 2},
		withTimeout(pipeHold(3, show, "u3", "", "A-3"), durationpb.New(-time.Millisecond)),
		withTimeout(pipeHold(4, show, "u4", "", "A-4"), &durationpb.Duration{Seconds: 1, Nanos: 2e9}),
	)
	p.waitFor(6)
	wantCallError(t, "call ID 0", p.one(0), codes.InvalidArgument, "INVALID_ARGUMENT")
	var first *pb.HoldSeatsResponse
	refused := 0
	for _, r := range p.answers(1) {
		if h := r.GetHold(); h != nil {
			first = h
			continue
		}
		wantCallError(t, "a duplicate call ID", r, codes.InvalidArgument, "INVALID_ARGUMENT")
		refused++
	}
	if first == nil || refused != 1 || !slices.Equal(first.GetSeatIds(), []string{"A-1"}) {
		t.Fatalf("call ID 1 twice in one message: %v", p.answers(1))
	}
	wantCallError(t, "a call of no kind", p.one(2), codes.InvalidArgument, "INVALID_ARGUMENT")
	wantCallError(t, "a negative timeout", p.one(3), codes.InvalidArgument, "INVALID_ARGUMENT")
	wantCallError(t, "an invalid timeout", p.one(4), codes.InvalidArgument, "INVALID_ARGUMENT")

	// Call 1 is answered: its ID may be used again.
	p.send(pipeHold(1, show, "u1", "", "A-5"))
	p.waitFor(7)
	if a := p.answers(1); len(a) != 3 || a[2].GetHold() == nil {
		t.Fatalf("call ID 1 used again after its answer: %v", a)
	}
	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	sm := seatStatuses(t, getSeatMap(t, n, show))
	for _, s := range []string{"A-2", "A-3", "A-4", "A-9"} {
		if sm[s] != ar.SeatAvailable {
			t.Errorf("seat %s of a refused call is %v, want available", s, sm[s])
		}
	}
	checkDBInvariants(t, db, show)

	for name, ctx := range map[string]context.Context{
		"no token":    context.Background(),
		"wrong token": metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer nope"),
	} {
		p := openPipeCtx(t, n.Reservations, ctx)
		p.stream.Send(&pb.PipelineRequest{Calls: []*pb.PipelineCall{pipeHold(1, show, "u9", "", "B-1")}}) //nolint:errcheck // the answer is the stream's end
		wantAPIError(t, "a Pipeline with "+name, p.wait(), codes.Unauthenticated, "UNAUTHENTICATED")
		if p.count() != 0 {
			t.Errorf("a Pipeline with %s answered calls", name)
		}
	}
	if sm := seatStatuses(t, getSeatMap(t, n, show)); sm["B-1"] != ar.SeatAvailable {
		t.Errorf("B-1, held by an unauthenticated Pipeline, is %v", sm["B-1"])
	}
}

// TestPipelineBatchesAnswers: calls that complete together are answered in
// fewer messages than calls, none with more than 1024 answers. The holds'
// commits are held up until all are decided, so their answers are ready at
// about the same time.
func TestPipelineBatchesAnswers(t *testing.T) {
	const show, calls = "pipe-batch", 1500
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 40, 40, 0)
	getSeatMap(t, n, show)
	plug := lockOwnerRow(t, db, show)
	p := openPipe(t, n.Reservations)
	for i := 0; i < calls; i += 100 {
		var batch []*pb.PipelineCall
		for j := i; j < i+100; j++ {
			batch = append(batch, pipeHold(uint64(j+1), show, fmt.Sprintf("bu%d", j), "", tc.SeatID(j/40, 1+j%40)))
		}
		p.send(batch...)
	}
	pollUntil(t, 30*time.Second, "every hold decided", func() bool { return getSeatMap(t, n, show).GetHeld() == calls })
	if err := plug.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= calls; i++ {
		if r := p.one(uint64(i)); r.GetHold() == nil {
			t.Fatalf("call %d: %v", i, r)
		}
	}
	msgs := p.messages()
	t.Logf("%d answers in %d messages", calls, len(msgs))
	if len(msgs) >= calls {
		t.Errorf("%d answers in %d messages: not batched", calls, len(msgs))
	}
	if m := slices.Max(msgs); m > 1024 {
		t.Errorf("a message with %d answers, more than 1024", m)
	}
}

// TestPipelineChangesShareAGoroutine: the confirms and releases of one
// message for one show are decided together and answered, as their writes
// commit, by one goroutine, as its holds are: a goroutine per call, waiting
// for the commit, would put hundreds of them on the scheduler's queues at
// once when a batch commits, ahead of every other show's calls.
func TestPipelineChangesShareAGoroutine(t *testing.T) {
	const show, calls = "pipe-changes", 300
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 10, 40, 0)
	getSeatMap(t, n, show)
	p := openPipe(t, n.Reservations)
	user := func(i int) string { return fmt.Sprintf("cu%d", i) }
	var holds []*pb.PipelineCall
	for i := range calls {
		holds = append(holds, pipeHold(uint64(i+1), show, user(i), "", tc.SeatID(i/40, 1+i%40)))
	}
	p.send(holds...)
	p.waitFor(calls)
	var changes []*pb.PipelineCall
	for i := range calls {
		r := p.one(uint64(i + 1)).GetHold()
		if r == nil {
			t.Fatalf("hold %d: %v", i+1, p.one(uint64(i+1)))
		}
		id := uint64(calls + i + 1)
		if i%3 == 0 {
			changes = append(changes, pipeRelease(id, r.GetHoldId(), user(i)))
		} else {
			changes = append(changes, pipeConfirm(id, r.GetHoldId(), user(i), "pay-"+user(i)))
		}
	}
	created := func() uint64 {
		s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	before := created()
	p.send(changes...)
	p.waitFor(2 * calls)
	spawned := created() - before
	for i, c := range changes {
		r := p.one(c.GetCallId())
		if (i%3 == 0 && r.GetRelease() == nil) || (i%3 != 0 && r.GetConfirm() == nil) {
			t.Fatalf("change %d: %v", c.GetCallId(), r)
		}
	}
	t.Logf("%d confirms and releases in one message: %d goroutines started meanwhile (in the whole process)", calls, spawned)
	if spawned >= calls/4 {
		t.Errorf("%d goroutines started for %d confirms and releases: about one per call", spawned, calls)
	}
	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	if sm := getSeatMap(t, n, show); sm.GetBooked() != calls*2/3 || sm.GetHeld() != 0 {
		t.Errorf("seat map: %d booked, %d held; want %d booked, none held", sm.GetBooked(), sm.GetHeld(), calls*2/3)
	}
	checkDBInvariants(t, db, show)
}

// TestPipelineEndsAtShutdown: a graceful stop does not wait for an open
// Pipeline. While the node drains, its calls are refused SHUTTING_DOWN and
// a call in flight is answered; then the stream ends Unavailable
// SHUTTING_DOWN.
func TestPipelineEndsAtShutdown(t *testing.T) {
	const show = "pipe-stop"
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 2, 10, 0)
	p := openPipe(t, n.Reservations)
	p.send(pipeHold(1, show, "u1", "", "A-1"))
	p.waitFor(1)
	plug := lockOwnerRow(t, db, show)
	p.send(pipeHold(2, show, "u2", "", "A-2")) // in flight until the plug goes
	pollUntil(t, 10*time.Second, "the hold in flight", func() bool { return getSeatMap(t, n, show).GetHeld() == 2 })

	stopped := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- n.Server.Shutdown(ctx)
	}()
	// Once the node drains, changes are refused.
	id := uint64(100)
	pollUntil(t, 10*time.Second, "a call refused SHUTTING_DOWN", func() bool {
		id++
		p.send(pipeRelease(id, show+":nosuchhold", "u3"))
		pollUntil(t, 10*time.Second, "an answer", func() bool { return len(p.answers(id)) == 1 })
		return p.one(id).GetError().GetReason() == "SHUTTING_DOWN"
	})
	if err := plug.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := p.wait()
	wantAPIError(t, "the Pipeline at shutdown", err, codes.Unavailable, "SHUTTING_DOWN")
	if r := p.one(2); r.GetHold() == nil {
		t.Errorf("the call in flight at shutdown: %v", r)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Shutdown took %s with a Pipeline open", took)
	}
}

// BenchmarkPipelineHolds measures single-seat holds, every one a winner,
// through one Pipeline stream with up to 2,048 calls in flight, sent 128
// per message: the engine's side of pipelining, without the client
// library's coalescing. answers/msg is the sender's natural batching.
func BenchmarkPipelineHolds(b *testing.B) {
	const window, perMsg = 2048, 128
	n, _, url := benchNode(b, 1)
	db := openDB(b, url)
	shows := benchShows(b, n, "pipe", b.N/benchCapacity+1)
	seatIDs := benchSeatIDs()
	p := openPipe(b, n.Reservations)
	before := readWriterStats(b, n)
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		for sent-p.count() > window-perMsg {
			time.Sleep(50 * time.Microsecond)
		}
		var calls []*pb.PipelineCall
		for ; len(calls) < perMsg && sent < b.N; sent++ {
			s := sent % benchCapacity
			calls = append(calls, pipeHold(uint64(sent+1), shows[sent/benchCapacity], "u"+strconv.Itoa(sent), "",
				seatIDs[s/benchSeatsPerRow][s%benchSeatsPerRow]))
		}
		p.send(calls...)
	}
	if err := p.end(); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	for i := 1; i <= b.N; i++ {
		if r := p.one(uint64(i)); r.GetHold() == nil {
			b.Fatalf("call %d: %v", i, r)
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "holds/s")
	b.ReportMetric(float64(b.N)/float64(len(p.messages())), "answers/msg")
	var rows int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM reservations WHERE status = 'HELD'`).Scan(&rows); err != nil {
		b.Fatal(err)
	}
	if rows != b.N {
		b.Fatalf("%d holds acknowledged, %d in the database", b.N, rows)
	}
	reportWriter(b, n, before)
}

// TestPipelineSlowReaderDoesNotStallCommits: a client that sends and stops
// reading its answers fills the stream's flow-control window and the
// answers waiting for the sender; the changes of its messages still have
// their outcomes applied as their writes commit. Before, the goroutine
// settling a message's changes handed each answer over before settling the
// next, so it waited for the client with the seats of the next hold still
// marked as committing: another user's hold of them waited too, until its
// deadline, and the node's drain with it.
func TestPipelineSlowReaderDoesNotStallCommits(t *testing.T) {
	const show, bound, bad = "pipe-slowreader", 8, 5000
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	srv := startServer(t, n, engine.ServerConfig{PipelineMaxInFlight: bound})
	// Fixed 64 KiB windows (no BDP growth): the engine can send that much
	// of the answers before it waits for the client to read.
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wirecodec.Codec{})),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.CreateShow(t, show, 1, 4, 0)
	getSeatMap(t, n, show)

	plug := lockOwnerRow(t, db, show) // the holds stay in flight meanwhile
	ctx, cancel := context.WithCancel(tc.Ctx(context.Background()))
	defer cancel()
	stream, err := pb.NewReservationServiceClient(conn).Pipeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.PipelineRequest{Calls: []*pb.PipelineCall{
		pipeHold(1, show, "u1", "", "A-1"), pipeHold(2, show, "u2", "", "A-2"),
	}}); err != nil {
		t.Fatal(err)
	}
	// Calls of no kind, refused at once: their answers fill the window
	// and the sender's queue, and the stream is never read.
	calls := make([]*pb.PipelineCall, bad)
	for i := range calls {
		calls[i] = &pb.PipelineCall{CallId: uint64(i + 3)}
	}
	if err := stream.Send(&pb.PipelineRequest{Calls: calls}); err != nil {
		t.Fatal(err)
	}
	refused := func() float64 {
		v, _ := sample(scrape(t, n), "boxoffice_rpc_requests_total", `method="Pipeline"`, `code="InvalidArgument"`)
		return v
	}
	// The answers stop going out once the window is full: at most a
	// message of answers (1,024) beyond it, plus the queue's room (bound).
	last, since := -1.0, time.Now()
	pollUntil(t, 20*time.Second, "the refusals' answers to stop for the unread stream", func() bool {
		if v := refused(); v != last {
			last, since = v, time.Now()
		}
		return last > 0 && last < bad && time.Since(since) >= 200*time.Millisecond
	})
	if err := plug.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Both holds committed: another user's hold of their seats is refused
	// at once, not kept waiting for the hold's outcome.
	for _, seat := range []string{"A-1", "A-2"} {
		hctx, hcancel := context.WithTimeout(tc.Ctx(context.Background()), 5*time.Second)
		_, err := n.Reservations.HoldSeats(hctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u3", SeatIds: []string{seat}})
		hcancel()
		wantAPIError(t, "a hold of "+seat+", held by the unread stream", err, codes.AlreadyExists, "SEATS_TAKEN")
	}
	checkDBInvariants(t, db, show)
}

// TestPipelineBoundsCallsPerMessage: a message of more than
// PipelineMaxCalls calls ends the stream InvalidArgument, none of its calls
// taken, after the call in flight before it is answered.
func TestPipelineBoundsCallsPerMessage(t *testing.T) {
	const show = "pipe-maxcalls"
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 1, 4, 0)
	getSeatMap(t, n, show)
	plug := lockOwnerRow(t, db, show) // the first hold stays in flight
	p := openPipe(t, n.Reservations)
	p.send(pipeHold(1, show, "u1", "", "A-1"))
	calls := make([]*pb.PipelineCall, engine.PipelineMaxCalls+1)
	for i := range calls {
		calls[i] = pipeHold(uint64(i+2), show, "u2", "", "A-2")
	}
	p.send(calls...)
	if err := plug.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := p.wait()
	wantAPIError(t, "a Pipeline message over the bound", err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if r := p.one(1); r.GetHold() == nil {
		t.Errorf("the hold in flight before the message: %v", r)
	}
	if got := p.count(); got != 1 {
		t.Errorf("%d answers, want 1: the big message's calls are not taken", got)
	}
	checkDBInvariants(t, db, show)
}

// TestPipelineCallsWaitingForACommit: pipeline holds of seats whose hold is
// committing wait together and are decided once it commits, with the
// answers the unary code gives (SEATS_TAKEN), while one whose deadline
// passes first is answered DEADLINE_EXCEEDED at its deadline, not at the
// commit.
func TestPipelineCallsWaitingForACommit(t *testing.T) {
	const show = "pipe-wait"
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	n.CreateShow(t, show, 1, 4, 0)
	openGate := commitGate(t, db, "NEW.user_id = 'first'")

	p := openPipe(t, n.Reservations)
	p.send(pipeHold(1, show, "first", "", "A-1", "A-2"))
	pollUntil(t, 10*time.Second, "first's hold waiting at the gate", func() bool {
		var waiting int
		err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&waiting)
		return err == nil && waiting > 0
	})
	short := pipeHold(3, show, "hurried", "", "A-2")
	short.Timeout = durationpb.New(300 * time.Millisecond)
	sent := time.Now()
	p.send(pipeHold(2, show, "second", "", "A-1"), short, pipeHold(4, show, "third", "", "A-2", "A-3"))
	pollUntil(t, 10*time.Second, "the hurried hold answered", func() bool { return len(p.answers(3)) > 0 })
	if took := time.Since(sent); took > 3*time.Second {
		t.Errorf("the hurried hold was answered %v after it was sent, with a deadline of 300 ms", took)
	}
	wantCallError(t, "the hurried hold", p.one(3), codes.DeadlineExceeded, "DEADLINE_EXCEEDED")
	if p.count() != 1 {
		t.Fatalf("%d answers while first's hold is committing, want only the hurried one's", p.count())
	}

	openGate()
	p.waitFor(4)
	h := p.one(1).GetHold()
	if h == nil {
		t.Fatalf("first's hold: %v", p.one(1))
	}
	for id, who := range map[uint64]string{2: "second", 4: "third"} {
		if e := p.one(id).GetError(); codes.Code(e.GetCode()) != codes.AlreadyExists || e.GetReason() != "SEATS_TAKEN" {
			t.Errorf("%s's hold of a seat first took: %v, want AlreadyExists SEATS_TAKEN", who, p.one(id))
		}
	}

	if err := p.end(); err != nil {
		t.Fatal(err)
	}
	checkDBInvariants(t, db, show)
	checkSeatMapEqualsDB(t, n, db, show)
}
