package bench

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// onSale is a hot show's on-sale behind a waiting room: Users arrive
// evenly over the first Arrivals (open loop, whatever the target does),
// join the show's queue, wait for their admission, then shop as in the
// flash sale with their admission token. A user waits as a web page in a
// queue does: while its estimated wait is over onSaleSleepAbove, it sleeps
// half of it (at most onSaleMaxSleep) before asking again; near its turn
// it long-polls, which the engine answers at the admission. So only the
// users near the head keep a call open, not the whole crowd. The room
// opens RoomOpensIn after the show is created and admits AdmitPerSecond
// users a second (at most MaxActive shopping at once, if set). When the
// show sells out, everyone still queued is told so and is done. With
// NoRoom the same crowd shops at once, without a room, for comparison.
type onSale struct {
	sale     *flashSale
	room     *RoomSpec // nil with NoRoom
	arrivals time.Duration

	users                                   []admission // by user index
	joined, admitted, soldOut, queued, peak atomic.Int64
}

// admission is what one user saw of the room: its place and, in engine
// time, when it was admitted.
type admission struct {
	seq   int64
	at    int64 // Unix ns, when admitted
	known bool  // admitted, or never (sold out, or still queued at the end)
}

// Defaults of the on-sale.
const (
	defaultArrivals       = 20 * time.Second
	defaultAdmitPerSecond = 2000
	defaultRoomOpensIn    = 2 * time.Second
	// onSalePollWait is how long a queued user's long poll waits for its
	// admission before asking again: the engine's longest.
	onSalePollWait = 30 * time.Second
	// onSaleSleepAbove is the estimated wait above which a queued user
	// sleeps instead of long-polling.
	onSaleSleepAbove = 10 * time.Second
	// onSaleMaxSleep is the longest such sleep: the latest a user learns
	// that the show sold out.
	onSaleMaxSleep = time.Minute
)

func newOnSale(cfg ScenarioConfig) (Scenario, error) {
	if cfg.Arrivals == 0 {
		cfg.Arrivals = defaultArrivals
	}
	if cfg.AdmitPerSecond == 0 {
		cfg.AdmitPerSecond = defaultAdmitPerSecond
	}
	switch {
	case cfg.Arrivals < 0:
		return nil, fmt.Errorf("on-sale: arrivals over %v: want a positive duration", cfg.Arrivals)
	case !(cfg.AdmitPerSecond > 0) || math.IsInf(cfg.AdmitPerSecond, 0):
		return nil, fmt.Errorf("on-sale: %v admissions a second: want a positive rate", cfg.AdmitPerSecond)
	case cfg.MaxActive < 0:
		return nil, fmt.Errorf("on-sale: %d shoppers at most: want ≥ 0 (0: no cap)", cfg.MaxActive)
	}
	s, err := newFlashSale(cfg)
	if err != nil {
		return nil, err
	}
	o := &onSale{sale: s.(*flashSale), arrivals: cfg.Arrivals}
	o.sale.show.ID = cfg.ShowPrefix + "-onsale"
	if !cfg.NoRoom {
		o.room = &RoomSpec{OpensIn: defaultRoomOpensIn, AdmitPerSecond: cfg.AdmitPerSecond, MaxActive: cfg.MaxActive, Window: 10 * time.Minute}
		o.sale.show.Room = o.room
		o.users = make([]admission, o.sale.cfg.Users)
	}
	return o, nil
}

func (o *onSale) Name() string { return "on-sale" }
func (o *onSale) Shows() []ShowSpec {
	return []ShowSpec{o.sale.show}
}
func (o *onSale) Users() int { return o.sale.Users() }

// Done reports the sale over: every seat booked and, behind a room,
// every queued user told so.
func (o *onSale) Done() bool { return o.sale.Done() && o.queued.Load() == 0 }

// ArrivalRate spreads the users evenly over the arrivals.
func (o *onSale) ArrivalRate() float64 { return float64(o.Users()) / o.arrivals.Seconds() }

