package engine_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// startServer starts a second server for n's engine with cfg on free
// loopback ports and the test tokens; it shuts down at cleanup.
func startServer(t testing.TB, n *tc.Node, cfg engine.ServerConfig) *engine.Server {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Token, cfg.AdminToken = tc.Token, tc.AdminToken
	s, err := engine.NewServer(n.Engine, cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

// httpStatus returns the status code of GET url.
func httpStatus(t testing.TB, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// TestPprof: the metrics port serves no profiles; PprofAddr on loopback
// serves them (but not the command line) on its own port.
func TestPprof(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code := httpStatus(t, "http://"+n.Server.HTTPAddr()+path); code != http.StatusNotFound {
			t.Errorf("metrics port %s: %d, want 404", path, code)
		}
	}
	if a := n.Server.PprofAddr(); a != "" {
		t.Errorf("PprofAddr without profiling: %q, want empty", a)
	}

	s := startServer(t, n, engine.ServerConfig{PprofAddr: "127.0.0.1:0"})
	if s.PprofAddr() == "" || s.PprofAddr() == s.HTTPAddr() {
		t.Fatalf("PprofAddr %q (HTTP on %q)", s.PprofAddr(), s.HTTPAddr())
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/symbol"} {
		if code := httpStatus(t, "http://"+s.PprofAddr()+path); code != http.StatusOK {
			t.Errorf("pprof port %s: %d, want 200", path, code)
		}
	}
	if code := httpStatus(t, "http://"+s.PprofAddr()+"/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("pprof port /debug/pprof/cmdline: %d, want 404", code)
	}
	if code := httpStatus(t, "http://"+s.HTTPAddr()+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("metrics port with profiling on /debug/pprof/: %d, want 404", code)
	}
	for _, path := range []string{"/metrics", "/readyz"} {
		if code := httpStatus(t, "http://"+s.PprofAddr()+path); code != http.StatusNotFound {
			t.Errorf("pprof port %s: %d, want 404", path, code)
		}
	}
}

// TestPprofAddrMustBeLoopback: NewServer refuses a profiling address that
// is not loopback.
func TestPprofAddrMustBeLoopback(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:0", true},
		{"127.3.2.1:6060", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{"0.0.0.0:0", false},
		{":6060", false},
		{"[::]:6060", false},
		{"192.0.2.1:6060", false},
		{"example.com:6060", false},
		{"127.0.0.1", false}, // no port
	} {
		t.Run(c.addr, func(t *testing.T) {
			_, err := engine.NewServer(n.Engine, engine.ServerConfig{
				GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Token: tc.Token, AdminToken: tc.AdminToken,
				PprofAddr: c.addr,
			})
			if c.ok && err != nil {
				t.Errorf("NewServer: %v", err)
			}
			if !c.ok && err == nil {
				t.Errorf("NewServer accepted pprof address %q", c.addr)
			}
		})
	}
}

// TestMaxRecvMsgSize: a request larger than MaxRecvMsgSize is refused
// with ResourceExhausted and changes nothing; the largest request the API
// has room for today, a show of 100,000 seats, is far below the default.
func TestMaxRecvMsgSize(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	s := startServer(t, n, engine.ServerConfig{MaxRecvMsgSize: 1024})
	conn, err := tc.Dial(s.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cat := pb.NewCatalogServiceClient(conn)
	ctx, cancel := context.WithTimeout(tc.AdminCtx(context.Background()), 10*time.Second)
	defer cancel()

	big := tc.ShowRequest("too-big", 2, 10, 0)
	big.Title = strings.Repeat("x", 2048)
	_, err = cat.CreateShow(ctx, big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("CreateShow of %d bytes with a limit of 1024: %v, want ResourceExhausted", proto.Size(big), err)
	}
	if _, err := cat.GetShow(ctx, &pb.GetShowRequest{ShowId: "too-big"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetShow after the refusal: %v, want NotFound", err)
	}
	small := tc.ShowRequest("small", 2, 10, 0)
	if _, err := cat.CreateShow(ctx, small); err != nil {
		t.Errorf("CreateShow of %d bytes: %v", proto.Size(small), err)
	}

	if size := proto.Size(tc.ShowRequest("huge", 1000, 100, 0)); size > engine.DefaultMaxRecvMsgSize/10 {
		t.Errorf("CreateShow of 100,000 seats is %d bytes, too close to the default limit %d", size, engine.DefaultMaxRecvMsgSize)
	}
}

// TestMaxConns: with MaxConns 2, a third connection is closed at once
// while two are open, and accepted once one of them closes.
func TestMaxConns(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	s := startServer(t, n, engine.ServerConfig{MaxConns: 2})

	// dial opens a TCP connection and reports whether the server kept it:
	// a kept connection gets the server's HTTP/2 settings frame, a refused
	// one is closed before any byte.
	dial := func() (net.Conn, bool) {
		t.Helper()
		c, err := net.Dial("tcp", s.GRPCAddr())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b [9]byte // an HTTP/2 frame header
		_, err = io.ReadFull(c, b[:])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the server neither answered nor closed the connection within 10 s")
		}
		return c, err == nil
	}
	var open []net.Conn
	for i := range 2 {
		c, ok := dial()
		if !ok {
			t.Fatalf("connection %d of 2 was refused", i+1)
		}
		open = append(open, c)
	}
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	c, ok := dial()
	c.Close()
	if ok {
		t.Fatalf("a third connection was kept with MaxConns 2")
	}

	open[0].Close()
	open = open[1:]
	pollUntil(t, 10*time.Second, "a connection to be kept after one closed", func() bool {
		c, ok := dial()
		if ok {
			open = append(open, c)
		} else {
			c.Close()
		}
		return ok
	})
}

// TestHealthFollowsDatabase kills PostgreSQL under a node: the gRPC health
// service says NOT_SERVING (for "" and for the API's services) and /readyz
// answers 503 until PostgreSQL is back, then SERVING and 200 again.
func TestHealthFollowsDatabase(t *testing.T) {
	cl := pgclustertest.Start(t)
	tc.Migrate(t, cl.URL())
	n := tc.StartNode(t, cl.URL(), tc.Options{HealthInterval: 50 * time.Millisecond, Quiet: true})
	hc := healthpb.NewHealthClient(n.Conn)
	services := []string{"", "boxoffice.v1.CatalogService", "boxoffice.v1.ReservationService", "boxoffice.v1.AdminService"}
	readyz := "http://" + n.Server.HTTPAddr() + "/readyz"

	// healthIs reports whether every service and /readyz say want.
	healthIs := func(want healthpb.HealthCheckResponse_ServingStatus) bool {
		t.Helper()
		for _, svc := range services {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			cancel()
			if err != nil {
				t.Fatalf("health check %q: %v", svc, err)
			}
			if resp.GetStatus() != want {
				return false
			}
		}
		wantHTTP := http.StatusOK
		if want != healthpb.HealthCheckResponse_SERVING {
			wantHTTP = http.StatusServiceUnavailable
		}
		return httpStatus(t, readyz) == wantHTTP
	}
	if !healthIs(healthpb.HealthCheckResponse_SERVING) {
		t.Fatalf("not SERVING with the database up")
	}

	if err := cl.Kill(); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 20*time.Second, "NOT_SERVING and /readyz 503 with the database down", func() bool {
		return healthIs(healthpb.HealthCheckResponse_NOT_SERVING)
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "SERVING and /readyz 200 after the restart", func() bool {
		return healthIs(healthpb.HealthCheckResponse_SERVING)
	})

	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := n.Server.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := n.Server.Shutdown(sctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}
