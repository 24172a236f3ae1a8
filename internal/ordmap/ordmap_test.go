package ordmap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type kv struct {
	k string
	v int
}

// collect returns the entries of m in iteration order.
func collect(t *testing.T, m *Map[string, int]) []kv {
	t.Helper()
	var got []kv
	for k, v := range m.All() {
		got = append(got, kv{k, v})
	}
	return got
}

// fill returns a map holding keys in order, each with its index as value.
func fill(t *testing.T, keys ...string) *Map[string, int] {
	t.Helper()
	m := New[string, int](len(keys))
	for i, k := range keys {
		m.Put(k, i)
	}
	return m
}

// checkOrder fails the test if m does not hold exactly want, in order, and
// if Len or Front disagree with it.
func checkOrder(t *testing.T, m *Map[string, int], want []kv) {
	t.Helper()
	got := collect(t, m)
	if !slices.Equal(got, want) {
		t.Fatalf("entries = %v, want %v", got, want)
	}
	if m.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", m.Len(), len(want))
	}
	k, v, ok := m.Front()
	if len(want) == 0 {
		if ok {
			t.Fatalf("Front = %q, %d, true on empty map", k, v)
		}
		return
	}
	if !ok || k != want[0].k || v != want[0].v {
		t.Fatalf("Front = %q, %d, %v, want %q, %d, true", k, v, ok, want[0].k, want[0].v)
	}
}

func TestPut(t *testing.T) {
	tests := []struct {
		name string
		puts []kv
		want []kv
	}{
		{"empty", nil, nil},
		{"one", []kv{{"a", 1}}, []kv{{"a", 1}}},
		{"order", []kv{{"c", 1}, {"a", 2}, {"b", 3}}, []kv{{"c", 1}, {"a", 2}, {"b", 3}}},
		{"replace front keeps position", []kv{{"a", 1}, {"b", 2}, {"a", 3}}, []kv{{"a", 3}, {"b", 2}}},
		{"replace middle keeps position", []kv{{"a", 1}, {"b", 2}, {"c", 3}, {"b", 9}}, []kv{{"a", 1}, {"b", 9}, {"c", 3}}},
		{"replace back keeps position", []kv{{"a", 1}, {"b", 2}, {"b", 5}}, []kv{{"a", 1}, {"b", 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New[string, int](0)
			for _, p := range tt.puts {
				m.Put(p.k, p.v)
			}
			checkOrder(t, m, tt.want)
		})
	}
}

func TestGet(t *testing.T) {
	m := fill(t, "a", "b", "c")
	m.Delete("b")
	tests := []struct {
		key    string
		want   int
		wantOK bool
	}{
		{"a", 0, true},
		{"c", 2, true},
		{"b", 0, false},
		{"zz", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := m.Get(tt.key)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("Get(%q) = %d, %v, want %d, %v", tt.key, got, ok, tt.want, tt.wantOK)
			}
		})
	}
	checkOrder(t, m, []kv{{"a", 0}, {"c", 2}}) // Get does not reorder
}

func TestDelete(t *testing.T) {
	tests := []struct {
		name   string
		keys   []string
		del    []string
		wantOK []bool
		want   []kv
	}{
		{"front", []string{"a", "b", "c"}, []string{"a"}, []bool{true}, []kv{{"b", 1}, {"c", 2}}},
		{"middle", []string{"a", "b", "c"}, []string{"b"}, []bool{true}, []kv{{"a", 0}, {"c", 2}}},
		{"back", []string{"a", "b", "c"}, []string{"c"}, []bool{true}, []kv{{"a", 0}, {"b", 1}}},
		{"missing", []string{"a"}, []string{"x"}, []bool{false}, []kv{{"a", 0}}},
		{"twice", []string{"a", "b"}, []string{"a", "a"}, []bool{true, false}, []kv{{"b", 1}}},
		{"all", []string{"a", "b", "c"}, []string{"b", "c", "a"}, []bool{true, true, true}, nil},
		{"empty", nil, []string{"a"}, []bool{false}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fill(t, tt.keys...)
			for i, k := range tt.del {
				if ok := m.Delete(k); ok != tt.wantOK[i] {
					t.Fatalf("Delete(%q) = %v, want %v", k, ok, tt.wantOK[i])
				}
			}
			checkOrder(t, m, tt.want)
		})
	}
}

