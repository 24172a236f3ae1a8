package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// replica is a seat map kept from a WatchSeatMap stream, as a web tier
// keeps it.
type replica struct {
	statuses  []byte
	version   uint64
	counts    [5]int32 // the last message's: available, held, booked, offered, waiting
	tally     [5]int32 // statuses' by SeatStatus (1-4; 0: another value)
	snapshots int      // messages that were snapshots
	msgs      int
	// firstSnapshot tells whether the first message was a snapshot.
	firstSnapshot bool
}

// apply applies m and checks the stream's promises: versions strictly
// increase, changes come on top of a map, and the counts are those of the
// statuses.
func (r *replica) apply(m *pb.WatchSeatMapResponse) error {
	if m.GetVersion() <= r.version {
		return fmt.Errorf("message %d: version %d after %d", r.msgs+1, m.GetVersion(), r.version)
	}
	if snap := m.GetSnapshot(); len(snap) > 0 {
		if len(m.GetSeatIndexes()) != 0 || len(m.GetStatuses()) != 0 {
			return fmt.Errorf("message %d: a snapshot with changes", r.msgs+1)
		}
		r.statuses = append(r.statuses[:0], snap...)
		r.tally = [5]int32{}
		for _, s := range r.statuses {
			r.tally[tallyIndex(s)]++
		}
		r.snapshots++
		r.firstSnapshot = r.firstSnapshot || r.msgs == 0
	} else {
		if r.statuses == nil {
			return fmt.Errorf("message %d: changes before any snapshot", r.msgs+1)
		}
		idx, st := m.GetSeatIndexes(), m.GetStatuses()
		if len(idx) != len(st) {
			return fmt.Errorf("message %d: %d seat indexes, %d statuses", r.msgs+1, len(idx), len(st))
		}
		for k, i := range idx {
			if int(i) >= len(r.statuses) {
				return fmt.Errorf("message %d: seat index %d of %d seats", r.msgs+1, i, len(r.statuses))
			}
			r.tally[tallyIndex(r.statuses[i])]--
			r.statuses[i] = st[k]
			r.tally[tallyIndex(st[k])]++
		}
	}
	r.msgs++
	r.version = m.GetVersion()
	r.counts = [5]int32{m.GetAvailable(), m.GetHeld(), m.GetBooked(), m.GetOffered(), m.GetWaiting()}
	if [4]int32(r.counts[:4]) != [4]int32(r.tally[1:]) || r.tally[0] != 0 {
		return fmt.Errorf("message %d (version %d): counts %v, but the statuses count %v", r.msgs, r.version, r.counts[:4], r.tally)
	}
	return nil
}

// tallyIndex is where replica.tally counts a status byte.
func tallyIndex(s byte) int {
	if s >= 1 && s <= 4 {
		return int(s)
	}
	return 0
}

// follower applies a stream to a replica on a goroutine of its own,
// recording the statuses at each version it reaches.
type follower struct {
	mu   sync.Mutex // guards r, seen and err
	r    replica
	seen map[uint64]string // version → statuses; nil: not kept
	err  error             // why the stream ended (io.EOF: it ended cleanly), or a broken promise
	done chan struct{}     // closed when the goroutine ends

	version atomic.Uint64 // r.version, for waiting on without the lock
	sizes   []int         // each message's encoded size
}

// watchMap opens a WatchSeatMap stream on client and follows it, keeping
// the statuses at each version; base is the map the caller already has at
// since (nil: none). It returns once the server has the watch in place (its
// headers came). The stream ends with ctx.
func watchMap(t testing.TB, ctx context.Context, client pb.ReservationServiceClient, show string, since uint64, base []byte) *follower {
	t.Helper()
	return watchMapHistory(t, ctx, client, show, since, base, true)
}

