package client_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/client"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// watchCounter counts the WatchSeatMap streams a client opens, with the
// time of each.
type watchCounter struct {
	mu    sync.Mutex
	times []time.Time
}

func (w *watchCounter) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if strings.HasSuffix(method, "/WatchSeatMap") {
		w.mu.Lock()
		w.times = append(w.times, time.Now())
		w.mu.Unlock()
	}
	return streamer(ctx, desc, cc, method, opts...)
}

func (w *watchCounter) since(i int) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.times[min(i, len(w.times)):]...)
}

// TestReplicaBacksOffWhileOwnerDown: once its node is gone, a replica that
// had a seat map watches again with a backoff that grows while every
// stream fails before its first message (20 ms, doubling to 1 s), not
// every 20 ms: a thousand replicas of a crashed owner's shows would
// otherwise call 50,000 times a second.
func TestReplicaBacksOffWhileOwnerDown(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, "cl-backoff", 1, 4, time.Minute)
	var w watchCounter
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()},
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(w.intercept)}})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := c.SeatMap(ctx, "cl-backoff"); err != nil {
		t.Fatalf("SeatMap: %v", err)
	}
	n.Stop()
	start := len(w.since(0))
	const tries = 6 // 20+40+80+160+320 ms between them, at least: 620 ms
	pollUntil(t, 20*time.Second, "the replica to watch again 6 times", func() bool { return len(w.since(start)) >= tries })
	times := w.since(start)[:tries]
	if took := times[tries-1].Sub(times[0]); took < 600*time.Millisecond {
		t.Fatalf("%d watches of a stopped node within %s, want the waits between them doubling from 20 ms (at least 620 ms)", tries, took)
	}
}

// TestReplicaStoppedBeforeItsMap: a reader waiting for a replica's first
// seat map when the replica is stopped (idle: nobody read it since for
// ReplicaIdle) is answered Unavailable, which it may retry, not Canceled,
// which would say that the reader gave up. The node allows one stream per
// connection here, which the client's pipeline takes, so the replica waits
// for its stream.
func TestReplicaStoppedBeforeItsMap(t *testing.T) {
	c := oneStreamClient(t, "cl-stopped", 300*time.Millisecond)
	if _, err := c.HoldSeats(t.Context(), &pb.HoldSeatsRequest{ShowId: "cl-stopped", UserId: "u1", SeatIds: []string{"A-1"}}); err != nil {
		t.Fatalf("hold: %v", err) // its pipeline stream takes the connection's one stream
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.SeatMap(ctx, "cl-stopped")
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Fatalf("the reader of the stopped replica: %v after %s, want Unavailable", err, time.Since(start))
	}
}

// TestReplicaEndsOnRefusalForGood: a replica whose node refuses it for good
// after its first map (the node's token was rotated: every watch is
// Unauthenticated) ends, and the next read tells the reader so. Before, it
// watched again every second, and its readers got the frozen map and no
// error for as long as the client ran.
func TestReplicaEndsOnRefusalForGood(t *testing.T) {
	const show = "cl-refused"
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, show, 1, 4, time.Minute)
	srv := startServer(t, n, engine.ServerConfig{GRPCAddr: "127.0.0.1:0", Token: tc.Token})
	c := newClient(t, client.Config{Addrs: []string{srv.GRPCAddr()}})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.SeatMap(ctx, show); err != nil {
		t.Fatalf("SeatMap: %v", err)
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	startServer(t, n, engine.ServerConfig{GRPCAddr: srv.GRPCAddr(), Token: "a rotated token"})
	pollUntil(t, 20*time.Second, "a read of the replica to be refused Unauthenticated", func() bool {
		_, err := c.SeatMap(ctx, show)
		return status.Code(err) == codes.Unauthenticated
	})
}

// olderSender lowers the versions of the WatchSeatMap messages a client
// receives while on is set, by one epoch's worth (1<<32), as the messages of
// a node that owned the show before its owner's take would be.
type olderSender struct{ on atomic.Bool }

func (o *olderSender) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || !strings.HasSuffix(method, "/WatchSeatMap") {
		return s, err
	}
	return &olderStream{ClientStream: s, o: o}, nil
}

type olderStream struct {
	grpc.ClientStream
	o *olderSender
}

func (s *olderStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if msg, ok := m.(*pb.WatchSeatMapResponse); ok && err == nil && s.o.on.Load() {
		msg.Version -= 1 << 32
	}
	return err
}

// TestReplicaNeverGoesBack: a replica offered an older seat map than the
// one it has — a batch or a snapshot at a lower version, as from a node
// that no longer owns the show — keeps its own and watches again, so its
// readers never see the map go back; once the messages are current again
// it follows the show on.
func TestReplicaNeverGoesBack(t *testing.T) {
	const show = "cl-older"
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, show, 1, 4, time.Minute)
	var o olderSender
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()},
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(o.intercept)}})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	first, err := c.SeatMap(ctx, show)
	if err != nil {
		t.Fatalf("SeatMap: %v", err)
	}

	o.on.Store(true)
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u1", SeatIds: []string{"A-1"}}); err != nil {
		t.Fatalf("hold: %v", err)
	}
	// The hold's batch, then the snapshots of the watches again, all come
	// older than the replica's map.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		m, err := c.SeatMap(ctx, show)
		if err != nil {
			t.Fatalf("SeatMap while the messages are older: %v", err)
		}
		if m.Version < first.Version {
			t.Fatalf("the replica went back from version %d to %d (held %d)", first.Version, m.Version, m.Held)
		}
	}

	o.on.Store(false)
	pollUntil(t, 10*time.Second, "the replica to show the hold", func() bool {
		m, err := c.SeatMap(ctx, show)
		return err == nil && m.Held == 1 && m.Version > first.Version
	})
}
