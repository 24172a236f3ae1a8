package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// WatchSeatMap fans one show's seat changes out to many streams. Each
// loaded show with watchers has one publisher: a goroutine that looks at
// the show's seat-map version every watchInterval and, when it moved,
// diffs the statuses against the ones it last published and encodes the
// difference once, as one batch in a ring of the last watchRing batches.
// Every watcher of the show sends the same encoded batches, so a thousand
// watchers cost one diff and one encoding per batch, not a thousand.
//
// A watcher that falls more than watchRing batches behind (its client
// reads too slowly) skips what it missed and gets a snapshot instead, so
// the memory a show's watchers hold is the ring's, whatever the clients do.
//
// Rejected: a bounded channel per watcher. It costs the publisher a send
// per watcher per batch and a watcher's backlog per watcher; the shared
// ring costs one append per batch, and closing one channel wakes them all.

const (
	// watchInterval is how often a publisher of a show with at most
	// fanoutWatchers watchers looks for a change: the longest a change
	// waits before its watchers are sent it, and the coalescing window of a
	// batch. A batch costs one send per watcher, so a show with more
	// watchers is looked at less often, in proportion, up to
	// maxWatchInterval (see publishInterval): a thousand watchers cost a
	// tenth of the sends they would at watchInterval, and a change still
	// reaches them within maxWatchInterval.
	watchInterval    = 5 * time.Millisecond
	maxWatchInterval = 50 * time.Millisecond
	fanoutWatchers   = 100
	// watchRing is how many batches a publisher keeps for watchers that
	// are behind; one further behind gets a snapshot.
	watchRing = 64
	// maxSeatMapWatchers is the most WatchSeatMap streams a node serves at
	// once; one beyond is refused OVERLOADED.
	maxSeatMapWatchers = 100_000
)

// WatchSeatMap sends the show's seat map (unless since_version is its
// current version, or, while the show has other watchers, the version of
// one of its last 64 batches: then the batches since), then each batch of
// changes, in order, until the client
// cancels (CANCELED), the server shuts down (Unavailable SHUTTING_DOWN) or
// the show cannot be served here any more (its error, as GetSeatMap would
// answer it: SHOW_MOVED to another owner, ...). Versions strictly
// increase; a batch applied to the map of the previous message gives the
// map at its version. When the show is reloaded (ownership lost and taken
// back, memory found stale), the stream goes on from the reloaded show with
// a snapshot. An unknown or invalid show is refused as GetSeatMap refuses
// it.
//
// The response headers are sent once the watch is in place (with the
// snapshot, or at once when there is none), so a client that waits for
// them misses no change made after; a node that relays the stream to the
// show's owner sends them with the first message instead. The counts are
// those at the message's version, except waiting, which is the waitlist's
// length when that version was published: a waitlist change that moves no
// seat sends nothing. A snapshot's published_at is when the show was last
// found at its version, a batch's when the batch was published (the last
// batch of a resume's: as a snapshot's).
//
// At Shutdown a stream ends at once unless it is blocked in a send because
// its client stopped reading (the flow-control windows are full): that one
// ends when the server cuts the connections, as Shutdown's context ends.
func (s *reservationServer) WatchSeatMap(req *pb.WatchSeatMapRequest, stream pb.ReservationService_WatchSeatMapServer) error {
	id := ar.ShowID(req.GetShowId())
	if err := validateShowID(id); err != nil {
		return toStatus(err)
	}
	if err := s.watch.join(); err != nil {
		return toStatus(err)
	}
	defer s.watch.leave()
	// Shutdown ends the stream also while it waits for its show to be
	// loaded again (after a loss of its lease, a reload), which can take
	// AcquireWait or LoadTimeout.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(s.watch.life, cancel)()
	shuttingDown := func(err error) error {
		if s.watch.life.Err() != nil {
			return toStatus(fmt.Errorf("watch: %w", ErrShuttingDown))
		}
		return err
	}
	since := req.GetSinceVersion()
	for {
		sh, err := s.watch.find(ctx, id)
		if err != nil {
			return shuttingDown(toStatus(err))
		}
		p := s.watch.subscribe(sh)
		var ended bool
		since, ended, err = p.serve(ctx, stream, since)
		if ended {
			s.watch.forget(p)
		}
		s.watch.unsubscribe(p)
		if err != nil {
			return shuttingDown(err)
		}
	}
}

// seatMapHub is a node's WatchSeatMap side: its watchers and, for each
// show object that has watchers, their publisher.
//
// Memory: at most max watchers; a publisher lives while it has watchers
// and its show is not dropped, and keeps watchRing batches.
type seatMapHub struct {
	n    *Node
	life context.Context // ends at Shutdown: the streams end, then their publishers
	max  int

	watching   prometheus.Gauge
	publishing prometheus.Gauge
	lagged     prometheus.Counter

	mu       sync.Mutex // guards watchers, pubs and every publisher's watchers
	watchers int
	pubs     map[*show]*seatMapPublisher
}

