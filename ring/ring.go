// Package ring tells every node of a boxoffice cluster which node owns a
// show.
//
// Membership is gossip (hashicorp/memberlist): each node runs one memberlist
// instance, joins the others by address, and gossips its name and, in its
// metadata, its gRPC address. Failure detection is tuned for a LAN (see
// Config): a crashed node is dropped by its peers in about a second, a node
// that leaves gracefully at once.
//
// Ownership is consistent hashing with bounded loads (buraksezer/consistent
// v1.0.0 with xxhash) of the show ID over the names of the live members
// (alive, or suspected but not yet declared dead): the show ID hashes to one
// of PartitionCount partitions, and each partition has one owner. The ring is
// rebuilt from scratch on every membership change, so two nodes that see the
// same members compute the same owners, and adding a node then removing it
// restores the previous owners exactly. Nodes that disagree about the members
// (for the second or so gossip takes, or across a partition) can disagree
// about owners; the engine's leases in Postgres, not this package, keep two
// nodes from serving one show.
//
// Concurrency: memberlist's callbacks only record the event and wake one
// goroutine, which rebuilds the ring and publishes it as an immutable View
// through an atomic pointer. Readers (Owner, Members, View...) never lock and
// never wait for gossip. A second goroutine retries unreachable members (see
// Config.ReconnectInterval). Both end at Leave or Shutdown.
package ring

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist settings the Config does not expose.
const (
	// deadNodeReclaimTime lets a node restarted under its name on another
	// address be accepted once its old incarnation has been dead this long
	// (memberlist's default, 0, refuses it forever).
	deadNodeReclaimTime = time.Second
	// tcpTimeout bounds a push/pull (join, anti-entropy) and so also how long
	// Leave and Shutdown may wait for a reconnect attempt in flight.
	tcpTimeout = time.Second
	// pushPullInterval is memberlist's periodic full-state exchange, the
	// backstop for lost gossip (LAN default 30 s). Gossip was seen to miss a
	// join now and then on a loaded 2-core machine, leaving one node's ring
	// behind until the next exchange; with clusters of a handful of nodes an
	// exchange every 2 s costs next to nothing.
	pushPullInterval = 2 * time.Second
)

// Ring is this node's membership and its view of show ownership. Create it
// with New; its methods are safe for concurrent use. Readers get the View
// last published by the rebuild goroutine; after Leave or Shutdown that view
// stays as it was.
type Ring struct {
	cfg      Config
	log      *slog.Logger
	ml       *memberlist.Memberlist
	d        *delegate
	self     Member // as of New; GossipAddr is the address actually bound
	join     []string
	view     atomic.Pointer[View]
	changes  chan struct{}
	joined   bool          // set in New, before the Ring is shared
	quit     chan struct{} // closed by Leave or Shutdown
	rebuilt  sync.WaitGroup
	reconned sync.WaitGroup

	stopMu  sync.Mutex // guards stopped; serializes Leave and Shutdown
	stopped bool
}

