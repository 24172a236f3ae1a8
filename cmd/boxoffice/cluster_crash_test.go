package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// Shape of the cluster crash test.
const (
	ccNodes        = 3
	ccShows        = 12
	ccRows         = 16
	ccSeatsPerRow  = 50 // 800 seats a show; the last row is the probes'
	ccHoldTTL      = time.Hour
	ccClients      = 16
	ccWaitlisted   = 2  // victim's shows made fully held, with users waiting
	ccEarlyWaiters = 10 // users joined to each before the load
	ccMinHolds     = 150
	ccMinConfirms  = 40
	ccMinMoved     = 5 // acknowledged holds on each of the victim's load shows before the kill
	ccMinLoad      = time.Second
	ccAfterLoad    = 2 * time.Second

	// ccWriteTarget is the target time from the kill to the first write
	// committed on a moved show: ring failure detection (~1 s) and the
	// dead owner's lease running out (1.5 s from its last renewal, at most
	// 0.5 s before the kill), then a take and replay. ccWriteLimit fails
	// the test; it leaves a margin for -race and the shared cores.
	ccWriteTarget = 2 * time.Second
	ccWriteLimit  = 5 * time.Second

	ccCallTimeout    = 10 * time.Second // each attempt; a load may wait out a lease
	ccRetryPace      = 20 * time.Millisecond
	ccJoinPace       = 50 * time.Millisecond
	ccSetupTimeout   = 45 * time.Second
	ccLoadTimeout    = 30 * time.Second
	ccRecoverTimeout = 20 * time.Second
	ccStopTimeout    = 20 * time.Second
	ccVerifyTimeout  = 30 * time.Second
)

