package engine

import "sync"

// changeGate counts the changes in flight and, once closed, refuses new
// ones, so a draining node answers new changes ErrShuttingDown while the
// ones it took finish. The zero value is open.
type changeGate struct {
	mu       sync.Mutex // guards the fields below
	closed   bool
	inFlight int
	idle     chan struct{} // made by close; closed when closed and nothing is in flight
}

// enter admits a change, or refuses it with ErrShuttingDown once the gate
// is closed. An admitted change calls leave once, when it has been
// answered.
func (g *changeGate) enter() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrShuttingDown
	}
	g.inFlight++
	return nil
}

func (g *changeGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	if g.closed && g.inFlight == 0 {
		close(g.idle)
	}
}

// close refuses new changes and returns a channel closed when the changes
// in flight have all been answered. It is idempotent.
func (g *changeGate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.idle = make(chan struct{})
		if g.inFlight == 0 {
			close(g.idle)
		}
	}
	return g.idle
}
