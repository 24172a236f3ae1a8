package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// RunConfig says how to run a scenario against a target.
type RunConfig struct {
	Target   Target
	Scenario Scenario
	// Concurrency is the number of users in flight in a closed-loop run
	// (each starts when another is done). Default 1,000.
	Concurrency int
	// Rate, when positive, makes the run open loop: users arrive at this
	// many per second whatever the target does, and every latency counts
	// from the moment the call was due, so a stalled target shows.
	Rate float64
	// MaxInFlight caps the users in progress of an open-loop run (memory
	// bound); arrivals beyond it start late, and their lateness is counted
	// in their latency. Default 20,000.
	MaxInFlight int
	// Seed makes the users' choices deterministic.
	Seed uint64
	// MaxDuration ends the run however far it got. Default 5 minutes.
	MaxDuration time.Duration
	// CallTimeout bounds every call. Default 10 s.
	CallTimeout time.Duration
	// Progress, if set, is called about every ProgressEvery (default 1 s)
	// with the run so far.
	Progress      func(Snapshot)
	ProgressEvery time.Duration
	// SampleEvery is how often the run reads the first show's seat map to
	// chart seats held and booked over time. Default 250 ms.
	SampleEvery time.Duration
	// CPU names meters of other processes whose processor time during the
	// load goes into Result.CPU, such as "engine" for an engine the bench
	// started. This process is always measured, as "client" (SelfCPU),
	// which a meter of that name cannot replace.
	CPU map[string]CPUMeter
	// Watchers, when positive and the target is a SeatMapWatcher, is the
	// number of extra seat-map streams of the first show that are opened
	// after the shows are created, before the first user starts, and read
	// until the load has ended and the CPU was read: the target's cost of
	// fanning the show's changes out goes into Result.CPU, and what the
	// streams received into Result.Watchers. Other targets ignore it.
	Watchers int
}

// Snapshot is the state of a run in progress.
type Snapshot struct {
	Elapsed      time.Duration
	Users        int   // users of the run
	UsersDone    int64 // users finished
	HoldAttempts int64
	HoldsOK      int64
	ConfirmsOK   int64
	Errors       int64 // calls that ended Unavailable, Timeout or Failed
	Capacity     int   // seats of the first show
	Held, Booked int   // seats of the first show, at the last sample
}

// HoldsDurabler is implemented by targets that say whether an acknowledged
// hold survives a crash. Targets that don't implement it keep holds durably.
type HoldsDurabler interface{ HoldsDurable() bool }

// FreshSeatMapper is implemented by targets whose SeatMap may answer from a
// cache (the baselines, see --baseline-map-cache): FreshSeatMap reads the
// store. The run's sampler uses it, so that its charts and its "all held"
// and "sold out" times are not late by the cache's age.
type FreshSeatMapper interface {
	FreshSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error)
}

// LocalSeatMapper is implemented by targets whose seat maps are mostly
// answered from the load generator's own memory (a replica, a cache):
// LocalSeatMap answers at once, or reports false when the map must be read
// from the target (then SeatMap is called). It spares every read that needs
// no I/O the call's deadline timer, which was a sixth of the load
// generator's CPU in a flash sale.
type LocalSeatMapper interface {
	LocalSeatMap(show ShowSpec) (SeatMap, bool)
}

// Arriver is implemented by scenarios whose users arrive on their own
// schedule (an on-sale's crowd): unless RunConfig.Rate is set, the run is
// open loop at ArrivalRate users per second, with every user allowed in
// flight at once (they wait in the queue together).
type Arriver interface{ ArrivalRate() float64 }

// RoomReporter is implemented by scenarios with a waiting room: RoomStats
// goes into Result.Room after the run.
type RoomReporter interface{ RoomStats() *RoomStats }

