package main

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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// Shape of the crash test's load.
const (
	crashShow          = "crash-show"
	crashRows          = 40
	crashSeatsPerRow   = 50 // 2,000 seats: room for the holds made before the kill
	crashClients       = 32
	crashMinHolds      = 200 // acknowledged holds before the kill
	crashMinConfirms   = 50  // acknowledged confirms before the kill
	crashCallTimeout   = 15 * time.Second
	crashLoadTimeout   = 60 * time.Second // to reach the minimums above
	crashVerifyTimeout = 30 * time.Second
)

// TestCrash is the acceptance test of issue #2: it drives holds and
// confirms through gRPC into the built binary, kills it with kill -9 while
// calls are in flight, starts it again on the same database, and finds
// every acknowledged hold and confirm with the same seats, user and payment,
// and the seat map equal to what PostgreSQL says. Calls cut off by the kill
// are not acknowledged: they may or may not have committed, and their
// retries with the same idempotency key after the restart must answer
// consistently with the database.
func TestCrash(t *testing.T) {
	start := time.Now()
	bin := buildBinary(t)
	t.Logf("binary built (or reused) in %s", time.Since(start).Round(time.Millisecond))
	url := pgclustertest.Shared(t)
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(db.Close)

	phase := time.Now()
	first := startServe(t, bin, serveOptions{DatabaseURL: url, NodeID: "crash-1", Migrate: true})
	t.Logf("serve ready in %s", time.Since(phase).Round(time.Millisecond))
	conn := dialServe(t, first)
	createCtx, cancel := context.WithTimeout(tc.AdminCtx(t.Context()), crashCallTimeout)
	_, err = pb.NewCatalogServiceClient(conn).CreateShow(createCtx, tc.ShowRequest(crashShow, crashRows, crashSeatsPerRow, 0))
	cancel()
	if err != nil {
		t.Fatalf("CreateShow: %v", err)
	}

	// Load until enough is acknowledged, then kill -9 with the clients
	// still calling.
	phase = time.Now()
	load := startCrashLoad(t, pb.NewReservationServiceClient(conn), crashClients)
	pollFor(t, crashLoadTimeout, func() error {
		select {
		case <-first.Exited():
			t.Fatalf("serve exited under load\noutput:\n%s", first.Output())
		default:
		}
		if err := load.firstError(); err != nil {
			t.Fatalf("before the kill: %v", err)
		}
		if h, c := load.counts(); h < crashMinHolds || c < crashMinConfirms {
			return fmt.Errorf("%d holds and %d confirms acknowledged, want %d and %d", h, c, crashMinHolds, crashMinConfirms)
		}
		return nil
	})
	inFlight := load.kill(t, first)
	load.stop()
	if err := load.firstError(); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	acks := load.acknowledged()
	unknown := load.unknownOutcomes()
	t.Logf("killed pid %d after %s of load, with %d calls in flight: %d holds and %d confirms acknowledged, %d calls cut off",
		first.cmd.Process.Pid, time.Since(phase).Round(time.Millisecond), inFlight, len(acks.holds), len(acks.confirms), len(unknown))
	if len(unknown) == 0 {
		t.Errorf("no call was cut off by the kill: the clients had stopped calling")
	}

	phase = time.Now()
	second := startServe(t, bin, serveOptions{DatabaseURL: url, NodeID: "crash-1"})
	t.Logf("restarted serve ready in %s", time.Since(phase).Round(time.Millisecond))
	conn2 := dialServe(t, second)
	rs := pb.NewReservationServiceClient(conn2)
	ctx, cancel := context.WithTimeout(tc.Ctx(t.Context()), crashVerifyTimeout)
	defer cancel()

	// The seat map first: it loads the show, so that GetReservation
	// answers the live holds from the replayed memory.
	sm, err := rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: crashShow, IncludeLayout: true})
	if err != nil {
		t.Fatalf("GetSeatMap after restart: %v", err)
	}
	checkAcknowledged(t, ctx, rs, db, acks)
	checkDBSeatInvariants(t, ctx, db, crashShow)
	if d := seatMapVersusDB(t, ctx, sm, db, crashShow); d != "" {
		t.Errorf("after restart the seat map differs from PostgreSQL:\n%s", d)
	}

	// Calls cut off by the kill, retried with their idempotency keys.
	retryUnknown(t, ctx, rs, db, unknown)
	sm, err = rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: crashShow, IncludeLayout: true})
	if err != nil {
		t.Fatalf("GetSeatMap after the retries: %v", err)
	}
	checkDBSeatInvariants(t, ctx, db, crashShow)
	if d := seatMapVersusDB(t, ctx, sm, db, crashShow); d != "" {
		t.Errorf("after the retries the seat map differs from PostgreSQL:\n%s", d)
	}
	t.Logf("after restart and retries: %d available, %d held, %d booked", sm.GetAvailable(), sm.GetHeld(), sm.GetBooked())
}

