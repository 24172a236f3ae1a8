package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster"
)

// The demo's bearer tokens; it prints them with the grpcurl commands.
const (
	demoToken      = "demo-token"
	demoAdminToken = "demo-admin-token"
	// demoAdmissionKey signs the demo nodes' waiting room tokens.
	demoAdmissionKey = "demo admission key, 16+ bytes"
)

// demoNodes is the size of the demo's cluster.
const demoNodes = 3

// demoConfig is what `demo` takes from its flags.
type demoConfig struct {
	Dir string // PostgreSQL's directory; empty: a temporary one
	// GRPCAddr and HTTPAddr are the first node's addresses; the others
	// listen on the ports after them (7072/7073, 7074/7075), or on free
	// ports when the port is 0.
	GRPCAddr   string
	HTTPAddr   string
	QuickTTL   time.Duration // hold TTL of the show where a hold expires
	ExitAfter  bool          // stop after the scenario instead of serving
	ShowSuffix string        // appended to the show IDs (set when Dir is reused)
}

func runDemo(ctx context.Context, args []string) error {
	var cfg demoConfig
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&cfg.Dir, "dir", "", "PostgreSQL data directory to create or reuse (default: a temporary directory, removed at exit)")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:7070", "gRPC listen address")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7071", "metrics and health listen address")
	fs.DurationVar(&cfg.QuickTTL, "quick-ttl", 10*time.Second, "hold TTL of the small show whose hold the scenario lets expire")
	fs.BoolVar(&cfg.ExitAfter, "exit-after-scenario", false, "stop after the scenario instead of serving until interrupted")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return demo(ctx, cfg, os.Stdout, os.Stderr)
}

// demo starts PostgreSQL and a node, runs the scenario and serves until ctx
// ends (or returns after the scenario with ExitAfter). The story goes to
// out, logs to logs.
func demo(ctx context.Context, cfg demoConfig, out, logs io.Writer) error {
	p := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }

	p("== starting PostgreSQL from the system's binaries (installing Debian's postgresql if missing)")
	pg, err := pgcluster.Start(ctx, pgcluster.Config{Dir: cfg.Dir, Install: true, Log: logs})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer pg.Stop()
	p("   PostgreSQL %s, data in %s", pg.URL(), pg.Dir())

	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var nodes []*node
	defer func() {
		for _, nd := range nodes {
			if nd != nil {
				nd.shutdown(10 * time.Second)
			}
		}
	}()
	for i := range demoNodes {
		grpcAddr, err := nextPort(cfg.GRPCAddr, 2*i)
		if err != nil {
			return err
		}
		httpAddr, err := nextPort(cfg.HTTPAddr, 2*i)
		if err != nil {
			return err
		}
		sc := serveConfig{
			DatabaseURL: pg.URL(), Migrate: i == 0, GRPCAddr: grpcAddr, HTTPAddr: httpAddr,
			NodeID: fmt.Sprintf("demo-node-%d", i+1), Token: demoToken, AdminToken: demoAdminToken,
			GossipAddr: "127.0.0.1:0", AdmissionKey: []byte(demoAdmissionKey),
		}
		if i > 0 {
			sc.Join = []string{nodes[0].ring.GossipAddr()}
		}
		nd, err := startNode(ctx, sc, log)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		nodes = append(nodes, nd)
		p("== node %s serving gRPC on %s, metrics and health on http://%s, gossip on %s",
			sc.NodeID, nd.server.GRPCAddr(), nd.server.HTTPAddr(), nd.ring.GossipAddr())
	}
	p("   a cluster of %d nodes sharing one PostgreSQL; every show has one owner, and any node forwards to it", demoNodes)
	addr := nodes[0].server.GRPCAddr()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	sc := scenario{
		catalog: pb.NewCatalogServiceClient(conn), res: pb.NewReservationServiceClient(conn),
		admin: pb.NewAdminServiceClient(conn), wait: pb.NewWaitlistServiceClient(conn), room: pb.NewWaitingRoomServiceClient(conn),
		p: p, quickTTL: cfg.QuickTTL,
	}
	arena, err := sc.run(ctx)
	if err != nil {
		return fmt.Errorf("demo scenario: %w", err)
	}
	if err := sc.move(ctx, nodes); err != nil {
		return fmt.Errorf("demo scenario: %w", err)
	}
	if err := sc.waitingRoom(ctx); err != nil {
		return fmt.Errorf("demo scenario: %w", err)
	}
	printTryIt(out, addr, nodes[0].server.HTTPAddr(), arena)
	if !cfg.ExitAfter {
		p("\n== serving until Ctrl-C")
		<-ctx.Done()
	}
	var errs []error
	for i, nd := range nodes {
		if nd != nil {
			errs = append(errs, nd.shutdown(10*time.Second))
			nodes[i] = nil
		}
	}
	return errors.Join(errs...)
}