// runner is one run in progress.
type runner struct {
	cfg   RunConfig
	ctx   context.Context // ends when the run ends; calls ended by it are not recorded
	start time.Time
	rec   *Recorder
	acks  map[string]*AckLog // by show ID
	later sync.WaitGroup     // confirms scheduled after a pay delay

	usersDone, holdAttempts, holdsOK, confirmsOK, errs atomic.Int64
	allHeldAt                                          atomic.Int64 // ns since start; 0: not yet
	saleAttempts, saleOK                               atomic.Int64 // holds tried and granted when allHeldAt was set
	soldOutAt                                          atomic.Int64
	held, booked                                       atomic.Int64 // last sample of the first show
}

// Run creates the scenario's shows on the target, plays every user, and
// verifies the result from the target's store.
func Run(ctx context.Context, cfg RunConfig) (*Result, error) {
	if cfg.Target == nil || cfg.Scenario == nil {
		return nil, errors.New("bench: a run needs a target and a scenario")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1000
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 20_000
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 5 * time.Minute
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = 250 * time.Millisecond
	}
	if a, ok := cfg.Scenario.(Arriver); ok && cfg.Rate <= 0 {
		cfg.Rate = a.ArrivalRate()
		cfg.MaxInFlight = max(cfg.MaxInFlight, cfg.Scenario.Users())
	}
	shows := cfg.Scenario.Shows()
	if len(shows) == 0 {
		return nil, errors.New("bench: the scenario has no show")
	}
	if _, ok := cfg.Target.(Queuer); !ok && slices.ContainsFunc(shows, func(s ShowSpec) bool { return s.Room != nil }) {
		return nil, fmt.Errorf("bench: %s has no waiting room, which the scenario needs", cfg.Target.Name())
	}
	r := &runner{cfg: cfg, acks: map[string]*AckLog{}}
	for _, s := range shows {
		if err := cfg.Target.CreateShow(ctx, s); err != nil {
			return nil, fmt.Errorf("bench: creating show %s on %s: %w", s.ID, cfg.Target.Name(), err)
		}
		r.acks[s.ID] = &AckLog{}
	}
	var stopWatchers func() WatchStats
	if w, ok := cfg.Target.(SeatMapWatcher); ok && cfg.Watchers > 0 {
		stop, err := w.WatchSeatMaps(ctx, shows[0], cfg.Watchers)
		if err != nil {
			return nil, fmt.Errorf("bench: watching show %s on %s: %w", shows[0].ID, cfg.Target.Name(), err)
		}
		stopWatchers = stop
		defer stop() // an early return; stopping again is a no-op
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	r.ctx = runCtx
	meters := map[string]CPUMeter{}
	for name, m := range cfg.CPU {
		meters[name] = m
	}
	meters["client"] = SelfCPU
	cpuStart := readCPU(meters)
	r.start = time.Now()
	r.rec = NewRecorder(r.start)

	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(runCtx)
	bg.Go(func() { r.sample(bgCtx, shows[0]) })
	bg.Go(func() { r.watch(bgCtx, cancel) })
	if cfg.Rate > 0 {
		r.openLoop()
	} else {
		r.closedLoop()
	}
	r.later.Wait()
	end := time.Now()
	stopBG()
	bg.Wait()
	cpuEnd := readCPU(meters)
	var watchers *WatchStats
	if stopWatchers != nil {
		ws := stopWatchers()
		watchers = &ws
	}
	r.sampleOnce(ctx, shows[0])
	r.report(end)

	res := r.rec.Result()
	res.Target = cfg.Target.Name()
	res.Scenario = cfg.Scenario.Name()
	res.Seed = cfg.Seed
	res.Users = cfg.Scenario.Users()
	res.Capacity = shows[0].Capacity()
	res.SetDuration(end.Sub(r.start).Seconds())
	res.Loop = "closed"
	res.Concurrency = cfg.Concurrency
	if cfg.Rate > 0 {
		res.Loop, res.Rate, res.Concurrency = "open", cfg.Rate, 0
	}
	if at := r.allHeldAt.Load(); at > 0 {
		res.AllHeldAfter = time.Duration(at).Seconds()
		res.SaleHoldAttempts, res.SaleHoldsOK = r.saleAttempts.Load(), r.saleOK.Load()
	}
	if at := r.soldOutAt.Load(); at > 0 {
		res.SoldOutAfter = time.Duration(at).Seconds()
	}
	for name, t0 := range cpuStart {
		if t1, ok := cpuEnd[name]; ok {
			if res.CPU == nil {
				res.CPU = map[string]float64{}
			}
			res.CPU[name] = max(t1-t0, 0).Seconds()
		}
	}
	if rl, ok := cfg.Target.(ReplicaLagger); ok {
		if h := rl.ReplicaLag(); h.TotalCount() > 0 {
			res.ReplicaLag = &LagStats{
				Count: h.TotalCount(), P50: usToMS(h.ValueAtQuantile(50)), P99: usToMS(h.ValueAtQuantile(99)), Max: usToMS(h.Max()),
			}
		}
	}
	res.Watchers = watchers
	if rr, ok := cfg.Scenario.(RoomReporter); ok {
		res.Room = rr.RoomStats()
		if res.Room != nil && res.Room.Joined > 0 && res.CPU["engine"] > 0 {
			res.Room.EngineCPUPerJoinUS = res.CPU["engine"] * 1e6 / float64(res.Room.Joined)
		}
	}
	if runCtx.Err() != nil && ctx.Err() == nil && !cfg.Scenario.Done() {
		res.Stopped = fmt.Sprintf("stopped after the maximum duration %v", cfg.MaxDuration)
	}

	durable := true
	if d, ok := cfg.Target.(HoldsDurabler); ok {
		durable = d.HoldsDurable()
	}
	verifyCtx, cancelVerify := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelVerify()
	var all Verification
	for i, s := range shows {
		records, err := cfg.Target.Records(verifyCtx, s)
		if err != nil {
			return res, fmt.Errorf("bench: reading %s's records of show %s: %w", cfg.Target.Name(), s.ID, err)
		}
		v := Verify(s, records, r.acks[s.ID].Acks(), durable)
		if c, ok := cfg.Target.(StoreChecker); ok {
			lines, err := c.CheckStore(verifyCtx, s)
			if err != nil {
				return res, fmt.Errorf("bench: checking %s's store for show %s: %w", cfg.Target.Name(), s.ID, err)
			}
			v.Add(lines...)
		}
		if i == 0 {
			all = v
		} else {
			all = all.Merge(v)
		}
	}
	res.Verification = all
	return res, nil
}

// readCPU reads every meter; a meter that fails is left out.
func readCPU(meters map[string]CPUMeter) map[string]time.Duration {
	m := make(map[string]time.Duration, len(meters))
	for name, read := range meters {
		if d, err := read(); err == nil {
			m[name] = d
		}
	}
	return m
}

// closedLoop keeps Concurrency users in flight until every user is done.
func (r *runner) closedLoop() {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for r.ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= r.cfg.Scenario.Users() {
					return
				}
				r.play(i, time.Now())
			}
		})
	}
	wg.Wait()
}

