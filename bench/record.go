package bench

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to MaxLatency.
const (
	// MaxLatency is the largest latency the histograms hold. A longer one is
	// recorded as MaxLatency and counted in OpResult.Clamped; the exact
	// maximum is kept apart, so OpResult.Max still shows it.
	MaxLatency = 5 * time.Minute

	maxLatencyUS = int64(MaxLatency / time.Microsecond)
	// runDigits is the precision of the whole-run histograms: 3 significant
	// digits, so p99 of 99 ms is within 0.1 ms (~160 KB per op).
	runDigits = 3
	// secondDigits is the precision of the per-second histograms, which only
	// feed the charts: 2 digits keep one at ~23 KB, so a 10-minute run of
	// three ops stays under 45 MB.
	secondDigits = 2
)

// Recorder collects the outcomes and latencies of a run's calls: per op, one
// HdrHistogram over the whole run, and per second (of the call's end,
// counted from the run's start) the calls by outcome and a histogram for
// percentiles over time; plus the seats held and booked as sampled by the
// runner.
//
// A Recorder is safe for concurrent use. Each op has its own mutex around
// tiny critical sections (two histogram increments and a few counters, no
// allocation except when a new second starts), so calls of different ops
// never contend. Sharding each op over several histograms was rejected:
// HdrHistograms are large (the per-second ones multiply by the shards), and
// BenchmarkRecorderObserve shows 256 goroutines hitting one op cost well
// under a microsecond each on a 2-core machine.
type Recorder struct {
	start time.Time
	ops   [numOps]opRecorder

	mu       sync.Mutex       // guards progress and lastProg
	progress []progressSample // by second from start
	lastProg time.Time        // latest Progress time
}

// opRecorder holds one op's figures.
type opRecorder struct {
	mu        sync.Mutex              // guards everything below
	hist      *hdrhistogram.Histogram // whole run, µs, clamped to maxLatencyUS
	byOutcome [numOutcomes]int64
	clamped   int64 // latencies above maxLatencyUS
	sumUS     int64 // exact sum of latencies, for the mean
	maxUS     int64 // exact largest latency, not clamped
	last      time.Time
	seconds   []*secondBucket // by second of the call's end
	_         [64]byte        // keep the ops' mutexes on separate cache lines
}

// secondBucket is one op's calls that ended within one second.
type secondBucket struct {
	byOutcome [numOutcomes]int64
	hist      *hdrhistogram.Histogram
}

// progressSample is the last Progress of one second.
type progressSample struct {
	held, booked int
	set          bool
}

// NewRecorder returns an empty Recorder for a run that started at start;
// per-second figures count from it.
func NewRecorder(start time.Time) *Recorder {
	r := &Recorder{start: start}
	for i := range r.ops {
		r.ops[i].hist = hdrhistogram.New(1, maxLatencyUS, runDigits)
	}
	return r
}

// Observe records one call of op that ended with out at end. intended is
// when the call was due: in an open-loop run that is its scheduled time, not
// when it was actually sent, so a stalled target's queueing shows in the
// latency (no coordinated omission). A latency below zero counts as zero;
// one above MaxLatency is recorded as MaxLatency and counted as clamped.
// Ops and outcomes out of range are ignored.
func (r *Recorder) Observe(op Op, out Outcome, intended, end time.Time) {
	if op >= numOps || out >= numOutcomes {
		return
	}
	us := int64(end.Sub(intended) / time.Microsecond)
	if us < 0 {
		us = 0
	}
	v, clamped := us, false
	if v > maxLatencyUS {
		v, clamped = maxLatencyUS, true
	}
	sec := secondOf(end.Sub(r.start))

	o := &r.ops[op]
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.hist.RecordValue(v) // cannot fail: 0 ≤ v ≤ the histogram's max
	o.byOutcome[out]++
	o.sumUS += us
	if us > o.maxUS {
		o.maxUS = us
	}
	if clamped {
		o.clamped++
	}
	if end.After(o.last) {
		o.last = end
	}
	for len(o.seconds) <= sec {
		o.seconds = append(o.seconds, nil)
	}
	b := o.seconds[sec]
	if b == nil {
		b = &secondBucket{hist: hdrhistogram.New(1, maxLatencyUS, secondDigits)}
		o.seconds[sec] = b
	}
	b.byOutcome[out]++
	_ = b.hist.RecordValue(v)
}

