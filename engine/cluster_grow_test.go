package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// Load for the cluster tests: callers that behave as the web tier's client
// does with a changing cluster. Each operation carries an idempotency key
// (releases are idempotent by themselves) and is retried, through a random
// live node each time, on every Unavailable answer until it gets another
// answer. So every operation ends with a definite answer, and PostgreSQL must
// hold exactly the acknowledged changes: nothing more, nothing less.

const (
	// attemptTimeout bounds one call: a load waits at most AcquireWait (3 s)
	// for another node's lease, then the show loads.
	attemptTimeout = 8 * time.Second
	// retryPause is the pause before a retry.
	retryPause = 20 * time.Millisecond
)

// target is one node as callers reach it, over a connection of their own
// (a node's Stop closes the test's own connection, Node.Conn, before the
// server drains: calls on it would fail on the client side).
type target struct {
	name string
	rs   pb.ReservationServiceClient
}

// ackedHold is what callers were told about one hold: its last
// acknowledged state.
type ackedHold struct {
	show, user string
	seats      []string
	status     string // HELD, BOOKED or RELEASED
}

// ack is one acknowledged change: the hold and the event kind it committed
// (HELD, BOOKED, RELEASED), when the caller got the answer.
type ack struct {
	at   time.Time
	hold string
	kind string
}

// callError is one Unavailable answer a caller got (and retried).
type callError struct {
	at         time.Time
	node, what string
	show       string
	e          apiError
}

// clusterLoad is a set of callers over the live nodes. Its methods are safe
// for concurrent use.
type clusterLoad struct {
	t *testing.T

	mu         sync.Mutex // guards the fields below
	live       []target
	holds      map[string]*ackedHold // by hold ID
	acks       map[string][]ack      // by show, in order of acknowledgement
	retried    []callError
	refusals   map[string]int // final refusals by "what: code reason"
	unexpected int
}

func newClusterLoad(t *testing.T) *clusterLoad {
	return &clusterLoad{t: t, holds: map[string]*ackedHold{}, acks: map[string][]ack{}, refusals: map[string]int{}}
}

// add makes n a target of the callers.
func (l *clusterLoad) add(n *tc.Node) {
	l.t.Helper()
	conn, err := tc.Dial(n.Server.GRPCAddr())
	if err != nil {
		l.t.Fatalf("dial %s: %v", n.Engine.NodeID(), err)
	}
	l.t.Cleanup(func() { conn.Close() })
	l.mu.Lock()
	l.live = append(l.live, target{name: n.Engine.NodeID(), rs: pb.NewReservationServiceClient(grpc.ClientConnInterface(conn))})
	l.mu.Unlock()
}

// remove stops sending calls to the node named name (calls in flight go on).
func (l *clusterLoad) remove(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live = slices.DeleteFunc(l.live, func(tg target) bool { return tg.name == name })
}

// pick returns a random live target accepted by side (nil: any).
func (l *clusterLoad) pick(rng *rand.Rand, side func(string) bool) target {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ok []target
	for _, tg := range l.live {
		if side == nil || side(tg.name) {
			ok = append(ok, tg)
		}
	}
	if len(ok) == 0 {
		return target{}
	}
	return ok[rng.IntN(len(ok))]
}

// do calls op through random live nodes of side until it answers anything
// but Unavailable, or ctx ends. It returns that answer and the number of
// attempts; every Unavailable answer is recorded.
func (l *clusterLoad) do(ctx context.Context, rng *rand.Rand, side func(string) bool, what, show string,
	op func(ctx context.Context, rs pb.ReservationServiceClient) error) (int, error) {
	for attempt := 1; ; attempt++ {
		tg := l.pick(rng, side)
		var err error
		if tg.rs == nil {
			err = fmt.Errorf("no live node to call")
		} else {
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			err = op(tc.Ctx(actx), tg.rs)
			cancel()
			if err == nil {
				return attempt, nil
			}
			e := apiErrorOf(err)
			if e.Code != codes.Unavailable {
				return attempt, err
			}
			l.mu.Lock()
			l.retried = append(l.retried, callError{at: time.Now(), node: tg.name, what: what, show: show, e: e})
			l.mu.Unlock()
		}
		t := time.NewTimer(retryPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return attempt, fmt.Errorf("%s on %s: no answer but Unavailable before the deadline: %w", what, show, err)
		case <-t.C:
		}
	}
}