// TestClusterCrash is the cluster's crash acceptance test: three `serve`
// processes of the built binary on one database; the victim is the owner of
// the most shows. Two of its shows are fully held with users waiting; 16
// clients hold, confirm and release seats on the others, through the two
// survivors only (calls for the victim's shows are forwarded to it), and a
// joiner keeps adding users to the waitlists. The victim is killed with
// kill -9 mid-load; a probe per moved show then writes until it succeeds,
// which measures kill → first write. Every call is retried with the same
// idempotency key (or user) while it fails retryably (Unavailable,
// DeadlineExceeded), so every outcome is known in the end: PostgreSQL,
// GetReservation, PollWaitlist and the seat maps, asked of the survivors,
// must hold exactly what was acknowledged, with no seat claimed twice.
func TestClusterCrash(t *testing.T) {
	start := time.Now()
	bin := buildBinary(t)
	t.Logf("binary built (or reused) in %s", time.Since(start).Round(time.Millisecond))
	url := pgclustertest.Shared(t)
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(db.Close)

	// Three members, each joining the first.
	phase := time.Now()
	procs := make([]*serveProcess, ccNodes)
	names := make([]string, ccNodes)
	for i := range procs {
		names[i] = fmt.Sprintf("cc-node-%d", i)
		opts := serveOptions{DatabaseURL: url, NodeID: names[i], Migrate: i == 0, Gossip: true}
		if i > 0 {
			opts.Join = []string{procs[0].GossipAddr}
		}
		procs[i] = startServe(t, bin, opts)
	}
	rss := make([]pb.ReservationServiceClient, ccNodes)
	wss := make([]pb.WaitlistServiceClient, ccNodes)
	for i, p := range procs {
		conn := dialServe(t, p)
		rss[i], wss[i] = pb.NewReservationServiceClient(conn), pb.NewWaitlistServiceClient(conn)
	}
	catalog := pb.NewCatalogServiceClient(dialServe(t, procs[0]))
	pollFor(t, ccSetupTimeout, func() error {
		for i, p := range procs {
			if n, ok := ccRingSize(p.Output()); !ok || n != ccNodes {
				return fmt.Errorf("%s logs a ring of %d members (logged: %v), want %d", names[i], n, ok, ccNodes)
			}
		}
		return nil
	})
	t.Logf("%d members serving in %s", ccNodes, time.Since(phase).Round(time.Millisecond))

	phase = time.Now()
	shows := make([]string, ccShows)
	for i := range shows {
		shows[i] = fmt.Sprintf("cc-show-%02d", i)
		ctx, cancel := context.WithTimeout(tc.AdminCtx(t.Context()), ccCallTimeout)
		_, err := catalog.CreateShow(ctx, tc.ShowRequest(shows[i], ccRows, ccSeatsPerRow, ccHoldTTL))
		cancel()
		if err != nil {
			t.Fatalf("CreateShow %s: %v", shows[i], err)
		}
	}
	// Every node reaches every show, and the owners PostgreSQL names stay
	// put from one round to the next: the rings agree.
	var owners map[string]ccOwner
	pollFor(t, ccSetupTimeout, func() error {
		for _, id := range shows {
			for i, rs := range rss {
				ctx, cancel := context.WithTimeout(tc.Ctx(t.Context()), ccCallTimeout)
				_, err := rs.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: id})
				cancel()
				if err != nil {
					owners = nil
					return fmt.Errorf("GetSeatMap %s through %s: %v", id, names[i], err)
				}
			}
		}
		now := ccOwners(t, db)
		prev := owners
		owners = now
		if len(now) != len(shows) {
			return fmt.Errorf("show_owners has %d rows for %d shows", len(now), len(shows))
		}
		if !maps.Equal(prev, now) {
			return fmt.Errorf("owners changed between rounds: %v, then %v", prev, now)
		}
		return nil
	})
	byOwner := map[string][]string{}
	for _, id := range shows {
		byOwner[owners[id].Node] = append(byOwner[owners[id].Node], id)
	}
	victim := 0
	for i, n := range names {
		if len(byOwner[n]) > len(byOwner[names[victim]]) {
			victim = i
		}
	}
	victimShows := byOwner[names[victim]]
	slices.Sort(victimShows)
	if len(victimShows) < ccWaitlisted+1 {
		t.Fatalf("the victim %s owns %v: fewer than %d shows", names[victim], victimShows, ccWaitlisted+1)
	}
	var survivors []int
	for i := range procs {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	wlShows := victimShows[:ccWaitlisted]
	var loadShows []string
	for _, id := range shows {
		if !slices.Contains(wlShows, id) {
			loadShows = append(loadShows, id)
		}
	}
	t.Logf("owners in %s: %v; victim %s, owning %v (waitlists on %v)",
		time.Since(phase).Round(time.Millisecond), ccOwnerSummary(byOwner), names[victim], victimShows, wlShows)

	load := &ccLoad{shows: loadShows, wlShows: wlShows, unknownHolds: map[string]string{}, unknownJoins: map[string]string{},
		refused: map[string]int{}, retried: map[string]int{}, afterRetry: map[string]int{}, firstAfterKill: map[string]time.Time{}, probed: map[string]time.Duration{}}
	for _, i := range survivors {
		load.rss = append(load.rss, rss[i])
		load.wss = append(load.wss, wss[i])
	}
	load.ctx, load.cancel = context.WithCancel(tc.Ctx(context.Background()))
	t.Cleanup(load.cancel)

	// The waitlisted shows fully held, through the survivors, then users
	// waiting on them.
	phase = time.Now()
	holders := ccRows * ccSeatsPerRow / 10
	if err := wlParallel(len(wlShows)*holders, ccClients, func(k int) error {
		show, h := wlShows[k/holders], k%holders
		var seats []string
		for n := range 10 {
			s := h*10 + n
			seats = append(seats, tc.SeatID(s/ccSeatsPerRow, s%ccSeatsPerRow+1))
		}
		user := fmt.Sprintf("cc-holder-%s-%02d", show, h)
		held, err := load.hold(load.rss[k%len(load.rss)], show, user, seats)
		if err == nil && held == nil {
			err = fmt.Errorf("hold of %s %v on %s refused", user, seats, show)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := wlParallel(len(wlShows)*ccEarlyWaiters, ccClients, func(k int) error {
		show := wlShows[k/ccEarlyWaiters]
		return load.join(load.wss[k%len(load.wss)], show, fmt.Sprintf("cc-wait-%s-%02d", show, k%ccEarlyWaiters), int32(1+k%2))
	}); err != nil {
		t.Fatal(err)
	}
	if err := load.firstError(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d shows fully held and %d users waiting in %s", len(wlShows), len(wlShows)*ccEarlyWaiters, time.Since(phase).Round(time.Millisecond))

	// Load, then kill -9 the victim while it runs.
	phase = time.Now()
	load.start(ccClients)
	t.Cleanup(load.stop)
	pollFor(t, ccLoadTimeout, func() error {
		for _, i := range survivors {
			select {
			case <-procs[i].Exited():
				t.Fatalf("%s exited under load\noutput:\n%s", names[i], procs[i].Output())
			default:
			}
		}
		if err := load.firstError(); err != nil {
			t.Fatalf("before the kill: %v", err)
		}
		if d := time.Since(phase); d < ccMinLoad {
			return fmt.Errorf("load for %s before the kill, %s so far", ccMinLoad, d)
		}
		return load.readyToKill(victimShows[ccWaitlisted:])
	})
	ownersBefore := ccOwners(t, db)
	h, c := load.counts()
	inFlight := load.kill(t, procs[victim], victimShows)
	t.Logf("killed %s (pid %d) after %s of load, %d calls in flight: %d holds and %d confirms acknowledged",
		names[victim], procs[victim].cmd.Process.Pid, time.Since(phase).Round(time.Millisecond), inFlight, h, c)

	// Each moved show served again, then a little more load.
	pollFor(t, ccRecoverTimeout, func() error {
		if err := load.firstError(); err != nil {
			t.Fatalf("after the kill: %v", err)
		}
		for _, id := range victimShows {
			if !load.probedShow(id) {
				return fmt.Errorf("show %s not written since the kill", id)
			}
		}
		return nil
	})
	recovered := time.Now()
	pollFor(t, ccAfterLoad+ccRecoverTimeout, func() error {
		if d := time.Since(recovered); d < ccAfterLoad {
			return fmt.Errorf("load for %s after the recovery, %s so far", ccAfterLoad, d)
		}
		return nil
	})
	if !load.stopWithin(ccStopTimeout) {
		t.Errorf("clients still retrying %s after the stop; their calls' outcomes are unknown", ccStopTimeout)
	}
	if err := load.firstError(); err != nil {
		t.Errorf("%v", err)
	}
	load.report(t, victimShows)
	for _, i := range survivors {
		out := procs[i].Output()
		if at, ok := ccRingDropped(out, names[victim], load.killAt); ok {
			t.Logf("%s dropped %s from its ring %s after the kill", names[i], names[victim], at.Sub(load.killAt).Round(time.Millisecond))
		}
		var warned []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				warned = append(warned, line)
			}
		}
		if len(warned) > 0 {
			t.Logf("%s logged %d warnings and errors, the first: %s", names[i], len(warned), strings.Join(warned[:min(5, len(warned))], "\n"))
		}
	}

	// Verification, against PostgreSQL and through the survivors.
	ctx, cancel := context.WithTimeout(tc.Ctx(t.Context()), ccVerifyTimeout)
	defer cancel()
	ownersAfter := ccOwners(t, db)
	for _, id := range shows {
		b, a := ownersBefore[id], ownersAfter[id]
		switch {
		case a.Node == names[victim]:
			t.Errorf("show %s: still owned by the dead %s in PostgreSQL (epoch %d)", id, a.Node, a.Epoch)
		case slices.Contains(victimShows, id) && a.Epoch <= b.Epoch:
			t.Errorf("moved show %s: epoch %d, not above the victim's %d", id, a.Epoch, b.Epoch)
		case a != b:
			t.Logf("show %s: %s epoch %d → %s epoch %d", id, b.Node, b.Epoch, a.Node, a.Epoch)
		}
	}
	ccCheckNoDoubleClaims(t, ctx, db)
	survivorRS := make([]pb.ReservationServiceClient, 0, len(survivors))
	for _, i := range survivors {
		survivorRS = append(survivorRS, rss[i])
	}
	acks := load.acknowledged()
	ccCheckReservations(t, ctx, db, survivorRS, shows, acks)
	var retried []string
	for _, h := range acks.holds {
		if h.Retried {
			retried = append(retried, h.ID)
		}
	}
	var replays int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM reservations WHERE reservation_id = ANY ($1) AND created_at < $2`,
		retried, load.killAt).Scan(&replays); err != nil {
		t.Fatalf("replayed holds: %v", err)
	}
	t.Logf("of %d holds acknowledged after a retryable failure, %d were committed by the victim before the kill (idempotent replays)", len(retried), replays)
	ccCheckWaitlists(t, ctx, db, load.wss, wlShows, acks)
	for k, id := range shows {
		checkDBSeatInvariants(t, ctx, db, id)
		sm, err := survivorRS[k%len(survivorRS)].GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: id, IncludeLayout: true})
		if err != nil {
			t.Errorf("GetSeatMap %s after the crash: %v", id, err)
			continue
		}
		if d := seatMapVersusDB(t, ctx, sm, db, id); d != "" {
			t.Errorf("show %s: the seat map differs from PostgreSQL:\n%s", id, d)
		}
		if slices.Contains(wlShows, id) && sm.GetWaiting() != int32(len(acks.joinsOf(id))) {
			t.Errorf("show %s: seat map counts %d waiting, %d joins were acknowledged", id, sm.GetWaiting(), len(acks.joinsOf(id)))
		}
	}
	t.Logf("verified %d holds (%d confirmed, %d released) and %d waitlist joins on %d shows in %s; whole test %s",
		len(acks.holds), acks.confirmed(), acks.released(), len(acks.joins), len(shows),
		time.Since(recovered).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// ccOwner is a show's show_owners row.
type ccOwner struct {
	Node  string
	Epoch int64
}

// ccOwners reads show_owners.
func ccOwners(t testing.TB, db *pgxpool.Pool) map[string]ccOwner {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ccCallTimeout)
	defer cancel()
	rows, _ := db.Query(ctx, `SELECT show_id, owner_node, epoch FROM show_owners`)
	out := map[string]ccOwner{}
	var id string
	var o ccOwner
	if _, err := pgx.ForEachRow(rows, []any{&id, &o.Node, &o.Epoch}, func() error {
		out[id] = o
		return nil
	}); err != nil {
		t.Fatalf("show_owners: %v", err)
	}
	return out
}

func ccOwnerSummary(byOwner map[string][]string) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(byOwner)) {
		parts = append(parts, fmt.Sprintf("%s %d", n, len(byOwner[n])))
	}
	return strings.Join(parts, ", ")
}

// ccRingLine matches the ring's log lines that give its member count:
// `msg="ring started" ... members=3` and `msg="ring changed" ...
// members="[a b c]"`.
var ccRingLine = regexp.MustCompile(`msg="ring (started|changed)".* members=("\[[^\]]*\]"|\[[^\]]*\]|\d+)`)

// ccRingSize returns the member count of the last ring line in a child's
// output; false if there is none. It needs no API: the cluster's status
// RPC may not exist.
func ccRingSize(out string) (int, bool) {
	m := ccRingLine.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0, false
	}
	last := m[len(m)-1][2]
	if n, err := strconv.Atoi(last); err == nil {
		return n, true
	}
	return len(strings.Fields(strings.Trim(last, `"[]`))), true
}

// ccRingDropped returns the time of the first "ring changed" line of a
// child's output after after that leaves out member; false if there is
// none.
func ccRingDropped(out, member string, after time.Time) (time.Time, bool) {
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `msg="ring changed"`) || strings.Contains(line, member) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil && at.After(after) {
			return at, true
		}
	}
	return time.Time{}, false
}