// nextPort returns addr with its port plus k, or addr itself when its port
// is 0 (a free port).
func nextPort(addr string, k int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("demo: address %q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("demo: address %q: %w", addr, err)
	}
	if n == 0 {
		return addr, nil
	}
	return net.JoinHostPort(host, strconv.Itoa(n+k)), nil
}

// move shows the cluster at work: a hold through a node that does not own
// the show is forwarded to its owner; then the owner stops, and the show,
// with its hold and its waiting user, is served by another node.
func (s *scenario) move(ctx context.Context, nodes []*node) error {
	p := s.p
	first := nodes[0].engine.NodeID()
	var show *pb.Show
	var owner int
	for i := 0; show == nil; i++ {
		id := fmt.Sprintf("demo-move-%d", i)
		o := nodes[0].ring.Owner(id).Name
		if o == first {
			continue // the scenario talks to the first node: move a show it does not own
		}
		sh, err := s.createShow(ctx, id, "Open-air cinema", 1, 4, 5*time.Minute)
		if err != nil {
			return err
		}
		show = sh
		for k, nd := range nodes {
			if nd.engine.NodeID() == o {
				owner = k
			}
		}
	}
	id, ownerName := show.GetShowId(), nodes[owner].engine.NodeID()
	p("\n== 6. show %s is owned by %s; the web tier calls %s, which forwards to the owner", id, ownerName, first)
	h, err := s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{ShowId: id, UserId: "gina", SeatIds: []string{"A-1", "A-2", "A-3", "A-4"}})
	if err != nil {
		return err
	}
	p("   gina HELD %v through %s (hold %s)", h.GetSeatIds(), first, h.GetHoldId())
	j, err := s.wait.JoinWaitlist(svc(ctx), &pb.JoinWaitlistRequest{ShowId: id, UserId: "hugo", SeatsWanted: 2})
	if err != nil {
		return err
	}
	p("   hugo joins its waitlist: %s, sequence %d", j.GetEntry().GetState(), j.GetEntry().GetSequence())

	p("\n== 7. %s stops (SIGTERM): it leaves the cluster, finishes its writes, releases its shows", ownerName)
	began := time.Now()
	if err := nodes[owner].shutdown(10 * time.Second); err != nil {
		return err
	}
	nodes[owner] = nil
	var r *pb.GetReservationResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err = s.res.GetReservation(svc(ctx), &pb.GetReservationRequest{HoldId: h.GetHoldId()})
		if err == nil || time.Now().After(deadline) || status.Code(err) != codes.Unavailable {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	newOwner := nodes[0].ring.Owner(id).Name
	p("   %.0f ms later %s serves %s: gina's hold is %s %v, replayed from PostgreSQL",
		float64(time.Since(began).Microseconds())/1000, newOwner, id, r.GetReservation().GetStatus(), r.GetReservation().GetSeatIds())
	w, err := s.wait.PollWaitlist(svc(ctx), &pb.PollWaitlistRequest{ShowId: id, UserId: "hugo"})
	if err != nil {
		return err
	}
	p("   hugo is still %s, sequence %d, %d ahead", w.GetEntry().GetState(), w.GetEntry().GetSequence(), w.GetEntry().GetPosition())
	return nil
}