// fail reports an answer no caller should get; goroutines may call it.
func (l *clusterLoad) fail(format string, args ...any) {
	l.mu.Lock()
	l.unexpected++
	n := l.unexpected
	l.mu.Unlock()
	if n <= 20 {
		l.t.Errorf(format, args...)
	}
}

// refused counts a final refusal.
func (l *clusterLoad) refused(what string, err error) {
	e := apiErrorOf(err)
	l.mu.Lock()
	l.refusals[fmt.Sprintf("%s: %v %s", what, e.Code, e.Reason)]++
	l.mu.Unlock()
}

func (l *clusterLoad) acked(show, hold, kind string, update func()) time.Time {
	now := time.Now()
	l.mu.Lock()
	update()
	l.acks[show] = append(l.acks[show], ack{at: now, hold: hold, kind: kind})
	l.mu.Unlock()
	return now
}

// hold holds seats for user with idempotency key key. It returns the hold
// ID, or the final refusal.
func (l *clusterLoad) hold(ctx context.Context, rng *rand.Rand, side func(string) bool, show, user, key string, seats []string) (string, error) {
	req := &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats, IdempotencyKey: key}
	var resp *pb.HoldSeatsResponse
	_, err := l.do(ctx, rng, side, "hold", show, func(ctx context.Context, rs pb.ReservationServiceClient) error {
		r, err := rs.HoldSeats(ctx, req)
		resp = r
		return err
	})
	if err != nil {
		return "", err
	}
	id := resp.GetHoldId()
	if !slices.Equal(resp.GetSeatIds(), seats) || resp.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD {
		l.fail("hold %s of %s: answered seats %v status %v, asked %v", id, show, resp.GetSeatIds(), resp.GetStatus(), seats)
	}
	l.acked(show, id, "HELD", func() {
		if _, dup := l.holds[id]; dup {
			l.t.Errorf("hold ID %s acknowledged twice", id)
		}
		l.holds[id] = &ackedHold{show: show, user: user, seats: seats, status: "HELD"}
	})
	return id, nil
}

// confirm books hold id, with an idempotency key.
func (l *clusterLoad) confirm(ctx context.Context, rng *rand.Rand, side func(string) bool, show, id, user string) error {
	req := &pb.ConfirmHoldRequest{HoldId: id, UserId: user, PaymentRef: "pay-" + id, IdempotencyKey: "c-" + id}
	_, err := l.do(ctx, rng, side, "confirm", show, func(ctx context.Context, rs pb.ReservationServiceClient) error {
		_, err := rs.ConfirmHold(ctx, req)
		return err
	})
	if err == nil {
		l.acked(show, id, "BOOKED", func() { l.holds[id].status = "BOOKED" })
	}
	return err
}

// release releases hold id (a release the same user already made is
// answered again, so a retry is safe).
func (l *clusterLoad) release(ctx context.Context, rng *rand.Rand, side func(string) bool, show, id, user string) error {
	req := &pb.ReleaseHoldRequest{HoldId: id, UserId: user}
	_, err := l.do(ctx, rng, side, "release", show, func(ctx context.Context, rs pb.ReservationServiceClient) error {
		_, err := rs.ReleaseHold(ctx, req)
		return err
	})
	if err == nil {
		l.acked(show, id, "RELEASED", func() { l.holds[id].status = "RELEASED" })
	}
	return err
}