// ccHold is an acknowledged hold and what became of it.
type ccHold struct {
	Show, ID, User string
	Seats          []string // sorted
	Confirmed      bool     // a confirm was acknowledged
	Released       bool     // a release was acknowledged
	Unknown        string   // "confirm" or "release" if its retries were cut off at the stop
	Retried        bool     // acknowledged after a retryable failure: maybe a replay
}

// ccJoin is an acknowledged waitlist join.
type ccJoin struct {
	Show, User string
	Seq        int64
	Wanted     int32
}

// ccAcks is what was acknowledged, and what was left unknown.
type ccAcks struct {
	holds        []ccHold
	joins        []ccJoin
	unknownHolds map[string]string // user → show: hold retries cut off at the stop
	unknownJoins map[string]string // user → show
}

func (a ccAcks) confirmed() (n int) {
	for _, h := range a.holds {
		if h.Confirmed {
			n++
		}
	}
	return n
}

func (a ccAcks) released() (n int) {
	for _, h := range a.holds {
		if h.Released {
			n++
		}
	}
	return n
}

func (a ccAcks) joinsOf(show string) []ccJoin {
	var out []ccJoin
	for _, j := range a.joins {
		if j.Show == show {
			out = append(out, j)
		}
	}
	return out
}

// ccLoad is the test's clients. Every call is retried, with the same
// request, while it fails retryably, so its outcome ends known; only the
// stop's deadline (l.ctx) can leave one unknown. Retryable failures are
// expected only after the kill.
type ccLoad struct {
	rss     []pb.ReservationServiceClient // the survivors'
	wss     []pb.WaitlistServiceClient
	shows   []string // of the clients
	wlShows []string // of the joiner

	ctx      context.Context // ends at the stop's deadline
	cancel   context.CancelFunc
	stopping atomic.Bool // no new operations
	wg       sync.WaitGroup
	killed   atomic.Bool // set after killAt, just before SIGKILL
	inFlight atomic.Int64

	mu             sync.Mutex // guards the fields below
	killAt         time.Time
	holds          []*ccHold
	joins          []ccJoin
	unknownHolds   map[string]string
	unknownJoins   map[string]string
	refused        map[string]int // expected refusals by call and reason
	retried        map[string]int // retryable failures after the kill, by call and reason
	afterRetry     map[string]int // answers after retryable failures, by call and reason
	lastRetryable  time.Duration  // after the kill
	firstAfterKill map[string]time.Time
	probed         map[string]time.Duration // moved show → kill to the probe's write
	errs           []error
}