// waitingRoom shows an on-sale's waiting room: three users queue before it
// opens, are admitted one a second in the order they joined, and the first
// holds seats with its admission token.
func (s *scenario) waitingRoom(ctx context.Context) error {
	p := s.p
	req := &pb.CreateShowRequest{
		ShowId: "demo-onsale", Title: "Arijit Singh live: on-sale", City: "Mumbai", Venue: "NSCI Dome",
		StartsAt:    timestamppb.New(time.Now().Add(30 * 24 * time.Hour).Truncate(time.Hour)),
		Categories:  []*pb.Category{{Name: "gold", PriceCents: 450000}},
		Rows:        []*pb.Row{{Label: "A", SeatCount: 10, Category: "gold"}},
		WaitingRoom: &pb.WaitingRoom{OpensAt: timestamppb.New(time.Now().Add(time.Second)), AdmitPerSecond: 1},
	}
	resp, err := s.catalog.CreateShow(adminCtx(ctx), req)
	if status.Code(err) == codes.AlreadyExists {
		req.ShowId = fmt.Sprintf("demo-onsale-%d", time.Now().Unix())
		resp, err = s.catalog.CreateShow(adminCtx(ctx), req)
	}
	if err != nil {
		return err
	}
	id := resp.GetShow().GetShowId()
	p("\n== 8. show %s goes on sale in a second behind a waiting room that admits one user a second", id)
	users := []string{"ines", "jai", "kavya"}
	for _, u := range users {
		j, err := s.room.JoinQueue(svc(ctx), &pb.JoinQueueRequest{ShowId: id, UserId: u})
		if err != nil {
			return err
		}
		e := j.GetEntry()
		p("   %-5s joins the queue: %s, %d ahead, estimated wait %.1f s", u, e.GetState(), e.GetPosition(), e.GetEstimatedWait().AsDuration().Seconds())
	}
	_, err = s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{ShowId: id, UserId: "ines", SeatIds: []string{"A-1"}})
	p("   ines tries to hold before her admission: %s", reasonOf(err))
	began := time.Now()
	var token string
	for _, u := range users {
		var e *pb.QueueEntry
		for e.GetState() != pb.QueueState_QUEUE_STATE_ADMITTED {
			r, err := s.room.PollQueue(svc(ctx), &pb.PollQueueRequest{ShowId: id, UserId: u, SinceVersion: e.GetVersion(), Wait: durationpb.New(5 * time.Second)})
			if err != nil {
				return err
			}
			e = r.GetEntry()
		}
		if token == "" {
			token = e.GetAdmissionToken()
		}
		p("   +%.1f s %-5s %s until %s", time.Since(began).Seconds(), u, e.GetState(), e.GetAdmissionDeadline().AsTime().Local().Format("15:04:05"))
	}
	h, err := s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{ShowId: id, UserId: "ines", SeatIds: []string{"A-1"}, AdmissionToken: token})
	if err != nil {
		return err
	}
	p("   ines holds with her admission token: HELD %v", h.GetSeatIds())
	return nil
}

// reasonOf is an error's gRPC code and reason, as the demo prints them.
func reasonOf(err error) string {
	st := status.Convert(err)
	reason, _, _ := strings.Cut(st.Message(), ":")
	return st.Code().String() + " " + reason
}

// scenario is the demo's script, run as a web tier would: over gRPC.
type scenario struct {
	catalog  pb.CatalogServiceClient
	res      pb.ReservationServiceClient
	admin    pb.AdminServiceClient
	wait     pb.WaitlistServiceClient
	room     pb.WaitingRoomServiceClient
	p        func(string, ...any)
	quickTTL time.Duration
}

func svc(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+demoToken)
}

func adminCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+demoAdminToken)
}

// createShow creates a show of rows×seats seats. When the ID exists (a
// reused data directory), it picks a fresh one.
func (s *scenario) createShow(ctx context.Context, id, title string, rows, seats int, ttl time.Duration) (*pb.Show, error) {
	req := &pb.CreateShowRequest{
		ShowId: id, Title: title, City: "Mumbai", Venue: "NSCI Dome",
		StartsAt:   timestamppb.New(time.Now().Add(7 * 24 * time.Hour).Truncate(time.Hour)),
		HoldTtl:    durationpb.New(ttl),
		Categories: []*pb.Category{{Name: "gold", PriceCents: 450000}, {Name: "silver", PriceCents: 250000}},
	}
	for i := range rows {
		cat := "silver"
		if i < rows/5 {
			cat = "gold"
		}
		req.Rows = append(req.Rows, &pb.Row{Label: rowLabel(i), SeatCount: int32(seats), Category: cat})
	}
	resp, err := s.catalog.CreateShow(adminCtx(ctx), req)
	if status.Code(err) == codes.AlreadyExists {
		req.ShowId = fmt.Sprintf("%s-%d", id, time.Now().Unix())
		resp, err = s.catalog.CreateShow(adminCtx(ctx), req)
	}
	if err != nil {
		return nil, err
	}
	return resp.GetShow(), nil
}

