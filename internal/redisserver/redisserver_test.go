package redisserver_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/boxoffice/boxoffice/internal/redisserver"
)

// start starts a server with cfg (installing redis-server when root) and
// stops it at cleanup. When the server cannot be started the test is
// skipped, or failed when CI=true.
func start(t *testing.T, cfg redisserver.Config) *redisserver.Server {
	t.Helper()
	cfg.Install = true
	cfg.Log = logWriter{t}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	s, err := redisserver.Start(ctx, cfg)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis unavailable (failing because CI=true): %v", err)
		}
		t.Skipf("Redis unavailable: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestSetGet(t *testing.T) {
	s := start(t, redisserver.Config{})
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr = %q", s.Addr())
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	// Persistence is off.
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatalf("CONFIG GET: %v", err)
	}
	for name, want := range map[string]string{"save": "", "appendonly": "no", "bind": "127.0.0.1", "dir": s.Dir()} {
		if cfg[name] != want {
			t.Errorf("config %s = %q, want %q", name, cfg[name], want)
		}
	}

	dir := s.Dir()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary dir %s after Stop: %v", dir, err)
	}
	if conn, err := net.Dial("tcp", s.Addr()); err == nil {
		conn.Close()
		t.Fatal("server accepts connections after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestDirAndFixedPort(t *testing.T) {
	first := start(t, redisserver.Config{})
	port := first.Port()
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "new", "redis")
	s := start(t, redisserver.Config{Dir: dir, Port: port})
	if s.Port() != port || s.Dir() != dir {
		t.Fatalf("Port, Dir = %d, %s; want %d, %s", s.Port(), s.Dir(), port, dir)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "redis.log")); err != nil {
		t.Fatalf("Stop removed a given Dir or no log: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("Dir holds %d files, want only redis.log (no persistence)", len(ents))
	}
}

func TestPortTaken(t *testing.T) {
	s := start(t, redisserver.Config{})
	_, err := redisserver.Start(t.Context(), redisserver.Config{Port: s.Port()})
	if err == nil || !strings.Contains(err.Error(), "server log") {
		t.Fatalf("Start on a taken port = %v, want an error with the server log", err)
	}
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("REDIS_SERVER", filepath.Join(t.TempDir(), "nothing"))
	if _, err := redisserver.Start(t.Context(), redisserver.Config{}); !errors.Is(err, redisserver.ErrNoBinary) {
		t.Fatalf("Start = %v, want ErrNoBinary", err)
	}
}