// openLoop starts user i at start + i/Rate, late only when MaxInFlight
// users are already in progress; latencies count from the due time.
func (r *runner) openLoop() {
	slots := make(chan struct{}, r.cfg.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := float64(time.Second) / r.cfg.Rate
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := range r.cfg.Scenario.Users() {
		due := r.start.Add(time.Duration(float64(i) * interval))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-r.ctx.Done():
				return
			case <-timer.C:
			}
		}
		select {
		case <-r.ctx.Done():
			return
		case slots <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-slots }()
			r.play(i, due)
		})
	}
}

// play runs user i, whose first call is due at due.
func (r *runner) play(i int, due time.Time) {
	u := &User{
		ID:    "u" + strconv.Itoa(i),
		Index: i,
		Rand:  rand.New(rand.NewPCG(r.cfg.Seed, uint64(i))),
		run:   r, due: due,
	}
	r.cfg.Scenario.User(r.ctx, u)
	r.usersDone.Add(1)
}

// watch ends the run when the scenario is done, and reports progress.
func (r *runner) watch(ctx context.Context, endRun context.CancelFunc) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if r.cfg.Scenario.Done() {
				r.soldOutAt.CompareAndSwap(0, int64(now.Sub(r.start)))
				endRun()
				return
			}
			if r.cfg.Progress != nil && now.Sub(lastReport) >= r.cfg.ProgressEvery {
				lastReport = now
				r.report(now)
			}
		}
	}
}