// Progress records the seats held and booked at time at; the last call of
// each second is kept for the series.
func (r *Recorder) Progress(at time.Time, held, booked int) {
	sec := secondOf(at.Sub(r.start))
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.progress) <= sec {
		r.progress = append(r.progress, progressSample{})
	}
	p := &r.progress[sec]
	if !p.set || !at.Before(r.lastProg) {
		*p = progressSample{held: held, booked: booked, set: true}
	}
	if at.After(r.lastProg) {
		r.lastProg = at
	}
}

// secondOf is the index of the second that contains d since the start;
// anything before the start counts in second 0.
func secondOf(d time.Duration) int {
	if d < 0 {
		return 0
	}
	return int(d / time.Second)
}

// Result summarizes what was recorded so far. Its Duration runs from the
// start to the latest call end or Progress time (the runner may set its own
// and the run's other fields: see Result); Throughput and OKPerSecond divide
// by that duration. It may be called while calls are still observed.
func (r *Recorder) Result() *Result {
	res := &Result{Started: r.start, Ops: []OpResult{}, Series: []Second{}}
	r.mu.Lock()
	last := r.lastProg
	progress := append([]progressSample(nil), r.progress...)
	r.mu.Unlock()

	type opSeconds struct {
		name    string
		seconds []OpSecond // Count 0: no call ended in that second
	}
	var perOp []opSeconds
	nsec := len(progress)
	for op := range numOps {
		o := &r.ops[op]
		o.mu.Lock()
		if o.last.After(last) {
			last = o.last
		}
		n := o.hist.TotalCount()
		if n == 0 {
			o.mu.Unlock()
			continue
		}
		// A percentile is the upper end of its bucket (3 significant
		// digits), which can lie above the exact maximum.
		q := func(p float64) float64 { return usToMS(min(o.hist.ValueAtQuantile(p), o.maxUS)) }
		or := OpResult{
			Op:        op.String(),
			Count:     n,
			ByOutcome: map[string]int64{},
			P50:       q(50),
			P90:       q(90),
			P99:       q(99),
			P999:      q(99.9),
			Max:       usToMS(o.maxUS),
			Mean:      float64(o.sumUS) / float64(n) / 1e3,
			Clamped:   o.clamped,
		}
		for out, c := range o.byOutcome {
			if c > 0 {
				or.ByOutcome[Outcome(out).String()] = c
			}
		}
		secs := make([]OpSecond, len(o.seconds))
		for t, b := range o.seconds {
			if b != nil {
				secs[t] = b.summary()
			}
		}
		o.mu.Unlock()
		res.Ops = append(res.Ops, or)
		perOp = append(perOp, opSeconds{op.String(), secs})
		nsec = max(nsec, len(secs))
	}

	if last.After(r.start) {
		res.Duration = last.Sub(r.start).Seconds()
	}
	for i := range res.Ops {
		res.Ops[i].setRates(res.Duration)
	}

	var held, booked int // carried over seconds without a sample
	for t := range nsec {
		s := Second{T: t, Ops: map[string]OpSecond{}}
		for _, p := range perOp {
			if t < len(p.seconds) && p.seconds[t].Count > 0 {
				s.Ops[p.name] = p.seconds[t]
			}
		}
		if t < len(progress) && progress[t].set {
			held, booked = progress[t].held, progress[t].booked
		}
		s.Held, s.Booked = held, booked
		res.Series = append(res.Series, s)
	}
	return res
}

