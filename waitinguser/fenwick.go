package waitinguser

// fenwick is a Fenwick (binary indexed) tree of counts by slot: add and
// prefix sums in O(log n).
type fenwick []int32

func newFenwick(n int) fenwick { return make(fenwick, n+1) }

// size returns the number of slots.
func (f fenwick) size() int { return len(f) - 1 }

// add adds d to slot i.
func (f fenwick) add(i int, d int32) {
	for i++; i < len(f); i += i & -i {
		f[i] += d
	}
}

// prefix returns the sum of slots before i.
func (f fenwick) prefix(i int) int {
	s := int32(0)
	for ; i > 0; i -= i & -i {
		s += f[i]
	}
	return int(s)
}