// New validates cfg.WithDefaults(), starts memberlist and joins cfg.Join,
// retrying with backoff until one of them answers or cfg.JoinTimeout runs out
// (then it stops everything and returns an error wrapping ErrJoinFailed).
// When it returns, the ring already includes the members learnt from the
// join. With an empty cfg.Join the node is alone until others join it.
func New(cfg Config) (*Ring, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := cfg.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	base = base.With("node", cfg.Name)
	log := base.With("component", "ring")

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = ""
	mc.AdvertisePort = cfg.BindPort
	mc.Transport = cfg.Transport
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	mc.TCPTimeout = tcpTimeout
	mc.PushPullInterval = pushPullInterval
	mc.Logger = slog.NewLogLogger(base.With("component", "memberlist").Handler(), slog.LevelDebug)
	if cfg.SecretKey != nil {
		kr, err := memberlist.NewKeyring(nil, cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("%w: SecretKey: %v", ErrInvalidConfig, err)
		}
		mc.Keyring = kr
	}
	d := newDelegate(cfg.Name, cfg.GRPCAddr)
	mc.Delegate = d
	mc.Events = d
	mc.Merge = d

	ml, err := memberlist.Create(mc)
	if err != nil {
		if cfg.Transport != nil {
			_ = cfg.Transport.Shutdown()
		}
		return nil, fmt.Errorf("ring: start memberlist: %w", err)
	}
	self, ok := d.selfRecord() // memberlist announced itself in Create
	if !ok {
		_ = ml.Shutdown()
		return nil, fmt.Errorf("ring: memberlist did not report this node")
	}
	r := &Ring{
		cfg:     cfg,
		log:     log,
		ml:      ml,
		d:       d,
		self:    self,
		changes: make(chan struct{}, 1),
		quit:    make(chan struct{}),
	}
	for _, j := range cfg.Join {
		if j != self.GossipAddr && !slices.Contains(r.join, j) {
			r.join = append(r.join, j)
		}
	}
	if len(r.join) > 0 {
		if err := r.joinWithin(cfg.JoinTimeout); err != nil {
			_ = ml.Shutdown()
			return nil, err
		}
	}
	r.joined = true
	r.rebuild()
	r.rebuilt.Add(1)
	go r.rebuildLoop()
	r.reconned.Add(1)
	go r.reconnectLoop()
	log.Info("ring started", "gossip_addr", self.GossipAddr, "grpc_addr", self.GRPCAddr, "members", len(r.View().members))
	return r, nil
}

// joinWithin retries memberlist's Join with backoff until one address answers.
func (r *Ring) joinWithin(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	backoff := 50 * time.Millisecond
	for {
		n, err := r.ml.Join(r.join)
		if n > 0 {
			return nil
		}
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			return fmt.Errorf("%w: none of %v answered within %v: %v", ErrJoinFailed, r.join, timeout, err)
		}
		r.log.Debug("join failed, retrying", "in", wait, "err", err)
		t := time.NewTimer(wait)
		<-t.C
		backoff = min(2*backoff, time.Second)
	}
}

// rebuildLoop is the one goroutine that rebuilds and publishes the ring.
func (r *Ring) rebuildLoop() {
	defer r.rebuilt.Done()
	for {
		select {
		case <-r.quit:
			return
		case <-r.d.kick:
			r.rebuild()
		}
	}
}

// rebuild publishes a View built from the current members. It runs on the
// rebuild goroutine only (and once in New before that starts).
func (r *Ring) rebuild() {
	live, all := r.d.snapshot(time.Now(), r.cfg.ReconnectTimeout)
	self, ok := r.d.selfRecord()
	if !ok {
		self = r.self
	}
	// This node is always in its own ring, even while leaving or after a
	// partition made every peer unreachable.
	if i, found := slices.BinarySearchFunc(live, self, byName); !found {
		live = slices.Insert(live, i, self)
	}
	if i, found := slices.BinarySearchFunc(all, self, byName); !found {
		all = slices.Insert(all, i, self)
	}
	prev := r.view.Load()
	var version uint64 = 1
	if prev != nil {
		version = prev.version + 1
	}
	v := buildView(version, r.cfg.Name, live, all, r.cfg)
	r.view.Store(v)
	if prev == nil || sameMembers(prev.members, v.members) {
		return
	}
	names := make([]string, len(v.members))
	for i, m := range v.members {
		names[i] = m.Name
	}
	r.log.Info("ring changed", "version", version, "members", names)
	select {
	case r.changes <- struct{}{}:
	default:
	}
}

