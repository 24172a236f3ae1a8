// Package pgclustertest starts throwaway PostgreSQL clusters for tests.
//
// Start gives a test its own cluster. Shared gives a test its own empty
// database on one cluster per test binary, which saves an initdb per test;
// it needs the package's TestMain to call Main:
//
//	func TestMain(m *testing.M) { pgclustertest.Main(m) }
//
// When PostgreSQL cannot be started, tests are skipped with the reason,
// except when the environment variable CI is "true": then they fail, so CI
// never passes by skipping.
package pgclustertest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/internal/pgcluster"
)

// startTimeout bounds starting a cluster, initdb included.
const startTimeout = 2 * time.Minute

// Start starts a throwaway cluster (temporary directory, free port, default
// durable settings) for a test and registers its Stop with t.Cleanup. If
// Postgres cannot be started: when the environment variable CI=="true" the
// test FAILS (t.Fatalf) with the reason; otherwise it t.Skip()s with the
// reason.
func Start(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Config{Log: logWriter{t}})
	if err != nil {
		unavailable(t, err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("pgclustertest: stopping the cluster: %v", err)
		}
	})
	return c
}

// unavailable skips t, or fails it under CI, because Postgres could not be
// started.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("pgclustertest: PostgreSQL unavailable (failing, not skipping, because CI=true): %v", err)
	}
	t.Skipf("pgclustertest: PostgreSQL unavailable, skipping: %v", err)
}

// logWriter sends the cluster's progress lines to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// shared is the one cluster per test binary behind Shared. It is process
// state on purpose: its lifetime is the test binary's, ended by Main.
var shared struct {
	inMain  atomic.Bool // Main is running; Shared refuses to start a cluster otherwise
	once    sync.Once   // starts cluster
	cluster *pgcluster.Cluster
	err     error        // from starting cluster
	next    atomic.Int64 // numbers the databases
}

// Main runs the tests of m and then stops the cluster Shared started, if
// any. Call it from TestMain of every package that uses Shared:
//
//	func TestMain(m *testing.M) { pgclustertest.Main(m) }
//
// It returns normally (the test binary then exits with m.Run's result),
// except that it exits with status 1 if the tests passed but the cluster
// could not be stopped.
func Main(m *testing.M) {
	shared.inMain.Store(true)
	code := m.Run()
	shared.inMain.Store(false)
	if shared.cluster == nil {
		return
	}
	if err := shared.cluster.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgclustertest: stopping the shared cluster: %v\n", err)
		if code == 0 {
			os.Exit(1)
		}
	}
}

// Shared returns the URL of a fresh, empty database (CREATE DATABASE
// test_N) on one cluster shared by the whole test binary, started at the
// first call. The database is dropped at t.Cleanup, disconnecting any
// session left open; drop errors are ignored. Tests using Shared may run in
// parallel. If Postgres cannot be started, t is skipped or failed as by
// Start. The test fails if the package's TestMain does not run Main, which
// stops the cluster at the end.
func Shared(t testing.TB) string {
	t.Helper()
	if !shared.inMain.Load() {
		t.Fatal("pgclustertest: Shared needs func TestMain(m *testing.M) { pgclustertest.Main(m) } in this package, or the cluster would outlive the test binary")
	}
	shared.once.Do(func() {
		// Not t's context: the cluster outlives this test.
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		shared.cluster, shared.err = pgcluster.Start(ctx, pgcluster.Config{})
	})
	if shared.err != nil {
		unavailable(t, shared.err)
	}
	c := shared.cluster
	name := fmt.Sprintf("test_%d", shared.next.Add(1))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := exec(ctx, c, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgclustertest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = exec(ctx, c, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return c.DatabaseURL(name)
}

// exec runs one statement on the postgres database of c.
func exec(ctx context.Context, c *pgcluster.Cluster, sql string) error {
	conn, err := pgx.Connect(ctx, c.DatabaseURL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}
