package engine

import (
	"testing"
	"time"
)

// TestPublishInterval: a show's seat map is published every 5 ms up to 100
// watchers, less often in proportion beyond, and never less often than
// every 50 ms.
func TestPublishInterval(t *testing.T) {
	for _, tt := range []struct {
		watchers int
		want     time.Duration
	}{
		{0, 5 * time.Millisecond}, {1, 5 * time.Millisecond}, {100, 5 * time.Millisecond},
		{200, 10 * time.Millisecond}, {400, 20 * time.Millisecond}, {1000, 50 * time.Millisecond}, {100_000, 50 * time.Millisecond},
	} {
		if got := publishInterval(tt.watchers); got != tt.want {
			t.Errorf("%d watchers: every %v, want %v", tt.watchers, got, tt.want)
		}
	}
}
