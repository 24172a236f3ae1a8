// Package testcluster runs boxoffice nodes inside a test process, over real
// gRPC on loopback against a real PostgreSQL, for the engine's tests and
// the tests of packages built on it. It is test-only by convention: nothing
// outside tests imports it.
package testcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/wirecodec"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// Tokens the test nodes accept.
const (
	Token      = "test-token"
	AdminToken = "test-admin-token"
)

// Clock is a settable clock for tests; safe for concurrent use.
type Clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Options tune a test node. Zero values: node ID "node-1", the system clock,
// the engine's default expiry interval and health interval, the store's
// default settings.
type Options struct {
	NodeID         string
	Clock          engine.Clock
	ExpiryInterval time.Duration
	// HealthInterval is the server's ServerConfig.HealthInterval.
	HealthInterval time.Duration
	Store          persistence.Config // URL and NodeID are filled in
	// Engine, if set, adjusts the engine's Config (idle eviction, load
	// limits, ...) after the fields above are filled in.
	Engine func(*engine.Config)
	// Quiet discards the node's logs instead of sending them to t.Log.
	Quiet bool
	// Cluster, if set, makes the node a member of a ring (gossip on a free
	// loopback port) joining the members at Cluster.Join; nil: the node is
	// alone and owns every show.
	Cluster *ClusterOptions
}

// ClusterOptions make a test node a ring member.
type ClusterOptions struct {
	// Join are gossip addresses of members (Node.Ring.GossipAddr()).
	Join []string
	// Ring, if set, adjusts the ring's Config after the fields above are
	// filled in (a transport that can be cut, detection settings).
	Ring func(*ring.Config)
}

// Node is a running in-process node with a connected client.
type Node struct {
	Engine   *engine.Node
	Store    *persistence.Store
	Server   *engine.Server
	Registry *prometheus.Registry
	Conn     *grpc.ClientConn
	// Ring is the node's ring member; nil for a node alone.
	Ring *ring.Ring

	Catalog      pb.CatalogServiceClient
	Reservations pb.ReservationServiceClient
	Admin        pb.AdminServiceClient
	Waitlist     pb.WaitlistServiceClient
	Room         pb.WaitingRoomServiceClient

	stopOnce sync.Once
}

// Migrate applies the schema to the database at url.
func Migrate(t testing.TB, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := persistence.Migrate(ctx, url); err != nil {
		t.Fatalf("migrate: %v", err)
	}
}

// StartNode starts a node on the database at url (which must be migrated)
// with gRPC and HTTP on free loopback ports, and a client connected to it.
// The node stops at t.Cleanup.
func StartNode(t testing.TB, url string, opts Options) *Node {
	t.Helper()
	if opts.NodeID == "" {
		opts.NodeID = "node-1"
	}
	var log *slog.Logger
	if opts.Quiet {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	} else {
		log = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	n := &Node{Registry: prometheus.NewRegistry()}
	sc := opts.Store
	sc.URL, sc.NodeID, sc.Logger = url, opts.NodeID, log
	sc.Observer = func(b persistence.BatchStats) { n.Engine.ObserveBatch(b) }
	var err error
	n.Store, err = persistence.Open(context.Background(), sc)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	ecfg := engine.Config{
		NodeID: opts.NodeID, Clock: opts.Clock, ExpiryInterval: opts.ExpiryInterval,
		Logger: log, Registerer: n.Registry, AdmissionKey: AdmissionKey(),
	}
	var lis net.Listener
	if opts.Cluster != nil {
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("listen: %v", err)
		}
		rc := ring.Config{Name: opts.NodeID, GRPCAddr: lis.Addr().String(), Join: opts.Cluster.Join, Logger: log}
		if opts.Cluster.Ring != nil {
			opts.Cluster.Ring(&rc)
		}
		if n.Ring, err = ring.New(rc); err != nil {
			t.Fatalf("ring: %v", err)
		}
		ecfg.Ring = n.Ring
	}
	if opts.Engine != nil {
		opts.Engine(&ecfg)
	}
	n.Engine, err = engine.New(ecfg, n.Store)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	n.Engine.Start()
	n.Server, err = engine.NewServer(n.Engine, engine.ServerConfig{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", GRPCListener: lis,
		Token: Token, AdminToken: AdminToken, Gatherer: n.Registry, Logger: log,
		HealthInterval: opts.HealthInterval,
	})
	if err == nil {
		err = n.Server.Start()
	}
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	n.Conn, err = Dial(n.Server.GRPCAddr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	n.Catalog = pb.NewCatalogServiceClient(n.Conn)
	n.Reservations = pb.NewReservationServiceClient(n.Conn)
	n.Admin = pb.NewAdminServiceClient(n.Conn)
	n.Waitlist = pb.NewWaitlistServiceClient(n.Conn)
	n.Room = pb.NewWaitingRoomServiceClient(n.Conn)
	t.Cleanup(n.Stop)
	return n
}

// Stop shuts the node down as serve does on SIGTERM: it leaves the ring,
// drains, releases its shows' leases and flushes the writer. It is
// idempotent.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if n.Ring != nil {
			n.Ring.Leave(time.Second)
		}
		n.Conn.Close()
		n.Server.Shutdown(ctx)
		n.Engine.ReleaseAll(ctx)
		n.Engine.Shutdown(ctx)
		n.Store.Close(ctx)
	})
}