// start starts the clients and the waitlist joiner.
func (l *ccLoad) start(clients int) {
	for c := range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.client(c, rand.New(rand.NewPCG(uint64(c), 0xcc)))
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.joiner()
	}()
}

// client loops: a hold of 1-4 random seats (not of the probes' last row)
// of a random show for a new user, then a confirm (half the time), a
// release (a fifth) or nothing. Each call goes to a random survivor.
func (l *ccLoad) client(c int, rng *rand.Rand) {
	for i := 0; !l.stopping.Load(); i++ {
		show := l.shows[rng.IntN(len(l.shows))]
		user := fmt.Sprintf("cc-u%02d-%05d", c, i)
		var seats []string
		for n := 1 + rng.IntN(4); len(seats) < n; {
			if s := tc.SeatID(rng.IntN(ccRows-1), 1+rng.IntN(ccSeatsPerRow)); !slices.Contains(seats, s) {
				seats = append(seats, s)
			}
		}
		h, err := l.hold(l.rss[rng.IntN(len(l.rss))], show, user, seats)
		if err != nil {
			l.unexpected(err)
			return
		}
		if h == nil {
			continue // refused, or cut off at the stop
		}
		switch r := rng.IntN(10); {
		case r < 5:
			l.confirm(l.rss[rng.IntN(len(l.rss))], h)
		case r < 7:
			l.release(l.rss[rng.IntN(len(l.rss))], h)
		}
	}
}

// joiner adds users to the waitlisted shows in turn, one every ccJoinPace.
func (l *ccLoad) joiner() {
	tick := time.NewTicker(ccJoinPace)
	defer tick.Stop()
	for i := 0; !l.stopping.Load(); i++ {
		show := l.wlShows[i%len(l.wlShows)]
		if err := l.join(l.wss[i%len(l.wss)], show, fmt.Sprintf("cc-late-%s-%04d", show, i), int32(1+i%2)); err != nil {
			l.unexpected(err)
			return
		}
		select {
		case <-tick.C:
		case <-l.ctx.Done():
			return
		}
	}
}