func (o *onSale) User(ctx context.Context, u *User) {
	if o.room == nil {
		o.sale.User(ctx, u)
		return
	}
	q := u.run.cfg.Target.(Queuer) // Run checked it
	show := o.sale.show
	var e QueueEntry
	err := u.call(ctx, OpJoin, func(ctx context.Context) (err error) {
		e, err = q.JoinQueue(ctx, show, u.ID)
		return err
	})
	if err != nil {
		return
	}
	o.joined.Add(1)
	o.users[u.Index].seq = e.Seq
	joinedAt := time.Now()
	outOfQueue := func() {}
	if e.State == QueueQueued {
		for n := o.queued.Add(1); ; {
			p := o.peak.Load()
			if n <= p || o.peak.CompareAndSwap(p, n) {
				break
			}
		}
		outOfQueue = sync.OnceFunc(func() { o.queued.Add(-1) })
		defer outOfQueue() // however the wait ends
	}
	for e.State == QueueQueued {
		if e.Wait > onSaleSleepAbove && !sleep(ctx, min(e.Wait/2, onSaleMaxSleep)) {
			o.users[u.Index].known = true // queued when the run ended
			return
		}
		// A poll is answered at the user's admission, or after its wait.
		pctx, cancel := context.WithTimeout(ctx, onSalePollWait+u.run.cfg.CallTimeout)
		next, err := q.PollQueue(pctx, show, u.ID, e.Version, onSalePollWait)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				o.users[u.Index].known = true // queued when the run ended
				return
			}
			if !u.Backoff(ctx, err) {
				return
			}
			continue
		}
		e = next
	}
	outOfQueue()
	switch e.State {
	case QueueAdmitted:
	case QueueSoldOut:
		o.users[u.Index].known = true
		o.soldOut.Add(1)
		u.SawSoldOut()
		return
	default:
		return
	}
	o.admitted.Add(1)
	admittedAt := e.Deadline.Add(-o.room.Window)
	o.users[u.Index].at, o.users[u.Index].known = admittedAt.UnixNano(), true
	u.run.rec.Observe(OpAdmission, OK, joinedAt, admittedAt)
	u.Token = e.Token
	if booking := o.sale.shop(ctx, u); !booking && o.room.MaxActive > 0 {
		// Done without buying: make room under the cap.
		lctx, cancel := context.WithTimeout(ctx, u.run.cfg.CallTimeout)
		_ = q.LeaveQueue(lctx, show, u.ID)
		cancel()
	}
}

// RoomStats counts the room's users and the fairness inversions: users
// admitted before someone who joined earlier (whose join got a smaller
// sequence) and who was admitted later or never (told the show sold out,
// or still queued when the run ended). Users whose fate the run does not
// know (a poll failed for good) are left out.
func (o *onSale) RoomStats() *RoomStats {
	if o.room == nil {
		return nil
	}
	st := &RoomStats{Joined: o.joined.Load(), Admitted: o.admitted.Load(), SoldOut: o.soldOut.Load(), PeakQueued: o.peak.Load()}
	joined := slices.DeleteFunc(slices.Clone(o.users), func(a admission) bool { return a.seq == 0 || !a.known })
	slices.SortFunc(joined, func(a, b admission) int { return cmp.Compare(a.seq, b.seq) })
	var latest int64 // the latest admission of the users so far, MaxInt64 for one not admitted
	var first, last int64
	for _, a := range joined {
		at := a.at
		if at == 0 {
			at = math.MaxInt64
		} else {
			if first == 0 || at < first {
				first = at
			}
			last = max(last, at)
			if at < latest {
				st.Inversions++
			}
		}
		latest = max(latest, at)
	}
	if last > first {
		after := 0 // admitted after the first admissions, over the span since
		for _, a := range joined {
			if a.at > first {
				after++
			}
		}
		st.AdmittedPerSecond = float64(after) / time.Duration(last-first).Seconds()
	}
	return st
}

// RoomStats is what an on-sale's users saw of its waiting room. The wait
// from a join's answer to the admission is the run's "admission" op.
type RoomStats struct {
	Joined     int64 `json:"joined"`
	Admitted   int64 `json:"admitted"`
	SoldOut    int64 `json:"sold_out"`    // told the show sold out while queued
	PeakQueued int64 `json:"peak_queued"` // most users queued at once, as they saw it
	// AdmittedPerSecond is the admissions after the first ones over the
	// span from the first to the last, in the engine's time (from the
	// tokens' deadlines).
	AdmittedPerSecond float64 `json:"admitted_per_s"`
	// Inversions counts users admitted before someone who joined earlier:
	// the target is 0.
	Inversions int64 `json:"fairness_inversions"`
	// EngineCPUPerJoinUS is the engine's processor time over the run, in
	// microseconds, divided by the joins: an upper bound on a join's cost,
	// since the shoppers' calls and the polls are in it too.
	EngineCPUPerJoinUS float64 `json:"engine_cpu_per_join_us,omitempty"`
}

// Summary is the room's figures on one line.
func (s *RoomStats) Summary() string {
	line := fmt.Sprintf("%d joined, at most %d queued; %d admitted (%s/s), %d told sold out; %d fairness inversions",
		s.Joined, s.PeakQueued, s.Admitted, fmtRate(s.AdmittedPerSecond), s.SoldOut, s.Inversions)
	if s.EngineCPUPerJoinUS > 0 {
		line += fmt.Sprintf("; engine CPU ≤ %.0f µs per join", s.EngineCPUPerJoinUS)
	}
	return line
}
