package ordmap

import (
	"fmt"
	"testing"
)

// store is what the benchmarks exercise, so that Map can be compared with a
// plain Go map (which has no order and so no PopFront).
type store interface {
	Put(k, v int)
	Get(k int) (int, bool)
	Delete(k int) bool
}

// plainMap is a Go map behind the store interface: the baseline.
type plainMap map[int]int

func (p plainMap) Put(k, v int) { p[k] = v }

func (p plainMap) Get(k int) (int, bool) {
	v, ok := p[k]
	return v, ok
}

func (p plainMap) Delete(k int) bool {
	_, ok := p[k]
	delete(p, k)
	return ok
}

// benchSizes returns the store sizes every benchmark runs with.
func benchSizes() []int { return []int{15_000, 1_000_000} }

// benchEach runs fn for every variant and size.
func benchEach(b *testing.B, fn func(b *testing.B, newStore func(int) store, n int)) {
	variants := []struct {
		name string
		new  func(sizeHint int) store
	}{
		{"ordmap", func(n int) store { return New[int, int](n) }},
		{"map", func(n int) store { return make(plainMap, n) }},
	}
	for _, v := range variants {
		for _, n := range benchSizes() {
			b.Run(fmt.Sprintf("%s/n=%d", v.name, n), func(b *testing.B) { fn(b, v.new, n) })
		}
	}
}

// filled returns a store holding keys 0..n-1.
func filled(newStore func(int) store, n int) store {
	s := newStore(n)
	for i := range n {
		s.Put(i, i)
	}
	return s
}

// BenchmarkPut inserts n new keys into a store presized for n, then starts
// over with a fresh store (outside the timer).
func BenchmarkPut(b *testing.B) {
	benchEach(b, func(b *testing.B, newStore func(int) store, n int) {
		s := newStore(n)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			k := i % n
			if k == 0 && i > 0 {
				b.StopTimer()
				s = newStore(n)
				b.StartTimer()
			}
			s.Put(k, i)
		}
	})
}

// BenchmarkPutExisting replaces values of keys present in a store of n.
func BenchmarkPutExisting(b *testing.B) {
	benchEach(b, func(b *testing.B, newStore func(int) store, n int) {
		s := filled(newStore, n)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			s.Put(i%n, i)
		}
	})
}

// BenchmarkGet looks up present keys in a store of n.
func BenchmarkGet(b *testing.B) {
	benchEach(b, func(b *testing.B, newStore func(int) store, n int) {
		s := filled(newStore, n)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, ok := s.Get(i % n); !ok {
				b.Fatal("missing key")
			}
		}
	})
}

// BenchmarkDelete deletes the keys of a store of n in insertion order,
// refilling it (outside the timer) when it is empty.
func BenchmarkDelete(b *testing.B) {
	benchEach(b, func(b *testing.B, newStore func(int) store, n int) {
		s := filled(newStore, n)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			k := i % n
			if k == 0 && i > 0 {
				b.StopTimer()
				s = filled(newStore, n)
				b.StartTimer()
			}
			if !s.Delete(k) {
				b.Fatal("missing key")
			}
		}
	})
}

// BenchmarkPopFront empties a Map of n from the front, refilling it (outside
// the timer) when it is empty. A plain map has no equivalent.
func BenchmarkPopFront(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("ordmap/n=%d", n), func(b *testing.B) {
			fill := func() *Map[int, int] {
				m := New[int, int](n)
				for i := range n {
					m.Put(i, i)
				}
				return m
			}
			m := fill()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if m.Len() == 0 {
					b.StopTimer()
					m = fill()
					b.StartTimer()
				}
				if _, _, ok := m.PopFront(); !ok {
					b.Fatal("empty")
				}
			}
		})
	}
}

// BenchmarkAll iterates over a Map of n; reported per entry.
func BenchmarkAll(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("ordmap/n=%d", n), func(b *testing.B) {
			m := New[int, int](n)
			for i := range n {
				m.Put(i, i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			sum := 0
			for i := 0; i < b.N; {
				for _, v := range m.All() {
					sum += v
					i++
					if i == b.N {
						break
					}
				}
			}
			if sum < 0 {
				b.Fatal("overflow")
			}
		})
	}
}

// BenchmarkChurn keeps a Map at n entries: each op drops the oldest entry
// and inserts a new key, as a FIFO of expiring holds does.
func BenchmarkChurn(b *testing.B) {
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("ordmap/n=%d", n), func(b *testing.B) {
			m := New[int, int](n)
			for i := range n {
				m.Put(i, i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m.PopFront()
				m.Put(n+i, i)
			}
		})
	}
}