// call makes rpc until it is answered other than by a retryable failure,
// ccRetryPace between attempts, and returns that answer and whether an
// attempt failed retryably before (the answer may then be a replay, or a
// refusal of what the lost attempt did). If l.ctx ends first it returns
// its error: the outcome is unknown.
func (l *ccLoad) call(what, show string, rpc func(context.Context) error) (err error, retried bool) {
	for {
		sent := time.Now()
		ctx, cancel := context.WithTimeout(l.ctx, ccCallTimeout)
		l.inFlight.Add(1)
		err = rpc(ctx)
		l.inFlight.Add(-1)
		cancel()
		if l.ctx.Err() != nil {
			return l.ctx.Err(), retried
		}
		if err == nil {
			l.answered(what, show, sent, retried)
			return nil, retried
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			if retried {
				l.mu.Lock()
				l.afterRetry[what+" "+ccReason(err)]++
				l.mu.Unlock()
			}
			return err, retried
		}
		retried = true
		l.retryable(what, show, err)
		t := time.NewTimer(ccRetryPace)
		select {
		case <-t.C:
		case <-l.ctx.Done():
			t.Stop()
			return l.ctx.Err(), true
		}
	}
}

// answered notes the first answer of a write sent after the kill, by
// show, and counts answers after retryable failures.
func (l *ccLoad) answered(what, show string, sent time.Time, retried bool) {
	if !l.killed.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if retried {
		l.afterRetry[what+" OK"]++
	}
	if what == "probe" {
		return
	}
	if first, ok := l.firstAfterKill[show]; sent.After(l.killAt) && (!ok || time.Now().Before(first)) {
		l.firstAfterKill[show] = time.Now()
	}
}