// rowLabel names row i: A..Z, then AA, AB, ...
func rowLabel(i int) string {
	if i < 26 {
		return string(rune('A' + i))
	}
	return rowLabel(i/26-1) + string(rune('A'+i%26))
}

func (s *scenario) run(ctx context.Context) (string, error) {
	p := s.p
	p("\n== 1. an admin creates a 15,000-seat show (100 rows of 150 seats, holds last 5 minutes)")
	arena, err := s.createShow(ctx, "demo-arena", "Coldplay: Music of the Spheres", 100, 150, 5*time.Minute)
	if err != nil {
		return "", err
	}
	sm, err := s.res.GetSeatMap(svc(ctx), &pb.GetSeatMapRequest{ShowId: arena.GetShowId()})
	if err != nil {
		return "", err
	}
	p("   show %s: %d seats; its seat map is %d bytes on the wire (one status byte per seat), version %d",
		arena.GetShowId(), arena.GetCapacity(), proto.Size(sm), sm.GetVersion())

	p("\n== 2. alice and bob race for seats A-1 and A-2 at the same moment")
	seats := []string{"A-1", "A-2"}
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results [2]struct {
			user string
			resp *pb.HoldSeatsResponse
			err  error
		}
	)
	for i, user := range []string{"alice", "bob"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i].user = user
			results[i].resp, results[i].err = s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{
				ShowId: arena.GetShowId(), UserId: user, SeatIds: seats, IdempotencyKey: user + "-race",
			})
		}()
	}
	close(start)
	wg.Wait()
	var winner, winnerHold string
	for _, r := range results {
		switch {
		case r.err == nil:
			winner, winnerHold = r.user, r.resp.GetHoldId()
			p("   %-5s HELD %v: hold %s, pay before %s", r.user, r.resp.GetSeatIds(), winnerHold,
				r.resp.GetExpiresAt().AsTime().Local().Format(time.TimeOnly))
		case status.Code(r.err) == codes.AlreadyExists:
			p("   %-5s refused from memory, no database round trip: %v %s", r.user, status.Code(r.err), status.Convert(r.err).Message())
		default:
			return "", fmt.Errorf("%s: %w", r.user, r.err)
		}
	}
	if winner == "" {
		return "", errors.New("nobody won the race")
	}

	p("\n== 3. %s pays; the web tier confirms the hold with the payment reference", winner)
	conf, err := s.res.ConfirmHold(svc(ctx), &pb.ConfirmHoldRequest{
		HoldId: winnerHold, UserId: winner, PaymentRef: "pay_demo_0001", IdempotencyKey: winner + "-confirm",
	})
	if err != nil {
		return "", err
	}
	r := conf.GetReservation()
	p("   %s %v %s, payment %s", r.GetHoldId(), r.GetSeatIds(), r.GetStatus(), r.GetPaymentRef())
	again, err := s.res.ConfirmHold(svc(ctx), &pb.ConfirmHoldRequest{
		HoldId: winnerHold, UserId: winner, PaymentRef: "pay_demo_0001", IdempotencyKey: winner + "-confirm",
	})
	if err != nil {
		return "", err
	}
	p("   the confirm retried with the same idempotency key answers the same: %s", again.GetReservation().GetStatus())

	p("\n== 4. a small show (holds last %s): carol holds three seats and never pays, erin books the other seven", s.quickTTL)
	quick, err := s.createShow(ctx, "demo-quick", "Late-night comedy", 1, 10, s.quickTTL)
	if err != nil {
		return "", err
	}
	hold, err := s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{
		ShowId: quick.GetShowId(), UserId: "carol", SeatIds: []string{"A-4", "A-5", "A-6"},
	})
	if err != nil {
		return "", err
	}
	erin, err := s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{
		ShowId: quick.GetShowId(), UserId: "erin", SeatIds: []string{"A-1", "A-2", "A-3", "A-7", "A-8", "A-9", "A-10"},
	})
	if err != nil {
		return "", err
	}
	if _, err := s.res.ConfirmHold(svc(ctx), &pb.ConfirmHoldRequest{HoldId: erin.GetHoldId(), UserId: "erin", PaymentRef: "pay_demo_0002"}); err != nil {
		return "", err
	}
	if err := s.printCounts(ctx, quick.GetShowId()); err != nil {
		return "", err
	}
	turn, err := s.waitlist(ctx, quick.GetShowId())
	if err != nil {
		return "", err
	}
	p("   waiting for carol's hold to expire (its TTL, then 5 s of grace for a confirm already on its way)...")
	began := time.Now()
	if err := s.waitExpired(ctx, hold.GetHoldId()); err != nil {
		return "", err
	}
	p("   after %.1f s hold %s is EXPIRED in PostgreSQL; its seats go to the waitlist first:", time.Since(began).Seconds(), hold.GetHoldId())
	if err := turn(); err != nil {
		return "", err
	}
	if err := s.printCounts(ctx, quick.GetShowId()); err != nil {
		return "", err
	}
	_, err = s.res.ConfirmHold(svc(ctx), &pb.ConfirmHoldRequest{HoldId: hold.GetHoldId(), UserId: "carol", PaymentRef: "pay_late"})
	p("   carol's late confirm: %v", status.Convert(err).Message())

	p("\n== 5. what PostgreSQL recorded")
	list, err := s.res.ListUserReservations(svc(ctx), &pb.ListUserReservationsRequest{UserId: winner})
	if err != nil {
		return "", err
	}
	for _, r := range list.GetReservations() {
		p("   %s's booking: %s %s %v %s", winner, r.GetShowId(), r.GetHoldId(), r.GetSeatIds(), r.GetStatus())
	}
	var events []*pb.ReservationEvent
	for _, show := range []string{arena.GetShowId(), quick.GetShowId()} {
		ev, err := s.admin.ListReservationEvents(adminCtx(ctx), &pb.ListReservationEventsRequest{ShowId: show})
		if err != nil {
			return "", err
		}
		events = append(events, ev.GetEvents()...)
	}
	slices.SortFunc(events, func(a, b *pb.ReservationEvent) int { return cmp.Compare(a.GetEventId(), b.GetEventId()) })
	for _, e := range events {
		p("   audit #%-2d %-10s %-11s %s %-5s %v by %s (epoch %d)", e.GetEventId(), e.GetShowId(), e.GetKind(),
			e.GetHoldId(), e.GetUserId(), e.GetSeatIds(), e.GetNodeId(), e.GetEpoch())
	}
	return arena.GetShowId(), nil
}