// summary is the bucket's figures.
func (b *secondBucket) summary() OpSecond {
	s := OpSecond{
		Count: b.hist.TotalCount(),
		OK:    b.byOutcome[OK],
		P50:   usToMS(b.hist.ValueAtQuantile(50)),
		P99:   usToMS(b.hist.ValueAtQuantile(99)),
	}
	for out, c := range b.byOutcome {
		if Outcome(out) != OK && c > 0 {
			if s.Errors == nil {
				s.Errors = map[string]int64{}
			}
			s.Errors[Outcome(out).String()] = c
		}
	}
	return s
}

// usToMS converts microseconds to milliseconds.
func usToMS(us int64) float64 { return float64(us) / 1e3 }

// Result is the outcome of a run: what the Recorder measured (Ops, Series,
// Duration, Started) and what the runner knows (the rest). It is written as
// JSON as it is, and read back by ReadJSON for comparisons.
type Result struct {
	// Set by the runner.
	Target       string         `json:"target"`
	Scenario     string         `json:"scenario"`
	Loop         string         `json:"loop,omitempty"`        // "closed" or "open"
	Concurrency  int            `json:"concurrency,omitempty"` // users in flight, closed loop
	Rate         float64        `json:"rate,omitempty"`        // users per second, open loop
	Seed         uint64         `json:"seed"`
	Capacity     int            `json:"capacity"` // seats of the (first) show
	Users        int            `json:"users"`
	Config       map[string]any `json:"config,omitempty"`           // the command's settings, shown in reports
	AllHeldAfter float64        `json:"all_held_after_s,omitempty"` // seconds until no seat was available; 0: never
	SoldOutAfter float64        `json:"sold_out_after_s,omitempty"` // seconds until sold out or done; 0: never
	Stopped      string         `json:"stopped,omitempty"`          // why the run ended early, if it did
	// SaleHoldAttempts and SaleHoldsOK count the holds tried and granted
	// until every seat was held (AllHeldAfter): the on-sale itself, before
	// the users who come late only find the map full.
	SaleHoldAttempts int64 `json:"sale_hold_attempts,omitempty"`
	SaleHoldsOK      int64 `json:"sale_holds_ok,omitempty"`
	// CPU is the processor time, in seconds, that processes used during
	// the load (from the first user's start until the last user and the
	// seat-map sampler were done; creating the shows and the verification
	// are left out), by name: "client" is the bench process (see SelfCPU),
	// the others are the run's RunConfig.CPU meters ("engine",
	// "redis-server", "postgres"). CPUPerAttempt divides it by the hold
	// attempts.
	CPU map[string]float64 `json:"cpu_s,omitempty"`
	// ReplicaLag is, for a target whose seat maps come from a live replica
	// (ReplicaLagger), how far the replica was behind the engine over the
	// run: for every seat-map message it applied, the time from the engine
	// publishing it to its arrival.
	ReplicaLag *LagStats `json:"replica_lag,omitempty"`
	// Watchers is what the run's extra seat-map streams received
	// (RunConfig.Watchers), for a target that serves them. Their cost to
	// the target is in CPU: compare with a run without them.
	Watchers *WatchStats `json:"watchers,omitempty"`
	// Room is what an on-sale's users saw of its waiting room.
	Room *RoomStats `json:"room,omitempty"`
	// Verification is the check of the target's store after the run. The
	// reports show it through its String and Verified methods when it has
	// them (see Verdict); read back from JSON it is a map[string]any.
	Verification any `json:"verification,omitempty"`

	// Set by the Recorder.
	Started  time.Time  `json:"started"`
	Duration float64    `json:"duration_s"` // seconds
	Ops      []OpResult `json:"ops"`        // ops that were called, in Op order
	Series   []Second   `json:"series"`     // one per second from the start
}