// retryable files a retryable failure: an error before the kill, counted
// after it.
func (l *ccLoad) retryable(what, show string, err error) {
	if !l.killed.Load() {
		l.unexpected(fmt.Errorf("%s on %s before the kill: %v", what, show, err))
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retried[what+" "+ccReason(err)]++
	l.lastRetryable = max(l.lastRetryable, time.Since(l.killAt))
}

// refusal counts an expected refusal.
func (l *ccLoad) refusal(what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused[what+" "+ccReason(err)]++
}

func (l *ccLoad) unexpected(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

// hold holds seats for user, files the answer and returns the hold: nil
// if refused for taken seats or cut off at the stop. A non-nil error is an
// unexpected answer.
func (l *ccLoad) hold(rs pb.ReservationServiceClient, show, user string, seats []string) (*ccHold, error) {
	req := &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats, IdempotencyKey: "hold-" + user}
	var resp *pb.HoldSeatsResponse
	what := "hold"
	if strings.HasPrefix(user, "cc-probe-") {
		what = "probe"
	}
	err, retried := l.call(what, show, func(ctx context.Context) (err error) {
		resp, err = rs.HoldSeats(ctx, req)
		return err
	})
	switch {
	case err == l.ctx.Err() && err != nil:
		l.mu.Lock()
		l.unknownHolds[user] = show
		l.mu.Unlock()
		return nil, nil
	case ccReason(err) == "AlreadyExists SEATS_TAKEN":
		l.refusal("hold", err)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("HoldSeats %s %s %v: %v", show, user, seats, err)
	}
	got := sortedCopy(resp.GetSeatIds())
	if resp.GetUserId() != user || resp.GetShowId() != show || !slices.Equal(got, sortedCopy(seats)) || resp.GetHoldId() == "" ||
		resp.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD {
		return nil, fmt.Errorf("HoldSeats %s %s %v answered %v", show, user, seats, resp)
	}
	h := &ccHold{Show: show, ID: resp.GetHoldId(), User: user, Seats: got, Retried: retried}
	l.mu.Lock()
	l.holds = append(l.holds, h)
	l.mu.Unlock()
	return h, nil
}

// confirm books h and files the answer.
func (l *ccLoad) confirm(rs pb.ReservationServiceClient, h *ccHold) {
	req := &pb.ConfirmHoldRequest{HoldId: h.ID, UserId: h.User, PaymentRef: "pay-" + h.User, IdempotencyKey: "confirm-" + h.User}
	var resp *pb.ConfirmHoldResponse
	err, _ := l.call("confirm", h.Show, func(ctx context.Context) (err error) {
		resp, err = rs.ConfirmHold(ctx, req)
		return err
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	r := resp.GetReservation()
	switch {
	case err != nil && err == l.ctx.Err():
		h.Unknown = "confirm"
	case err != nil:
		l.errs = append(l.errs, fmt.Errorf("ConfirmHold %s of %s: %v", h.ID, h.User, err))
	case r.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_BOOKED || r.GetPaymentRef() != req.PaymentRef ||
		r.GetHoldId() != h.ID || r.GetUserId() != h.User || !slices.Equal(sortedCopy(r.GetSeatIds()), h.Seats):
		l.errs = append(l.errs, fmt.Errorf("ConfirmHold %s of %s answered %v", h.ID, h.User, r))
	default:
		h.Confirmed = true
	}
}

// release releases h and files the answer. ReleaseHold has no idempotency
// key: after a lost attempt, a retry may find the hold ended (HOLD_ENDED);
// the checks then find it RELEASED in PostgreSQL.
func (l *ccLoad) release(rs pb.ReservationServiceClient, h *ccHold) {
	req := &pb.ReleaseHoldRequest{HoldId: h.ID, UserId: h.User}
	var resp *pb.ReleaseHoldResponse
	err, retried := l.call("release", h.Show, func(ctx context.Context) (err error) {
		resp, err = rs.ReleaseHold(ctx, req)
		return err
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	r := resp.GetReservation()
	switch {
	case err != nil && err == l.ctx.Err():
		h.Unknown = "release"
	case err != nil && retried && ccReason(err) == "FailedPrecondition HOLD_ENDED":
		l.refused["release after a lost attempt "+ccReason(err)]++
		h.Released = true
	case err != nil:
		l.errs = append(l.errs, fmt.Errorf("ReleaseHold %s of %s: %v", h.ID, h.User, err))
	case r.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_RELEASED || r.GetHoldId() != h.ID:
		l.errs = append(l.errs, fmt.Errorf("ReleaseHold %s of %s answered %v", h.ID, h.User, r))
	default:
		h.Released = true
	}
}

// join adds user to show's waitlist and files the answer; a non-nil error
// is an unexpected answer. A retry after a lost attempt may find the user
// there (existed), with the entry the lost attempt made.
func (l *ccLoad) join(ws pb.WaitlistServiceClient, show, user string, wanted int32) error {
	req := &pb.JoinWaitlistRequest{ShowId: show, UserId: user, SeatsWanted: wanted}
	var resp *pb.JoinWaitlistResponse
	what := "join"
	if strings.HasPrefix(user, "cc-probe-") {
		what = "probe"
	}
	err, retried := l.call(what, show, func(ctx context.Context) (err error) {
		resp, err = ws.JoinWaitlist(ctx, req)
		return err
	})
	if err != nil && err == l.ctx.Err() {
		l.mu.Lock()
		l.unknownJoins[user] = show
		l.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("JoinWaitlist %s %s: %v", show, user, err)
	}
	e := wlEntryOf(resp.GetEntry())
	if (resp.GetExisted() && !retried) || e.User != user || e.State != pb.WaitlistState_WAITLIST_STATE_WAITING || e.Wanted != wanted || e.Seq <= 0 {
		return fmt.Errorf("JoinWaitlist %s %s wanting %d (retried %v) answered existed %v, %s", show, user, wanted, retried, resp.GetExisted(), e)
	}
	l.mu.Lock()
	l.joins = append(l.joins, ccJoin{Show: show, User: user, Seq: e.Seq, Wanted: wanted})
	l.mu.Unlock()
	return nil
}

// readyToKill says what the load still lacks before the kill: enough
// holds and confirms, some of them on each of the victim's load shows.
func (l *ccLoad) readyToKill(moved []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	perShow := map[string]int{}
	confirms := 0
	for _, h := range l.holds {
		perShow[h.Show]++
		if h.Confirmed {
			confirms++
		}
	}
	holds := 0
	for _, id := range l.shows {
		holds += perShow[id]
	}
	if holds < ccMinHolds || confirms < ccMinConfirms {
		return fmt.Errorf("%d holds and %d confirms acknowledged, want %d and %d", holds, confirms, ccMinHolds, ccMinConfirms)
	}
	for _, id := range moved {
		if perShow[id] < ccMinMoved {
			return fmt.Errorf("%d holds acknowledged on the victim's show %s, want %d", perShow[id], id, ccMinMoved)
		}
	}
	return nil
}

func (l *ccLoad) counts() (holds, confirms int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.holds {
		if h.Confirmed {
			confirms++
		}
	}
	return len(l.holds), confirms
}

// kill marks the kill, sends SIGKILL to p, and starts a probe for each of
// moved: it writes until it succeeds, through the survivors in turn — a
// hold of a seat of the last row, or a join of a waitlisted show. It
// returns the calls in flight just before the kill.
func (l *ccLoad) kill(t testing.TB, p *serveProcess, moved []string) int64 {
	t.Helper()
	l.mu.Lock()
	l.killAt = time.Now()
	l.mu.Unlock()
	l.killed.Store(true)
	n := l.inFlight.Load()
	p.Kill(t)
	for k, id := range moved {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			user := "cc-probe-" + id
			var err error
			if slices.Contains(l.wlShows, id) {
				err = l.join(l.wss[k%len(l.wss)], id, user, 1)
			} else {
				var h *ccHold
				if h, err = l.hold(l.rss[k%len(l.rss)], id, user, []string{tc.SeatID(ccRows-1, 1)}); err == nil && h == nil {
					return // cut off at the stop
				}
			}
			if err != nil {
				l.unexpected(fmt.Errorf("probe: %v", err))
				return
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			l.probed[id] = time.Since(l.killAt)
		}()
	}
	return n
}

func (l *ccLoad) probedShow(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.probed[id]
	return ok
}

// stopWithin stops the clients, lets their calls in progress finish and
// waits for them; after d it ends their retries (their outcomes are then
// unknown) and reports false. It is idempotent.
func (l *ccLoad) stopWithin(d time.Duration) bool {
	l.stopping.Store(true)
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		l.cancel()
		<-done
		return false
	}
}

func (l *ccLoad) stop() { l.stopWithin(ccStopTimeout) }

func (l *ccLoad) firstError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%d unexpected answers, the first: %w", len(l.errs), l.errs[0])
}

// report logs kill → first write by moved show and the failures seen, and
// fails the test if a moved show took longer than ccWriteLimit.
func (l *ccLoad) report(t testing.TB, moved []string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var worst time.Duration
	var lines []string
	for _, id := range moved {
		p := l.probed[id]
		worst = max(worst, p)
		line := fmt.Sprintf("%s: probe %s", id, p.Round(time.Millisecond))
		if first, ok := l.firstAfterKill[id]; ok {
			line += fmt.Sprintf(", clients %s", first.Sub(l.killAt).Round(time.Millisecond))
		}
		lines = append(lines, line)
	}
	t.Logf("kill → first write on each moved show (target %s): %s; max %s", ccWriteTarget, strings.Join(lines, "; "), worst.Round(time.Millisecond))
	if worst > ccWriteLimit {
		t.Errorf("a moved show took %s from the kill to its first write, above %s (target %s)", worst.Round(time.Millisecond), ccWriteLimit, ccWriteTarget)
	}
	t.Logf("retryable failures after the kill, the last %s after it: %v", l.lastRetryable.Round(time.Millisecond), l.retried)
	if l.lastRetryable > ccWriteLimit {
		t.Errorf("a call failed retryably %s after the kill: the move should be over by %s", l.lastRetryable.Round(time.Millisecond), ccWriteLimit)
	}
	t.Logf("answers after retryable failures (replays, or refusals of what a lost attempt did): %v", l.afterRetry)
	t.Logf("expected refusals: %v", l.refused)
	if len(l.unknownHolds)+len(l.unknownJoins) > 0 {
		t.Logf("outcomes left unknown at the stop: holds %v, joins %v", l.unknownHolds, l.unknownJoins)
	}
}

// acknowledged returns what was acknowledged; call it after the stop.
func (l *ccLoad) acknowledged() ccAcks {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := ccAcks{joins: slices.Clone(l.joins), unknownHolds: maps.Clone(l.unknownHolds), unknownJoins: maps.Clone(l.unknownJoins)}
	for _, h := range l.holds {
		a.holds = append(a.holds, *h)
	}
	return a
}

// ccReason is an error's code and the engine's reason, e.g.
// "Unavailable SHOW_MOVED"; just the code if it has no reason (an
// answer of the transport).
func ccReason(err error) string {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code().String() + " " + info.GetReason()
		}
	}
	return st.Code().String()
}

// ccCheckNoDoubleClaims fails the test if a seat of any show has two
// claims, or is in two live reservations.
func ccCheckNoDoubleClaims(t testing.TB, ctx context.Context, db *pgxpool.Pool) {
	t.Helper()
	for _, q := range []struct{ what, sql string }{
		{"seats claimed twice", `SELECT show_id || ' ' || seat_id || ' x' || count(*) FROM seat_claims GROUP BY show_id, seat_id HAVING count(*) > 1`},
		{"seats in two live reservations", `SELECT r.show_id || ' ' || s || ' x' || count(*) FROM reservations r, unnest(r.seat_ids) s
			WHERE r.status IN ('HELD', 'BOOKED') GROUP BY r.show_id, s HAVING count(*) > 1`},
	} {
		rows, _ := db.Query(ctx, q.sql)
		bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q.what, err)
		}
		if len(bad) > 0 {
			t.Errorf("%s: %v", q.what, bad)
		}
	}
}

