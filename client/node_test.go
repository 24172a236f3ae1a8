package client_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/client"
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