// Crash stops the node as a crash looks to the others: it stops gossiping
// without leaving, drops its connections, and releases nothing (the next
// owners wait out the leases). Writes in flight may or may not commit. It
// is idempotent, and Stop after it does nothing.
func (n *Node) Crash() {
	n.stopOnce.Do(func() {
		if n.Ring != nil {
			n.Ring.Shutdown()
		}
		n.Conn.Close()
		n.Server.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Engine.Shutdown(ctx)
		gone, stop := context.WithCancel(context.Background())
		stop() // no time to flush: the write in flight is cut off, queued ones fail
		n.Store.Close(gone)
	})
}

// Dial connects a client to a node's gRPC address, with package client's
// codec, which (unlike protobuf-go's) sends strings that are not UTF-8.
func Dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wirecodec.Codec{})))
}

// AdmissionKey returns the admission key every test node has (nodes of a
// cluster share it).
func AdmissionKey() wu.TokenKey { return wu.TokenKey("testcluster admission key") }

// Ctx returns ctx carrying the service token.
func Ctx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+Token)
}

// AdminCtx returns ctx carrying the admin token.
func AdminCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+AdminToken)
}

// CreateShow creates a show with rows A, B, ... of seatsPerRow seats each
// and the given hold TTL (zero: the default).
func (n *Node) CreateShow(t testing.TB, id string, rows, seatsPerRow int, ttl time.Duration) *pb.Show {
	t.Helper()
	req := ShowRequest(id, rows, seatsPerRow, ttl)
	resp, err := n.Catalog.CreateShow(AdminCtx(context.Background()), req)
	if err != nil {
		t.Fatalf("CreateShow %s: %v", id, err)
	}
	return resp.GetShow()
}

// ShowRequest builds a CreateShow request with rows labelled A..Z, then
// AA, AB, ... .
func ShowRequest(id string, rows, seatsPerRow int, ttl time.Duration) *pb.CreateShowRequest {
	req := &pb.CreateShowRequest{
		ShowId: id, Title: "Test show " + id, City: "Pune", Venue: "Hall 1",
		Categories: []*pb.Category{{Name: "standard", PriceCents: 50000}},
	}
	if ttl > 0 {
		req.HoldTtl = durationpb.New(ttl)
	}
	for i := 0; i < rows; i++ {
		req.Rows = append(req.Rows, &pb.Row{Label: RowLabel(i), SeatCount: int32(seatsPerRow), Category: "standard"})
	}
	return req
}

// RowLabel is the label of the i-th row: A..Z, AA..AZ, BA, ...
func RowLabel(i int) string {
	if i < 26 {
		return string(rune('A' + i))
	}
	return RowLabel(i/26-1) + string(rune('A'+i%26))
}

// SeatID is the ID of seat n (from 1) of row i.
func SeatID(row, n int) string { return fmt.Sprintf("%s-%d", RowLabel(row), n) }

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