// newSeatMapHub returns the WatchSeatMap side of n, whose streams end when
// life does. Its collectors register on n's Registerer; where another hub
// of n registered them (a second server for one node), it shares them.
func newSeatMapHub(n *Node, life context.Context) *seatMapHub {
	h := &seatMapHub{
		n: n, life: life, max: maxSeatMapWatchers,
		pubs: make(map[*show]*seatMapPublisher),
		watching: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_seatmap_watchers", Help: "Open WatchSeatMap streams.",
		}),
		publishing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_seatmap_publishers", Help: "Shows whose seat map is being published to watchers (one publisher each).",
		}),
		lagged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_seatmap_watch_lagged_total",
			Help: "Times a WatchSeatMap stream fell too far behind and was sent a snapshot instead of the changes it missed.",
		}),
	}
	h.watching = registerWatchMetric(n, h.watching)
	h.publishing = registerWatchMetric(n, h.publishing)
	h.lagged = registerWatchMetric(n, h.lagged)
	return h
}

// registerWatchMetric registers c on n's Registerer and returns it, or the collector
// registered before it under its name. A collector it cannot register is
// still counted, just not served.
func registerWatchMetric[C prometheus.Collector](n *Node, c C) C {
	err := n.cfg.Registerer.Register(c)
	var dup prometheus.AlreadyRegisteredError
	switch {
	case errors.As(err, &dup):
		if old, ok := dup.ExistingCollector.(C); ok {
			return old
		}
		fallthrough
	case err != nil:
		n.cfg.Logger.Warn("seat-map watch metrics not served", "err", err)
	}
	return c
}

// join counts a new watcher: ErrOverloaded when max are watching.
func (h *seatMapHub) join() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watchers >= h.max {
		return fmt.Errorf("%w: %d seat-map watchers", ErrOverloaded, h.watchers)
	}
	h.watchers++
	h.watching.Inc()
	return nil
}

func (h *seatMapHub) leave() {
	h.mu.Lock()
	h.watchers--
	h.watching.Dec()
	h.mu.Unlock()
}

// find returns the show to watch, loading it if needed as GetSeatMap does.
// A show found dropped (it is being reloaded or left memory) is reloaded,
// as a change would reload it: its watchers follow its successor.
func (h *seatMapHub) find(ctx context.Context, id ar.ShowID) (*show, error) {
	sh, err := h.n.show(ctx, id, false)
	if err != nil {
		return nil, err
	}
	sh.mu.Lock()
	dropped := sh.dropped
	sh.mu.Unlock()
	if dropped {
		return h.n.show(ctx, id, true)
	}
	return sh, nil
}

// subscribe adds a watcher to sh's publisher, starting one if sh has none.
func (h *seatMapHub) subscribe(sh *show) *seatMapPublisher {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pubs[sh]
	if p == nil {
		p = &seatMapPublisher{hub: h, sh: sh, stop: make(chan struct{}), changed: make(chan struct{})}
		h.pubs[sh] = p
		h.publishing.Inc()
		go p.run()
	}
	p.watchers++
	return p
}

// unsubscribe removes a watcher of p; the last one stops p.
func (h *seatMapHub) unsubscribe(p *seatMapPublisher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p.watchers--
	if p.watchers == 0 {
		h.removeLocked(p)
	}
}

// forget removes p, whose show was dropped, so that no watcher joins it.
func (h *seatMapHub) forget(p *seatMapPublisher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(p)
}

// removeLocked removes p from the publishers and stops it, once. h.mu must
// be held.
func (h *seatMapHub) removeLocked(p *seatMapPublisher) {
	if h.pubs[p.sh] != p {
		return
	}
	delete(h.pubs, p.sh)
	h.publishing.Dec()
	close(p.stop)
}

// seatMapPublisher publishes one show object's seat map to its watchers.
//
// Exactness: batch k is the difference between the statuses published at
// k-1 and at k, and a snapshot is always of the last published state (at
// batch seq), so a watcher that starts from a snapshot or from a version
// equal to it and then applies batches seq+1, seq+2, ... has the map at
// each batch's version. A watcher's first poll publishes what changed up
// to then, so it starts from the show's current version.
//
// Concurrency: its goroutine (run) and its watchers share it under mu;
// mu is taken before sh.mu, never after, and no I/O happens under either.
type seatMapPublisher struct {
	hub      *seatMapHub
	sh       *show
	stop     chan struct{} // closed when the hub removes it
	watchers int           // guarded by hub.mu

	mu    sync.Mutex // guards everything below
	ended bool       // the show was dropped: the watchers move on to its successor
	// seq counts the batches published; batch s is at ring[s%watchRing].
	seq  uint64
	ring [watchRing]watchMsg
	// last is batch seq's message before its encoding, for a resume that
	// sends it as of checked (see batchesSinceLocked).
	last *pb.WatchSeatMapResponse
	// state is the seat map as last published (Statuses nil until the
	// first poll), with the waitlist's length then.
	state   ar.SeatMap
	waiting int
	// published is when state was published (the node's clock); checked
	// when a poll last found it current, which a snapshot says it is as of.
	published, checked time.Time
	// snap is the encoded snapshot of state as of snapAt; zero until a
	// watcher needs it.
	snap   watchMsg
	snapAt time.Time
	// changed is closed at the next batch, or when ended is set.
	changed chan struct{}
}