// dialServe connects a client to p; it is closed at cleanup.
func dialServe(t testing.TB, p *serveProcess) *grpc.ClientConn {
	t.Helper()
	conn, err := tc.Dial(p.GRPCAddr)
	if err != nil {
		t.Fatalf("dial %s: %v", p.GRPCAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ackedHold is a hold the engine acknowledged.
type ackedHold struct {
	HoldID, User string
	Seats        []string // sorted
}

// ackedConfirm is a confirm the engine acknowledged.
type ackedConfirm struct {
	HoldID, User, PaymentRef string
}

// crashAcks is what the engine acknowledged before the kill.
type crashAcks struct {
	holds    []ackedHold
	confirms map[string]ackedConfirm // by hold ID
}

// cutOffCall is a call whose outcome the kill made unknown, with what a
// retry needs.
type cutOffCall struct {
	Hold    *pb.HoldSeatsRequest   // a hold, or
	Confirm *pb.ConfirmHoldRequest // a confirm of an acknowledged hold
	Seats   []string               // of the hold being confirmed
	Err     error
}

// crashLoad is the clients of the crash test: each loops holding 1-4
// random seats for a new user and confirming about half of its holds,
// recording what was acknowledged. Before the kill every call must succeed
// or be refused for taken seats; after it, every failure is an unknown
// outcome.
type crashLoad struct {
	rs       pb.ReservationServiceClient
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	killed   atomic.Bool  // set just before SIGKILL is sent
	inFlight atomic.Int64 // calls sent and not yet answered

	mu       sync.Mutex // guards the fields below
	holds    []ackedHold
	confirms map[string]ackedConfirm
	unknown  []cutOffCall
	errs     []error // unexpected answers before the kill
}

func startCrashLoad(t testing.TB, rs pb.ReservationServiceClient, clients int) *crashLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(tc.Ctx(context.Background()))
	l := &crashLoad{rs: rs, cancel: cancel, confirms: map[string]ackedConfirm{}}
	t.Cleanup(l.stop)
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client(ctx, c, rand.New(rand.NewPCG(uint64(c), 0x5eed)))
		}()
	}
	return l
}

