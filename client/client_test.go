package client_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/client"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

func TestMain(m *testing.M) { pgclustertest.Main(m) }

// pollUntil polls cond every 10 ms until it holds, or fails the test after
// timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cfg.Token = tc.Token
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, cfg)
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientCalls: on one node, the client's calls answer as the unary
// RPCs do, refusals included (code, reason, metadata), and SeatMap's
// replica follows the changes to GetSeatMap's version.
func TestClientCalls(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, "cl-calls", 2, 10, time.Minute)
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}})
	ctx := t.Context()

	h, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-calls", UserId: "u1", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatalf("hold: %v", err)
	}
	if !slices.Equal(h.GetSeatIds(), []string{"A-1", "A-2"}) || h.GetUserId() != "u1" {
		t.Fatalf("hold answered %v", h)
	}
	// The pipeline answers this refusal compact; the client expands it.
	refused := []string{"A-3", "A-2", "A-4", "A-1"}
	_, err = c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-calls", UserId: "u2", SeatIds: refused})
	if status.Code(err) != codes.AlreadyExists || client.Reason(err) != "SEATS_TAKEN" || client.Metadata(err, "seats") != "A-2,A-1" {
		t.Fatalf("hold of taken seats: %v (reason %q, seats %q), want AlreadyExists SEATS_TAKEN naming A-2,A-1", err, client.Reason(err), client.Metadata(err, "seats"))
	}
	if got := client.TakenSeats(err); !slices.Equal(got, []string{"A-2", "A-1"}) {
		t.Fatalf("TakenSeats %q, want [A-2 A-1]", got)
	}
	// The same refusal as the unary RPC gives, message and details included.
	_, uerr := n.Reservations.HoldSeats(tc.Ctx(ctx), &pb.HoldSeatsRequest{ShowId: "cl-calls", UserId: "u2", SeatIds: refused})
	if got, want := status.Convert(err), status.Convert(uerr); !proto.Equal(got.Proto(), want.Proto()) || err.Error() != uerr.Error() {
		t.Fatalf("client refusal %v, unary %v", got.Proto(), want.Proto())
	}
	if got := client.TakenSeats(uerr); !slices.Equal(got, []string{"A-2", "A-1"}) {
		t.Fatalf("TakenSeats of the unary refusal %q, want [A-2 A-1]", got)
	}
	// An idempotency key given by the caller is kept: the retry answers
	// the first hold.
	req := &pb.HoldSeatsRequest{ShowId: "cl-calls", UserId: "u3", SeatIds: []string{"B-1"}, IdempotencyKey: "key-1"}
	first, err := c.HoldSeats(ctx, req)
	if err != nil {
		t.Fatalf("hold with key: %v", err)
	}
	again, err := c.HoldSeats(ctx, req)
	if err != nil || again.GetHoldId() != first.GetHoldId() {
		t.Fatalf("repeat with the key: %v, %v; want hold %s", again, err, first.GetHoldId())
	}
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-calls", UserId: "u1", SeatIds: nil}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("hold of no seat: %v, want InvalidArgument", err)
	}
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "no-such-show", UserId: "u1", SeatIds: []string{"A-1"}}); status.Code(err) != codes.NotFound {
		t.Fatalf("hold on an unknown show: %v, want NotFound", err)
	}

	conf, err := c.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: "u1", PaymentRef: "pay-1"})
	if err != nil || conf.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED {
		t.Fatalf("confirm: %v, %v", conf, err)
	}
	rel, err := c.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: first.GetHoldId(), UserId: "u3"})
	if err != nil || rel.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_RELEASED {
		t.Fatalf("release: %v, %v", rel, err)
	}
	if _, err := c.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: "garbage", UserId: "u3"}); status.Code(err) != codes.NotFound {
		t.Fatalf("release of a bad hold ID: %v, want NotFound", err)
	}
	got, err := c.GetReservation(ctx, &pb.GetReservationRequest{HoldId: h.GetHoldId()})
	if err != nil || got.GetReservation().GetPaymentRef() != "pay-1" {
		t.Fatalf("get reservation: %v, %v", got, err)
	}

	// The replica reaches GetSeatMap's version and statuses.
	m, err := c.SeatMap(ctx, "cl-calls")
	if err != nil {
		t.Fatalf("seat map: %v", err)
	}
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-calls", UserId: "u4", SeatIds: []string{"B-5"}}); err != nil {
		t.Fatalf("hold: %v", err)
	}
	want, err := c.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "cl-calls"})
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 5*time.Second, "the replica to reach GetSeatMap's version", func() bool {
		m, err = c.SeatMap(ctx, "cl-calls")
		return err == nil && m.Version >= want.GetVersion()
	})
	if m.Version != want.GetVersion() || string(m.Statuses) != string(want.GetStatuses()) || m.Held != int(want.GetHeld()) || m.Booked != int(want.GetBooked()) {
		t.Fatalf("replica at version %d (held %d, booked %d), GetSeatMap at %d (held %d, booked %d)", m.Version, m.Held, m.Booked, want.GetVersion(), want.GetHeld(), want.GetBooked())
	}
	if m.PublishedAt.IsZero() || m.Lag() < 0 || m.Lag() > 5*time.Second {
		t.Fatalf("replica published at %v, lag %v", m.PublishedAt, m.Lag())
	}
	if tm, ok := c.TrySeatMap("cl-calls"); !ok || tm != m {
		t.Fatalf("TrySeatMap of a warm replica: %v, %t; want the replica's map at version %d", tm, ok, m.Version)
	}
	if _, err := c.SeatMap(ctx, "no-such-show"); status.Code(err) != codes.NotFound {
		t.Fatalf("seat map of an unknown show: %v, want NotFound", err)
	}

	// TrySeatMap does not wait: a cold replica answers false at once, and
	// its map once the snapshot came.
	n.CreateShow(t, "cl-try", 1, 4, time.Minute)
	if tm, ok := c.TrySeatMap("cl-try"); ok {
		t.Fatalf("TrySeatMap of a replica just started: %v, want false", tm)
	}
	pollUntil(t, 5*time.Second, "TrySeatMap to answer once the snapshot came", func() bool {
		tm, ok := c.TrySeatMap("cl-try")
		return ok && len(tm.Statuses) == 4
	})
}