// worker holds 1–3 random seats of a random show, then confirms (20%),
// releases (70%) or keeps (10%) the hold, until stop is closed. A hold may
// be refused SEATS_TAKEN; any other final refusal fails the test.
func (l *clusterLoad) worker(name string, id int, seed uint64, shows, seats []string, side func(string) bool, pace time.Duration, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		show := shows[rng.IntN(len(shows))]
		user := fmt.Sprintf("%s%d-%d", name, id, i)
		p := rng.Perm(len(seats))[:1+rng.IntN(3)]
		want := make([]string, len(p))
		for k, j := range p {
			want[k] = seats[j]
		}
		h, err := l.hold(ctx, rng, side, show, user, fmt.Sprintf("h-%s-%s", show, user), want)
		switch {
		case err == nil:
		case apiErrorOf(err).Code == codes.AlreadyExists && apiErrorOf(err).Reason == "SEATS_TAKEN":
			l.refused("hold", err)
		default:
			l.fail("hold %v on %s: %v", want, show, err)
		}
		if err == nil {
			switch r := rng.IntN(10); {
			case r < 2:
				if err := l.confirm(ctx, rng, side, show, h, user); err != nil {
					l.fail("confirm %s: %v", h, err)
				}
			case r < 9:
				if err := l.release(ctx, rng, side, show, h, user); err != nil {
					l.fail("release %s: %v", h, err)
				}
			}
		}
		cancel()
		if pace > 0 {
			t := time.NewTimer(pace)
			select {
			case <-stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// retriedSummary counts the recorded Unavailable answers by operation and
// reason, and returns the times of the first and the last.
func (l *clusterLoad) retriedSummary() (byReason map[string]int, first, last time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byReason = map[string]int{}
	for i, e := range l.retried {
		reason := e.e.Reason
		if reason == "" {
			reason = "transport: " + firstWords(e.e.Msg, 6)
		}
		byReason[e.what+": "+reason]++
		if i == 0 || e.at.Before(first) {
			first = e.at
		}
		if e.at.After(last) {
			last = e.at
		}
	}
	return byReason, first, last
}

func firstWords(s string, n int) string {
	f := strings.Fields(s)
	if len(f) > n {
		f = f[:n]
	}
	return strings.Join(f, " ")
}

// checkDB checks PostgreSQL against the callers' acknowledgements for
// shows: every show has exactly the acknowledged holds, each in its last
// acknowledged state, with its user and seats; no seat is in two live
// acknowledged holds; the invariant queries pass; and each epoch's events
// come from one node.
func (l *clusterLoad) checkDB(t *testing.T, db *pgxpool.Pool, shows []string) {
	t.Helper()
	l.mu.Lock()
	byShow := map[string]map[string]*ackedHold{}
	for id, h := range l.holds {
		if byShow[h.show] == nil {
			byShow[h.show] = map[string]*ackedHold{}
		}
		byShow[h.show][id] = h
	}
	l.mu.Unlock()
	var total int
	for _, show := range shows {
		acked := byShow[show]
		total += len(acked)
		rows := dbReservations(t, db, show)
		for id, r := range rows {
			if _, ok := acked[id]; !ok {
				t.Errorf("show %s: reservation %s (%s %s %v) is in PostgreSQL but was never acknowledged", show, id, r.Status, r.User, r.Seats)
			}
		}
		live := map[string]string{}
		for id, o := range acked {
			r, ok := rows[id]
			switch {
			case !ok:
				t.Errorf("show %s: acknowledged hold %s (%s %v, %s) is not in PostgreSQL", show, id, o.user, o.seats, o.status)
				continue
			case r.Status != o.status || r.User != o.user || !slices.Equal(r.Seats, o.seats):
				t.Errorf("show %s: hold %s is %s %s %v in PostgreSQL, acknowledged %s %s %v", show, id, r.Status, r.User, r.Seats, o.status, o.user, o.seats)
			}
			if o.status != "RELEASED" {
				for _, s := range o.seats {
					if prev, ok := live[s]; ok {
						t.Errorf("show %s: seat %s acknowledged to two live holds, %s and %s", show, s, prev, id)
					}
					live[s] = id
				}
			}
		}
		checkDBInvariants(t, db, show)
		checkEventsFenced(t, db, show, nil)
	}
	t.Logf("PostgreSQL holds exactly the %d acknowledged holds of %d shows", total, len(shows))
}

// waitConverged waits until the ring of every node in nodes has exactly
// these nodes as members and names the same owner for each show; it returns
// those owners.
func waitConverged(t *testing.T, nodes []*tc.Node, shows []string, timeout time.Duration) map[string]string {
	t.Helper()
	want := make([]string, len(nodes))
	for i, n := range nodes {
		want[i] = n.Engine.NodeID()
	}
	sort.Strings(want)
	owners := map[string]string{}
	start := time.Now()
	var (
		mu      sync.Mutex // guards missing
		missing []string   // the disagreement last seen, to explain a slow agreement
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if d := time.Since(start); d > 2*time.Second || t.Failed() {
			t.Logf("the rings took %v to agree on %v; last disagreement: %v", d.Round(time.Millisecond), want, missing)
		}
	}()
	pollUntil(t, timeout, fmt.Sprintf("the rings to agree on members %v and on every show's owner", want), func() bool {
		var diff []string
		for _, n := range nodes {
			var got []string
			for _, m := range n.Ring.Members() {
				got = append(got, m.Name)
			}
			if !slices.Equal(got, want) {
				diff = append(diff, fmt.Sprintf("%s has %v", n.Engine.NodeID(), got))
			}
		}
		if len(diff) > 0 {
			mu.Lock()
			missing = diff
			mu.Unlock()
			return false
		}
		for _, s := range shows {
			o := nodes[0].Ring.Owner(s).Name
			for _, n := range nodes[1:] {
				if n.Ring.Owner(s).Name != o {
					return false
				}
			}
			owners[s] = o
		}
		return true
	})
	return owners
}

// nodeByName returns the node of nodes named name.
func nodeByName(t *testing.T, nodes []*tc.Node, name string) *tc.Node {
	t.Helper()
	for _, n := range nodes {
		if n.Engine.NodeID() == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return nil
}

// checkOwnersSettled makes each show's owner by the ring serve it (a seat
// map read loads it), then checks that PostgreSQL names that owner and that
// its seat map equals the database.
func checkOwnersSettled(t *testing.T, nodes []*tc.Node, db *pgxpool.Pool, owners map[string]string) {
	t.Helper()
	for show, owner := range owners {
		n := nodeByName(t, nodes, owner)
		checkSeatMapEqualsDB(t, n, db, show)
		if got, _ := dbOwner(t, db, show); got != owner {
			t.Errorf("show %s: PostgreSQL names %s, the ring %s", show, got, owner)
		}
	}
}

// growStep is what one step of TestClusterGrowShrink measured.
type growStep struct {
	name       string
	converged  time.Duration // from the step's start to the rings agreeing
	maxGap     time.Duration // the longest time a show went without a successful write
	maxGapShow string
}

// TestClusterGrowShrink grows a cluster from one node to seven, one at a
// time, and shrinks it back to one, alternating graceful stops and crashes,
// while a prober per show keeps holding and releasing a seat through random
// live nodes. It never panics, the rings agree on every show's owner after
// each step, and no show goes without a successful write for longer than
// failure detection plus the lease (~1 s + 1.5 s, with a margin for a loaded
// machine). At the end PostgreSQL holds exactly the acknowledged changes and
// the last node's seat maps equal it.
func TestClusterGrowShrink(t *testing.T) {
	const (
		shows    = 30
		maxNodes = 7
		pace     = 100 * time.Millisecond // between a prober's writes
		// maxGap is detection (~0.75–0.95 s, more on a loaded machine) plus
		// the lease a crashed owner leaves behind (1.5 s), plus a margin for
		// the load, retries and -race.
		maxGap = 4 * time.Second
	)
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	db := openDB(t, url)
	first := tc.StartNode(t, url, tc.Options{NodeID: "c0", Cluster: &tc.ClusterOptions{}})
	nodes := []*tc.Node{first}
	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("g%02d", i)
		first.CreateShow(t, ids[i], 1, 4, 0)
		getSeatMap(t, first, ids[i])
	}
	l := newClusterLoad(t)
	l.add(first)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	// Each prober holds A-1 and releases it, again and again; lastOK is the
	// time of its show's last acknowledged write.
	var (
		step    atomic.Int32
		gapMu   sync.Mutex // guards gaps
		gaps    = map[int32]map[string]time.Duration{}
		lastOK  = make([]atomic.Int64, shows)
		stop    = make(chan struct{})
		probers sync.WaitGroup
	)
	succeeded := func(i int) {
		now := time.Now()
		prev := time.Unix(0, lastOK[i].Swap(now.UnixNano()))
		gap := now.Sub(prev)
		s := step.Load()
		gapMu.Lock()
		if gaps[s] == nil {
			gaps[s] = map[string]time.Duration{}
		}
		gaps[s][ids[i]] = max(gaps[s][ids[i]], gap)
		gapMu.Unlock()
	}
	start := time.Now()
	for i, show := range ids {
		lastOK[i].Store(start.UnixNano())
		probers.Add(1)
		go func() {
			defer probers.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			user := "p-" + show
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				h, err := l.hold(ctx, rng, nil, show, user, fmt.Sprintf("p-%s-%d", show, k), []string{"A-1"})
				if err != nil {
					cancel()
					l.fail("prober hold on %s: %v", show, err)
					return
				}
				succeeded(i)
				err = l.release(ctx, rng, nil, show, h, user)
				cancel()
				if err != nil {
					l.fail("prober release of %s: %v", h, err)
					return
				}
				succeeded(i)
				t := time.NewTimer(pace)
				select {
				case <-stop:
					t.Stop()
					return
				case <-t.C:
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		probers.Wait()
	}()

	var steps []growStep
	// settle waits for the rings to agree and for every show to be written
	// after that, and records the step.
	settle := func(name string, began time.Time, nodes []*tc.Node) {
		t.Helper()
		waitConverged(t, nodes, ids, 20*time.Second)
		converged := time.Now()
		pollUntil(t, 15*time.Second, "a successful write on every show after "+name, func() bool {
			for i := range ids {
				if lastOK[i].Load() <= converged.UnixNano() {
					return false
				}
			}
			return true
		})
		st := growStep{name: name, converged: converged.Sub(began)}
		gapMu.Lock()
		for show, g := range gaps[step.Load()] {
			if g > st.maxGap {
				st.maxGap, st.maxGapShow = g, show
			}
		}
		gapMu.Unlock()
		steps = append(steps, st)
		t.Logf("%-9s %d nodes: rings agreed after %4dms; longest gap without a write %4dms (%s)",
			name, len(nodes), st.converged.Milliseconds(), st.maxGap.Milliseconds(), st.maxGapShow)
	}
	settle("start", start, nodes)
	for i := 1; i < maxNodes; i++ {
		step.Add(1)
		began := time.Now()
		n := tc.StartNode(t, url, tc.Options{
			NodeID: fmt.Sprintf("c%d", i), Cluster: &tc.ClusterOptions{Join: []string{first.Ring.GossipAddr()}},
		})
		nodes = append(nodes, n)
		l.add(n)
		settle(fmt.Sprintf("join c%d", i), began, nodes)
	}
	for i := maxNodes - 1; i >= 1; i-- {
		step.Add(1)
		n := nodes[i]
		name := n.Engine.NodeID()
		l.remove(name)
		began := time.Now()
		how := "stop"
		if i%2 == 1 {
			how = "crash"
			n.Crash()
		} else {
			n.Stop()
		}
		nodes = nodes[:i]
		settle(how+" "+name, began, nodes)
	}
	close(stop)
	probers.Wait()

	var worst growStep
	for _, st := range steps {
		if st.maxGap > worst.maxGap {
			worst = st
		}
		// While the rings disagree, a show is served only through the nodes
		// that agree with its lease holder; memberlist's gossip can miss a
		// join, and then only its push/pull (every 2 s) makes the rings
		// agree. The engine's bound counts from the agreement then.
		if st.converged > 5*time.Second {
			t.Errorf("%s: the rings took %v to agree, more than push/pull (2 s) and a margin", st.name, st.converged.Round(time.Millisecond))
		}
		allowed := maxGap
		if late := st.converged - time.Second; late > 0 {
			allowed += late
			t.Logf("NOTE %s: the rings took %v to agree (gossip missed a node); a gap of up to %v is allowed",
				st.name, st.converged.Round(time.Millisecond), allowed.Round(time.Millisecond))
		}
		if st.maxGap > allowed {
			t.Errorf("%s: show %s went %v without a successful write, more than %v (failure detection + lease + margin)",
				st.name, st.maxGapShow, st.maxGap.Round(time.Millisecond), allowed.Round(time.Millisecond))
		}
	}
	byReason, _, _ := l.retriedSummary()
	t.Logf("worst gap %v (%s, %s); retried answers: %v; took %v", worst.maxGap.Round(time.Millisecond), worst.name,
		worst.maxGapShow, byReason, time.Since(start).Round(time.Millisecond))

	l.checkDB(t, db, ids)
	owners := map[string]string{}
	for _, s := range ids {
		owners[s] = "c0"
	}
	checkOwnersSettled(t, nodes, db, owners)
}

// allSeats returns the seat IDs of rows × seatsPerRow.
func allSeats(rows, seatsPerRow int) []string {
	var s []string
	for r := range rows {
		for k := 1; k <= seatsPerRow; k++ {
			s = append(s, tc.SeatID(r, k))
		}
	}
	return s
}

// startWorkers starts n workers on shows (see clusterLoad.worker), their
// users named after name, which must differ between calls; the
// returned function stops them and waits until their last operations have
// their answers.
func (l *clusterLoad) startWorkers(name string, n int, seed uint64, shows, seats []string, side func(string) bool, pace time.Duration) func() {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(name, w, seed, shows, seats, side, pace, stop)
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(stop) })
		wg.Wait()
	}
}

// TestClusterJoinUnderLoad grows a cluster from three nodes to four while
// workers hold, confirm and release through random nodes. About a quarter
// of the shows move (consistent hashing); each moved show changes epoch
// once and no other show changes at all; callers see only retryable
// Unavailable answers (and seats taken), and only from the join until
// shortly after the rings agree; PostgreSQL holds exactly what was
// acknowledged.
func TestClusterJoinUnderLoad(t *testing.T) {
	const (
		shows   = 40
		workers = 8
		pace    = 5 * time.Millisecond
		// settleWindow is how long after the rings agree a retryable answer
		// may still come (a call that began before, a show being loaded).
		settleWindow = 5 * time.Second
	)
	nodes, url := startCluster(t, 3)
	db := openDB(t, url)
	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("j%02d", i)
		nodes[i%3].CreateShow(t, ids[i], 4, 10, 0)
		getSeatMap(t, nodes[0], ids[i]) // loads it on its owner
	}
	before := waitConverged(t, nodes, ids, 20*time.Second)
	epochs := map[string]int64{}
	for _, s := range ids {
		owner, e := dbOwner(t, db, s)
		if owner != before[s] {
			t.Fatalf("show %s: PostgreSQL names %s, the ring %s", s, owner, before[s])
		}
		epochs[s] = e
	}
	l := newClusterLoad(t)
	for _, n := range nodes {
		l.add(n)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	stopWorkers := l.startWorkers("w", workers, seed, ids, allSeats(4, 10), nil, pace)
	defer stopWorkers()

	pollUntil(t, 10*time.Second, "acknowledged holds before the join", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.holds) >= 100
	})
	joinAt := time.Now()
	c3 := tc.StartNode(t, url, tc.Options{NodeID: "c3", Cluster: &tc.ClusterOptions{Join: []string{nodes[0].Ring.GossipAddr()}}})
	nodes = append(nodes, c3)
	l.add(c3)
	after := waitConverged(t, nodes, ids, 20*time.Second)
	agreedAt := time.Now()
	// Keep the load on past the window in which retryable answers may come.
	pollUntil(t, settleWindow+5*time.Second, "the load to run past the settling window", func() bool {
		return time.Since(agreedAt) > settleWindow+time.Second
	})
	stopWorkers()
	stoppedAt := time.Now()

	var moved, toNew int
	for _, s := range ids {
		if before[s] != after[s] {
			moved++
			if after[s] == "c3" {
				toNew++
			}
		}
	}
	frac := float64(moved) / shows
	t.Logf("join: rings agreed %v after the join began; %d of %d shows moved (%.1f%%), %d of them to c3",
		agreedAt.Sub(joinAt).Round(time.Millisecond), moved, shows, 100*frac, toNew)
	if !(frac > 0.05 && frac < 0.5) {
		t.Errorf("%.1f%% of the shows moved when a fourth node joined, want about a quarter (5%%–50%%)", 100*frac)
	}

	byReason, first, last := l.retriedSummary()
	l.mu.Lock()
	holds, refusals := len(l.holds), maps2str(l.refusals)
	var early, late []callError
	for _, e := range l.retried {
		switch {
		case e.at.Before(joinAt):
			early = append(early, e)
		case e.at.After(agreedAt.Add(settleWindow)):
			late = append(late, e)
		}
	}
	l.mu.Unlock()
	t.Logf("%d holds acknowledged over %v; final refusals %s; retried answers %v", holds,
		stoppedAt.Sub(joinAt).Round(time.Millisecond), refusals, byReason)
	if !first.IsZero() {
		t.Logf("retryable answers from %v to %v after the join began (rings agreed at %v)",
			first.Sub(joinAt).Round(time.Millisecond), last.Sub(joinAt).Round(time.Millisecond), agreedAt.Sub(joinAt).Round(time.Millisecond))
	}
	for _, e := range early {
		t.Errorf("retryable answer before the join began: %s on %s through %s: %s", e.what, e.show, e.node, e.e)
	}
	for _, e := range late {
		t.Errorf("retryable answer %v after the rings agreed: %s on %s through %s: %s", e.at.Sub(agreedAt).Round(time.Millisecond), e.what, e.show, e.node, e.e)
	}

	l.checkDB(t, db, ids)
	checkOwnersSettled(t, nodes, db, after)
	for _, s := range ids {
		_, e := dbOwner(t, db, s)
		switch d := e - epochs[s]; {
		case before[s] != after[s] && d != 1:
			t.Errorf("show %s moved %s → %s: its epoch rose by %d, want 1", s, before[s], after[s], d)
		case before[s] == after[s] && d != 0:
			t.Errorf("show %s stayed on %s: its epoch rose by %d, want 0", s, after[s], d)
		}
	}
}