// ccCheckReservations checks that PostgreSQL holds exactly the
// acknowledged holds — same show, user and seats; BOOKED with the payment
// if a confirm was acknowledged, RELEASED if a release was, HELD otherwise
// — and no reservation of a user whose hold was refused; and that
// GetReservation through the survivors answers the same.
func ccCheckReservations(t testing.TB, ctx context.Context, db *pgxpool.Pool, rss []pb.ReservationServiceClient, shows []string, acks ccAcks) {
	t.Helper()
	stored := map[string]dbShowReservation{}
	showOf := map[string]string{}
	for _, id := range shows {
		for rid, r := range dbShowReservations(t, ctx, db, id) {
			stored[rid], showOf[rid] = r, id
		}
	}
	want := func(h ccHold) []string { // the statuses h may have
		switch {
		case h.Confirmed:
			return []string{"BOOKED"}
		case h.Released:
			return []string{"RELEASED"}
		case h.Unknown == "confirm":
			return []string{"HELD", "BOOKED"}
		case h.Unknown == "release":
			return []string{"HELD", "RELEASED"}
		}
		return []string{"HELD"}
	}
	var problems []string
	acked := map[string]bool{}
	for _, h := range acks.holds {
		acked[h.ID] = true
		r, ok := stored[h.ID]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("postgres: acknowledged hold %s of %s on %s %v missing", h.ID, h.User, h.Show, h.Seats))
		case showOf[h.ID] != h.Show || r.User != h.User || !slices.Equal(sortedCopy(r.Seats), h.Seats) || !slices.Contains(want(h), r.Status) ||
			(r.Status == "BOOKED" && r.PaymentRef != "pay-"+h.User):
			problems = append(problems, fmt.Sprintf("postgres: hold %s of %s on %s %v (%+v) is %s of %s on %s %v paid %q",
				h.ID, h.User, h.Show, h.Seats, h, r.Status, r.User, showOf[h.ID], r.Seats, r.PaymentRef))
		}
	}
	for rid, r := range stored {
		if !acked[rid] {
			if _, unknown := acks.unknownHolds[r.User]; !unknown {
				problems = append(problems, fmt.Sprintf("postgres: reservation %s of %s on %s %v (%s) was never acknowledged", rid, r.User, showOf[rid], r.Seats, r.Status))
			}
		}
	}

	answers := make([]*pb.Reservation, len(acks.holds))
	if err := wlParallel(len(acks.holds), 8, func(i int) error {
		resp, err := rss[i%len(rss)].GetReservation(ctx, &pb.GetReservationRequest{HoldId: acks.holds[i].ID})
		if err != nil {
			return fmt.Errorf("GetReservation %s of %s on %s: %v", acks.holds[i].ID, acks.holds[i].User, acks.holds[i].Show, err)
		}
		answers[i] = resp.GetReservation()
		return nil
	}); err != nil {
		problems = append(problems, err.Error())
	}
	for i, h := range acks.holds {
		g := answers[i]
		if g == nil {
			continue
		}
		st := strings.TrimPrefix(g.GetStatus().String(), "RESERVATION_STATUS_")
		if r, ok := stored[h.ID]; (ok && st != r.Status) || g.GetUserId() != h.User || !slices.Equal(sortedCopy(g.GetSeatIds()), h.Seats) {
			problems = append(problems, fmt.Sprintf("GetReservation: hold %s of %s on %s %v (%+v) answered %s of %s %v, postgres %s",
				h.ID, h.User, h.Show, h.Seats, h, st, g.GetUserId(), g.GetSeatIds(), stored[h.ID].Status))
		}
	}
	if len(problems) > 0 {
		wlReport(t, fmt.Sprintf("of %d acknowledged holds", len(acks.holds)), problems)
	}
}