// TestClientCoalesces: concurrent calls share pipeline messages.
func TestClientCoalesces(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, "cl-batch", 20, 50, time.Minute)
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}, ConnsPerNode: 1})
	const calls = 1000
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range calls {
		wg.Go(func() {
			_, err := c.HoldSeats(t.Context(), &pb.HoldSeatsRequest{ShowId: "cl-batch", UserId: fmt.Sprintf("u%d", i), SeatIds: []string{tc.SeatID(i/50, i%50+1)}})
			if err != nil {
				failed.Add(1)
				t.Errorf("hold %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return
	}
	msgs := counter(t, n, `boxoffice_pipeline_messages_total{direction="received"}`)
	if msgs <= 0 || msgs > calls/4 {
		t.Fatalf("%d calls arrived in %v pipeline messages; want them coalesced (at most %d)", calls, msgs, calls/4)
	}
	t.Logf("%d calls in %v messages", calls, msgs)
}

// TestClientCluster is the acceptance test of the client: 1,000
// goroutines hold, confirm and release through one client on a 3-node
// cluster while one node is killed midway (and, in a second run, stopped
// as at SIGTERM: it answers SHUTTING_DOWN while it drains). Every call
// returns, every acknowledged hold and confirm is in PostgreSQL, no seat is
// in two live reservations, and the client's seat-map replicas, started
// before the node went, follow their shows to the new owners and equal
// GetSeatMap.
func TestClientCluster(t *testing.T) {
	t.Run("crash", func(t *testing.T) { testClientCluster(t, (*tc.Node).Crash) })
	t.Run("stop", func(t *testing.T) { testClientCluster(t, (*tc.Node).Stop) })
}

func testClientCluster(t *testing.T, kill func(*tc.Node)) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	nodes := []*tc.Node{tc.StartNode(t, url, tc.Options{NodeID: "k0", Quiet: true, Cluster: &tc.ClusterOptions{}})}
	for i := 1; i < 3; i++ {
		nodes = append(nodes, tc.StartNode(t, url, tc.Options{
			NodeID: fmt.Sprintf("k%d", i), Quiet: true, Cluster: &tc.ClusterOptions{Join: []string{nodes[0].Ring.GossipAddr()}},
		}))
	}
	pollUntil(t, 10*time.Second, "3 members in every ring", func() bool {
		for _, n := range nodes {
			if len(n.Ring.Members()) != 3 {
				return false
			}
		}
		return true
	})
	const (
		shows   = 12
		rows    = 4
		perRow  = 25
		workers = 1000
		perWork = 6
	)
	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("kc%d", i)
		nodes[0].CreateShow(t, ids[i], rows, perRow, time.Minute)
	}
	// The victim owns some shows: its death moves them.
	victim := nodes[2]
	owned := 0
	for _, id := range ids {
		if victim.Ring.Owner(id).Name == victim.Ring.Self().Name {
			owned++
		}
	}
	if owned == 0 {
		t.Fatalf("the victim owns none of the %d shows", shows)
	}
	c := newClient(t, client.Config{Addrs: []string{nodes[0].Server.GRPCAddr()}})
	// Replicas of every show, started before the kill: those of the
	// victim's shows must follow them to their new owners.
	for _, id := range ids {
		if _, err := c.SeatMap(t.Context(), id); err != nil {
			t.Fatalf("seat map of %s: %v", id, err)
		}
	}

	type ack struct {
		show, hold, user string
		seats            []string
		booked, released bool
	}
	var (
		mu     sync.Mutex
		acks   []*ack
		byCode = map[string]int{}
		calls  atomic.Int64
	)
	note := func(what string, err error) {
		mu.Lock()
		byCode[what+" "+status.Code(err).String()]++
		mu.Unlock()
	}
	var started sync.WaitGroup
	started.Add(workers)
	killAt := make(chan struct{})
	var callsAtKill int64
	go func() {
		defer close(killAt)
		started.Wait()
		deadline := time.Now().Add(30 * time.Second)
		for calls.Load() < workers*perWork/3 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		callsAtKill = calls.Load()
		kill(victim)
	}()
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range workers {
		wg.Go(func() {
			started.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			user := fmt.Sprintf("user-%d", w)
			for range perWork {
				show := ids[rng.IntN(shows)]
				row, seat := rng.IntN(rows), rng.IntN(perRow-1)+1
				seats := []string{tc.SeatID(row, seat)}
				if rng.IntN(2) == 0 {
					seats = append(seats, tc.SeatID(row, seat+1))
				}
				ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
				h, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats})
				calls.Add(1)
				note("hold", err)
				if err != nil {
					cancel()
					continue
				}
				a := &ack{show: show, hold: h.GetHoldId(), user: user, seats: h.GetSeatIds()}
				mu.Lock()
				acks = append(acks, a)
				mu.Unlock()
				switch rng.IntN(3) {
				case 0:
					_, err = c.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: a.hold, UserId: user, PaymentRef: "pay-" + a.hold})
					note("confirm", err)
					if err == nil {
						mu.Lock()
						a.booked = true
						mu.Unlock()
					}
				case 1:
					_, err = c.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: a.hold, UserId: user})
					note("release", err)
					if err == nil {
						mu.Lock()
						a.released = true
						mu.Unlock()
					}
				}
				calls.Add(1)
				cancel()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("calls still unanswered after 90 s (%d made)", calls.Load())
	}
	<-killAt
	if callsAtKill >= calls.Load() {
		t.Fatalf("the node was killed after the last call (%d of %d)", callsAtKill, calls.Load())
	}
	t.Logf("%d calls in %v, %d holds acknowledged; answers %v", calls.Load(), time.Since(begin).Round(time.Millisecond), len(acks), byCode)
	for what, n := range byCode {
		code := what[strings.IndexByte(what, ' ')+1:]
		switch code {
		case "OK", "AlreadyExists", "ResourceExhausted":
		default:
			t.Errorf("%d %s answers; the client should have ridden out the failover", n, what)
		}
	}

	for _, id := range ids {
		want, err := c.GetSeatMap(t.Context(), &pb.GetSeatMapRequest{ShowId: id})
		if err != nil {
			t.Fatalf("GetSeatMap %s: %v", id, err)
		}
		pollUntil(t, 10*time.Second, "the replica of "+id+" to equal GetSeatMap", func() bool {
			m, err := c.SeatMap(t.Context(), id)
			return err == nil && string(m.Statuses) == string(want.GetStatuses()) && m.Held == int(want.GetHeld()) && m.Booked == int(want.GetBooked())
		})
	}

	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type rec struct {
		user, status string
		seats        []string
	}
	stored := map[string]rec{}
	rowsQ, _ := db.Query(t.Context(), `SELECT reservation_id, user_id, status, seat_ids FROM reservations WHERE show_id = ANY($1)`, ids)
	for rowsQ.Next() {
		var id string
		var r rec
		if err := rowsQ.Scan(&id, &r.user, &r.status, &r.seats); err != nil {
			t.Fatal(err)
		}
		stored[id] = r
	}
	if err := rowsQ.Err(); err != nil {
		t.Fatal(err)
	}
	for _, a := range acks {
		r, ok := stored[a.hold]
		switch {
		case !ok:
			t.Errorf("acknowledged hold %s of %s is not in PostgreSQL", a.hold, a.user)
		case r.user != a.user || !slices.Equal(r.seats, a.seats):
			t.Errorf("hold %s stored as %s %v, acknowledged as %s %v", a.hold, r.user, r.seats, a.user, a.seats)
		case a.booked && r.status != "BOOKED":
			t.Errorf("acknowledged booking %s is %s in PostgreSQL", a.hold, r.status)
		case a.released && r.status != "RELEASED":
			t.Errorf("acknowledged release %s is %s in PostgreSQL", a.hold, r.status)
		}
	}
	var doubles int
	if err := db.QueryRow(t.Context(), `
		SELECT count(*) FROM (
			SELECT show_id, seat FROM reservations, unnest(seat_ids) AS seat
			WHERE show_id = ANY($1) AND status IN ('HELD', 'BOOKED')
			GROUP BY show_id, seat HAVING count(*) > 1) d`, ids).Scan(&doubles); err != nil {
		t.Fatal(err)
	}
	if doubles > 0 {
		t.Fatalf("%d seats are in two live reservations", doubles)
	}
}