// waitlist has dave (2 seats) and frank (3 seats) join the show's waitlist,
// and opens dave's watch stream. The function it returns waits for dave's
// turn on that stream, has dave hold the offered seats, and shows where
// frank stands.
func (s *scenario) waitlist(ctx context.Context, show string) (func() error, error) {
	p := s.p
	if _, err := s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{ShowId: show, UserId: "dave", SeatIds: []string{"A-4"}}); err != nil {
		p("   dave finds no seat free: %v", status.Convert(err).Message())
	}
	for _, j := range []struct {
		user   string
		wanted int32
	}{{"dave", 2}, {"frank", 3}} {
		r, err := s.wait.JoinWaitlist(svc(ctx), &pb.JoinWaitlistRequest{ShowId: show, UserId: j.user, SeatsWanted: j.wanted})
		if err != nil {
			return nil, err
		}
		e := r.GetEntry()
		p("   %-5s joins the waitlist for %d seats: %s, %d ahead, times out at %s", j.user, j.wanted,
			e.GetState(), e.GetPosition(), e.GetDeadline().AsTime().Local().Format(time.TimeOnly))
	}
	wctx, cancel := context.WithTimeout(ctx, s.quickTTL+30*time.Second)
	stream, err := s.wait.WatchWaitlist(svc(wctx), &pb.WatchWaitlistRequest{ShowId: show, UserId: "dave"})
	if err != nil {
		cancel()
		return nil, err
	}
	return func() error {
		defer cancel()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("dave's waitlist stream: %w", err)
			}
			e := msg.GetEntry()
			if e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN {
				continue
			}
			seats := e.GetTurn().GetSeatIds()
			p("   dave's stream: %s, seats %v offered to him alone until %s", e.GetState(), seats,
				e.GetTurn().GetDeadline().AsTime().Local().Format(time.TimeOnly))
			_, err = s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{ShowId: show, UserId: "frank", SeatIds: seats})
			p("   frank tries dave's seats: %v", status.Convert(err).Message())
			h, err := s.res.HoldSeats(svc(ctx), &pb.HoldSeatsRequest{ShowId: show, UserId: "dave", SeatIds: seats})
			if err != nil {
				return err
			}
			p("   dave HELD %v (hold %s)", h.GetSeatIds(), h.GetHoldId())
			if msg, err = stream.Recv(); err != nil {
				return fmt.Errorf("dave's waitlist stream: %w", err)
			}
			p("   dave's stream ends: %s", msg.GetEntry().GetState())
			f, err := s.wait.PollWaitlist(svc(ctx), &pb.PollWaitlistRequest{ShowId: show, UserId: "frank"})
			if err != nil {
				return err
			}
			p("   frank: %s, %d ahead; the third seat is set aside for him until two more come free",
				f.GetEntry().GetState(), f.GetEntry().GetPosition())
			return nil
		}
	}, nil
}

