package waitinguser

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkQueue100k measures, with 100,000 users waiting on one show, the
// heap per waiting user and the cost of a position query.
func BenchmarkQueue100k(b *testing.B) {
	const n = 100_000
	ids := make([]UserID, n)
	for i := range ids {
		ids[i] = UserID(fmt.Sprintf("user-%08d", i)) // 13 bytes, as a web tier's IDs might be
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	q := New(Config{})
	for i, id := range ids {
		q.Join(id, 1+i%4, t0.Add(time.Duration(i)*time.Millisecond))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perUser := float64(after.HeapAlloc-before.HeapAlloc) / n
	b.ResetTimer()
	sum := 0
	for i := range b.N {
		p, _ := q.Position(ids[(i*7919)%n])
		sum += p
	}
	b.StopTimer()
	b.ReportMetric(perUser, "heap-bytes/user")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "positions/s")
	runtime.KeepAlive(q)
	_ = sum
}

// BenchmarkJoinLeave measures a join at the tail and a leave at the head,
// the queue staying at 100,000 users.
func BenchmarkJoinLeave(b *testing.B) {
	const n = 100_000
	q := New(Config{})
	for i := range n {
		q.Join(UserID(fmt.Sprintf("user-%08d", i)), 1, t0)
	}
	ids := make([]UserID, b.N)
	for i := range ids {
		ids[i] = UserID(fmt.Sprintf("new-%08d", i))
	}
	b.ResetTimer()
	for i := range b.N {
		q.Join(ids[i], 1, t0)
		h, _ := q.Head()
		q.Leave(h.User)
	}
}