// ccCheckWaitlists checks that every acknowledged join is in
// waitlist_entries with its sequence and seats wanted, nothing else is,
// sequences are unique, and PollWaitlist through the survivors answers each
// user WAITING with the same sequence at the position its sequence gives.
func ccCheckWaitlists(t testing.TB, ctx context.Context, db *pgxpool.Pool, wss []pb.WaitlistServiceClient, shows []string, acks ccAcks) {
	t.Helper()
	var problems []string
	for _, show := range shows {
		rows, _ := db.Query(ctx, `SELECT user_id, seq, seats_wanted, cardinality(offer_seats) FROM waitlist_entries WHERE show_id = $1`, show)
		type row struct {
			seq            int64
			wanted, offers int32
		}
		stored := map[string]row{}
		var u string
		var r row
		if _, err := pgx.ForEachRow(rows, []any{&u, &r.seq, &r.wanted, &r.offers}, func() error {
			stored[u] = r
			return nil
		}); err != nil {
			t.Fatalf("waitlist entries of %s: %v", show, err)
		}
		joins := acks.joinsOf(show)
		slices.SortFunc(joins, func(a, b ccJoin) int { return cmp.Compare(a.Seq, b.Seq) })
		for i, j := range joins {
			s, ok := stored[j.User]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("postgres: %s joined %s with seq %d (acknowledged), no row", j.User, show, j.Seq))
			case s.seq != j.Seq || s.wanted != j.Wanted || s.offers != 0:
				problems = append(problems, fmt.Sprintf("postgres: %s on %s has seq %d wanting %d with %d seats offered; acknowledged seq %d wanting %d",
					j.User, show, s.seq, s.wanted, s.offers, j.Seq, j.Wanted))
			}
			if i > 0 && joins[i-1].Seq == j.Seq {
				problems = append(problems, fmt.Sprintf("%s: %s and %s joined with the same seq %d", show, joins[i-1].User, j.User, j.Seq))
			}
		}
		for u := range stored {
			if !slices.ContainsFunc(joins, func(j ccJoin) bool { return j.User == u }) && acks.unknownJoins[u] != show {
				problems = append(problems, fmt.Sprintf("postgres: %s on the waitlist of %s, never acknowledged", u, show))
			}
		}
		entries := make([]*wlEntry, len(joins))
		if err := wlParallel(len(joins), 8, func(i int) error {
			resp, err := wss[i%len(wss)].PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: joins[i].User})
			if err != nil {
				return fmt.Errorf("PollWaitlist %s %s: %v", show, joins[i].User, err)
			}
			e := wlEntryOf(resp.GetEntry())
			entries[i] = &e
			return nil
		}); err != nil {
			problems = append(problems, err.Error())
		}
		for i, j := range joins {
			e := entries[i]
			if e != nil && (e.User != j.User || e.State != pb.WaitlistState_WAITLIST_STATE_WAITING || e.Seq != j.Seq || e.Wanted != j.Wanted ||
				(len(acks.unknownJoins) == 0 && e.Position != int32(i))) {
				problems = append(problems, fmt.Sprintf("PollWaitlist %s %s: %s, acknowledged seq %d wanting %d, position %d by seq",
					show, j.User, e, j.Seq, j.Wanted, i))
			}
		}
	}
	if len(problems) > 0 {
		wlReport(t, fmt.Sprintf("of %d acknowledged joins", len(acks.joins)), problems)
	}
}
