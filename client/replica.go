package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// SeatMap is a show's seat map as a replica has it. It is immutable:
// later changes make a new SeatMap, so readers may keep one as long as they
// like and must not modify it.
type SeatMap struct {
	ShowID string
	// Version is the engine's version of the map. A replica's versions
	// never go back: it refuses a message older than its map (see apply).
	Version uint64
	// Statuses has one pb.SeatStatus value per seat, in the show's layout
	// order (GetSeatMap with include_layout tells the seats' IDs).
	Statuses []byte
	// The counts at Version, as GetSeatMap answers them, but for Waiting:
	// the waitlist's length when the engine sent Version, as a change of
	// the waitlist that moves no seat sends nothing.
	Available, Held, Booked, Offered, Waiting int
	// PublishedAt is when the engine published Version (its clock; for a
	// snapshot, when it last found Version current), ReceivedAt when it
	// reached the replica (this machine's clock). ReceivedAt − PublishedAt
	// is the replica's lag for this version.
	PublishedAt, ReceivedAt time.Time
}

// Status returns the status of the seat at position i of the layout.
func (m *SeatMap) Status(i int) pb.SeatStatus { return pb.SeatStatus(m.Statuses[i]) }

// Lag is how far behind the engine the replica was when it applied this
// version.
func (m *SeatMap) Lag() time.Duration { return m.ReceivedAt.Sub(m.PublishedAt) }

// SeatMap returns the show's seat map from the client's live replica of
// it. The first call for a show starts the replica (a WatchSeatMap stream
// to its owner) and waits, within ctx, for its first snapshot; later calls
// answer from memory at once, with the last version received, even while
// the replica reconnects (its ReceivedAt then stops moving), until the
// engine refuses it for good (then the next call starts a new replica,
// and its first watch tells the refusal). A replica not
// read for Config.ReplicaIdle is stopped, and so is the one read longest
// ago when more than Config.MaxReplicas are wanted; a reader waiting for
// the first snapshot of a replica stopped so is answered Unavailable.
//
// The seat map is as live as the engine's: it shows holds whose commit is
// in flight (GetSeatMap does too).
func (c *Client) SeatMap(ctx context.Context, showID string) (*SeatMap, error) {
	r, err := c.replicas.get(showID)
	if err != nil {
		return nil, err
	}
	r.read.Store(time.Now().UnixNano())
	if m := r.cur.Load(); m != nil {
		return m, nil
	}
	select {
	case <-r.ready:
	case <-ctx.Done():
		return nil, ctxError(ctx.Err())
	}
	if m := r.cur.Load(); m != nil {
		return m, nil
	}
	return nil, r.err
}

// TrySeatMap returns the show's seat map from the client's replica without
// waiting: false until the replica has its first snapshot (the first call
// for a show starts it, as SeatMap does), or when the client is closed. A
// web tier that renders from the replica when it is warm, and falls back
// otherwise, needs no context or deadline for the read.
func (c *Client) TrySeatMap(showID string) (*SeatMap, bool) {
	r, err := c.replicas.get(showID)
	if err != nil {
		return nil, false
	}
	r.read.Store(time.Now().UnixNano())
	m := r.cur.Load()
	return m, m != nil
}

// replicas are a client's seat-map replicas, by show.
type replicas struct {
	c  *Client
	mu sync.Mutex // guards m and closed
	m  map[string]*replica

	wg     sync.WaitGroup // the replicas' goroutines
	closed bool
}

func newReplicas(c *Client) *replicas { return &replicas{c: c, m: map[string]*replica{}} }

// replica is one show's replica. Its goroutine follows WatchSeatMap and
// publishes each version in cur.
type replica struct {
	show   string
	cur    atomic.Pointer[SeatMap]
	read   atomic.Int64  // last read, Unix ns
	ready  chan struct{} // closed at the first version, or when err is set
	err    error         // why the replica ended before its first version
	cancel context.CancelFunc
	resync bool // the last stream sent what could not be applied: ask for a snapshot
}

// get returns the show's replica, starting it if there is none.
func (rs *replicas) get(show string) (*replica, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed {
		return nil, errClosed
	}
	if r, ok := rs.m[show]; ok {
		return r, nil
	}
	if len(rs.m) >= rs.c.cfg.MaxReplicas {
		var oldest *replica
		for _, r := range rs.m {
			if oldest == nil || r.read.Load() < oldest.read.Load() {
				oldest = r
			}
		}
		rs.stopLocked(oldest)
	}
	ctx, cancel := context.WithCancel(rs.c.life)
	r := &replica{show: show, ready: make(chan struct{}), cancel: cancel}
	r.read.Store(time.Now().UnixNano())
	rs.m[show] = r
	rs.wg.Go(func() { rs.follow(ctx, r) })
	return r, nil
}

// stopLocked ends r and forgets it. rs.mu must be held.
func (rs *replicas) stopLocked(r *replica) {
	r.cancel()
	delete(rs.m, r.show)
}

// idleLoop stops the replicas nobody read for ReplicaIdle.
func (rs *replicas) idleLoop() {
	idle := rs.c.cfg.ReplicaIdle
	t := time.NewTicker(idle / 4)
	defer t.Stop()
	for {
		select {
		case <-rs.c.life.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-idle).UnixNano()
		rs.mu.Lock()
		for _, r := range rs.m {
			if r.read.Load() < cutoff {
				rs.stopLocked(r)
			}
		}
		rs.mu.Unlock()
	}
}

// close stops every replica and waits for their goroutines.
func (rs *replicas) close() {
	rs.mu.Lock()
	rs.closed = true
	for _, r := range rs.m {
		rs.stopLocked(r)
	}
	rs.mu.Unlock()
	rs.wg.Wait()
}

