package pgclustertest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
)

func TestMain(m *testing.M) { pgclustertest.Main(m) }

// connect opens url and closes it at cleanup.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestStart(t *testing.T) {
	c := pgclustertest.Start(t)
	var n int
	if err := connect(t, c.URL()).QueryRow(t.Context(), "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("SELECT 1 = %d, %v", n, err)
	}
}

func TestSharedGivesEachTestItsOwnEmptyDatabase(t *testing.T) {
	urls := make(chan string, 4)
	t.Run("group", func(t *testing.T) {
		for i := range cap(urls) {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				url := pgclustertest.Shared(t)
				urls <- url
				conn := connect(t, url)
				var tables int
				if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
					t.Fatal(err)
				}
				if tables != 0 {
					t.Fatalf("new database has %d tables", tables)
				}
				if _, err := conn.Exec(t.Context(), "CREATE TABLE t (n int)"); err != nil {
					t.Fatal(err)
				}
				// The connection is deliberately left open: the drop at
				// cleanup must cope with it.
			})
		}
	})
	close(urls)
	seen := map[string]bool{}
	for url := range urls {
		if seen[url] {
			t.Fatalf("URL %s handed out twice", url)
		}
		seen[url] = true
	}
	// The databases were dropped at the subtests' cleanup.
	for url := range seen {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Database = "postgres"
		conn, err := pgx.ConnectConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var left int
		if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pg_database WHERE datname LIKE 'test\\_%'").Scan(&left); err != nil {
			t.Fatal(err)
		}
		if left != 0 {
			t.Fatalf("%d test databases left after cleanup", left)
		}
		break
	}
}