func TestDeleteThenPutGoesToBack(t *testing.T) {
	m := fill(t, "a", "b", "c")
	m.Delete("a")
	m.Put("a", 7)
	checkOrder(t, m, []kv{{"b", 1}, {"c", 2}, {"a", 7}})
}

func TestPopFront(t *testing.T) {
	m := fill(t, "a", "b", "c")
	for _, want := range []kv{{"a", 0}, {"b", 1}, {"c", 2}} {
		k, v, ok := m.PopFront()
		if !ok || k != want.k || v != want.v {
			t.Fatalf("PopFront = %q, %d, %v, want %q, %d, true", k, v, ok, want.k, want.v)
		}
	}
	if k, v, ok := m.PopFront(); ok {
		t.Fatalf("PopFront on empty = %q, %d, true", k, v)
	}
	checkOrder(t, m, nil)
	m.Put("d", 3)
	checkOrder(t, m, []kv{{"d", 3}})
}

func TestClear(t *testing.T) {
	m := fill(t, "a", "b", "c")
	m.Clear()
	checkOrder(t, m, nil)
	if _, ok := m.Get("a"); ok {
		t.Fatal("Get after Clear found a")
	}
	m.Put("b", 5)
	m.Put("a", 6)
	checkOrder(t, m, []kv{{"b", 5}, {"a", 6}})
}

func TestZeroValue(t *testing.T) {
	var m Map[string, int]
	checkOrder(t, &m, nil)
	if m.Delete("a") {
		t.Fatal("Delete on zero Map = true")
	}
	if _, _, ok := m.PopFront(); ok {
		t.Fatal("PopFront on zero Map = true")
	}
	m.Clear()
	m.Put("a", 1)
	m.Put("b", 2)
	checkOrder(t, &m, []kv{{"a", 1}, {"b", 2}})
}

func TestAllDeleteDuringIteration(t *testing.T) {
	keys := []string{"a", "b", "c", "d", "e"}
	tests := []struct {
		name string
		// del returns the keys to delete when the loop is at key k.
		del  func(k string) []string
		want []string // keys yielded
		left []string // keys remaining afterwards
	}{
		{
			name: "current",
			del:  func(k string) []string { return []string{k} },
			want: keys,
			left: nil,
		},
		{
			name: "current when odd",
			del: func(k string) []string {
				if k == "b" || k == "d" {
					return []string{k}
				}
				return nil
			},
			want: keys,
			left: []string{"a", "c", "e"},
		},
		{
			name: "current and next",
			del: func(k string) []string {
				if k == "b" {
					return []string{"b", "c"}
				}
				return nil
			},
			want: []string{"a", "b", "d", "e"},
			left: []string{"a", "d", "e"},
		},
		{
			name: "next then current",
			del: func(k string) []string {
				if k == "b" {
					return []string{"c", "d", "b"}
				}
				return nil
			},
			want: []string{"a", "b", "e"},
			left: []string{"a", "e"},
		},
		{
			name: "earlier entries",
			del: func(k string) []string {
				if k == "c" {
					return []string{"a", "b"}
				}
				return nil
			},
			want: keys,
			left: []string{"c", "d", "e"},
		},
		{
			name: "last",
			del: func(k string) []string {
				if k == "e" {
					return []string{"e"}
				}
				return nil
			},
			want: keys,
			left: []string{"a", "b", "c", "d"},
		},
		{
			name: "everything at front",
			del: func(k string) []string {
				if k == "a" {
					return keys
				}
				return nil
			},
			want: []string{"a"},
			left: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fill(t, keys...)
			var got []string
			for k := range m.All() {
				got = append(got, k)
				for _, d := range tt.del(k) {
					m.Delete(d)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("yielded %v, want %v", got, tt.want)
			}
			var left []kv
			for _, k := range tt.left {
				left = append(left, kv{k, slices.Index(keys, k)})
			}
			checkOrder(t, m, left)
		})
	}
}

func TestAllPopFrontDuringIteration(t *testing.T) {
	m := fill(t, "a", "b", "c")
	var got []string
	for k := range m.All() {
		got = append(got, k)
		m.PopFront()
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("yielded %v, want %v", got, want)
	}
	checkOrder(t, m, nil)
}

