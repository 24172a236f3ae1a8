package engine

import (
	"context"
	"sync"
	"time"
)

// pollTick is the resolution of pollWheel: a long poll's wait ends up to
// this much after it is due.
const pollTick = 100 * time.Millisecond

// pollWheel ends the waits of long polls and watches with one ticker for
// all of them: a wait takes the channel of the tick its deadline falls in,
// closed once that tick has passed. 200,000 waiting users thus cost a
// channel per tick with a deadline in it rather than a runtime timer each,
// whose heap the scheduler scans and whose stopped timers it sweeps, which
// took a fifth of the engine's CPU in an on-sale.
type pollWheel struct {
	mu    sync.Mutex
	slots map[int64]chan struct{} // by tick: Unix nanoseconds / pollTick
}

// newPollWheel returns a wheel whose ticker runs until life ends.
func newPollWheel(life context.Context) *pollWheel {
	w := &pollWheel{slots: make(map[int64]chan struct{})}
	go w.run(life)
	return w
}

// after returns a channel closed once d has passed, within pollTick.
func (w *pollWheel) after(d time.Duration) <-chan struct{} {
	if d <= 0 {
		over := make(chan struct{})
		close(over)
		return over
	}
	k := time.Now().Add(d).UnixNano() / int64(pollTick)
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := w.slots[k]
	if ch == nil {
		ch = make(chan struct{})
		w.slots[k] = ch
	}
	return ch
}

func (w *pollWheel) run(life context.Context) {
	t := time.NewTicker(pollTick)
	defer t.Stop()
	for {
		select {
		case <-life.Done():
			return // the waiters watch life too
		case now := <-t.C:
			w.fire(now)
		}
	}
}

// fire closes the channels of the ticks that ended by now.
func (w *pollWheel) fire(now time.Time) {
	cur := now.UnixNano() / int64(pollTick)
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, ch := range w.slots {
		if k < cur {
			close(ch)
			delete(w.slots, k)
		}
	}
}