// watchMapHistory is watchMap, keeping the statuses at each version only
// if history.
func watchMapHistory(t testing.TB, ctx context.Context, client pb.ReservationServiceClient, show string, since uint64, base []byte, history bool) *follower {
	t.Helper()
	stream, err := client.WatchSeatMap(tc.Ctx(ctx), &pb.WatchSeatMapRequest{ShowId: show, SinceVersion: since})
	if err != nil {
		t.Fatalf("WatchSeatMap %s: %v", show, err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatalf("WatchSeatMap %s: headers: %v", show, err)
	}
	f := &follower{done: make(chan struct{})}
	if history {
		f.seen = map[uint64]string{}
	}
	if base != nil {
		f.r.statuses, f.r.version = append([]byte(nil), base...), since
		for _, s := range base {
			f.r.tally[tallyIndex(s)]++
		}
	}
	go func() {
		defer close(f.done)
		for {
			m, err := stream.Recv()
			f.mu.Lock()
			if err == nil {
				err = f.r.apply(m)
				f.sizes = append(f.sizes, proto.Size(m))
				if f.seen != nil {
					f.seen[f.r.version] = string(f.r.statuses)
				}
				f.version.Store(f.r.version)
			}
			if err != nil {
				f.err = err
				f.mu.Unlock()
				return
			}
			f.mu.Unlock()
		}
	}()
	return f
}

// state returns a copy of the replica.
func (f *follower) state() replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.r
	r.statuses = append([]byte(nil), r.statuses...)
	return r
}

// failed returns why the stream ended early, or nil if it goes on.
func (f *follower) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// converge waits until the replica is at show's version on n, and checks
// it equals the seat map there, counts included.
func (f *follower) converge(t testing.TB, n *tc.Node, show string) *pb.GetSeatMapResponse {
	t.Helper()
	sm := getSeatMap(t, n, show)
	pollUntil(t, 20*time.Second, fmt.Sprintf("the watcher to reach version %d", sm.GetVersion()), func() bool {
		if err := f.failed(); err != nil {
			t.Fatalf("watch stream ended: %v", err)
		}
		return f.version.Load() >= sm.GetVersion()
	})
	r := f.state()
	want := [5]int32{sm.GetAvailable(), sm.GetHeld(), sm.GetBooked(), sm.GetOffered(), sm.GetWaiting()}
	if r.version != sm.GetVersion() || string(r.statuses) != string(sm.GetStatuses()) || r.counts != want {
		t.Fatalf("replica at version %d (counts %v) differs from GetSeatMap at %d (counts %v):\n%v\n%v",
			r.version, r.counts, sm.GetVersion(), want, r.statuses, sm.GetStatuses())
	}
	return sm
}

// churn holds and releases blocks of minBlock to maxBlock seats of a
// rows×seats show from workers goroutines until stop is closed (or each
// made ops attempts, if ops > 0), confirming some. Refusals of taken seats
// are expected.
func churn(t testing.TB, n *tc.Node, show string, rows, seats, workers, ops, minBlock, maxBlock int, seed uint64, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			ctx := tc.Ctx(context.Background())
			type hold struct{ id, user string }
			var mine []hold
			for k := 0; ops == 0 || k < ops; k++ {
				select {
				case <-stop:
					return
				default:
				}
				user := fmt.Sprintf("u%d-%d", w, k)
				switch r := rng.IntN(10); {
				case len(mine) > 0 && r == 0:
					i := rng.IntN(len(mine))
					h := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					_, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h.id, UserId: h.user, PaymentRef: "pay-" + h.id})
					if err != nil {
						t.Errorf("confirm %s: %v", h.id, err)
						return
					}
				case len(mine) > 0 && (r < 5 || len(mine) > 20):
					i := rng.IntN(len(mine))
					h := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					_, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.id, UserId: h.user})
					if err != nil {
						t.Errorf("release %s: %v", h.id, err)
						return
					}
				default:
					row, size := rng.IntN(rows), minBlock+rng.IntN(maxBlock-minBlock+1)
					first := 1 + rng.IntN(seats-size+1)
					ids := make([]string, size)
					for i := range ids {
						ids[i] = tc.SeatID(row, first+i)
					}
					h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: ids})
					if e := apiErrorOf(err); err != nil && e.Reason != "SEATS_TAKEN" {
						t.Errorf("hold %v: %s", ids, e)
						return
					}
					if err == nil {
						mine = append(mine, hold{h.GetHoldId(), user})
					}
				}
			}
		}()
	}
	return &wg
}

