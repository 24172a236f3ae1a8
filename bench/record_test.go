package bench

import (
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// recStart is the start of the recorders of these tests.
var recStart = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// approxEqual fails unless got is within tol (relative) of want.
func approxEqual(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol*math.Abs(want) {
		t.Errorf("%s = %v, want %v ± %.2g%%", what, got, want, tol*100)
	}
}

func TestRecordPercentiles(t *testing.T) {
	type want struct{ p50, p90, p99, p999, max, mean float64 }
	tests := []struct {
		name      string
		latencies func(observe func(time.Duration))
		want      want
	}{
		{
			name: "uniform 1..100000 µs",
			latencies: func(observe func(time.Duration)) {
				for i := 1; i <= 100_000; i++ {
					observe(time.Duration(i) * time.Microsecond)
				}
			},
			want: want{p50: 50, p90: 90, p99: 99, p999: 99.9, max: 100, mean: 50.0005},
		},
		{
			name: "bimodal: 95% at 1 ms, 5% at 200 ms",
			latencies: func(observe func(time.Duration)) {
				for i := range 20_000 {
					if i%20 == 7 {
						observe(200 * time.Millisecond)
					} else {
						observe(time.Millisecond)
					}
				}
			},
			want: want{p50: 1, p90: 1, p99: 200, p999: 200, max: 200, mean: 0.95*1 + 0.05*200},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := NewRecorder(recStart)
			tt.latencies(func(d time.Duration) {
				intended := recStart.Add(time.Second)
				rec.Observe(OpHold, OK, intended, intended.Add(d))
			})
			res := rec.Result()
			hold, ok := res.Op("hold")
			if !ok {
				t.Fatalf("no hold in %+v", res.Ops)
			}
			// 3 significant digits: within 0.1%, and percentiles are
			// reported as the top of their bucket.
			const tol = 0.002
			approxEqual(t, "p50", hold.P50, tt.want.p50, tol)
			approxEqual(t, "p90", hold.P90, tt.want.p90, tol)
			approxEqual(t, "p99", hold.P99, tt.want.p99, tol)
			approxEqual(t, "p99.9", hold.P999, tt.want.p999, tol)
			approxEqual(t, "max", hold.Max, tt.want.max, 1e-9) // exact
			approxEqual(t, "mean", hold.Mean, tt.want.mean, 1e-9)
			if hold.Clamped != 0 {
				t.Errorf("clamped = %d, want 0", hold.Clamped)
			}
		})
	}
}

func TestRecordClampsHugeLatencies(t *testing.T) {
	rec := NewRecorder(recStart)
	for range 98 {
		rec.Observe(OpConfirm, OK, recStart, recStart.Add(2*time.Millisecond))
	}
	rec.Observe(OpConfirm, Timeout, recStart, recStart.Add(10*time.Minute))
	rec.Observe(OpConfirm, Timeout, recStart, recStart.Add(time.Hour))
	rec.Observe(OpConfirm, OK, recStart.Add(time.Second), recStart) // ended before it was due: 0

	res := rec.Result()
	c, _ := res.Op("confirm")
	if c.Count != 101 || c.Clamped != 2 {
		t.Fatalf("count %d clamped %d, want 101 and 2", c.Count, c.Clamped)
	}
	approxEqual(t, "max (exact, beyond the histogram)", c.Max, float64(time.Hour/time.Millisecond), 1e-9)
	approxEqual(t, "p99.9 (clamped to the histogram's max)", c.P999, float64(MaxLatency/time.Millisecond), 0.002)
	approxEqual(t, "p50", c.P50, 2, 0.002)
	if c.ByOutcome["timeout"] != 2 || c.ByOutcome["ok"] != 99 {
		t.Errorf("by outcome %v", c.ByOutcome)
	}
}