// client is one client's loop; its users are unique to it, so the per-user
// seat limit never refuses a hold.
func (l *crashLoad) client(ctx context.Context, c int, rng *rand.Rand) {
	for i := 0; ctx.Err() == nil; i++ {
		user := fmt.Sprintf("crash-u%02d-%05d", c, i)
		seats := randomSeats(rng, 1+rng.IntN(4))
		req := &pb.HoldSeatsRequest{ShowId: crashShow, UserId: user, SeatIds: seats, IdempotencyKey: "hold-" + user}
		resp, err := l.call(ctx, func(ctx context.Context) (any, error) { return l.rs.HoldSeats(ctx, req) })
		if err != nil {
			if l.refusal(err, cutOffCall{Hold: req}, codes.AlreadyExists) {
				return
			}
			continue
		}
		hr := resp.(*pb.HoldSeatsResponse)
		got := sortedCopy(hr.GetSeatIds())
		if hr.GetUserId() != user || !slices.Equal(got, sortedCopy(seats)) || hr.GetHoldId() == "" {
			l.unexpected(fmt.Errorf("HoldSeats %s %v answered hold %q of %s for %v", user, seats, hr.GetHoldId(), hr.GetUserId(), got))
			return
		}
		h := ackedHold{HoldID: hr.GetHoldId(), User: user, Seats: got}
		l.mu.Lock()
		l.holds = append(l.holds, h)
		l.mu.Unlock()

		if rng.IntN(2) == 0 {
			continue
		}
		creq := &pb.ConfirmHoldRequest{HoldId: h.HoldID, UserId: user, PaymentRef: "pay-" + user, IdempotencyKey: "confirm-" + user}
		resp, err = l.call(ctx, func(ctx context.Context) (any, error) { return l.rs.ConfirmHold(ctx, creq) })
		if err != nil {
			if l.refusal(err, cutOffCall{Confirm: creq, Seats: h.Seats}) {
				return
			}
			continue
		}
		r := resp.(*pb.ConfirmHoldResponse).GetReservation()
		if r.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED || r.GetPaymentRef() != creq.PaymentRef ||
			r.GetHoldId() != h.HoldID || r.GetUserId() != user || !slices.Equal(sortedCopy(r.GetSeatIds()), h.Seats) {
			l.unexpected(fmt.Errorf("ConfirmHold %s of %s answered %v", h.HoldID, user, r))
			return
		}
		l.mu.Lock()
		l.confirms[h.HoldID] = ackedConfirm{HoldID: h.HoldID, User: user, PaymentRef: creq.PaymentRef}
		l.mu.Unlock()
	}
}

// call makes one RPC, counted as in flight while it is.
func (l *crashLoad) call(ctx context.Context, rpc func(context.Context) (any, error)) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, crashCallTimeout)
	defer cancel()
	l.inFlight.Add(1)
	defer l.inFlight.Add(-1)
	return rpc(ctx)
}

// refusal files a failed call: before the kill, codes in ok are expected
// refusals and anything else is an error; after it, the call's outcome is
// unknown. It reports whether the client should stop.
func (l *crashLoad) refusal(err error, call cutOffCall, ok ...codes.Code) (stop bool) {
	if l.killed.Load() {
		call.Err = err
		l.mu.Lock()
		l.unknown = append(l.unknown, call)
		l.mu.Unlock()
		return true // one cut-off call per client is plenty; more would hammer a dead port
	}
	if slices.Contains(ok, status.Code(err)) {
		return false
	}
	what := "HoldSeats"
	if call.Confirm != nil {
		what = "ConfirmHold"
	}
	l.unexpected(fmt.Errorf("%s before the kill: %v", what, err))
	return true
}

func (l *crashLoad) unexpected(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

// kill marks the kill and sends SIGKILL to p, returning the calls in flight
// just before.
func (l *crashLoad) kill(t testing.TB, p *serveProcess) int64 {
	t.Helper()
	l.killed.Store(true)
	n := l.inFlight.Load()
	p.Kill(t)
	return n
}

// stop ends the clients and waits for them. It is idempotent.
func (l *crashLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *crashLoad) counts() (holds, confirms int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.holds), len(l.confirms)
}

func (l *crashLoad) firstError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d unexpected answers, the first: %w", len(l.errs), l.errs[0])
}

// acknowledged returns what was acknowledged; call it after stop.
func (l *crashLoad) acknowledged() crashAcks {
	l.mu.Lock()
	defer l.mu.Unlock()
	return crashAcks{holds: slices.Clone(l.holds), confirms: l.confirms}
}

// unknownOutcomes returns the calls cut off by the kill; call it after stop.
func (l *crashLoad) unknownOutcomes() []cutOffCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.unknown)
}