// TestWatchSeatMapReplicaFollowsRandomChanges: a replica that follows a
// random sequence of holds, releases and confirms equals GetSeatMap at
// every version both report, and at the end exactly, counts included.
func TestWatchSeatMapReplicaFollowsRandomChanges(t *testing.T) {
	const show = "w-replica"
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, show, 5, 10, 0)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := watchMap(t, ctx, n.Reservations, show, 0, nil)

	reads := map[uint64]string{} // GetSeatMap's version → statuses, read during the run
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			sm, err := n.Reservations.GetSeatMap(tc.Ctx(ctx), &pb.GetSeatMapRequest{ShowId: show})
			if err != nil {
				t.Errorf("GetSeatMap: %v", err)
				return
			}
			reads[sm.GetVersion()] = string(sm.GetStatuses())
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // now and then between batches
		}
	}()
	churn(t, n, show, 5, 10, 4, 150, 1, 3, seed, nil).Wait()
	close(stop)
	<-readerDone
	sm := f.converge(t, n, show)
	reads[sm.GetVersion()] = string(sm.GetStatuses())

	f.mu.Lock()
	defer f.mu.Unlock()
	matched := 0
	for v, want := range reads {
		if got, ok := f.seen[v]; ok {
			matched++
			if got != want {
				t.Errorf("version %d: replica %v, GetSeatMap %v", v, []byte(got), []byte(want))
			}
		}
	}
	if f.r.snapshots != 1 {
		t.Errorf("%d snapshots, want only the first", f.r.snapshots)
	}
	t.Logf("%d messages up to version %d; %d of %d GetSeatMap versions seen by the replica", f.r.msgs, f.r.version, matched, len(reads))
}

