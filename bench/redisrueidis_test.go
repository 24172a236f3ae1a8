package bench

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/redis/rueidis"
)

// TestRedisRueidis checks the Redis design on rueidis against a real
// redis-server and Postgres, as TestRedisSetNX does on go-redis.
func TestRedisRueidis(t *testing.T) {
	r, rdb, rs := newTestRedisSetNX(t, Rueidis)
	if _, ok := r.rc.(*rueidisConn); !ok {
		t.Fatalf("client %T, want rueidis", r.rc)
	}
	testRedisTarget(t, "redis-rueidis", r, rdb, rs)
}

func TestRedisRueidisRace(t *testing.T) {
	r, _, _ := newTestRedisSetNX(t, Rueidis)
	testBaselineRace(t, r)
}

func TestRueidisError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{context.DeadlineExceeded, Timeout},
		{rueidis.ErrClosing, Unavailable},
		{io.EOF, Unavailable},
		{errors.New("ERR something"), Failed},
	} {
		if got := OutcomeOf(rueidisError(tc.err)); got != tc.want {
			t.Errorf("rueidisError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if rueidisError(nil) != nil {
		t.Error("rueidisError(nil) is not nil")
	}
}

func TestNewRedisSetNXUnknownClient(t *testing.T) {
	if _, err := NewRedisSetNX(t.Context(), RedisSetNXConfig{Client: "jedis", RedisAddr: "127.0.0.1:1", DatabaseURL: "postgres://x"}); err == nil {
		t.Error("an unknown Redis client was accepted")
	}
}

func BenchmarkRedisRueidisHold(b *testing.B) {
	r, _, _ := newTestRedisSetNX(b, Rueidis)
	benchmarkBaselineHold(b, r)
}

func BenchmarkRedisRueidisSeatMap(b *testing.B) {
	r, _, _ := newTestRedisSetNX(b, Rueidis)
	benchmarkBaselineSeatMap(b, r)
}