// watchMsg is an encoded message and the version it brings a map to.
type watchMsg struct {
	version uint64
	wire    *pb.WatchSeatMapResponse
}

// publishInterval is how often a publisher with w watchers looks for a
// change (see watchInterval).
func publishInterval(w int) time.Duration {
	if w <= fanoutWatchers {
		return watchInterval
	}
	return min(watchInterval*time.Duration(w)/fanoutWatchers, maxWatchInterval)
}

// run polls the show every publishInterval until the hub stops the
// publisher (its last watcher left), the show is dropped, or the server
// shuts down. A watched show counts as used, so it is not evicted as idle.
// No WaitGroup tracks it: it ends as its last watcher leaves (a stream,
// which the server's stop waits for) or as life ends, and touches nothing
// but memory.
func (p *seatMapPublisher) run() {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	every := watchInterval
	for {
		select {
		case <-t.C:
		case <-p.stop:
			return
		case <-p.hub.life.Done():
			return
		}
		p.hub.n.dropIfLapsed(p.sh) // its watchers then look for it anew
		p.mu.Lock()
		p.pollLocked()
		ended := p.ended
		p.mu.Unlock()
		if ended {
			p.hub.forget(p)
			return
		}
		p.hub.n.touch(p.sh)
		p.hub.mu.Lock()
		w := p.watchers
		p.hub.mu.Unlock()
		if d := publishInterval(w); d != every {
			every = d
			t.Reset(every)
		}
	}
}

// pollLocked publishes the show's changes since the last poll as a batch,
// or ends the publisher if the show was dropped. p.mu must be held.
func (p *seatMapPublisher) pollLocked() {
	if p.ended {
		return
	}
	sh := p.sh
	sh.mu.Lock()
	dropped := sh.dropped
	moved := !dropped && (p.state.Statuses == nil || sh.rules.Version() != p.state.Version)
	var sm ar.SeatMap
	var waiting int
	if moved {
		sm = sh.rules.SharedSeatMap() // immutable: later changes copy
		waiting = sh.wait.rules.Len()
	}
	sh.mu.Unlock()
	if dropped {
		p.ended = true
		close(p.changed)
		return
	}
	now := p.hub.n.now()
	if !moved {
		p.checked = now
		return
	}
	if p.state.Statuses != nil {
		m := watchMessage(sh.id, sm, waiting, now)
		m.SeatIndexes, m.Statuses = diffStatuses(p.state.Statuses, sm.Statuses)
		p.seq++
		p.ring[p.seq%watchRing] = watchMsg{version: sm.Version, wire: preEncoded(m)}
		p.last = m
		close(p.changed)
		p.changed = make(chan struct{})
	}
	p.state, p.waiting, p.published, p.checked, p.snap = sm, waiting, now, now, watchMsg{}
}

// snapshotLocked returns the encoded snapshot of the last published state,
// encoding it on first use after each poll. Its published_at is when a
// poll last found the state current, not when it was published: a show
// that has not changed for an hour has a current snapshot, which a
// replica starting from it must not count an hour behind. p.mu must be
// held.
func (p *seatMapPublisher) snapshotLocked() watchMsg {
	if p.snap.wire == nil || !p.snapAt.Equal(p.checked) {
		m := watchMessage(p.sh.id, p.state, p.waiting, p.checked)
		m.Snapshot = p.state.Statuses
		p.snap, p.snapAt = watchMsg{version: p.state.Version, wire: preEncoded(m)}, p.checked
	}
	return p.snap
}

