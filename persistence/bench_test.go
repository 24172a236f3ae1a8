package persistence_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/boxoffice/boxoffice/persistence"
)

// mutationWriter is what BenchmarkWriterHolds drives, so that other ways of
// making a hold durable can be measured with the same workload.
type mutationWriter interface {
	Write(m persistence.Mutation) error
}

// BenchmarkWriterHolds measures holds made durable per second through the
// group-commit writer by 256 concurrent writers (as 256 in-flight RPCs
// would), each hold one seat of one of 64 shows, on a fresh database per
// run. A hold writes three rows (reservation, seat claim, audit event):
// rows/s counts them.
func BenchmarkWriterHolds(b *testing.B) {
	var batches, mutations atomic.Int64
	s := openStore(b, newDB(b), func(c *persistence.Config) {
		c.Observer = func(bs persistence.BatchStats) {
			batches.Add(1)
			mutations.Add(int64(bs.Mutations))
		}
	})
	const shows = 64
	epochs := make([]int64, shows)
	for i := range epochs {
		epochs[i] = ownShow(b, s, fmt.Sprintf("s%d", i))
	}
	benchWriterHolds(b, s, 256, func(i int) persistence.Mutation {
		show := i % shows
		return holdM(epochs[show], fmt.Sprintf("s%d", show), fmt.Sprintf("s%d:%d", show, i),
			fmt.Sprintf("u%d", i), t0, fmt.Sprintf("R-%d", i)) // one seat a user, as in a flash sale
	})
	if n := batches.Load(); n > 0 {
		b.ReportMetric(float64(mutations.Load())/float64(n), "mutations/batch")
	}
}

// benchWriterHolds writes b.N mutations through w from writers goroutines,
// each waiting for its write before the next, and reports holds/s and rows/s.
func benchWriterHolds(b *testing.B, w mutationWriter, writers int, mutation func(i int) persistence.Mutation) {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	b.ResetTimer()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := w.Write(mutation(i)); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "holds/s")
	b.ReportMetric(3*float64(b.N)/secs, "rows/s")
}

// BenchmarkWriterShowHolds measures the hold storm's writes: holds of one
// show, 2–3 seats each, with an idempotency key, from 16 or 256 concurrent
// writers, so every transaction is one show's turn (a lane to itself). It
// reports the transactions' time per hold, the database's work for a hold
// as the engine waits for it: with 16 writers, a transaction's fixed cost
// shows.
func BenchmarkWriterShowHolds(b *testing.B) {
	for _, writers := range []int{16, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			var batches, mutations, nanos atomic.Int64
			s := openStore(b, newDB(b), func(c *persistence.Config) {
				c.Observer = func(bs persistence.BatchStats) {
					batches.Add(1)
					mutations.Add(int64(bs.Mutations))
					nanos.Add(int64(bs.Duration))
				}
			})
			show := fmt.Sprintf("storm-%d-%d", writers, b.N)
			epoch := ownShow(b, s, show)
			benchWriterHolds(b, s, writers, func(i int) persistence.Mutation {
				seats := make([]string, 2+i%2)
				for k := range seats {
					seats[k] = fmt.Sprintf("%d-%d", i, k)
				}
				m := holdM(epoch, show, fmt.Sprintf("%s:%d", show, i), fmt.Sprintf("u%d", i), t0, seats...)
				m.IdempotencyKey, m.Fingerprint = fmt.Sprintf("k%d", i), "fp"
				return m
			})
			if n := batches.Load(); n > 0 {
				b.ReportMetric(float64(mutations.Load())/float64(n), "mutations/batch")
				b.ReportMetric(float64(nanos.Load())/1e3/float64(mutations.Load()), "tx-µs/hold")
			}
		})
	}
}
