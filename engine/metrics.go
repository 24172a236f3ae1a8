package engine

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// metrics are a node's collectors, registered on the node's Registerer so
// several nodes can live in one process. Labelled children on hot paths are
// cached, since WithLabelValues per call costs more than the increment: those
// of every hold, confirm and release and of every Pipeline call in arrays
// indexed by their labels, read without a lock (a map of children behind a
// mutex, looked up three times per call, was 5% of the engine's CPU in the
// hold storm); the rarer ones in maps.
type metrics struct {
	rpcRequests *prometheus.CounterVec
	rpcLatency  *prometheus.HistogramVec
	ops         *prometheus.CounterVec
	batchSize   prometheus.Histogram
	commitTime  prometheus.Histogram
	batchErrors prometheus.Counter
	failedMuts  prometheus.Counter
	showsLoaded prometheus.Gauge
	evictions   prometheus.Counter

	forwarded prometheus.Counter
	// forwardConns counts the open connections to other nodes for
	// forwarded calls.
	forwardConns prometheus.Gauge
	// holdWaits counts holds that waited for a write in flight before
	// they were decided.
	holdWaits prometheus.Counter
	// pipeRecv and pipeSent count Pipeline messages: batches of calls
	// received, batches of answers sent.
	pipeRecv, pipeSent prometheus.Counter
	members            prometheus.Gauge
	showsOwned         prometheus.Gauge
	ownerships         *prometheus.CounterVec
	ringChanges        prometheus.Counter
	fenced             prometheus.Counter
	loadTime           prometheus.Histogram

	waiting         prometheus.Gauge
	longestWaitlist prometheus.Gauge
	waitOps         *prometheus.CounterVec
	// The waiting rooms of this node's shows.
	roomQueued, roomShoppers prometheus.Gauge
	roomEvents               *prometheus.CounterVec
	roomWait                 prometheus.Histogram
	waitToTurn               prometheus.Histogram

	opCounts  [numOps][numResults]lazyCounter
	pipeCalls [numPipeKinds][numCodes]lazyCounter
	pipeTimes [numPipeKinds]lazyObserver

	mu       sync.Mutex // guards children and latency
	children map[[3]string]prometheus.Counter
	latency  map[string]prometheus.Observer
}

// lazyCounter is a labelled child made on its first use.
type lazyCounter struct {
	p atomic.Pointer[prometheus.Counter]
}

// get returns the child of vec with labels a and b. Two first uses at once
// may both call WithLabelValues, which returns the same child to both.
func (l *lazyCounter) get(vec *prometheus.CounterVec, a, b string) prometheus.Counter {
	if c := l.p.Load(); c != nil {
		return *c
	}
	c := vec.WithLabelValues(a, b)
	l.p.Store(&c)
	return c
}

// lazyObserver is lazyCounter's twin for a histogram's child.
type lazyObserver struct {
	p atomic.Pointer[prometheus.Observer]
}

func (l *lazyObserver) get(vec *prometheus.HistogramVec, a string) prometheus.Observer {
	if o := l.p.Load(); o != nil {
		return *o
	}
	o := vec.WithLabelValues(a)
	l.p.Store(&o)
	return o
}

// opKind is the op label of boxoffice_reservation_ops_total.
type opKind uint8

const (
	opHold opKind = iota
	opConfirm
	opRelease
	opExpire
	numOps
)

func (k opKind) String() string {
	switch k {
	case opHold:
		return "hold"
	case opConfirm:
		return "confirm"
	case opRelease:
		return "release"
	default:
		return "expire"
	}
}

// resultKind is the result label of boxoffice_reservation_ops_total.
type resultKind uint8

const (
	resOK resultKind = iota
	resSeatTaken
	resUserLimit
	resOverloaded
	resDBUnavailable
	resOutcomeUnknown
	resNotOwner
	resConflict
	resRefused
	numResults
)

func (r resultKind) String() string {
	switch r {
	case resOK:
		return "ok"
	case resSeatTaken:
		return "seat_taken"
	case resUserLimit:
		return "user_limit"
	case resOverloaded:
		return "overloaded"
	case resDBUnavailable:
		return "db_unavailable"
	case resOutcomeUnknown:
		return "outcome_unknown"
	case resNotOwner:
		return "not_owner"
	case resConflict:
		return "conflict"
	default:
		return "refused"
	}
}

// pipeKind is the kind of a Pipeline call, whose method label is
// "Pipeline." and the unary RPC's name.
type pipeKind uint8

