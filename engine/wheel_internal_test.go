package engine

import (
	"testing"
	"time"
)

// TestPollWheel: a wait's channel closes at the first tick after its
// deadline, never before it; a wait
// of zero is over at once; a fired tick is forgotten.
func TestPollWheel(t *testing.T) {
	w := &pollWheel{slots: map[int64]chan struct{}{}}
	if !isClosed(w.after(0)) || !isClosed(w.after(-time.Second)) {
		t.Fatal("a wait of zero is not over at once")
	}
	start := time.Now()
	a, b := w.after(2*time.Second), w.after(2*time.Second+pollTick/1000)
	later := w.after(5 * time.Second)
	w.fire(start.Add(2*time.Second - pollTick))
	if isClosed(a) {
		t.Fatal("a 2 s wait ended a tick early")
	}
	w.fire(start.Add(2*time.Second + 2*pollTick))
	if !isClosed(a) || !isClosed(b) || isClosed(later) {
		t.Fatalf("after 2 s and two ticks: the 2 s waits ended %t %t, the 5 s one %t", isClosed(a), isClosed(b), isClosed(later))
	}
	if len(w.slots) != 1 {
		t.Fatalf("%d ticks kept, want the 5 s wait's alone", len(w.slots))
	}
	w.fire(start.Add(6 * time.Second))
	if !isClosed(later) || len(w.slots) != 0 {
		t.Fatalf("after 6 s: the 5 s wait ended %t, %d ticks kept", isClosed(later), len(w.slots))
	}
}

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