// TestWatchSeatMapLaggingWatcherGetsSnapshot: a watcher that stops reading
// while many changes happen is sent a snapshot instead of the backlog, and
// converges once it reads again.
func TestWatchSeatMapLaggingWatcherGetsSnapshot(t *testing.T) {
	const show, rows, seats = "w-lag", 30, 500
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, show, rows, seats, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The laggard has a connection of its own with fixed 64 KiB windows, so
	// that what it does not read backs up to the server soon.
	conn, err := grpc.NewClient(n.Server.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lag, err := pb.NewReservationServiceClient(conn).WatchSeatMap(tc.Ctx(ctx), &pb.WatchSeatMapRequest{ShowId: show})
	if err != nil {
		t.Fatal(err)
	}
	var r replica
	first, err := lag.Recv()
	if err == nil {
		err = r.apply(first)
	}
	if err != nil {
		t.Fatalf("first message: %v", err)
	}
	// A watcher that reads tells how much the laggard is not reading. The
	// laggard's backlog holds at most its windows (the client's, and the
	// server's write quota: 64 KiB each, counting 5 bytes of framing per
	// message) and the ring (64 batches): past 160 KiB and 80 batches
	// more, it must have fallen behind.
	fast := watchMapHistory(t, ctx, n.Reservations, show, 0, nil, false)
	stop := make(chan struct{})
	wg := churn(t, n, show, rows, seats, 16, 0, 10, 10, 1, stop)
	start := time.Now()
	pollUntil(t, 90*time.Second, "160 KiB and 80 batches to be sent to a watcher", func() bool {
		fast.mu.Lock()
		defer fast.mu.Unlock()
		if fast.err != nil {
			t.Fatalf("watcher: %v", fast.err)
		}
		sum := 0
		for k, size := range fast.sizes {
			if sum += size; sum >= 160<<10 {
				return len(fast.sizes) >= k+80
			}
		}
		return false
	})
	close(stop)
	wg.Wait()
	t.Logf("%d batches to the reading watcher in %s", fast.state().msgs, time.Since(start))

	sm := getSeatMap(t, n, show)
	for r.version < sm.GetVersion() {
		m, err := lag.Recv()
		if err == nil {
			err = r.apply(m)
		}
		if err != nil {
			t.Fatalf("laggard after %d messages: %v", r.msgs, err)
		}
	}
	if r.version != sm.GetVersion() || string(r.statuses) != string(sm.GetStatuses()) {
		t.Fatalf("laggard at version %d differs from GetSeatMap at %d", r.version, sm.GetVersion())
	}
	if r.snapshots < 2 {
		t.Fatalf("laggard got %d snapshots in %d messages, want one more after the first", r.snapshots, r.msgs)
	}
	if v, _ := sample(scrape(t, n), "boxoffice_seatmap_watch_lagged_total"); v < 1 {
		t.Errorf("boxoffice_seatmap_watch_lagged_total %v, want at least 1", v)
	}
	fast.converge(t, n, show)
	t.Logf("laggard: %d messages, %d snapshots; the reading watcher: %d messages, %d snapshot", r.msgs, r.snapshots, fast.state().msgs, fast.state().snapshots)
}

// TestWatchSeatMapSinceVersion: a watcher whose since_version is current
// gets the changes from then on without a snapshot; one whose version is
// old, or not a version of the show, gets a snapshot first.
func TestWatchSeatMapSinceVersion(t *testing.T) {
	const show = "w-since"
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, show, 2, 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hold := func(seat string) {
		t.Helper()
		if _, err := n.Reservations.HoldSeats(tc.Ctx(ctx), &pb.HoldSeatsRequest{ShowId: show, UserId: "u-" + seat, SeatIds: []string{seat}}); err != nil {
			t.Fatal(err)
		}
	}

	old := getSeatMap(t, n, show)
	current := watchMap(t, ctx, n.Reservations, show, old.GetVersion(), old.GetStatuses())
	hold("A-1")
	current.converge(t, n, show)
	if r := current.state(); r.snapshots != 0 || r.msgs == 0 {
		t.Errorf("since the current version: %d snapshots in %d messages, want none", r.snapshots, r.msgs)
	}

	// A watcher that went away at a version the node still has the
	// batches since gets those batches, not a snapshot.
	recent := current.state()
	hold("A-2")
	hold("A-3")
	resumed := watchMap(t, ctx, n.Reservations, show, recent.version, recent.statuses)
	resumed.converge(t, n, show)
	if r := resumed.state(); r.snapshots != 0 || r.msgs == 0 || r.msgs > 2 {
		t.Errorf("since a recent version: %d snapshots in %d messages, want the batches since (1 or 2)", r.snapshots, r.msgs)
	}

	for _, c := range []struct {
		name  string
		since uint64
		base  []byte
	}{
		{"old version", old.GetVersion(), old.GetStatuses()},
		{"no version", 0, nil},
		{"not a version of the show", 12345, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := watchMap(t, ctx, n.Reservations, show, c.since, c.base)
			f.converge(t, n, show)
			if r := f.state(); !r.firstSnapshot || r.snapshots != 1 {
				t.Errorf("first message a snapshot: %v; %d snapshots in %d messages", r.firstSnapshot, r.snapshots, r.msgs)
			}
		})
	}
}