func TestRecordSecondsAndProgress(t *testing.T) {
	rec := NewRecorder(recStart)
	at := func(d time.Duration) time.Time { return recStart.Add(d) }
	ms := time.Millisecond
	// second 0: two holds (1 ok 10 ms, 1 taken 30 ms), one seat map
	rec.Observe(OpHold, OK, at(100*ms), at(110*ms))
	rec.Observe(OpHold, Taken, at(500*ms), at(530*ms))
	rec.Observe(OpSeatMap, OK, at(0), at(2*ms))
	// second 1: a hold that started in second 0 ends in second 1
	rec.Observe(OpHold, Unavailable, at(900*ms), at(1200*ms))
	rec.Progress(at(1100*ms), 4, 0)
	rec.Progress(at(1900*ms), 6, 2) // the last of second 1 wins
	rec.Progress(at(1500*ms), 5, 1) // late report of an earlier time: ignored
	// second 2: nothing; second 3: a confirm
	rec.Observe(OpConfirm, OK, at(3000*ms), at(3400*ms))
	rec.Progress(at(3500*ms), 3, 5)

	res := rec.Result()
	if len(res.Series) != 4 {
		t.Fatalf("%d seconds, want 4: %+v", len(res.Series), res.Series)
	}
	for i, s := range res.Series {
		if s.T != i {
			t.Errorf("series[%d].T = %d", i, s.T)
		}
	}
	s0, s1, s2, s3 := res.Series[0], res.Series[1], res.Series[2], res.Series[3]
	if h := s0.Ops["hold"]; h.Count != 2 || h.OK != 1 || h.Errors["taken"] != 1 {
		t.Errorf("second 0 hold: %+v", h)
	}
	approxEqual(t, "second 0 hold p50", s0.Ops["hold"].P50, 10, 0.01)
	approxEqual(t, "second 0 hold p99", s0.Ops["hold"].P99, 30, 0.01)
	if m := s0.Ops["seatmap"]; m.Count != 1 || m.OK != 1 {
		t.Errorf("second 0 seatmap: %+v", m)
	}
	if h := s1.Ops["hold"]; h.Count != 1 || h.OK != 0 || h.Errors["unavailable"] != 1 {
		t.Errorf("second 1 hold: %+v", h)
	}
	approxEqual(t, "second 1 hold p50", s1.Ops["hold"].P50, 300, 0.01)
	if len(s2.Ops) != 0 {
		t.Errorf("second 2 ops: %+v", s2.Ops)
	}
	if c := s3.Ops["confirm"]; c.Count != 1 {
		t.Errorf("second 3 confirm: %+v", c)
	}
	seats := [][2]int{{0, 0}, {6, 2}, {6, 2}, {3, 5}} // second 2 carries second 1's
	for i, s := range res.Series {
		if s.Held != seats[i][0] || s.Booked != seats[i][1] {
			t.Errorf("second %d: held %d booked %d, want %v", i, s.Held, s.Booked, seats[i])
		}
	}
	approxEqual(t, "duration", res.Duration, 3.5, 1e-9)
	h, _ := res.Op("hold")
	approxEqual(t, "hold throughput", h.Throughput, 3/3.5, 1e-9)
	approxEqual(t, "hold ok/s", h.OKPerSecond, 1/3.5, 1e-9)

	res.SetDuration(7)
	h, _ = res.Op("hold")
	approxEqual(t, "hold throughput after SetDuration", h.Throughput, 3/7.0, 1e-9)
}

func TestRecordEmpty(t *testing.T) {
	res := NewRecorder(recStart).Result()
	if len(res.Ops) != 0 || len(res.Series) != 0 || res.Duration != 0 {
		t.Errorf("empty recorder: %+v", res)
	}
	if _, ok := res.Op("hold"); ok {
		t.Error("Op(hold) of an empty result")
	}
}

func TestRecordConcurrentObserve(t *testing.T) {
	rec := NewRecorder(recStart)
	const goroutines, each = 64, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(1, uint64(g)))
			for i := range each {
				op := Op(rng.IntN(int(numOps)))
				out := Outcome(rng.IntN(int(numOutcomes)))
				intended := recStart.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				rec.Observe(op, out, intended, intended.Add(time.Duration(1+rng.IntN(50_000))*time.Microsecond))
				if i%50 == 0 {
					rec.Progress(intended, g, i)
				}
			}
		})
	}
	for range 3 { // readers while writing
		wg.Go(func() { _ = rec.Result() })
	}
	wg.Wait()
	res := rec.Result()
	var total, inSeries int64
	for _, o := range res.Ops {
		total += o.Count
		var byOut int64
		for _, c := range o.ByOutcome {
			byOut += c
		}
		if byOut != o.Count {
			t.Errorf("%s: outcomes add up to %d, count %d", o.Op, byOut, o.Count)
		}
	}
	for _, s := range res.Series {
		for _, o := range s.Ops {
			inSeries += o.Count
		}
	}
	if total != goroutines*each || inSeries != total {
		t.Errorf("total %d, in series %d, want %d", total, inSeries, goroutines*each)
	}
}

// BenchmarkRecorderObserve measures Observe from 256 goroutines on one op,
// the worst case for the per-op mutex.
func BenchmarkRecorderObserve(b *testing.B) {
	rec := NewRecorder(time.Now())
	b.SetParallelism(max(1, 256/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			end := time.Now()
			rec.Observe(OpHold, OK, end.Add(-3*time.Millisecond), end)
		}
	})
}

// TestRecordPercentilesAtMostMax: a percentile is the upper end of its
// histogram bucket, which can lie above the largest latency recorded; the
// result reports no percentile above the exact maximum.
func TestRecordPercentilesAtMostMax(t *testing.T) {
	rec := NewRecorder(recStart)
	intended := recStart.Add(time.Second)
	for _, us := range []int{1000, 2000, 136_421} {
		rec.Observe(OpHold, OK, intended, intended.Add(time.Duration(us)*time.Microsecond))
	}
	res := rec.Result()
	h, ok := res.Op("hold")
	if !ok {
		t.Fatal("no hold latencies")
	}
	if h.Max != 136.421 {
		t.Fatalf("max %v ms, want 136.421", h.Max)
	}
	for name, p := range map[string]float64{"p50": h.P50, "p90": h.P90, "p99": h.P99, "p99.9": h.P999} {
		if p > h.Max {
			t.Errorf("%s %v ms above the max %v ms", name, p, h.Max)
		}
	}
}