// batchesSinceLocked appends to out the batches that bring a map at version
// since to the last published state, and reports whether the ring still
// holds them all. The last of them goes with published_at as of the last
// poll that found its version current, as a snapshot would, so a replica
// resuming on a quiet show does not count itself behind by the quiet. A
// watcher that reconnects after a moment to a show that other watchers keep
// published gets the seats that changed, not the whole map. p.mu must be
// held.
func (p *seatMapPublisher) batchesSinceLocked(since uint64, out []watchMsg) ([]watchMsg, bool) {
	if since == 0 {
		return out, false
	}
	oldest := uint64(1)
	if p.seq > watchRing {
		oldest = p.seq - watchRing + 1
	}
	for s := p.seq; s >= oldest && s > 0; s-- {
		if p.ring[s%watchRing].version == since {
			for k := s + 1; k < p.seq; k++ {
				out = append(out, p.ring[k%watchRing])
			}
			if s < p.seq {
				last := p.ring[p.seq%watchRing]
				if !p.published.Equal(p.checked) {
					m := proto.Clone(p.last).(*pb.WatchSeatMapResponse)
					m.PublishedAt = timestamppb.New(p.checked)
					last.wire = preEncoded(m)
				}
				out = append(out, last)
			}
			return out, true
		}
	}
	return out, false
}

// serve streams p's show to a watcher whose map is at version since (0:
// none; versions are not unique across shows, so a version of another show
// may be taken as one of this show's) until the stream or the server ends (the
// error to return) or the show is dropped (ended; the watcher moves on to
// its successor). It returns the version the watcher's map is at.
func (p *seatMapPublisher) serve(ctx context.Context, stream pb.ReservationService_WatchSeatMapServer, since uint64) (uint64, bool, error) {
	out := make([]watchMsg, 0, 8)
	p.mu.Lock()
	p.pollLocked()
	if p.ended {
		p.mu.Unlock()
		return since, true, nil
	}
	if since != p.state.Version {
		var ok bool
		if out, ok = p.batchesSinceLocked(since, out); !ok {
			out = append(out, p.snapshotLocked())
		}
	}
	next, wake := p.seq+1, p.changed
	p.mu.Unlock()
	if len(out) == 0 {
		// The watch is in place: tell a client that sent a current
		// since_version, which has no message to wait for. (Headers go
		// once; after a reload they went long ago.)
		_ = stream.SendHeader(nil)
	}
	for {
		for i, m := range out {
			if err := stream.Send(m.wire); err != nil {
				return since, false, err
			}
			since = m.version
			out[i] = watchMsg{}
		}
		out = out[:0]
		select {
		case <-wake:
		case <-ctx.Done():
			return since, false, toStatus(ctx.Err())
		case <-p.hub.life.Done():
			return since, false, toStatus(fmt.Errorf("watch: %w", ErrShuttingDown))
		}
		p.mu.Lock()
		if p.ended {
			p.mu.Unlock()
			return since, true, nil
		}
		if behind := p.seq + 1 - next; behind > watchRing {
			out = append(out, p.snapshotLocked())
			p.hub.lagged.Inc()
		} else {
			for s := next; s <= p.seq; s++ {
				out = append(out, p.ring[s%watchRing])
			}
		}
		next, wake = p.seq+1, p.changed
		p.mu.Unlock()
	}
}

// watchMessage returns a message with sm's version and counts, published
// at the given time.
func watchMessage(id ar.ShowID, sm ar.SeatMap, waiting int, published time.Time) *pb.WatchSeatMapResponse {
	return &pb.WatchSeatMapResponse{
		PublishedAt: timestamppb.New(published),
		ShowId:      string(id),
		Version:     sm.Version,
		Available:   int32(sm.Available),
		Held:        int32(sm.Held),
		Booked:      int32(sm.Booked),
		Offered:     int32(sm.Offered),
		Waiting:     int32(waiting),
	}
}

// diffStatuses returns the positions where cur differs from old (of the
// same length) and cur's bytes there. Equal 64-byte chunks are skipped with
// one comparison each, so a 15,000-seat map with a few changes costs about
// a microsecond.
func diffStatuses(old, cur []byte) ([]uint32, []byte) {
	const chunk = 64
	var idx []uint32
	var st []byte
	for i := 0; i < len(cur); i += chunk {
		j := min(i+chunk, len(cur))
		if bytes.Equal(old[i:j], cur[i:j]) {
			continue
		}
		for k := i; k < j; k++ {
			if old[k] != cur[k] {
				idx = append(idx, uint32(k))
				st = append(st, cur[k])
			}
		}
	}
	return idx, st
}

// preEncoded returns a message whose encoding is m's, encoded once: it
// carries m's wire bytes as unknown fields, which marshaling copies as
// they are. Any number of streams may send it at once (marshaling only
// reads a message; its cached size is stored atomically), and each
// stream's compression still applies. If m cannot be encoded, it returns m,
// and sending it fails as sending m would.
func preEncoded(m *pb.WatchSeatMapResponse) *pb.WatchSeatMapResponse {
	b, err := proto.Marshal(m)
	if err != nil {
		return m
	}
	out := &pb.WatchSeatMapResponse{}
	out.ProtoReflect().SetUnknown(b)
	return out
}
