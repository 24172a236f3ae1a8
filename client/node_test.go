package client_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/client"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// TestClientBoundsMessageBytes: a call too big for any valid request (over
// the engine's 4 MiB message limit here) is refused InvalidArgument by the
// client, untried, and big calls sent together are split into messages the
// engine takes, so the engine answers each (its user_id is too long), where
// one message over the limit ended the stream for every call on it, which
// the client then retried as Unavailable.
func TestClientBoundsMessageBytes(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, "cl-bytes", 1, 4, time.Minute)
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}, ConnsPerNode: 1})
	ctx := t.Context()

	_, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-bytes", UserId: strings.Repeat("u", 5<<20), SeatIds: []string{"A-1"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("a 5 MiB call: %v, want InvalidArgument from the client", err)
	}

	// Without retries, so that a stream ended under them would show.
	once := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}, ConnsPerNode: 1, MaxAttempts: 1})
	const calls = 200 // 60 KiB each: 12 MiB if sent in one message
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			_, errs[i] = once.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-bytes", UserId: strings.Repeat("v", 60<<10), SeatIds: []string{"A-2"}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if status.Code(err) != codes.InvalidArgument || strings.Contains(err.Error(), "client:") {
			t.Fatalf("call %d of 60 KiB: %v, want InvalidArgument from the engine", i, err)
		}
	}
	if h, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-bytes", UserId: "u1", SeatIds: []string{"A-3"}}); err != nil {
		t.Fatalf("a hold after them: %v, %v", h, err)
	}
}

// lateContext has a deadline that passed while its Done channel is still
// open, as a context is for the moment before its timer fires.
type lateContext struct{ context.Context }

func (lateContext) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestClientDeadlinePassed: a call whose context's deadline has passed, its
// timer not fired yet, fails DeadlineExceeded, untried, rather than being
// sent with a negative timeout, which the engine refuses InvalidArgument.
func TestClientDeadlinePassed(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, "cl-late", 1, 4, time.Minute)
	c := newClient(t, client.Config{Addrs: []string{n.Server.GRPCAddr()}})
	_, err := c.HoldSeats(lateContext{t.Context()}, &pb.HoldSeatsRequest{ShowId: "cl-late", UserId: "u1", SeatIds: []string{"A-1"}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a hold past its deadline: %v, want DeadlineExceeded", err)
	}
}

// TestClientCallWaitsNoLongerThanItsContext: a pipeline stream that cannot
// open (its connection has no free HTTP/2 stream: the node allows one per
// connection here, and a seat-map replica holds it) leaves each call
// waiting no longer than its own context, and Close does not wait for it.
// Before, the call that found the stream closed opened it with the stream's
// lock held, and it and every later call on the stream waited for the
// opening, whatever their deadlines. The calls that gave up are not sent
// once the stream opens (the replica, idle, ends and frees the stream).
func TestClientCallWaitsNoLongerThanItsContext(t *testing.T) {
	c := oneStreamClient(t, "cl-nostream", 3*time.Second)
	if _, err := c.SeatMap(t.Context(), "cl-nostream"); err != nil { // its WatchSeatMap takes the one stream
		t.Fatalf("SeatMap: %v", err)
	}
	const timeout = 300 * time.Millisecond
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			start := time.Now()
			_, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-nostream", UserId: "u" + strconv.Itoa(i), SeatIds: []string{"A-1"}})
			if took := time.Since(start); status.Code(err) != codes.DeadlineExceeded || took > timeout+2*time.Second {
				t.Errorf("hold %d: %v after %s, want DeadlineExceeded after %s", i, err, took, timeout)
			}
		})
	}
	wg.Wait()
	// Once the replica stops, the stream opens: the seat the holds that
	// gave up asked for is free.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := c.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "cl-nostream", UserId: "late", SeatIds: []string{"A-1"}}); err != nil {
		t.Fatalf("a hold of the seat the abandoned holds asked for: %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a pipeline stream waiting to open")
	}
}

// oneStreamClient starts a node with show (one row of 4 seats), serves
// it on a server that allows one stream per connection, and returns a
// client of it on one connection, whose replicas stop after idle. The
// client is closed at cleanup.
func oneStreamClient(t *testing.T, show string, idle time.Duration) *client.Client {
	t.Helper()
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	n.CreateShow(t, show, 1, 4, time.Minute)
	srv := startServer(t, n, engine.ServerConfig{GRPCAddr: "127.0.0.1:0", Token: tc.Token, MaxConcurrentStreams: 1})
	c, err := client.New(t.Context(), client.Config{Addrs: []string{srv.GRPCAddr()}, Token: tc.Token, ConnsPerNode: 1, ReplicaIdle: idle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startServer starts another server of node n's engine with cfg (its HTTP
// address and admin token filled in), shut down at the test's end.
func startServer(t *testing.T, n *tc.Node, cfg engine.ServerConfig) *engine.Server {
	t.Helper()
	cfg.HTTPAddr, cfg.AdminToken = "127.0.0.1:0", tc.AdminToken
	srv, err := engine.NewServer(n.Engine, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck // the streams a test left open are cut
	})
	return srv
}