// TestWatchSeatMapSnapshotIsFresh: a watcher that joins a show whose map
// has not changed for ten minutes (by the node's clock) gets a snapshot
// published as of its joining, so a replica starting from it reports no
// lag; before, the snapshot carried the time its version was published,
// and a replica of a quiet show started ten minutes behind. The last batch
// a resuming watcher is sent is as of its joining too.
func TestWatchSeatMapSnapshotIsFresh(t *testing.T) {
	const show = "w-fresh"
	clock := tc.NewClock(time.Now())
	n, _ := newNode(t, tc.Options{Clock: clock})
	n.CreateShow(t, show, 2, 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := func(what string) *pb.WatchSeatMapResponse {
		t.Helper()
		stream, err := n.Reservations.WatchSeatMap(tc.Ctx(ctx), &pb.WatchSeatMapRequest{ShowId: show})
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if m.GetSnapshot() == nil {
			t.Fatalf("%s: first message is not a snapshot", what)
		}
		return m
	}
	// The first watcher keeps the show's publisher running.
	first("the first watcher")
	if _, err := hold(t, n, show, "u1", "A-1"); err != nil {
		t.Fatal(err)
	}
	before := getSeatMap(t, n, show).GetVersion()
	pollUntil(t, 10*time.Second, "the hold to be published", func() bool {
		return first("a watcher").GetVersion() == before
	})
	if _, err := hold(t, n, show, "u2", "A-2"); err != nil {
		t.Fatal(err)
	}
	held := getSeatMap(t, n, show).GetVersion()
	pollUntil(t, 10*time.Second, "the second hold to be published", func() bool {
		return first("a watcher").GetVersion() == held
	})

	clock.Advance(10 * time.Minute)
	joined := clock.Now().Truncate(time.Microsecond) // the node's precision
	m := first("a watcher after ten quiet minutes")
	if m.GetVersion() != held {
		t.Fatalf("snapshot at version %d, want %d", m.GetVersion(), held)
	}
	if at := m.GetPublishedAt().AsTime(); at.Before(joined) {
		t.Errorf("snapshot of a current map published at %s, %s before the watcher joined", at, joined.Sub(at))
	}

	// A watcher that resumes from the version before the last batch gets
	// that batch, not a snapshot, as of now too.
	stream, err := n.Reservations.WatchSeatMap(tc.Ctx(ctx), &pb.WatchSeatMapRequest{ShowId: show, SinceVersion: before})
	if err != nil {
		t.Fatal(err)
	}
	b, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if b.GetSnapshot() != nil || b.GetVersion() != held || len(b.GetSeatIndexes()) != 1 {
		t.Fatalf("a resume from version %d: %v; want the last batch, to version %d", before, b, held)
	}
	if at := b.GetPublishedAt().AsTime(); at.Before(joined) {
		t.Errorf("the last batch sent to a resumed watcher published at %s, %s before the watcher joined", at, joined.Sub(at))
	}
}

// TestWatchSeatMapShutdownWhileReloading: a watcher whose show was lost
// (another node took its lease) waits for the show to be loaded again; a
// Shutdown meanwhile ends its stream at once, SHUTTING_DOWN. Before, the
// wait for the other node's lease (AcquireWait, 20 s here) went on, and
// Shutdown waited for it.
func TestWatchSeatMapShutdownWhileReloading(t *testing.T) {
	const show = "w-reload-stop"
	n, url := newNode(t, tc.Options{Engine: func(c *engine.Config) { c.AcquireWait = 20 * time.Second }})
	n.CreateShow(t, show, 1, 4, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := n.Reservations.WatchSeatMap(tc.Ctx(ctx), &pb.WatchSeatMapRequest{ShowId: show})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	// Another node takes the show, with a lease that outlasts the test.
	if _, err := openDB(t, url).Exec(ctx, `UPDATE show_owners SET owner_node = 'other', epoch = epoch + 1,
		lease_until = now() + interval '1 hour' WHERE show_id = $1`, show); err != nil {
		t.Fatal(err)
	}
	if lost := n.Engine.RenewLeases(); lost != 1 {
		t.Fatalf("RenewLeases lost %d shows, want 1", lost)
	}
	pollUntil(t, 10*time.Second, "the lost show's publisher to stop", func() bool {
		p, _ := sample(scrape(t, n), "boxoffice_seatmap_publishers")
		return p == 0
	})

	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	start := time.Now()
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := n.Server.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	err = <-ended
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown and the watch's end took %s", took)
	}
	if e := apiErrorOf(err); e.Code != codes.Unavailable || e.Reason != "SHUTTING_DOWN" {
		t.Errorf("the watch ended with %s, want Unavailable SHUTTING_DOWN", e)
	}
}

// TestWatchSeatMapManyWatchersOnePublisher: 200 watchers of one show share
// one publisher and all converge; cancelled, they unsubscribe and the
// publisher stops.
func TestWatchSeatMapManyWatchersOnePublisher(t *testing.T) {
	const show, watchers = "w-many", 200
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, show, 5, 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs := make([]*follower, watchers)
	for i := range fs {
		fs[i] = watchMapHistory(t, ctx, n.Reservations, show, 0, nil, false)
	}
	m := scrape(t, n)
	if w, _ := sample(m, "boxoffice_seatmap_watchers"); w != watchers {
		t.Errorf("boxoffice_seatmap_watchers %v, want %d", w, watchers)
	}
	if p, _ := sample(m, "boxoffice_seatmap_publishers"); p != 1 {
		t.Errorf("boxoffice_seatmap_publishers %v, want 1", p)
	}
	churn(t, n, show, 5, 10, 4, 50, 1, 3, 2, nil).Wait()
	for _, f := range fs {
		f.converge(t, n, show)
	}
	cancel()
	for _, f := range fs {
		<-f.done
		if e := apiErrorOf(f.failed()); e.Code != codes.Canceled {
			t.Fatalf("stream ended with %s, want Canceled", e)
		}
	}
	pollUntil(t, 5*time.Second, "the watchers and the publisher to go", func() bool {
		m := scrape(t, n)
		w, _ := sample(m, "boxoffice_seatmap_watchers")
		p, _ := sample(m, "boxoffice_seatmap_publishers")
		return w == 0 && p == 0
	})
}

// TestWatchSeatMapShutdownEndsStreams: Shutdown ends the streams at once
// with Unavailable SHUTTING_DOWN, and does not wait for them.
func TestWatchSeatMapShutdownEndsStreams(t *testing.T) {
	const show = "w-stop"
	n, _ := newNode(t, tc.Options{Quiet: true})
	n.CreateShow(t, show, 2, 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fs := []*follower{
		watchMap(t, ctx, n.Reservations, show, 0, nil),
		watchMap(t, ctx, n.Reservations, show, 0, nil),
		watchMap(t, ctx, n.Reservations, show, getSeatMap(t, n, show).GetVersion(), nil),
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	start := time.Now()
	if err := n.Server.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s with watchers open", took)
	}
	for i, f := range fs {
		select {
		case <-f.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("watcher %d still open after shutdown", i)
		}
		if e := apiErrorOf(f.failed()); e.Code != codes.Unavailable || e.Reason != "SHUTTING_DOWN" {
			t.Errorf("watcher %d ended with %s, want Unavailable SHUTTING_DOWN", i, e)
		}
	}
}

// TestWatchSeatMapCancelUnsubscribes: a cancelled watcher leaves, and the
// publisher of its show stops.
func TestWatchSeatMapCancelUnsubscribes(t *testing.T) {
	const show = "w-cancel"
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, show, 2, 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	f := watchMap(t, ctx, n.Reservations, show, 0, nil)
	if w, _ := sample(scrape(t, n), "boxoffice_seatmap_watchers"); w != 1 {
		t.Fatalf("boxoffice_seatmap_watchers %v, want 1", w)
	}
	cancel()
	<-f.done
	pollUntil(t, 5*time.Second, "the watcher and the publisher to go", func() bool {
		m := scrape(t, n)
		w, _ := sample(m, "boxoffice_seatmap_watchers")
		p, _ := sample(m, "boxoffice_seatmap_publishers")
		return w == 0 && p == 0
	})
}

// TestWatchSeatMapRefusesAsGetSeatMap: an invalid or unknown show is
// refused with GetSeatMap's error.
func TestWatchSeatMapRefusesAsGetSeatMap(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	ctx := tc.Ctx(context.Background())
	for _, id := range []string{"", "bad id!", "-dash", "w-unknown"} {
		_, gerr := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: id})
		want := apiErrorOf(gerr)
		if gerr == nil {
			t.Fatalf("GetSeatMap %q succeeded", id)
		}
		stream, err := n.Reservations.WatchSeatMap(ctx, &pb.WatchSeatMapRequest{ShowId: id})
		if err == nil {
			_, err = stream.Recv()
		}
		if got := apiErrorOf(err); got.Code != want.Code || got.Reason != want.Reason {
			t.Errorf("WatchSeatMap %q: %s, GetSeatMap: %s", id, got, want)
		}
	}
}