// LagStats summarizes a distribution of lags, in milliseconds.
type LagStats struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Op returns the figures of the named op ("hold"), and false if it was never
// called.
func (r *Result) Op(name string) (OpResult, bool) {
	for _, o := range r.Ops {
		if o.Op == name {
			return o, true
		}
	}
	return OpResult{}, false
}

// HoldRates returns hold attempts and granted holds per second: over the
// on-sale (until every seat was held) when the run got that far, over the
// whole run otherwise. A hold-storm is always measured over the whole run:
// each of its users makes one attempt whatever the seat map, so the
// refusals after every seat is held are part of its load (as in
// redis-benchmark, requests ÷ seconds).
func (r *Result) HoldRates() (attempts, ok float64) {
	if r.onSaleRates() {
		return float64(r.SaleHoldAttempts) / r.AllHeldAfter, float64(r.SaleHoldsOK) / r.AllHeldAfter
	}
	hold, _ := r.Op(OpHold.String())
	return hold.Throughput, hold.OKPerSecond
}

// onSaleRates reports whether HoldRates counts over the on-sale.
func (r *Result) onSaleRates() bool {
	return r.Scenario != "hold-storm" && r.AllHeldAfter > 0 && r.SaleHoldAttempts > 0
}

// CPUPerAttempt returns, for each process of Result.CPU, its processor time
// in microseconds divided by the run's hold attempts (every call of the
// run, seat maps and confirms included, is in the numerator). It returns
// nil when there was no hold attempt or no CPU figure.
func (r *Result) CPUPerAttempt() map[string]float64 {
	hold, _ := r.Op(OpHold.String())
	if hold.Count == 0 || len(r.CPU) == 0 {
		return nil
	}
	m := make(map[string]float64, len(r.CPU))
	for name, s := range r.CPU {
		m[name] = s * 1e6 / float64(hold.Count)
	}
	return m
}

// OpResult is one op's figures over the whole run. Latencies are in
// milliseconds, from the call's intended start to its end.
type OpResult struct {
	Op          string           `json:"op"`
	Count       int64            `json:"count"`
	ByOutcome   map[string]int64 `json:"by_outcome"` // outcomes seen, by Outcome.String
	P50         float64          `json:"p50_ms"`
	P90         float64          `json:"p90_ms"`
	P99         float64          `json:"p99_ms"`
	P999        float64          `json:"p999_ms"`
	Max         float64          `json:"max_ms"`  // exact, even beyond MaxLatency
	Mean        float64          `json:"mean_ms"` // exact
	Clamped     int64            `json:"clamped,omitempty"`
	Throughput  float64          `json:"throughput_per_s"` // calls per second of the run
	OKPerSecond float64          `json:"ok_per_s"`         // OK calls per second of the run
}

// setRates sets Throughput and OKPerSecond for a run of d seconds.
func (o *OpResult) setRates(d float64) {
	if d <= 0 {
		o.Throughput, o.OKPerSecond = 0, 0
		return
	}
	o.Throughput = float64(o.Count) / d
	o.OKPerSecond = float64(o.ByOutcome[OK.String()]) / d
}

// SetDuration sets the run's duration in seconds and recomputes every op's
// rates from it.
func (r *Result) SetDuration(seconds float64) {
	r.Duration = seconds
	for i := range r.Ops {
		r.Ops[i].setRates(seconds)
	}
}

// Second is what happened in one second of the run, [T, T+1) seconds from
// the start.
type Second struct {
	T      int                 `json:"t"`
	Ops    map[string]OpSecond `json:"ops"`    // ops called in this second, by name
	Held   int                 `json:"held"`   // seats held at the second's last sample
	Booked int                 `json:"booked"` // seats booked at the second's last sample
}

// OpSecond is one op's calls that ended within one second.
type OpSecond struct {
	Count  int64            `json:"count"`
	OK     int64            `json:"ok"`
	Errors map[string]int64 `json:"errors,omitempty"` // calls not OK, by outcome
	P50    float64          `json:"p50_ms"`
	P99    float64          `json:"p99_ms"`
}