// follow keeps r up to date until ctx ends: it watches the show on its
// owner and, when the stream ends, watches again from the version it has
// (the engine then sends only what changed since, or a snapshot), after a
// backoff: 20 ms after a stream that brought a message, doubling up to 1 s
// while the streams fail before their first (a node down or refusing), so
// a thousand replicas of a crashed owner's shows do not call every 20 ms.
// A refusal for good (not found, invalid, unauthenticated: any answer that
// is not retryable) ends the replica: before its first version, with that
// error for its readers; after, its readers' next read starts a new
// replica, which meets the refusal in turn, rather than a replica that
// serves its last version, never newer, with no error.
func (rs *replicas) follow(ctx context.Context, r *replica) {
	c := rs.c
	const minWait = 20 * time.Millisecond
	wait := minWait
	for ctx.Err() == nil {
		var since uint64
		if m := r.cur.Load(); m != nil && !r.resync {
			since = m.Version
		}
		r.resync = false
		got, err := rs.watch(ctx, r, since)
		if ctx.Err() != nil {
			break
		}
		if Code(err) == codes.Canceled && c.life.Err() == nil {
			// The connection closed under the watch (its node left the
			// ring), not the caller giving up: watch again, on the owner.
			err = status.Errorf(codes.Unavailable, "client: %v", err)
		}
		if !retryable(err) {
			if r.cur.Load() == nil {
				r.err = err
			}
			break
		}
		if got {
			// The stream worked for a while: the next one starts from
			// the shortest wait. A stream that fails before its first
			// message (a node down, refusing) backs off further each time.
			wait = minWait
		}
		c.refreshSoon()
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, time.Second)
	}
	if r.cur.Load() == nil && r.err == nil {
		// Stopped before its first version: the client closed, or the
		// replica was (more than MaxReplicas wanted, or idle), which is
		// not its readers' doing: they may read again.
		r.err = status.Errorf(codes.Unavailable, "client: the replica of %s was stopped before its first seat map (more than MaxReplicas wanted, or idle); read again", r.show)
		if c.life.Err() != nil {
			r.err = errClosed
		}
	}
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
	rs.mu.Lock()
	if rs.m[r.show] == r {
		delete(rs.m, r.show)
	}
	rs.mu.Unlock()
}

// watch follows one WatchSeatMap stream, publishing each version, until it
// ends; it returns why, and whether the stream brought any message.
func (rs *replicas) watch(ctx context.Context, r *replica, since uint64) (got bool, _ error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := rs.c.owner(r.show).reserve().WatchSeatMap(ctx, &pb.WatchSeatMapRequest{ShowId: r.show, SinceVersion: since})
	if err != nil {
		return false, err
	}
	for ; ; got = true {
		msg, err := stream.Recv()
		if err != nil {
			return got, err
		}
		m, err := apply(r.cur.Load(), msg, time.Now())
		if err != nil {
			r.resync = true // watch again from nothing: a snapshot comes first
			return got, status.Error(codes.Unavailable, err.Error())
		}
		r.cur.Store(m)
		select {
		case <-r.ready:
		default:
			close(r.ready)
		}
		if f := rs.c.cfg.ReplicaLag; f != nil {
			f(r.show, m.Lag())
		}
	}
}

// apply returns the seat map prev becomes with msg: msg's snapshot, or
// prev with msg's changes. It refuses a message older than prev (a
// snapshot at a lower version, a batch at the same or a lower one):
// versions strictly increase across the show's owners (each take raises
// the epoch, which the versions start from), so such a message comes from a
// node that no longer owns the show, and the replica keeps its map.
func apply(prev *SeatMap, msg *pb.WatchSeatMapResponse, now time.Time) (*SeatMap, error) {
	if prev != nil {
		snapshot := len(msg.GetSnapshot()) > 0
		if v := msg.GetVersion(); v < prev.Version || (!snapshot && v == prev.Version) {
			return nil, fmt.Errorf("client: seat map of %s: a message at version %d, older than the replica's %d (from a node that no longer owns the show)", msg.GetShowId(), v, prev.Version)
		}
	}
	m := &SeatMap{
		ShowID:     msg.GetShowId(),
		Version:    msg.GetVersion(),
		Available:  int(msg.GetAvailable()),
		Held:       int(msg.GetHeld()),
		Booked:     int(msg.GetBooked()),
		Offered:    int(msg.GetOffered()),
		Waiting:    int(msg.GetWaiting()),
		ReceivedAt: now,
	}
	if msg.GetPublishedAt() != nil {
		m.PublishedAt = msg.GetPublishedAt().AsTime()
	}
	if snap := msg.GetSnapshot(); len(snap) > 0 {
		m.Statuses = snap
		return m, nil
	}
	if prev == nil {
		return nil, fmt.Errorf("client: seat map of %s: changes at version %d before any snapshot", msg.GetShowId(), msg.GetVersion())
	}
	idx, st := msg.GetSeatIndexes(), msg.GetStatuses()
	if len(idx) != len(st) {
		return nil, fmt.Errorf("client: seat map of %s: %d seat indexes, %d statuses", msg.GetShowId(), len(idx), len(st))
	}
	m.Statuses = slices.Clone(prev.Statuses)
	for i, p := range idx {
		if int(p) >= len(m.Statuses) {
			return nil, fmt.Errorf("client: seat map of %s: seat index %d of %d", msg.GetShowId(), p, len(m.Statuses))
		}
		m.Statuses[p] = st[i]
	}
	return m, nil
}
