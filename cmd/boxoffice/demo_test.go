package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/boxoffice/boxoffice/internal/pgcluster"
)

// lockedBuffer is a bytes.Buffer safe for one writer and polling readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDemo runs `boxoffice demo` as `make demo` does (its own PostgreSQL,
// a node, the scenario), then lists the node's services by reflection as
// `grpcurl list` does, and stops it as Ctrl-C would.
func TestDemo(t *testing.T) {
	if _, err := pgcluster.BinDir(); err != nil && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL binaries absent (the demo would install them): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var out, logs lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- demo(ctx, demoConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", QuickTTL: 10 * time.Second}, &out, &logs)
	}()
	defer func() {
		if t.Failed() {
			t.Logf("demo output:\n%s\nlogs:\n%s", out.String(), logs.String())
		}
	}()

	// Wait for the scenario to end: the demo then prints how to try it.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), "== serving until Ctrl-C") {
		select {
		case err := <-done:
			t.Fatalf("demo returned before serving: %v", err)
		case <-ctx.Done():
			t.Fatal("the demo's scenario did not finish in time")
		case <-tick.C:
		}
	}
	story := out.String()
	for _, want := range []string{
		"15000 seats",
		"HELD [A-1 A-2]",
		"refused from memory, no database round trip: AlreadyExists SEATS_TAKEN",
		"RESERVATION_STATUS_BOOKED, payment pay_demo_0001",
		"is EXPIRED in PostgreSQL",
		"dave  joins the waitlist for 2 seats: WAITLIST_STATE_WAITING, 0 ahead",
		"frank joins the waitlist for 3 seats: WAITLIST_STATE_WAITING, 1 ahead",
		"dave's stream: WAITLIST_STATE_TURN, seats [A-4 A-5] offered to him alone",
		"frank tries dave's seats: SEATS_TAKEN",
		"dave's stream ends: WAITLIST_STATE_DONE",
		"frank: WAITLIST_STATE_WAITING, 0 ahead",
		"0 available, 2 held, 7 booked, 1 offered, 1 waiting",
		"WAIT_TURN",
		"carol's late confirm: HOLD_EXPIRED",
		"EXPIRED     demo-quick",
		"a cluster of 3 nodes sharing one PostgreSQL",
		"which forwards to the owner",
		"gina HELD [A-1 A-2 A-3 A-4] through demo-node-1",
		"stops (SIGTERM): it leaves the cluster",
		"gina's hold is RESERVATION_STATUS_HELD [A-1 A-2 A-3 A-4], replayed from PostgreSQL",
		"hugo is still WAITLIST_STATE_WAITING, sequence 1, 0 ahead",
		"ines  joins the queue: QUEUE_STATE_QUEUED, 0 ahead",
		"kavya joins the queue: QUEUE_STATE_QUEUED, 2 ahead",
		"ines tries to hold before her admission: FailedPrecondition NOT_ADMITTED",
		"ines  QUEUE_STATE_ADMITTED",
		"kavya QUEUE_STATE_ADMITTED",
		"ines holds with her admission token: HELD [A-1]",
		"grpcurl -plaintext",
	} {
		if !strings.Contains(story, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}

	// grpcurl list: server reflection, no token needed.
	addr := between(story, "serving gRPC on ", ",")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	services := listServices(t, ctx, conn)
	for _, want := range []string{
		"boxoffice.v1.CatalogService", "boxoffice.v1.ReservationService", "boxoffice.v1.AdminService", "boxoffice.v1.WaitlistService",
		"boxoffice.v1.WaitingRoomService",
		"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
	} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %v, without %s", services, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("demo stopped with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("demo did not stop after its context ended")
	}
}

// listServices asks the server's reflection service for its services.
func listServices(t *testing.T, ctx context.Context, conn *grpc.ClientConn) []string {
	t.Helper()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatalf("reflection send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection recv: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// between returns the text of s after the first start and before the next end.
func between(s, start, end string) string {
	_, after, _ := strings.Cut(s, start)
	before, _, _ := strings.Cut(after, end)
	return before
}
