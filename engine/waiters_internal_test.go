package engine

import "testing"

// TestEntryWaiters: waiters of one user share a channel that their user's
// change closes and nobody else's; the map forgets a user when the last of
// its waiters stops, or at the wake, so it holds only users being waited
// on.
func TestEntryWaiters(t *testing.T) {
	sh := &show{}
	r := &sh.wait
	sh.mu.Lock()
	a1, stopA1 := r.waiters.waitLocked(sh, "a")
	a2, stopA2 := r.waiters.waitLocked(sh, "a")
	b, stopB := r.waiters.waitLocked(sh, "b")
	r.waiters.wakeLocked("b")
	sh.mu.Unlock()
	if !isClosed(b) || isClosed(a1) || isClosed(a2) {
		t.Fatalf("b's wake: b %t, a %t %t; want b's alone", isClosed(b), isClosed(a1), isClosed(a2))
	}
	stopB() // after its wake: nothing to forget
	stopA1()
	sh.mu.Lock()
	if len(r.waiters) != 1 {
		t.Fatalf("%d users waited on with a's second waiter left, want 1", len(r.waiters))
	}
	sh.mu.Unlock()
	stopA2()
	if len(r.waiters) != 0 || isClosed(a1) {
		t.Fatalf("after every waiter stopped: %d users waited on, a's channel closed %t", len(r.waiters), isClosed(a1))
	}
	sh.mu.Lock()
	c, stopC := r.waiters.waitLocked(sh, "c")
	r.waiters.wakeAllLocked()
	again, stopAgain := r.waiters.waitLocked(sh, "c") // a new wait after the wake
	sh.mu.Unlock()
	stopC()
	if !isClosed(c) || isClosed(again) || len(r.waiters) != 1 {
		t.Fatalf("wake all: c %t, the new wait %t, %d waited on", isClosed(c), isClosed(again), len(r.waiters))
	}
	stopAgain()
	if len(r.waiters) != 0 {
		t.Fatalf("%d users waited on at the end, want 0", len(r.waiters))
	}
}

// TestEntryWaitersOnDroppedShow: a wait on a dropped show, whose waiters
// were woken already, ends at once instead of waiting for a wake that
// never comes.
func TestEntryWaitersOnDroppedShow(t *testing.T) {
	sh := &show{}
	sh.mu.Lock()
	sh.dropped = true
	ch, stop := sh.wait.waiters.waitLocked(sh, "a")
	sh.mu.Unlock()
	stop()
	if !isClosed(ch) || len(sh.wait.waiters) != 0 {
		t.Fatalf("a wait on a dropped show: closed %t, %d users waited on; want closed, none", isClosed(ch), len(sh.wait.waiters))
	}
}
