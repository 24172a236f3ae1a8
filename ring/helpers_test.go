package ring

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

var grpcPort atomic.Int32 // made-up gRPC ports: 20000 + n

// testConfig returns a config for a node on loopback with a free gossip port
// and a made-up gRPC address (nothing dials it). RING_DEBUG=1 logs to stderr.
func testConfig(t *testing.T, name string, join ...string) Config {
	t.Helper()
	cfg := Config{
		Name:        name,
		GRPCAddr:    fmt.Sprintf("127.0.0.1:%d", 20000+grpcPort.Add(1)),
		Join:        join,
		JoinTimeout: 5 * time.Second,
	}
	if os.Getenv("RING_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

// start creates a Ring and shuts it down when the test ends.
func start(t *testing.T, cfg Config) *Ring {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { _ = r.Shutdown() })
	return r
}

// waitFor polls cond every 10 ms until it returns nil, and fails the test
// with cond's last error after timeout. It returns how long it waited.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func showIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("show-%d", i)
	}
	return ids
}

// agree checks that every ring has exactly the members want (by name), that
// they agree on the owner of every key, and that each owner's addresses are
// those its own Ring reports.
func agree(rings []*Ring, want []string, keys []string) error {
	byName := make(map[string]*Ring, len(rings))
	for _, r := range rings {
		byName[r.Self().Name] = r
	}
	for _, r := range rings {
		if got := names(r.Members()); !slices.Equal(got, want) {
			return fmt.Errorf("%s sees members %v, want %v", r.Self().Name, got, want)
		}
	}
	for _, k := range keys {
		o := rings[0].Owner(k)
		for _, r := range rings[1:] {
			if got := r.Owner(k); got != o {
				return fmt.Errorf("owner of %s: %s says %+v, %s says %+v", k, rings[0].Self().Name, o, r.Self().Name, got)
			}
		}
		if or, ok := byName[o.Name]; ok && (o.GRPCAddr != or.cfg.GRPCAddr || o.GossipAddr != or.GossipAddr()) {
			return fmt.Errorf("owner of %s is %+v, but that node has gRPC %s, gossip %s", k, o, or.cfg.GRPCAddr, or.GossipAddr())
		}
	}
	return nil
}

// owners returns the owner's name of every key in r's current ring.
func owners(r *Ring, keys []string) map[string]string {
	v := r.View()
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k] = v.Owner(k).Name
	}
	return m
}

func movedFraction(before, after map[string]string) float64 {
	moved := 0
	for k, o := range before {
		if after[k] != o {
			moved++
		}
	}
	return float64(moved) / float64(len(before))
}

func stateOf(r *Ring, name string) string {
	for _, m := range r.Status() {
		if m.Name == name {
			return m.State
		}
	}
	return "unknown"
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
