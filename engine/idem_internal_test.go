package engine

import (
	"fmt"
	"testing"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/internal/ordmap"
)

// TestIdempotencyKeysForgottenAfterRetention: memory keeps a show's keys for
// the retention plus idemMargin, forgetting the oldest as new keys come, so
// a show's keys in memory follow the retention, not its whole history.
func TestIdempotencyKeysForgottenAfterRetention(t *testing.T) {
	const retention = time.Hour
	n, err := New(Config{NodeID: "n", IdempotencyRetention: retention}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sh := &show{idem: ordmap.New[string, idemEntry](0)}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	put := func(key string, at time.Time) {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		n.rememberLocked(sh, key, idemEntry{fingerprint: "fp-" + key, hold: ar.HoldID("s:" + key), at: at})
	}
	keys := func() []string {
		var out []string
		for k := range sh.idem.All() {
			out = append(out, k)
		}
		return out
	}
	put("a", t0)
	put("b", t0.Add(30*time.Minute))
	put("c", t0.Add(retention+idemMargin)) // a is exactly at the horizon: kept
	if got := keys(); len(got) != 3 {
		t.Fatalf("keys %v, want a, b, c", got)
	}
	put("d", t0.Add(retention+idemMargin+time.Microsecond)) // a has passed it
	if got := keys(); len(got) != 3 || got[0] != "b" {
		t.Fatalf("keys %v, want b, c, d", got)
	}
	// A second an hour later, then 1,000 keys a second apart: memory holds
	// the keys of the last retention plus margin, no more.
	start := t0.Add(3 * retention)
	const burst = 5000
	for i := range burst {
		put(fmt.Sprintf("k%d", i), start.Add(time.Duration(i)*time.Second))
	}
	last := start.Add((burst - 1) * time.Second)
	if _, e, _ := sh.idem.Front(); e.at.Before(last.Add(-retention - idemMargin)) {
		t.Fatalf("oldest key recorded at %s, past the retention of the newest at %s", e.at, last)
	}
	if want := int((retention+idemMargin)/time.Second) + 1; sh.idem.Len() != want {
		t.Fatalf("%d keys in memory, want %d (one a second over the retention and margin)", sh.idem.Len(), want)
	}
}