// TestWatchSeatMapFollowsReload: when the node loses the show and loads it
// again, its watchers go on from the reloaded show, with a snapshot that
// has the other node's changes.
func TestWatchSeatMapFollowsReload(t *testing.T) {
	const show = "w-reload"
	a, b, _ := twoNodes(t)
	a.CreateShow(t, show, 2, 10, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := watchMap(t, ctx, a.Reservations, show, 0, nil)
	f.converge(t, a, show)

	getSeatMap(t, b, show) // B takes the show
	if _, err := b.Reservations.HoldSeats(tc.Ctx(ctx), &pb.HoldSeatsRequest{ShowId: show, UserId: "u", SeatIds: []string{"B-3"}}); err != nil {
		t.Fatal(err)
	}
	a.Engine.RenewLeases() // A finds the show lost and drops it
	pollUntil(t, 20*time.Second, "A's watcher to see B's hold", func() bool {
		if err := f.failed(); err != nil {
			t.Fatalf("watch stream ended: %v", err)
		}
		r := f.state()
		return ar.SeatStatus(r.statuses[12]) == ar.SeatHeld
	})
	f.converge(t, a, show)
	if r := f.state(); r.snapshots != 2 {
		t.Errorf("%d snapshots in %d messages, want 2: the first, and the reloaded show's", r.snapshots, r.msgs)
	}
}

// BenchmarkWatchSeatMapFanout measures a node serving 0, 1 and 1,000
// watchers of a 15,000-seat show while one client holds and releases
// single seats, one at a time (an op is a hold and its release).
// cpu-µs/op is the process's CPU (the node and the in-process clients,
// watchers included) per op; msgs/op the messages each watcher got per op.
func BenchmarkWatchSeatMapFanout(b *testing.B) {
	url := pgclustertest.Shared(b)
	tc.Migrate(b, url)
	runs := 0
	for _, watchers := range []int{0, 1, 1000} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			runs++
			show := fmt.Sprintf("w-bench-%d", runs)
			n := tc.StartNode(b, url, tc.Options{Quiet: true, NodeID: fmt.Sprintf("bench-%d", runs)})
			n.CreateShow(b, show, 30, 500, 0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			clients := make([]pb.ReservationServiceClient, 4)
			for i := range clients {
				conn, err := tc.Dial(n.Server.GRPCAddr())
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				clients[i] = pb.NewReservationServiceClient(conn)
			}
			fs := make([]*follower, watchers)
			for i := range fs {
				fs[i] = watchMapHistory(b, ctx, clients[i%len(clients)], show, 0, nil, false)
			}
			for _, f := range fs {
				f.converge(b, n, show)
			}
			before := 0
			for _, f := range fs {
				before += f.state().msgs
			}
			rctx := tc.Ctx(ctx)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for i := 0; i < b.N; i++ {
				seat, user := tc.SeatID(i%30, 1+(i/30)%500), fmt.Sprintf("u%d", i)
				h, err := n.Reservations.HoldSeats(rctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: []string{seat}})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := n.Reservations.ReleaseHold(rctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: user}); err != nil {
					b.Fatal(err)
				}
			}
			for _, f := range fs {
				f.converge(b, n, show)
			}
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			msgs := -before
			for _, f := range fs {
				msgs += f.state().msgs
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
			if watchers > 0 {
				b.ReportMetric(float64(msgs)/float64(watchers)/float64(b.N), "msgs/op")
			}
		})
	}
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
