package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/internal/pgcluster"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
)

// requireBinaries skips the test (fails it under CI=true) without the
// PostgreSQL binaries.
func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := pgcluster.BinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL unavailable (failing because CI=true): %v", err)
		}
		t.Skipf("PostgreSQL unavailable: %v", err)
	}
}

// start starts a cluster with cfg and stops it at cleanup.
func start(t *testing.T, cfg pgcluster.Config) *pgcluster.Cluster {
	t.Helper()
	requireBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

// sharedDir returns a new directory that the postgres user can reach when
// the test runs as root (t.TempDir's parent is private to root), removed
// at cleanup.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func connect(t *testing.T, url string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, url)
}

// queryInt runs a one-value query on url.
func queryInt(t *testing.T, url, sql string) int {
	t.Helper()
	conn, err := connect(t, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func exec(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := connect(t, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestLifecycle(t *testing.T) {
	c := pgclustertest.Start(t)
	url := c.URL()
	if !strings.HasPrefix(url, "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(url, "/boxoffice?sslmode=disable") {
		t.Fatalf("URL = %q", url)
	}
	if got := queryInt(t, url, "SELECT 1"); got != 1 {
		t.Fatalf("SELECT 1 = %d", got)
	}
	exec(t, url, "CREATE TABLE t (n int); INSERT INTO t VALUES (42)")

	if err := c.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if conn, err := connect(t, url); err == nil {
		conn.Close(context.Background())
		t.Fatal("connected after Kill")
	}
	if err := c.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}

	if err := c.Restart(t.Context()); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if c.URL() != url {
		t.Fatalf("URL after Restart = %q, want %q", c.URL(), url)
	}
	if got := queryInt(t, url, "SELECT n FROM t"); got != 42 {
		t.Fatalf("committed row after Kill+Restart = %d, want 42", got)
	}
	// Restart of a running server restarts it.
	if err := c.Restart(t.Context()); err != nil {
		t.Fatalf("Restart while running: %v", err)
	}
	if got := queryInt(t, url, "SELECT 1"); got != 1 {
		t.Fatalf("SELECT 1 = %d", got)
	}

	dir := c.Dir()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary dir %s after Stop: %v", dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := c.Restart(t.Context()); !errors.Is(err, pgcluster.ErrRemoved) {
		t.Fatalf("Restart after Stop = %v, want ErrRemoved", err)
	}
}

func TestSettings(t *testing.T) {
	c := start(t, pgcluster.Config{Settings: map[string]string{"work_mem": "8MB", "application_name": "it's"}})
	conn, err := connect(t, c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for name, want := range map[string]string{
		"work_mem":                "8MB",
		"application_name":        "it's",
		"fsync":                   "on",
		"synchronous_commit":      "on",
		"max_connections":         "200",
		"shared_buffers":          "128MB",
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": c.Dir(),
	} {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestInvalidSettingName(t *testing.T) {
	_, err := pgcluster.Start(t.Context(), pgcluster.Config{Settings: map[string]string{"fsync = off\nport": "1"}})
	if err == nil || !strings.Contains(err.Error(), "invalid setting") {
		t.Fatalf("Start = %v, want invalid setting error", err)
	}
}

func TestStartFailureReportsLogAndCleansUp(t *testing.T) {
	requireBinaries(t)
	_, err := pgcluster.Start(t.Context(), pgcluster.Config{Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil {
		t.Fatal("Start with a bad setting succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "server log ") || !strings.Contains(msg, "shared_buffers") {
		t.Fatalf("error does not include the server log: %v", err)
	}
	// The temporary directory is named in the error; it must be gone.
	for field := range strings.FieldsSeq(msg) {
		if dir, ok := strings.CutSuffix(field, "/postgres.log:"); ok && strings.Contains(dir, "pgcluster-") {
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("temporary dir %s left after failed Start: %v", dir, err)
			}
		}
	}
}

func TestReuseDir(t *testing.T) {
	dir := filepath.Join(sharedDir(t), "new", "cluster")
	c := start(t, pgcluster.Config{Dir: dir})
	exec(t, c.URL(), "CREATE TABLE t (n int); INSERT INTO t VALUES (7)")
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("Stop of a given Dir removed data: %v", err)
	}
	// Restart after Stop works when the directory is kept.
	if err := c.Restart(t.Context()); err != nil {
		t.Fatalf("Restart after Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	c2 := start(t, pgcluster.Config{Dir: dir})
	if c2.Port() == c.Port() {
		t.Logf("second start picked the same port %d", c2.Port())
	}
	if got := queryInt(t, c2.URL(), "SELECT n FROM t"); got != 7 {
		t.Fatalf("row in reused cluster = %d, want 7", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres.log")); err != nil {
		t.Fatalf("no server log: %v", err)
	}
}

func TestFixedPort(t *testing.T) {
	requireBinaries(t)
	// Find a free port by starting a cluster on one, then reuse it.
	c := start(t, pgcluster.Config{})
	port := c.Port()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c2 := start(t, pgcluster.Config{Port: port})
	if c2.Port() != port {
		t.Fatalf("Port = %d, want %d", c2.Port(), port)
	}
	if got := queryInt(t, c2.URL(), "SELECT 1"); got != 1 {
		t.Fatalf("SELECT 1 = %d", got)
	}
}

func TestBinDir(t *testing.T) {
	requireBinaries(t)
	dir, err := pgcluster.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("override", func(t *testing.T) {
		t.Setenv("PG_BINDIR", dir)
		got, err := pgcluster.BinDir()
		if err != nil || got != dir {
			t.Fatalf("BinDir = %q, %v, want %q", got, err, dir)
		}
	})
	t.Run("bad override", func(t *testing.T) {
		t.Setenv("PG_BINDIR", t.TempDir())
		if _, err := pgcluster.BinDir(); !errors.Is(err, pgcluster.ErrNoBinaries) {
			t.Fatalf("BinDir = %v, want ErrNoBinaries", err)
		}
	})
	t.Run("missing binaries", func(t *testing.T) {
		t.Setenv("PG_BINDIR", t.TempDir())
		_, err := pgcluster.Start(t.Context(), pgcluster.Config{})
		if !errors.Is(err, pgcluster.ErrNoBinaries) {
			t.Fatalf("Start = %v, want ErrNoBinaries", err)
		}
	})
}