// counter reads a counter or gauge of the node's registry by its name with
// labels, as the text exposition writes it; 0 when absent.
func counter(t *testing.T, n *tc.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	base, labels, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	for _, mf := range mfs {
		if mf.GetName() != base {
			continue
		}
		for _, m := range mf.GetMetric() {
			var parts []string
			for _, l := range m.GetLabel() {
				parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if strings.Join(parts, ",") != labels {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestClientBoundsCallsInFlight: when a node stops answering (a black hole
// between client and node), the calls queued or in flight on its stream
// count against the bound until they are answered or dropped; calls beyond
// it are answered OVERLOADED at once instead of piling up. Once the black
// hole is lifted, the client serves again.
func TestClientBoundsCallsInFlight(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo", Quiet: true})
	n.CreateShow(t, "cl-hole", 1, 10, time.Minute)
	proxy := tc.NewProxy(t, n.Server.GRPCAddr())
	c := newClient(t, client.Config{Addrs: []string{proxy.Addr()}, ConnsPerNode: 1, MaxAttempts: 1})
	hold := func(ctx context.Context, user string) error {
		_, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-hole", UserId: user, SeatIds: []string{"A-1"}})
		return err
	}
	if err := hold(t.Context(), "u0"); err != nil {
		t.Fatalf("hold before the black hole: %v", err)
	}
	proxy.BlackHole()

	// Fill the stream: every call waits until it times out.
	const bound, timeout = 4096, 10 * time.Second
	var wg sync.WaitGroup
	var timedOut, refused atomic.Int64
	for i := range bound {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			switch err := hold(ctx, fmt.Sprintf("u%d", i+1)); {
			case status.Code(err) == codes.DeadlineExceeded:
				timedOut.Add(1)
			case client.Reason(err) == "OVERLOADED": // a probe below took its place
				refused.Add(1)
			default:
				t.Errorf("call %d into the black hole: %v, want DeadlineExceeded", i, err)
			}
		})
	}
	overloaded := func(ctx context.Context) error {
		err := hold(ctx, "late")
		if status.Code(err) == codes.ResourceExhausted && client.Reason(err) == "OVERLOADED" {
			return nil
		}
		return err
	}
	probes := 0 // each may take a place until the sender drops it
	pollUntil(t, timeout/2, "the stream to be full", func() bool {
		probes++
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		return overloaded(ctx) == nil
	})
	// Beyond the bound: OVERLOADED at once, long before the deadline.
	for i := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		start := time.Now()
		err := overloaded(ctx)
		cancel()
		if err != nil || time.Since(start) > time.Second {
			t.Fatalf("call %d beyond the bound: %v after %s, want ResourceExhausted OVERLOADED at once", i, err, time.Since(start))
		}
	}
	wg.Wait()
	if timedOut.Load()+refused.Load() != bound || refused.Load() >= int64(probes) {
		t.Fatalf("of %d calls, %d timed out and %d were refused OVERLOADED (%d probes)", bound, timedOut.Load(), refused.Load(), probes)
	}

	proxy.Lift()
	pollUntil(t, 30*time.Second, "a hold to be answered after the black hole (A-1 is u0's)", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		return status.Code(hold(ctx, "after")) == codes.AlreadyExists
	})
}

// TestClientWaitingRoom: through the client, a user joins a show's waiting
// room, is admitted, and holds seats with the admission token; without it
// the hold is refused NOT_ADMITTED.
func TestClientWaitingRoom(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	req := tc.ShowRequest("cl-room", 1, 10, time.Minute)
	req.WaitingRoom = &pb.WaitingRoom{AdmitPerSecond: 50}
	if _, err := n.Catalog.CreateShow(tc.AdminCtx(t.Context()), req); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}})
	ctx := t.Context()

	j, err := c.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "cl-room", UserId: "u1"})
	if err != nil || j.GetEntry().GetSequence() != 1 {
		t.Fatalf("join: %v, %v", j, err)
	}
	var e *pb.QueueEntry
	pollUntil(t, 10*time.Second, "the admission", func() bool {
		r, err := c.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "cl-room", UserId: "u1", SinceVersion: e.GetVersion(), Wait: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		e = r.GetEntry()
		return e.GetState() == pb.QueueState_QUEUE_STATE_ADMITTED
	})
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-room", UserId: "u1", SeatIds: []string{"A-2"}}); client.Reason(err) != "NOT_ADMITTED" {
		t.Fatalf("hold without the token: %v, want NOT_ADMITTED", err)
	}
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-room", UserId: "u1", SeatIds: []string{"A-2"}, AdmissionToken: e.GetAdmissionToken()}); err != nil {
		t.Fatalf("hold with the token: %v", err)
	}
	w, err := c.WatchQueue(ctx, &pb.WatchQueueRequest{ShowId: "cl-room", UserId: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_ADMITTED {
		t.Fatalf("watch: %v, %v", m, err)
	}
	if l, err := c.LeaveQueue(ctx, &pb.LeaveQueueRequest{ShowId: "cl-room", UserId: "u1"}); err != nil || l.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_LEFT {
		t.Fatalf("leave: %v, %v", l, err)
	}

	// A long poll outlasts the client's CallTimeout when the caller set
	// no deadline: its wait is the request's.
	later := tc.ShowRequest("cl-room-later", 1, 10, time.Minute)
	later.WaitingRoom = &pb.WaitingRoom{AdmitPerSecond: 50, OpensAt: timestamppb.New(time.Now().Add(time.Hour))}
	if _, err := n.Catalog.CreateShow(tc.AdminCtx(t.Context()), later); err != nil {
		t.Fatal(err)
	}
	short := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}, CallTimeout: 200 * time.Millisecond})
	j, err = short.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "cl-room-later", UserId: "u2"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := short.PollQueue(ctx, &pb.PollQueueRequest{ShowId: "cl-room-later", UserId: "u2", SinceVersion: j.GetEntry().GetVersion(), Wait: durationpb.New(time.Second)})
	if err != nil || r.GetEntry().GetState() != pb.QueueState_QUEUE_STATE_QUEUED || time.Since(start) < time.Second {
		t.Fatalf("a 1 s poll with a 200 ms CallTimeout: %v, %v after %v; want the entry after its wait", r, err, time.Since(start))
	}
}