const (
	pipeHold pipeKind = iota
	pipeConfirm
	pipeRelease
	pipeJoin
	pipeOther // a call of no known kind, refused
	numPipeKinds
)

func (k pipeKind) String() string {
	switch k {
	case pipeHold:
		return "Pipeline.HoldSeats"
	case pipeConfirm:
		return "Pipeline.ConfirmHold"
	case pipeRelease:
		return "Pipeline.ReleaseHold"
	case pipeJoin:
		return "Pipeline.JoinQueue"
	default:
		return "Pipeline"
	}
}

// numCodes is the number of gRPC codes, OK to Unauthenticated.
const numCodes = int(codes.Unauthenticated) + 1

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "boxoffice_rpc_requests_total", Help: "RPCs served, by method and gRPC code.",
		}, []string{"method", "code"}),
		rpcLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "boxoffice_rpc_duration_seconds", Help: "RPC latency, by method.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"method"}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "boxoffice_reservation_ops_total", Help: "Holds, confirms, releases and expiries, by result.",
		}, []string{"op", "result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "boxoffice_writer_batch_mutations", Help: "Mutations per writer transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "boxoffice_writer_commit_seconds", Help: "Writer transaction latency.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}),
		failedMuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_writer_failed_mutations_total",
			Help: "Writes answered with an error: refused by the database, fenced off (ownership moved), or in a failed transaction.",
		}),
		batchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_writer_batch_errors_total", Help: "Writer transactions that failed.",
		}),
		showsLoaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_shows_loaded", Help: "Shows served from this node's memory.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_shows_evicted_total", Help: "Idle shows evicted from memory.",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_forwarded_calls_total", Help: "Calls for shows owned by another node, forwarded to it.",
		}),
		forwardConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_forward_connections", Help: "Open connections to other nodes for forwarded calls; those to nodes that left the ring are closed.",
		}),
		holdWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_hold_waits_total",
			Help: "Hold attempts that waited for a write in flight (another hold of their seats, the release that gave a turn, their own key's first attempt) to commit before they were decided.",
		}),
		ownerships: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "boxoffice_ownership_events_total",
			Help: "Show ownership: takes, releases (hand-offs), losses (found taken by another node), failed renewals, lapses (dropped when the lease may run out after failed renewals).",
		}, []string{"event"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_ring_members", Help: "Members in this node's ring (1 for a node alone).",
		}),
		showsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_shows_owned", Help: "Shows whose lease this node renewed last time.",
		}),
		ringChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_ring_changes_total", Help: "Changes of the ring's member set seen by this node.",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "boxoffice_fenced_writes_total", Help: "Writes refused because the show's ownership epoch moved (another node owns it).",
		}),
		loadTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "boxoffice_show_replay_seconds", Help: "Time to take a show and replay it from the database.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_waitlist_users", Help: "Users on the waitlists of this node's shows, waiting or holding a turn.",
		}),
		longestWaitlist: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_waitlist_longest", Help: "Users on the longest waitlist of this node's shows.",
		}),
		waitOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "boxoffice_waitlist_events_total",
			Help: "Waitlist joins (by result), turns, and ends by reason (done, lapsed, left, sold_out, timed_out).",
		}, []string{"event", "result"}),
		waitToTurn: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "boxoffice_waitlist_wait_seconds", Help: "Time from a waitlist join to the user's turn.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 20),
		}),
		roomQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_room_queued_users", Help: "Users queued in the waiting rooms of this node's shows.",
		}),
		roomShoppers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "boxoffice_room_shoppers", Help: "Admitted users counted as shopping in the waiting rooms of this node's shows.",
		}),
		roomEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "boxoffice_room_events_total",
			Help: "Waiting room events: joined, admitted, and ends by reason (left, lapsed, done, sold_out).",
		}, []string{"event"}),
		roomWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "boxoffice_room_wait_seconds", Help: "Time from a waiting room join to the admission.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 20),
		}),
		children: make(map[[3]string]prometheus.Counter),
		latency:  make(map[string]prometheus.Observer),
	}
	pipeMsgs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "boxoffice_pipeline_messages_total",
		Help: "Pipeline stream messages: received (each a batch of calls) and sent (each a batch of answers). The Pipeline.* RPC counts over these are the calls per message.",
	}, []string{"direction"})
	m.pipeRecv, m.pipeSent = pipeMsgs.WithLabelValues("received"), pipeMsgs.WithLabelValues("sent")
	for _, c := range []prometheus.Collector{pipeMsgs, m.rpcRequests, m.rpcLatency, m.ops, m.batchSize, m.commitTime, m.batchErrors, m.failedMuts, m.showsLoaded, m.evictions,
		m.waiting, m.longestWaitlist, m.waitOps, m.waitToTurn, m.roomQueued, m.roomShoppers, m.roomEvents, m.roomWait,
		m.forwarded, m.forwardConns, m.holdWaits, m.ownerships, m.ringChanges, m.fenced, m.loadTime, m.members, m.showsOwned} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ObserveBatch records a writer transaction; it is the store's Observer.