func (r *runner) report(now time.Time) {
	if r.cfg.Progress == nil {
		return
	}
	r.cfg.Progress(Snapshot{
		Elapsed: now.Sub(r.start), Users: r.cfg.Scenario.Users(), UsersDone: r.usersDone.Load(),
		HoldAttempts: r.holdAttempts.Load(), HoldsOK: r.holdsOK.Load(), ConfirmsOK: r.confirmsOK.Load(),
		Errors: r.errs.Load(), Capacity: r.cfg.Scenario.Shows()[0].Capacity(),
		Held: int(r.held.Load()), Booked: int(r.booked.Load()),
	})
}

// sample reads the show's seat map every SampleEvery for the charts of
// seats held and booked, and notes when no seat was left available.
func (r *runner) sample(ctx context.Context, show ShowSpec) {
	tick := time.NewTicker(r.cfg.SampleEvery)
	defer tick.Stop()
	for {
		r.sampleOnce(ctx, show)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *runner) sampleOnce(ctx context.Context, show ShowSpec) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	read := r.cfg.Target.SeatMap
	if f, ok := r.cfg.Target.(FreshSeatMapper); ok {
		read = f.FreshSeatMap
	}
	sm, err := read(ctx, show)
	if err != nil {
		return
	}
	now := time.Now()
	var avail, held, booked int
	for _, s := range sm.Statuses {
		switch s {
		case Available:
			avail++
		case Held:
			held++
		case Booked:
			booked++
		}
	}
	r.held.Store(int64(held))
	r.booked.Store(int64(booked))
	r.rec.Progress(now, held, booked)
	if avail == 0 {
		r.allHeld(now)
	}
	if booked == len(sm.Statuses) {
		r.soldOutAt.CompareAndSwap(0, int64(now.Sub(r.start)))
	}
}

// User is one virtual user: its deterministic random source, and the calls
// it makes, timed and recorded.
type User struct {
	ID    string
	Index int // the user's number in the run, from 0
	Rand  *rand.Rand
	// Token is the user's admission token once a waiting room admitted
	// it: Hold sends it.
	Token string
	run   *runner
	due   time.Time // when the next call is due; latency counts from it
}

// call times one call: from when it was due (or from now, if it is made
// later than due through the user's own pace) to its end.
func (u *User) call(ctx context.Context, op Op, fn func(ctx context.Context) error) error {
	start := time.Now()
	due := u.due
	if due.IsZero() || due.After(start) {
		due = start
	}
	ctx, cancel := context.WithTimeout(ctx, u.run.cfg.CallTimeout)
	err := fn(ctx)
	cancel()
	return u.record(op, due, err)
}

// record records the outcome of a call that was due at due and ends now.
func (u *User) record(op Op, due time.Time, err error) error {
	r := u.run
	end := time.Now()
	u.due = time.Time{}
	if r.ctx.Err() != nil && err != nil {
		return err // the run ended under the call: not the target's doing
	}
	out := OutcomeOf(err)
	r.rec.Observe(op, out, due, end)
	switch out {
	case Unavailable, Timeout, Failed:
		r.errs.Add(1)
	}
	return err
}

