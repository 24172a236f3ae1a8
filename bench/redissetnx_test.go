package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/internal/redisserver"
)

// startTestRedis starts a throwaway Redis (installing Debian's redis-server
// when absent and root) and stops it at cleanup. If it cannot be started the
// test is skipped, or failed when CI=true, as pgclustertest does.
func startTestRedis(tb testing.TB) *redisserver.Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 5*time.Minute)
	defer cancel()
	s, err := redisserver.Start(ctx, redisserver.Config{Install: true, Log: rsnTestLog{tb}})
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("Redis unavailable (failing, not skipping, because CI=true): %v", err)
		}
		tb.Skipf("Redis unavailable, skipping: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stopping Redis: %v", err)
		}
	})
	return s
}

// rsnTestLog sends progress lines to the test log.
type rsnTestLog struct{ tb testing.TB }

func (w rsnTestLog) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newTestRedisSetNX starts Redis and Postgres and returns a target on them
// with the given client, a go-redis client of the Redis, and the server.
func newTestRedisSetNX(tb testing.TB, client RedisClient) (*RedisSetNX, *redis.Client, *redisserver.Server) {
	tb.Helper()
	rs := startTestRedis(tb)
	c := pgclustertest.Start(tb)
	r, err := NewRedisSetNX(tb.Context(), RedisSetNXConfig{Client: client, RedisAddr: rs.Addr(), DatabaseURL: c.URL()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	tb.Cleanup(func() { rdb.Close() })
	return r, rdb, rs
}

func TestRedisSetNX(t *testing.T) {
	r, rdb, rs := newTestRedisSetNX(t, GoRedis)
	testRedisTarget(t, "redis-setnx", r, rdb, rs)
}

// testRedisTarget checks the Redis design on one client: the contract of
// Target, then Redis losing its keys, then Redis down (last: it stops rs).
func testRedisTarget(t *testing.T, name string, r *RedisSetNX, rdb *redis.Client, rs *redisserver.Server) {
	if r.HoldsDurable() {
		t.Error("HoldsDurable = true, want false")
	}
	if r.Name() != name {
		t.Errorf("Name = %q, want %q", r.Name(), name)
	}
	testBaselineTarget(t, r, baselineHooks{
		// Redis's clock: the keys are gone.
		expired: func(ctx context.Context, show ShowSpec, h Hold) (bool, error) {
			keys, _ := rsnScriptArgs(show.ID, h.ID, h.User, h.Seats)
			n, err := rdb.Exists(ctx, keys...).Result()
			return n == 0, err
		},
	})

	t.Run("booked survives in Postgres", func(t *testing.T) {
		// A Redis that lost its keys lets a seat be held again, but the
		// booking in Postgres refuses a second confirm of it.
		ctx := t.Context()
		show := testShow("lost", time.Minute)
		if err := r.CreateShow(ctx, show); err != nil {
			t.Fatal(err)
		}
		h, err := r.Hold(ctx, show, "alice", []string{"C-1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Confirm(ctx, show, h, "pay-a"); err != nil {
			t.Fatal(err)
		}
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		h2, err := r.Hold(ctx, show, "bob", []string{"C-1", "C-2"})
		if err != nil {
			t.Fatalf("Hold after Redis lost its keys: %v", err)
		}
		if err := r.Confirm(ctx, show, h2, "pay-b"); OutcomeOf(err) != Ended {
			t.Fatalf("Confirm of a seat booked in Postgres = %v, want ended", err)
		}
		if n, err := rdb.Exists(ctx, rsnSeatKey(show.ID, "C-2")).Result(); err != nil || n != 0 {
			t.Errorf("refused confirm left its seat held (%d, %v)", n, err)
		}
		recs, err := r.Records(ctx, show)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].ID != h.ID || recs[0].State != StateBooked {
			t.Errorf("records = %+v, want alice's booking only", recs)
		}
	})

	t.Run("redis down", func(t *testing.T) {
		// With Redis stopped, calls end as retryable (Unavailable, or
		// Timeout if the client kept redialling until the deadline), not
		// Failed, and by their deadline.
		ctx := t.Context()
		show := testShow("down", time.Minute)
		if err := r.CreateShow(ctx, show); err != nil {
			t.Fatal(err)
		}
		if err := rs.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			what string
			call func(ctx context.Context) error
		}{
			{"Hold", func(ctx context.Context) error {
				_, err := r.Hold(ctx, show, "alice", []string{"A-1"})
				return err
			}},
			{"SeatMap", func(ctx context.Context) error {
				_, err := r.FreshSeatMap(ctx, show)
				return err
			}},
		} {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			start := time.Now()
			err := c.call(cctx)
			cancel()
			if out := OutcomeOf(err); out != Unavailable && out != Timeout {
				t.Errorf("%s with Redis stopped = %v, want unavailable or timeout", c.what, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("%s with Redis stopped took %v, past its 2 s deadline", c.what, d)
			}
		}
	})
}

func TestRedisSetNXRace(t *testing.T) {
	r, _, _ := newTestRedisSetNX(t, GoRedis)
	testBaselineRace(t, r)
}

func TestRedisGlobEscape(t *testing.T) {
	if got := redisGlobEscape(`hold:{a*b?[c]\}:`); got != `hold:{a\*b\?\[c\]\\}:` {
		t.Errorf("redisGlobEscape = %s", got)
	}
}

func BenchmarkRedisSetNXHold(b *testing.B) {
	r, _, _ := newTestRedisSetNX(b, GoRedis)
	benchmarkBaselineHold(b, r)
}

func BenchmarkRedisSetNXSeatMap(b *testing.B) {
	r, _, _ := newTestRedisSetNX(b, GoRedis)
	benchmarkBaselineSeatMap(b, r)
}