// randomSeats returns n distinct random seats of the crash show.
func randomSeats(rng *rand.Rand, n int) []string {
	var seats []string
	for len(seats) < n {
		s := tc.SeatID(rng.IntN(crashRows), 1+rng.IntN(crashSeatsPerRow))
		if !slices.Contains(seats, s) {
			seats = append(seats, s)
		}
	}
	return seats
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// checkAcknowledged checks every acknowledged hold and confirm both through
// GetReservation and in PostgreSQL: same user and seats, HELD or BOOKED,
// and BOOKED with the same payment reference if the confirm was
// acknowledged.
func checkAcknowledged(t testing.TB, ctx context.Context, rs pb.ReservationServiceClient, db *pgxpool.Pool, acks crashAcks) {
	t.Helper()
	stored := dbShowReservations(t, ctx, db, crashShow)
	var lost []string
	for _, h := range acks.holds {
		c, confirmed := acks.confirms[h.HoldID]
		check := func(where, user, status, paymentRef string, seats []string) {
			var bad []string
			if user != h.User {
				bad = append(bad, fmt.Sprintf("user %q", user))
			}
			if !slices.Equal(sortedCopy(seats), h.Seats) {
				bad = append(bad, fmt.Sprintf("seats %v", seats))
			}
			switch {
			case confirmed && (status != "BOOKED" || paymentRef != c.PaymentRef):
				bad = append(bad, fmt.Sprintf("%s with payment %q, want BOOKED with %q", status, paymentRef, c.PaymentRef))
			case status != "HELD" && status != "BOOKED":
				bad = append(bad, fmt.Sprintf("status %s, want HELD or BOOKED", status))
			case status == "BOOKED" && paymentRef != "pay-"+h.User:
				bad = append(bad, fmt.Sprintf("BOOKED with payment %q, which no client sent", paymentRef))
			}
			if len(bad) > 0 {
				lost = append(lost, fmt.Sprintf("%s: hold %s (user %s, seats %v, confirm acknowledged %v): %s",
					where, h.HoldID, h.User, h.Seats, confirmed, strings.Join(bad, ", ")))
			}
		}

		r, ok := stored[h.HoldID]
		if !ok {
			lost = append(lost, fmt.Sprintf("postgres: acknowledged hold %s (user %s, seats %v, confirm acknowledged %v) missing",
				h.HoldID, h.User, h.Seats, confirmed))
		} else {
			check("postgres", r.User, r.Status, r.PaymentRef, r.Seats)
		}

		resp, err := rs.GetReservation(ctx, &pb.GetReservationRequest{HoldId: h.HoldID})
		if err != nil {
			lost = append(lost, fmt.Sprintf("GetReservation: acknowledged hold %s (user %s, confirm acknowledged %v): %v",
				h.HoldID, h.User, confirmed, err))
			continue
		}
		g := resp.GetReservation()
		check("GetReservation", g.GetUserId(), strings.TrimPrefix(g.GetStatus().String(), "RESERVATION_STATUS_"), g.GetPaymentRef(), g.GetSeatIds())
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged holds (%d confirmed) not found as acknowledged after the restart:\n%s",
			len(lost), len(acks.holds), len(acks.confirms), strings.Join(lost, "\n"))
	}
}