// reconnectLoop retries members this node believes dead: memberlist itself
// never contacts a dead member again, so after a partition heals each side
// would keep the other dead forever. A successful push/pull makes both sides
// refute their deaths. While the node has no live peer it also retries
// cfg.Join, and when a peer was seen holding a stale record of this node
// (see delegate.staleSelf) it pushes its state to every live peer again.
func (r *Ring) reconnectLoop() {
	defer r.reconned.Done()
	t := time.NewTicker(r.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
		}
		if r.d.expired(time.Now(), r.cfg.ReconnectTimeout) {
			r.d.wake() // the rebuild forgets them
		}
		dead, alive, self := r.d.reconnectTargets()
		targets := dead
		if len(alive) == 0 {
			targets = append(targets, r.join...)
		}
		if r.d.staleSelf.Swap(false) {
			targets = append(targets, alive...)
			targets = append(targets, r.join...)
		}
		slices.Sort(targets)
		for _, a := range slices.Compact(targets) {
			if a == self {
				continue
			}
			select {
			case <-r.quit:
				return
			default:
			}
			if _, err := r.ml.Join([]string{a}); err == nil {
				r.log.Debug("reconnected", "addr", a)
			}
		}
	}
}

// View returns the current ring. It never locks.
func (r *Ring) View() *View { return r.view.Load() }

// Owner returns the owner of showID in the current ring: this node or a
// live peer. It never locks nor allocates.
func (r *Ring) Owner(showID string) Member { return r.view.Load().Owner(showID) }

// Self returns this node as the current ring has it.
func (r *Ring) Self() Member { return r.view.Load().Self() }

// Members returns the members in the current ring (alive, or suspected but
// not yet declared dead), sorted by name. It always includes this node.
func (r *Ring) Members() []Member { return r.view.Load().Members() }

// Status returns every member this node knows, with its state (alive, dead
// or left), sorted by name, for an operator's status page. Dead and left
// members stay listed for Config.ReconnectTimeout.
func (r *Ring) Status() []Member { return r.view.Load().Status() }

// Partitions returns the number of partitions each member of the current
// ring owns.
func (r *Ring) Partitions() map[string]int { return r.view.Load().Partitions() }

// Version increases with every rebuild of the ring on this node.
func (r *Ring) Version() uint64 { return r.view.Load().version }

// Changes receives after a rebuild that changed the set of members (their
// names or addresses). Signals coalesce (buffer 1): after a receive, read the
// current ring. Made for one consumer, the engine. It is never closed.
func (r *Ring) Changes() <-chan struct{} { return r.changes }

// Joined reports whether this node has joined a cluster or is alone by
// configuration (empty Config.Join). New returns only a joined Ring, so it
// is true for every Ring; it stays true after a partition or Leave.
func (r *Ring) Joined() bool { return r.joined }

// GossipAddr returns the gossip address (host:port) actually bound, to be
// given to other nodes' Config.Join.
func (r *Ring) GossipAddr() string { return r.self.GossipAddr }

// Leave leaves the cluster gracefully and stops the node: it marks its
// metadata as leaving, broadcasts memberlist's leave (peers drop the node at
// once, and Status shows it as left) and shuts memberlist down. timeout
// bounds each of the two broadcasts; when one times out Leave still stops the
// node and returns the error (peers then detect it as a crash). Leave and
// Shutdown are idempotent: after either, Leave returns nil and does nothing.
func (r *Ring) Leave(timeout time.Duration) error {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	// Stop reconnecting first: a push/pull after the leave would announce
	// this node alive again.
	close(r.quit)
	r.reconned.Wait()

	r.d.leaving.Store(true)
	if err := r.ml.UpdateNode(timeout); err != nil {
		r.log.Debug("leaving flag not broadcast", "err", err)
	}
	err := r.ml.Leave(timeout)
	if serr := r.ml.Shutdown(); err == nil {
		err = serr
	}
	r.rebuilt.Wait()
	r.log.Info("ring left")
	if err != nil {
		return fmt.Errorf("ring: leave: %w", err)
	}
	return nil
}

// Shutdown stops the node abruptly, without telling its peers: to them it
// looks like a crash. It is idempotent, never panics, and returns once the
// Ring's goroutines have ended (within about a second if a reconnect attempt
// was in flight).
func (r *Ring) Shutdown() error {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	close(r.quit)
	r.reconned.Wait()
	err := r.ml.Shutdown()
	r.rebuilt.Wait()
	r.log.Info("ring shut down")
	return err
}