// SeatMap reads the show's seat map.
func (u *User) SeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	var sm SeatMap
	if lm, ok := u.run.cfg.Target.(LocalSeatMapper); ok {
		start := time.Now()
		due := u.due
		if due.IsZero() || due.After(start) {
			due = start
		}
		if sm, ok := lm.LocalSeatMap(show); ok && len(sm.Statuses) == show.Capacity() {
			return sm, u.record(OpSeatMap, due, nil)
		}
	}
	err := u.call(ctx, OpSeatMap, func(ctx context.Context) (err error) {
		sm, err = u.run.cfg.Target.SeatMap(ctx, show)
		return err
	})
	if err == nil && len(sm.Statuses) != show.Capacity() {
		return SeatMap{}, &Error{Outcome: Failed, Err: fmt.Errorf("seat map of %d seats, want %d", len(sm.Statuses), show.Capacity())}
	}
	return sm, err
}

// Hold holds seats for the user; an acknowledged hold is logged for
// verification.
func (u *User) Hold(ctx context.Context, show ShowSpec, seats []string) (Hold, error) {
	var h Hold
	u.run.holdAttempts.Add(1)
	err := u.call(ctx, OpHold, func(ctx context.Context) (err error) {
		if u.Token != "" {
			h, err = u.run.cfg.Target.(Queuer).HoldAdmitted(ctx, show, u.ID, seats, u.Token)
		} else {
			h, err = u.run.cfg.Target.Hold(ctx, show, u.ID, seats)
		}
		return err
	})
	if err == nil {
		u.run.holdsOK.Add(1)
		u.run.acks[show.ID].Hold(h)
	}
	return h, err
}

// Confirm books the hold; an acknowledged confirm is logged for
// verification.
func (u *User) Confirm(ctx context.Context, show ShowSpec, h Hold) error {
	ref := "pay-" + h.ID
	err := u.call(ctx, OpConfirm, func(ctx context.Context) error {
		return u.run.cfg.Target.Confirm(ctx, show, h, ref)
	})
	if err == nil {
		u.run.confirmsOK.Add(1)
		u.run.acks[show.ID].Confirm(h.ID, ref)
	}
	return err
}

// Backoff waits a short random time after a retryable error. It reports
// false when the run is over or the error is not worth retrying.
func (u *User) Backoff(ctx context.Context, err error) bool {
	switch OutcomeOf(err) {
	case Unavailable, Timeout:
	default:
		return false
	}
	return sleep(ctx, 50*time.Millisecond+time.Duration(u.Rand.Int64N(int64(150*time.Millisecond))))
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// SawSoldOut notes that the user found no seat available.
func (u *User) SawSoldOut() { u.run.allHeld(time.Now()) }

// AllHeld notes that every seat is held, as the scenario counts its
// acknowledged holds; the first call (or the first sample of a seat map
// with no seat available, or SawSoldOut) sets the run's "all held" time.
func (u *User) AllHeld() { u.run.allHeld(time.Now()) }

// SoldOut notes that every seat is booked, as the scenario counts its
// acknowledged confirms; the first call sets the run's "sold out" time.
func (u *User) SoldOut() { u.run.soldOutAt.CompareAndSwap(0, int64(time.Since(u.run.start))) }

// allHeld notes the first time no seat was available, and the holds tried
// and granted until then.
func (r *runner) allHeld(at time.Time) {
	if r.allHeldAt.CompareAndSwap(0, int64(at.Sub(r.start))) {
		r.saleAttempts.Store(r.holdAttempts.Load())
		r.saleOK.Store(r.holdsOK.Load())
	}
}

// Later runs fn as this user after d (a pay delay) without keeping the
// user's place in a closed loop; fn's first call counts from when it was
// due.
func (u *User) Later(d time.Duration, fn func(ctx context.Context, u *User)) {
	r := u.run
	due := time.Now().Add(d)
	next := &User{ID: u.ID, Index: u.Index, Token: u.Token, Rand: rand.New(rand.NewPCG(u.Rand.Uint64(), u.Rand.Uint64())), run: r, due: due}
	r.later.Go(func() {
		if sleep(r.ctx, d) {
			fn(r.ctx, next)
		}
	})
}