// retryUnknown retries the calls cut off by the kill with the same
// idempotency keys. A hold's retry must either replay the committed hold
// (the user's one reservation in PostgreSQL) or, if none was committed,
// make one now or be refused for seats taken meanwhile; a confirm's retry
// of an acknowledged hold must book it with the same payment reference.
func retryUnknown(t testing.TB, ctx context.Context, rs pb.ReservationServiceClient, db *pgxpool.Pool, calls []cutOffCall) {
	t.Helper()
	before := dbShowReservations(t, ctx, db, crashShow)
	byUser := func(m map[string]dbShowReservation, user string) []dbShowReservation {
		var out []dbShowReservation
		for _, r := range m {
			if r.User == user {
				out = append(out, r)
			}
		}
		return out
	}
	var replayed, made, taken, confirmed int
	for _, c := range calls {
		switch {
		case c.Hold != nil:
			user := c.Hold.GetUserId()
			committed := byUser(before, user)
			if len(committed) > 1 {
				t.Errorf("user %s has %d reservations from one hold request: %v", user, len(committed), committed)
				continue
			}
			resp, err := rs.HoldSeats(ctx, c.Hold)
			switch {
			case err == nil && len(committed) == 1:
				replayed++
				if resp.GetHoldId() != committed[0].ID || !slices.Equal(sortedCopy(resp.GetSeatIds()), sortedCopy(committed[0].Seats)) {
					t.Errorf("retried hold of %s answered %s %v, but %s %v was committed before the kill",
						user, resp.GetHoldId(), resp.GetSeatIds(), committed[0].ID, committed[0].Seats)
				}
			case err == nil:
				made++
			case len(committed) == 1:
				t.Errorf("retried hold of %s (idempotency key %s) refused with %v, but %s was committed before the kill",
					user, c.Hold.GetIdempotencyKey(), err, committed[0].ID)
			case status.Code(err) == codes.AlreadyExists:
				taken++
			default:
				t.Errorf("retried hold of %s: %v", user, err)
			}
		case c.Confirm != nil:
			resp, err := rs.ConfirmHold(ctx, c.Confirm)
			r := resp.GetReservation()
			if err != nil || r.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED ||
				r.GetPaymentRef() != c.Confirm.GetPaymentRef() || !slices.Equal(sortedCopy(r.GetSeatIds()), c.Seats) {
				t.Errorf("retried confirm of acknowledged hold %s (user %s): %v, %v", c.Confirm.GetHoldId(), c.Confirm.GetUserId(), r, err)
				continue
			}
			confirmed++
		}
	}
	after := dbShowReservations(t, ctx, db, crashShow)
	for _, c := range calls {
		if c.Hold != nil {
			if rs := byUser(after, c.Hold.GetUserId()); len(rs) > 1 {
				t.Errorf("after its retry, user %s has %d reservations from one idempotency key: %v", c.Hold.GetUserId(), len(rs), rs)
			}
		}
	}
	t.Logf("retried %d cut-off calls: holds %d replayed, %d made anew, %d refused for taken seats; %d confirms booked",
		len(calls), replayed, made, taken, confirmed)
}

// dbShowReservation is a reservations row.
type dbShowReservation struct {
	ID, User, Status, PaymentRef string
	Seats                        []string
}

// dbShowReservations returns the show's reservations by ID.
func dbShowReservations(t testing.TB, ctx context.Context, db *pgxpool.Pool, show string) map[string]dbShowReservation {
	t.Helper()
	rows, _ := db.Query(ctx, `SELECT reservation_id, user_id, status, coalesce(payment_ref, ''), seat_ids
		FROM reservations WHERE show_id = $1`, show)
	out := map[string]dbShowReservation{}
	var r dbShowReservation
	if _, err := pgx.ForEachRow(rows, []any{&r.ID, &r.User, &r.Status, &r.PaymentRef, &r.Seats}, func() error {
		out[r.ID] = r
		r = dbShowReservation{}
		return nil
	}); err != nil {
		t.Fatalf("reservations of %s: %v", show, err)
	}
	return out
}

// checkDBSeatInvariants fails the test if PostgreSQL has a seat with two
// live claims or in two live reservations, a live reservation missing a
// claim of one of its seats, or a claim not backed by a live reservation
// of that seat.
func checkDBSeatInvariants(t testing.TB, ctx context.Context, db *pgxpool.Pool, show string) {
	t.Helper()
	for _, q := range []struct{ what, sql string }{
		{"seats with two live claims", `SELECT seat_id || ' x' || count(*) FROM seat_claims
			WHERE show_id = $1 GROUP BY seat_id HAVING count(*) > 1`},
		{"seats in two live reservations", `SELECT s || ' x' || count(*) FROM reservations r, unnest(r.seat_ids) s
			WHERE r.show_id = $1 AND r.status IN ('HELD', 'BOOKED') GROUP BY s HAVING count(*) > 1`},
		{"live reservations with a seat they do not claim", `SELECT r.reservation_id || ' ' || s
			FROM reservations r, unnest(r.seat_ids) s
			WHERE r.show_id = $1 AND r.status IN ('HELD', 'BOOKED') AND NOT EXISTS (
				SELECT 1 FROM seat_claims c
				WHERE c.show_id = r.show_id AND c.seat_id = s AND c.reservation_id = r.reservation_id)`},
		{"claims without a live reservation of the seat", `SELECT c.seat_id || ' by ' || c.reservation_id || ' ' || coalesce(r.status, 'missing')
			FROM seat_claims c LEFT JOIN reservations r USING (show_id, reservation_id)
			WHERE c.show_id = $1 AND (r.status IS NULL OR r.status NOT IN ('HELD', 'BOOKED') OR NOT c.seat_id = ANY (r.seat_ids))`},
	} {
		rows, _ := db.Query(ctx, q.sql, show)
		bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q.what, err)
		}
		if len(bad) > 0 {
			t.Errorf("%s in show %s: %v", q.what, show, bad)
		}
	}
}