func (s *scenario) printCounts(ctx context.Context, show string) error {
	sm, err := s.res.GetSeatMap(svc(ctx), &pb.GetSeatMapRequest{ShowId: show})
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, st := range sm.GetStatuses() {
		b.WriteByte(".HBO"[max(0, min(3, int(st)-1))])
	}
	p := s.p
	p("   seat map %s v%d: %d available, %d held, %d booked, %d offered, %d waiting   [%s]  (. free, H held, B booked, O offered to the waitlist)",
		show, sm.GetVersion(), sm.GetAvailable(), sm.GetHeld(), sm.GetBooked(), sm.GetOffered(), sm.GetWaiting(), b.String())
	return nil
}

// waitExpired polls the hold until it is EXPIRED, bounded by its TTL, the
// grace and a margin.
func (s *scenario) waitExpired(ctx context.Context, hold string) error {
	ctx, cancel := context.WithTimeout(ctx, s.quickTTL+15*time.Second)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		r, err := s.res.GetReservation(svc(ctx), &pb.GetReservationRequest{HoldId: hold})
		if err != nil {
			return err
		}
		if r.GetReservation().GetStatus() == pb.ReservationStatus_RESERVATION_STATUS_EXPIRED {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hold %s did not expire: %w", hold, ctx.Err())
		case <-tick.C:
		}
	}
}

// printTryIt prints grpcurl commands against the running node.
func printTryIt(out io.Writer, addr, httpAddr, show string) {
	auth := fmt.Sprintf("-H 'authorization: Bearer %s'", demoToken)
	fmt.Fprintf(out, `
== try it (grpcurl: 'make grpcurl' installs it into bin/)
   bin/grpcurl -plaintext %[1]s list
   bin/grpcurl -plaintext %[2]s -d '{"showId":"%[3]s"}' %[1]s boxoffice.v1.ReservationService/GetSeatMap
   bin/grpcurl -plaintext %[2]s -d '{"showId":"%[3]s","userId":"dave","seatIds":["B-7","B-8"]}' %[1]s boxoffice.v1.ReservationService/HoldSeats
   bin/grpcurl -plaintext %[2]s -d '{"holdId":"<hold id>","userId":"dave","paymentRef":"pay_123"}' %[1]s boxoffice.v1.ReservationService/ConfirmHold
   bin/grpcurl -plaintext %[2]s -d '{"userId":"dave"}' %[1]s boxoffice.v1.ReservationService/ListUserReservations
   bin/grpcurl -plaintext %[2]s -d '{"showId":"<show>","userId":"gina","seatsWanted":2}' %[1]s boxoffice.v1.WaitlistService/JoinWaitlist
   bin/grpcurl -plaintext %[2]s -d '{"showId":"<show>","userId":"gina"}' %[1]s boxoffice.v1.WaitlistService/WatchWaitlist
   bin/grpcurl -plaintext -H 'authorization: Bearer %[4]s' -d '{"showId":"%[3]s"}' %[1]s boxoffice.v1.AdminService/ListReservationEvents
   curl -s http://%[5]s/metrics | grep ^boxoffice_
`, addr, auth, show, demoAdminToken, httpAddr)
}