func TestAllClearDuringIterationStops(t *testing.T) {
	m := fill(t, "a", "b", "c")
	var got []string
	for k := range m.All() {
		got = append(got, k)
		if k == "b" {
			m.Clear()
			m.Put("x", 9)
		}
	}
	if want := []string{"a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("yielded %v, want %v", got, want)
	}
	checkOrder(t, m, []kv{{"x", 9}})
}

func TestAllBreak(t *testing.T) {
	m := fill(t, "a", "b", "c")
	var got []string
	for k := range m.All() {
		got = append(got, k)
		if k == "b" {
			break
		}
	}
	if want := []string{"a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("yielded %v, want %v", got, want)
	}
}

// model is the reference: a slice for order plus a map for values.
type model struct {
	order []int
	vals  map[int]int
}

func (md *model) put(k, v int) {
	if _, ok := md.vals[k]; !ok {
		md.order = append(md.order, k)
	}
	md.vals[k] = v
}

func (md *model) delete(k int) bool {
	if _, ok := md.vals[k]; !ok {
		return false
	}
	delete(md.vals, k)
	md.order = slices.DeleteFunc(md.order, func(x int) bool { return x == k })
	return true
}

func TestRandomAgainstModel(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 0x0bd))
		m := New[int, int](0)
		md := &model{vals: map[int]int{}}
		const keySpace = 64
		for step := range 3000 {
			k := rng.IntN(keySpace)
			switch op := rng.IntN(100); {
			case op < 45:
				m.Put(k, step)
				md.put(k, step)
			case op < 60:
				got, ok := m.Get(k)
				want, wantOK := md.vals[k]
				if got != want || ok != wantOK {
					t.Fatalf("seed %d step %d: Get(%d) = %d, %v, want %d, %v", seed, step, k, got, ok, want, wantOK)
				}
			case op < 80:
				if got, want := m.Delete(k), md.delete(k); got != want {
					t.Fatalf("seed %d step %d: Delete(%d) = %v, want %v", seed, step, k, got, want)
				}
			case op < 90:
				gk, gv, ok := m.PopFront()
				if ok != (len(md.order) > 0) {
					t.Fatalf("seed %d step %d: PopFront ok = %v with %d entries", seed, step, ok, len(md.order))
				}
				if ok {
					wk := md.order[0]
					wv := md.vals[wk]
					md.delete(wk)
					if gk != wk || gv != wv {
						t.Fatalf("seed %d step %d: PopFront = %d, %d, want %d, %d", seed, step, gk, gv, wk, wv)
					}
				}
			case op < 99:
				// Iterate, deleting the current entry or a random one now
				// and then. The loop must yield the entries present at the
				// start, in order, except those deleted before being reached.
				snapshot := slices.Clone(md.order)
				gone := map[int]bool{}
				pos := 0
				for k, v := range m.All() {
					for pos < len(snapshot) && gone[snapshot[pos]] {
						pos++
					}
					if pos == len(snapshot) || k != snapshot[pos] || v != md.vals[k] {
						t.Fatalf("seed %d step %d: iteration yielded %d=%d at position %d of %v", seed, step, k, v, pos, snapshot)
					}
					pos++
					switch rng.IntN(6) {
					case 0, 1:
						m.Delete(k)
						md.delete(k)
						gone[k] = true
					case 2:
						d := rng.IntN(keySpace)
						m.Delete(d)
						md.delete(d)
						gone[d] = true
					}
				}
				for _, k := range snapshot[pos:] {
					if !gone[k] {
						t.Fatalf("seed %d step %d: iteration missed %d", seed, step, k)
					}
				}
			default:
				m.Clear()
				md.order, md.vals = nil, map[int]int{}
			}
			if m.Len() != len(md.order) {
				t.Fatalf("seed %d step %d: Len = %d, want %d", seed, step, m.Len(), len(md.order))
			}
		}
		var got []int
		for k, v := range m.All() {
			if v != md.vals[k] {
				t.Fatalf("seed %d: value of %d = %d, want %d", seed, k, v, md.vals[k])
			}
			got = append(got, k)
		}
		if !slices.Equal(got, md.order) {
			t.Fatalf("seed %d: order = %v, want %v", seed, got, md.order)
		}
	}
}