// seatMapVersusDB compares a seat map with PostgreSQL: a seat claimed by a
// HELD reservation must be HELD, by a BOOKED one BOOKED, and every other
// seat AVAILABLE, counts included. It describes the differences ("" if
// none).
func seatMapVersusDB(t testing.TB, ctx context.Context, sm *pb.GetSeatMapResponse, db *pgxpool.Pool, show string) string {
	t.Helper()
	rows, _ := db.Query(ctx, `SELECT c.seat_id, r.status FROM seat_claims c
		JOIN reservations r USING (show_id, reservation_id) WHERE c.show_id = $1`, show)
	claimed := map[string]pb.SeatStatus{}
	var seat, st string
	if _, err := pgx.ForEachRow(rows, []any{&seat, &st}, func() error {
		switch st {
		case "HELD":
			claimed[seat] = pb.SeatStatus_SEAT_STATUS_HELD
		case "BOOKED":
			claimed[seat] = pb.SeatStatus_SEAT_STATUS_BOOKED
		default: // a claim of an ended reservation; checkDBSeatInvariants reports it
			claimed[seat] = pb.SeatStatus_SEAT_STATUS_AVAILABLE
		}
		return nil
	}); err != nil {
		t.Fatalf("seat claims of %s: %v", show, err)
	}

	var diffs []string
	counts := map[pb.SeatStatus]int32{}
	seen := map[string]bool{}
	i := 0
	for _, r := range sm.GetRows() {
		for n := 1; n <= int(r.GetSeatCount()); n++ {
			if i >= len(sm.GetStatuses()) {
				return fmt.Sprintf("seat map has %d statuses, fewer than its rows' seats", len(sm.GetStatuses()))
			}
			id := fmt.Sprintf("%s-%d", r.GetLabel(), n)
			seen[id] = true
			got := pb.SeatStatus(sm.GetStatuses()[i])
			i++
			want, ok := claimed[id]
			if !ok {
				want = pb.SeatStatus_SEAT_STATUS_AVAILABLE
			}
			counts[want]++
			if got != want {
				diffs = append(diffs, fmt.Sprintf("%s: seat map %v, postgres %v", id, got, want))
			}
		}
	}
	if i != len(sm.GetStatuses()) {
		diffs = append(diffs, fmt.Sprintf("seat map has %d statuses for %d seats", len(sm.GetStatuses()), i))
	}
	for id := range claimed {
		if !seen[id] {
			diffs = append(diffs, fmt.Sprintf("%s: claimed in postgres, not in the seat map", id))
		}
	}
	if sm.GetAvailable() != counts[pb.SeatStatus_SEAT_STATUS_AVAILABLE] || sm.GetHeld() != counts[pb.SeatStatus_SEAT_STATUS_HELD] ||
		sm.GetBooked() != counts[pb.SeatStatus_SEAT_STATUS_BOOKED] {
		diffs = append(diffs, fmt.Sprintf("counts available/held/booked: seat map %d/%d/%d, postgres %d/%d/%d",
			sm.GetAvailable(), sm.GetHeld(), sm.GetBooked(), counts[pb.SeatStatus_SEAT_STATUS_AVAILABLE],
			counts[pb.SeatStatus_SEAT_STATUS_HELD], counts[pb.SeatStatus_SEAT_STATUS_BOOKED]))
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// pollFor calls cond every 20 ms until it returns nil, and fails the test
// with cond's last error if it has not within timeout.
func pollFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %v", timeout, err)
		}
		<-tick.C
	}
}