func (n *Node) ObserveBatch(b persistence.BatchStats) {
	n.metrics.batchSize.Observe(float64(b.Mutations))
	n.metrics.commitTime.Observe(b.Duration.Seconds())
	if b.Err != nil {
		n.metrics.batchErrors.Inc()
	}
	n.metrics.failedMuts.Add(float64(b.Failed))
	n.metrics.fenced.Add(float64(b.Fenced))
}

func (m *metrics) counter(vec *prometheus.CounterVec, name, a, b string) prometheus.Counter {
	key := [3]string{name, a, b}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.children[key]
	if !ok {
		c = vec.WithLabelValues(a, b)
		m.children[key] = c
	}
	return c
}

func (m *metrics) rpc(method, code string, d time.Duration) {
	m.counter(m.rpcRequests, "rpc", method, code).Inc()
	m.mu.Lock()
	o, ok := m.latency[method]
	if !ok {
		o = m.rpcLatency.WithLabelValues(method)
		m.latency[method] = o
	}
	m.mu.Unlock()
	o.Observe(d.Seconds())
}

// pipeCall counts a Pipeline call of kind k answered with code after d.
func (m *metrics) pipeCall(k pipeKind, code codes.Code, d time.Duration) {
	if int(code) >= numCodes {
		m.rpc(k.String(), code.String(), d)
		return
	}
	m.pipeCalls[k][code].get(m.rpcRequests, k.String(), code.String()).Inc()
	m.pipeTimes[k].get(m.rpcLatency, k.String()).Observe(d.Seconds())
}

func (m *metrics) op(k opKind, err error) {
	r := resultOf(err)
	m.opCounts[k][r].get(m.ops, k.String(), r.String()).Inc()
}

func (m *metrics) holds(err error)    { m.op(opHold, err) }
func (m *metrics) confirms(err error) { m.op(opConfirm, err) }
func (m *metrics) releases(err error) { m.op(opRelease, err) }
func (m *metrics) expiries(err error) { m.op(opExpire, err) }

func (m *metrics) ownership(event string) {
	m.ownerships.WithLabelValues(event).Inc() // rare: no cached child needed
}

func (m *metrics) waitJoins(err error) {
	r := "ok"
	switch {
	case errors.Is(err, wu.ErrSeatsAvailable):
		r = "seats_available"
	case errors.Is(err, wu.ErrSoldOut):
		r = "sold_out"
	case errors.Is(err, wu.ErrUserLimit):
		r = "user_limit"
	case errors.Is(err, ErrWaitlistFull):
		r = "full"
	case err != nil:
		r = resultOf(err).String()
	}
	m.counter(m.waitOps, "wait", "join", r).Inc()
}

func (m *metrics) waitTurn(waited time.Duration) {
	m.counter(m.waitOps, "wait", "turn", "ok").Inc()
	m.waitToTurn.Observe(waited.Seconds())
}

func (m *metrics) waitEnded(r wu.Reason) {
	m.counter(m.waitOps, "wait", strings.ToLower(r.String()), "ok").Inc()
}

func resultOf(err error) resultKind {
	switch {
	case err == nil:
		return resOK
	case errors.Is(err, ar.ErrSeatTaken):
		return resSeatTaken
	case errors.Is(err, ar.ErrUserLimit):
		return resUserLimit
	case errors.Is(err, persistence.ErrOverloaded):
		return resOverloaded
	case errors.Is(err, persistence.ErrUnavailable):
		return resDBUnavailable
	case errors.Is(err, persistence.ErrOutcomeUnknown):
		return resOutcomeUnknown
	case errors.Is(err, persistence.ErrNotOwner):
		return resNotOwner
	case errors.Is(err, persistence.ErrConflict):
		return resConflict
	default:
		return resRefused
	}
}

// room counts n waiting room events of one kind.
func (m *metrics) room(event string, n int) {
	if n > 0 {
		m.roomEvents.WithLabelValues(event).Add(float64(n))
	}
}