// maps2str renders a count map in key order.
func maps2str(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "[%s: %d]", k, m[k])
	}
	return b.String()
}

// TestClusterGracefulStopUnderLoad stops a node of three as SIGTERM does
// (Node.Stop: leave the ring, drain, release the leases) while a prober per
// show holds and releases through random nodes, the stopping one included
// until its stop returns, and workers add load. No call gets anything but a
// retryable Unavailable (or seats taken), the stopped node's shows are
// written through their new owners within a second of the stop's start and
// of its return, and PostgreSQL holds exactly what was acknowledged.
func TestClusterGracefulStopUnderLoad(t *testing.T) {
	const (
		shows   = 24
		workers = 4
		pace    = 25 * time.Millisecond
		bound   = time.Second
	)
	nodes, url := startCluster(t, 3)
	db := openDB(t, url)
	ids := make([]string, shows)
	for i := range ids {
		ids[i] = fmt.Sprintf("st%02d", i)
		nodes[i%3].CreateShow(t, ids[i], 4, 10, 0)
		getSeatMap(t, nodes[0], ids[i])
	}
	before := waitConverged(t, nodes, ids, 20*time.Second)
	var moved []string
	for _, s := range ids {
		if before[s] == "c2" {
			moved = append(moved, s)
		}
	}
	if len(moved) == 0 {
		t.Fatal("c2 owns none of the shows: the test shows nothing")
	}
	l := newClusterLoad(t)
	for _, n := range nodes {
		l.add(n)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	// Probers hold and release seat A-1 of their show; workers use rows B–D.
	stop := make(chan struct{})
	var probers sync.WaitGroup
	for i, show := range ids {
		probers.Add(1)
		go func() {
			defer probers.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(1000+i)))
			user := "p-" + show
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				h, err := l.hold(ctx, rng, nil, show, user, fmt.Sprintf("p-%s-%d", show, k), []string{"A-1"})
				if err == nil {
					if err = l.release(ctx, rng, nil, show, h, user); err != nil {
						l.fail("prober release of %s: %v", h, err)
					}
				} else {
					l.fail("prober hold on %s: %v", show, err)
				}
				cancel()
				if err != nil {
					return
				}
				t := time.NewTimer(pace)
				select {
				case <-stop:
					t.Stop()
					return
				case <-t.C:
				}
			}
		}()
	}
	stopProbers := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		probers.Wait()
	}
	defer stopProbers()
	stopWorkers := l.startWorkers("w", workers, seed, ids, allSeats(4, 10)[10:], nil, pace)
	defer stopWorkers()

	pollUntil(t, 10*time.Second, "acknowledged writes on every show before the stop", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range ids {
			if len(l.acks[s]) < 4 {
				return false
			}
		}
		return true
	})
	stopAt := time.Now()
	nodes[2].Stop()
	stoppedAt := time.Now()
	l.remove("c2")
	after := waitConverged(t, nodes[:2], ids, 20*time.Second)
	pollUntil(t, 10*time.Second, "a write on every moved show after the stop", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range moved {
			a := l.acks[s]
			if len(a) == 0 || !a[len(a)-1].at.After(stoppedAt.Add(200*time.Millisecond)) {
				return false
			}
		}
		return true
	})
	stopProbers()
	stopWorkers()
	t.Logf("c2's stop took %v; it owned %d of %d shows", stoppedAt.Sub(stopAt).Round(time.Millisecond), len(moved), shows)

	// The first write on each moved show that its new owner committed: the
	// acknowledgement whose event in PostgreSQL is from a node other than c2.
	var worstStart, worstReturn time.Duration
	for _, s := range moved {
		byNode := map[[2]string]string{}
		for _, e := range dbEvents(t, db, s) {
			byNode[[2]string{e.Reservation, e.Kind}] = e.Node
		}
		l.mu.Lock()
		acks := slices.Clone(l.acks[s])
		l.mu.Unlock()
		var lastOld time.Time
		found := false
		for _, a := range acks {
			node, ok := byNode[[2]string{a.hold, a.kind}]
			if !ok {
				t.Errorf("show %s: acknowledged %s of %s has no event in PostgreSQL", s, a.kind, a.hold)
				continue
			}
			if node == "c2" {
				lastOld = a.at
				continue
			}
			fromStart, fromReturn := a.at.Sub(stopAt), max(a.at.Sub(stoppedAt), 0)
			worstStart, worstReturn = max(worstStart, fromStart), max(worstReturn, fromReturn)
			t.Logf("show %s → %s: last write by c2 acknowledged %v after the stop began; first by %s %v after it began, %v after it returned",
				s, after[s], lastOld.Sub(stopAt).Round(time.Millisecond), node, fromStart.Round(time.Millisecond), fromReturn.Round(time.Millisecond))
			if fromStart > bound || fromReturn > bound {
				t.Errorf("show %s: first write through its new owner %v after the stop began, %v after it returned; want within %v",
					s, fromStart.Round(time.Millisecond), fromReturn.Round(time.Millisecond), bound)
			}
			found = true
			break
		}
		if !found {
			t.Errorf("show %s: no acknowledged write by its new owner", s)
		}
	}
	byReason, _, _ := l.retriedSummary()
	l.mu.Lock()
	t.Logf("worst: %v after the stop began, %v after it returned; %d holds acknowledged; final refusals %s; retried answers %v",
		worstStart.Round(time.Millisecond), worstReturn.Round(time.Millisecond), len(l.holds), maps2str(l.refusals), byReason)
	l.mu.Unlock()
	l.checkDB(t, db, ids)
	checkOwnersSettled(t, nodes[:2], db, after)
}
