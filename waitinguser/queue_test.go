package waitinguser

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)

func users(q *Queue) []UserID {
	var out []UserID
	for e := range q.All() {
		out = append(out, e.User)
	}
	return out
}

func TestJoinLeavePosition(t *testing.T) {
	q := New(Config{})
	for i, u := range []UserID{"a", "b", "c", "d"} {
		e, existed, err := q.Join(u, i+1, t0.Add(time.Duration(i)*time.Second))
		if err != nil || existed || e.SeatsWanted != i+1 || !e.Deadline.Equal(e.JoinedAt.Add(DefaultMaxWait)) {
			t.Fatalf("join %s: %+v %v %v", u, e, existed, err)
		}
	}
	// Joining again answers the existing entry and keeps the place.
	if e, existed, err := q.Join("b", 7, t0.Add(time.Minute)); err != nil || !existed || e.SeatsWanted != 2 || !e.JoinedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("join again: %+v %v %v", e, existed, err)
	}
	for want, u := range []UserID{"a", "b", "c", "d"} {
		if p, ok := q.Position(u); !ok || p != want {
			t.Errorf("position of %s: %d %v, want %d", u, p, ok, want)
		}
	}
	if _, err := q.Leave("b"); err != nil {
		t.Fatal(err)
	}
	if p, _ := q.Position("d"); p != 2 {
		t.Errorf("position of d after b left: %d, want 2", p)
	}
	if _, ok := q.Position("b"); ok {
		t.Error("b has a position after leaving")
	}
	if h, ok := q.Head(); !ok || h.User != "a" {
		t.Errorf("head %v", h)
	}
	if got := users(q); !slices.Equal(got, []UserID{"a", "c", "d"}) {
		t.Errorf("queue %v", got)
	}
}

func TestRefusalsChangeNothing(t *testing.T) {
	q := New(Config{})
	q.Join("a", 2, t0)
	for _, c := range []struct {
		name string
		call func() error
		want error
	}{
		{"0 seats", func() error { _, _, err := q.Join("z", 0, t0); return err }, ErrSeatsWanted},
		{"11 seats", func() error { _, _, err := q.Join("z", 11, t0); return err }, ErrSeatsWanted},
		{"leave, not waiting", func() error { _, err := q.Leave("z"); return err }, ErrNotWaiting},
		{"restore twice", func() error { return q.Restore(Entry{User: "a", SeatsWanted: 1, JoinedAt: t0}) }, ErrCorrupt},
		{"restore 0 seats", func() error { return q.Restore(Entry{User: "y", JoinedAt: t0}) }, ErrCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if got := users(q); !slices.Equal(got, []UserID{"a"}) {
				t.Fatalf("queue changed: %v", got)
			}
		})
	}
}

// TestTimeOut: entries leave at their deadline, head first, and deadlines
// never decrease from head to tail even when the clock goes back, so an
// entry behind the head is never left past its deadline.
func TestTimeOut(t *testing.T) {
	q := New(Config{MaxWait: 10 * time.Minute})
	q.Join("a", 1, t0)
	q.Join("b", 1, t0.Add(-5*time.Minute)) // the clock went back
	q.Join("c", 1, t0.Add(time.Minute))
	for _, u := range []UserID{"a", "b"} {
		if e, _ := q.Get(u); !e.Deadline.Equal(t0.Add(10 * time.Minute)) {
			t.Errorf("%s's deadline %s", u, e.Deadline)
		}
	}
	if out := q.TimeOut(t0.Add(10*time.Minute - time.Nanosecond)); len(out) != 0 {
		t.Fatalf("timed out early: %v", out)
	}
	out := q.TimeOut(t0.Add(10 * time.Minute))
	if len(out) != 2 || out[0].User != "a" || out[1].User != "b" {
		t.Fatalf("timed out %v, want a, b", out)
	}
	if p, _ := q.Position("c"); p != 0 {
		t.Errorf("c's position %d, want 0", p)
	}
}

func TestRemoveIf(t *testing.T) {
	q := New(Config{})
	for i := range 10 {
		q.Join(UserID(fmt.Sprint(i)), i%4+1, t0)
	}
	out := q.RemoveIf(func(e Entry) bool { return e.SeatsWanted > 2 })
	if len(out) != 4 || out[0].User != "2" {
		t.Fatalf("removed %v", out)
	}
	if got := users(q); !slices.Equal(got, []UserID{"0", "1", "4", "5", "8", "9"}) {
		t.Fatalf("left %v", got)
	}
	if p, _ := q.Position("9"); p != 5 {
		t.Errorf("position of 9: %d", p)
	}
}

func TestEstimatedWait(t *testing.T) {
	q := New(Config{})
	if _, ok := q.EstimatedWait(3); ok {
		t.Fatal("an estimate before any turn")
	}
	for i := range 50 {
		q.RecordTurn(t0.Add(time.Duration(i) * 2 * time.Second))
	}
	if d, ok := q.EstimatedWait(4); !ok || d != 10*time.Second {
		t.Fatalf("estimate %v %v, want 10s (5 turns, one every 2 s)", d, ok)
	}
}

// TestRandomAgainstWalk drives a queue with seeded random joins, leaves,
// restores and time-outs, and checks every position against a walk of the
// queue, across many rebuilds of the tree.
func TestRandomAgainstWalk(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 1))
		q := New(Config{MaxWait: time.Hour})
		var want []UserID // the model: join order
		now := t0
		for step := range 3000 {
			now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
			switch op := r.IntN(10); {
			case op < 5:
				u := UserID(fmt.Sprintf("u%d", r.IntN(400)))
				_, existed, _ := q.Join(u, 1+r.IntN(10), now)
				if !existed {
					want = append(want, u)
				}
			case op < 9 && len(want) > 0:
				u := want[r.IntN(len(want))]
				if _, err := q.Leave(u); err != nil {
					t.Fatalf("seed %d step %d: leave %s: %v", seed, step, u, err)
				}
				want = slices.DeleteFunc(want, func(x UserID) bool { return x == u })
			default:
				for _, e := range q.TimeOut(now) {
					if len(want) == 0 || want[0] != e.User {
						t.Fatalf("seed %d step %d: %s timed out, head is %v", seed, step, e.User, want)
					}
					want = want[1:]
				}
			}
			if q.Len() != len(want) {
				t.Fatalf("seed %d step %d: %d waiting, want %d", seed, step, q.Len(), len(want))
			}
			for i, u := range want {
				if p, ok := q.Position(u); !ok || p != i {
					t.Fatalf("seed %d step %d: position of %s %d %v, want %d", seed, step, u, p, ok, i)
				}
			}
		}
	}
}
