package waitinguser

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

const (
	testMaxWait = 10 * time.Minute
	testWindow  = 2 * time.Minute
)

var testCfg = WaitlistConfig{MaxWait: testMaxWait, OfferWindow: testWindow}

// roomy is a show with nothing available and plenty held: every join
// passes the seat checks.
var roomy = Seats{Held: 20}

// atMin returns t0 plus n minutes.
func atMin(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }

// ent is the entry a join of user, as the seq'th join, at joined makes.
func ent(user UserID, seq int64, wanted int, joined time.Time) Entry {
	return Entry{User: user, Seq: seq, SeatsWanted: wanted, JoinedAt: joined, Deadline: joined.Add(testMaxWait)}
}

// trn is the turn e gets at offered, with nothing clamping its deadline.
func trn(e Entry, offered time.Time, seats ...string) Turn {
	return Turn{Entry: e, Seats: seats, OfferedAt: offered, Deadline: offered.Add(testWindow)}
}

// clamped returns t with its deadline raised to d.
func clamped(t Turn, d time.Time) Turn {
	t.Deadline = d
	return t
}

func ended(e Entry, r Reason, at time.Time, seats ...string) Ended {
	return Ended{Entry: e, Reason: r, Seats: seats, At: at}
}

// normOutcome makes empty slices nil, so outcomes compare by content.
func normOutcome(o Outcome) Outcome {
	nilIfEmpty := func(s []string) []string {
		if len(s) == 0 {
			return nil
		}
		return s
	}
	o.Returned = nilIfEmpty(o.Returned)
	if len(o.Turns) == 0 {
		o.Turns = nil
	}
	for i := range o.Turns {
		o.Turns[i].Seats = nilIfEmpty(o.Turns[i].Seats)
	}
	if len(o.Ended) == 0 {
		o.Ended = nil
	}
	for i := range o.Ended {
		o.Ended[i].Seats = nilIfEmpty(o.Ended[i].Seats)
	}
	return o
}

func sameOutcome(got, want Outcome) bool {
	return reflect.DeepEqual(normOutcome(got), normOutcome(want))
}

func sameTurn(a, b Turn) bool {
	return a.Entry == b.Entry && slices.Equal(a.Seats, b.Seats) && a.OfferedAt.Equal(b.OfferedAt) && a.Deadline.Equal(b.Deadline)
}

// checkWaitlist checks w's set-aside seats, its waiting users in join order
// with their positions, and the users holding turns in the order given.
func checkWaitlist(t *testing.T, w *Waitlist, aside []string, waiting, turns []UserID) {
	t.Helper()
	if got := w.Aside(); !slices.Equal(got, aside) {
		t.Errorf("aside %v, want %v", got, aside)
	}
	var gotWaiting []UserID
	for e := range w.Entries() {
		gotWaiting = append(gotWaiting, e.User)
	}
	if !slices.Equal(gotWaiting, waiting) {
		t.Errorf("waiting %v, want %v", gotWaiting, waiting)
	}
	for i, u := range waiting {
		if p, ok := w.Position(u); !ok || p != i {
			t.Errorf("position of %s: %d %v, want %d", u, p, ok, i)
		}
	}
	var gotTurns []UserID
	for tr := range w.Turns() {
		gotTurns = append(gotTurns, tr.User)
	}
	if !slices.Equal(gotTurns, turns) {
		t.Errorf("turns %v, want %v", gotTurns, turns)
	}
	for _, u := range turns {
		if _, ok := w.Position(u); ok {
			t.Errorf("%s holds a turn and has a position", u)
		}
		if _, ok := w.Turn(u); !ok {
			t.Errorf("Turn(%s) not found", u)
		}
	}
	if w.Waiting() != len(waiting) || w.Len() != len(waiting)+len(turns) {
		t.Errorf("Waiting %d, Len %d; want %d, %d", w.Waiting(), w.Len(), len(waiting), len(waiting)+len(turns))
	}
}

// wlOp is one call on a waitlist; it fails the test if the call's own
// answer (error, ok) is not the expected one.
type wlOp struct {
	name string
	do   func(t *testing.T, w *Waitlist) Outcome
}

func opFree(now time.Time, seats ...string) wlOp {
	return wlOp{fmt.Sprintf("Free(%v)", seats), func(t *testing.T, w *Waitlist) Outcome {
		return w.Free(seats, now)
	}}
}

func opLapse(now time.Time) wlOp {
	return wlOp{"Lapse(" + now.Sub(t0).String() + ")", func(t *testing.T, w *Waitlist) Outcome {
		return w.Lapse(now)
	}}
}

func opTake(user UserID, now time.Time, held ...string) wlOp {
	return wlOp{fmt.Sprintf("Take(%s, %v)", user, held), func(t *testing.T, w *Waitlist) Outcome {
		t.Helper()
		out, ok := w.Take(user, held, now)
		if !ok {
			t.Fatalf("Take(%s, %v) refused", user, held)
		}
		return out
	}}
}

func opTakeRefused(user UserID, now time.Time, held ...string) wlOp {
	return wlOp{fmt.Sprintf("Take(%s, %v) refused", user, held), func(t *testing.T, w *Waitlist) Outcome {
		t.Helper()
		out, ok := w.Take(user, held, now)
		if ok {
			t.Fatalf("Take(%s, %v) accepted", user, held)
		}
		return out
	}}
}

func opLeave(user UserID, now time.Time) wlOp {
	return wlOp{fmt.Sprintf("Leave(%s)", user), func(t *testing.T, w *Waitlist) Outcome {
		t.Helper()
		out, err := w.Leave(user, now)
		if err != nil {
			t.Fatalf("Leave(%s): %v", user, err)
		}
		return out
	}}
}

func opLeaveRefused(user UserID, now time.Time) wlOp {
	return wlOp{fmt.Sprintf("Leave(%s) refused", user), func(t *testing.T, w *Waitlist) Outcome {
		t.Helper()
		out, err := w.Leave(user, now)
		if !errors.Is(err, ErrNotWaiting) {
			t.Fatalf("Leave(%s): %v, want ErrNotWaiting", user, err)
		}
		return out
	}}
}

func opSoldOut(left int, now time.Time) wlOp {
	return wlOp{fmt.Sprintf("SoldOut(%d)", left), func(t *testing.T, w *Waitlist) Outcome {
		return w.SoldOut(left, now)
	}}
}

type wlStep struct {
	op      wlOp
	want    Outcome
	aside   []string
	waiting []UserID
	turns   []UserID
}

// TestWaitlistRules walks each rule of the waitlist through a scenario,
// asserting after every call the whole Outcome (turns in order with their
// seats and deadlines, ended entries and why, returned seats), the
// set-aside seats, the positions of the waiting users and who holds a turn.
func TestWaitlistRules(t *testing.T) {
	for _, c := range []struct {
		name  string
		joins []Entry // joined first, in order, each at its JoinedAt
		steps func(e map[UserID]Entry) []wlStep
	}{
		{
			name: "free with nobody waiting returns everything",
			steps: func(map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(0), "s1", "s2"), want: Outcome{Returned: []string{"s1", "s2"}, AsideChanged: true}},
					{op: opFree(atMin(1)), want: Outcome{}},
				}
			},
		},
		{
			name:  "seats are set aside for the head until it has as many as it wants, nobody behind takes them",
			joins: []Entry{ent("a", 1, 3, t0), ent("b", 2, 1, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1"), want: Outcome{AsideChanged: true},
						aside: []string{"s1"}, waiting: []UserID{"a", "b"}},
					{op: opFree(atMin(2), "s2"), want: Outcome{AsideChanged: true},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b"}},
					{op: opFree(atMin(3), "s3", "s4"), want: Outcome{
						Turns:        []Turn{trn(e["a"], atMin(3), "s1", "s2", "s3"), trn(e["b"], atMin(3), "s4")},
						AsideChanged: true,
					}, turns: []UserID{"a", "b"}},
				}
			},
		},
		{
			name:  "an offer that lapses passes its seats to the next user, then back to everyone",
			joins: []Entry{ent("a", 1, 2, t0), ent("b", 2, 2, t0), ent("c", 3, 1, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1", "s2"), want: Outcome{
						Turns: []Turn{trn(e["a"], atMin(1), "s1", "s2")}, AsideChanged: true,
					}, waiting: []UserID{"b", "c"}, turns: []UserID{"a"}},
					{op: opLapse(atMin(3).Add(-time.Nanosecond)), want: Outcome{},
						waiting: []UserID{"b", "c"}, turns: []UserID{"a"}},
					{op: opLapse(atMin(3)), want: Outcome{
						Turns:        []Turn{trn(e["b"], atMin(3), "s1", "s2")},
						Ended:        []Ended{ended(e["a"], Lapsed, atMin(3), "s1", "s2")},
						AsideChanged: true,
					}, waiting: []UserID{"c"}, turns: []UserID{"b"}},
					{op: opLapse(atMin(5)), want: Outcome{
						Turns:        []Turn{trn(e["c"], atMin(5), "s1")},
						Ended:        []Ended{ended(e["b"], Lapsed, atMin(5), "s1", "s2")},
						Returned:     []string{"s2"},
						AsideChanged: true,
					}, turns: []UserID{"c"}},
					{op: opLapse(atMin(7)), want: Outcome{
						Ended:        []Ended{ended(e["c"], Lapsed, atMin(7), "s1")},
						Returned:     []string{"s1"},
						AsideChanged: true,
					}},
				}
			},
		},
		{
			name:  "a turn partly taken passes the rest on",
			joins: []Entry{ent("a", 1, 3, t0), ent("b", 2, 1, t0), ent("c", 3, 2, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1", "s2", "s3"), want: Outcome{
						Turns: []Turn{trn(e["a"], atMin(1), "s1", "s2", "s3")}, AsideChanged: true,
					}, waiting: []UserID{"b", "c"}, turns: []UserID{"a"}},
					{op: opTakeRefused("a", atMin(2), "x9"), want: Outcome{},
						waiting: []UserID{"b", "c"}, turns: []UserID{"a"}},
					{op: opTakeRefused("a", atMin(2)), want: Outcome{},
						waiting: []UserID{"b", "c"}, turns: []UserID{"a"}},
					{op: opTakeRefused("b", atMin(2), "s1"), want: Outcome{},
						waiting: []UserID{"b", "c"}, turns: []UserID{"a"}},
					// The hold may hold seats beside the offer's (x9).
					{op: opTake("a", atMin(2), "s2", "x9"), want: Outcome{
						Turns:        []Turn{trn(e["b"], atMin(2), "s1")},
						Ended:        []Ended{ended(e["a"], Done, atMin(2), "s1", "s2", "s3")},
						AsideChanged: true,
					}, aside: []string{"s3"}, waiting: []UserID{"c"}, turns: []UserID{"b"}},
					{op: opTake("b", atMin(3), "s1"), want: Outcome{
						Ended: []Ended{ended(e["b"], Done, atMin(3), "s1")},
					}, aside: []string{"s3"}, waiting: []UserID{"c"}},
					{op: opTakeRefused("a", atMin(3), "s1"), want: Outcome{},
						aside: []string{"s3"}, waiting: []UserID{"c"}},
				}
			},
		},
		{
			name:  "the head leaves with seats set aside: a next head wanting fewer gets its turn at once",
			joins: []Entry{ent("a", 1, 3, t0), ent("b", 2, 2, t0), ent("c", 3, 2, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1", "s2"), want: Outcome{AsideChanged: true},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c"}},
					// c would be content with the aside, but a is ahead.
					{op: opLeave("b", atMin(2)), want: Outcome{
						Ended: []Ended{ended(e["b"], Left, atMin(2))},
					}, aside: []string{"s1", "s2"}, waiting: []UserID{"a", "c"}},
					{op: opLeave("a", atMin(2)), want: Outcome{
						Turns:        []Turn{trn(e["c"], atMin(2), "s1", "s2")},
						Ended:        []Ended{ended(e["a"], Left, atMin(2))},
						AsideChanged: true,
					}, turns: []UserID{"c"}},
				}
			},
		},
		{
			name:  "the head leaves with seats set aside: a next head wanting more keeps them, the last returns them",
			joins: []Entry{ent("a", 1, 2, t0), ent("b", 2, 4, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1"), want: Outcome{AsideChanged: true},
						aside: []string{"s1"}, waiting: []UserID{"a", "b"}},
					{op: opLeave("a", atMin(2)), want: Outcome{
						Ended: []Ended{ended(e["a"], Left, atMin(2))},
					}, aside: []string{"s1"}, waiting: []UserID{"b"}},
					{op: opLeave("b", atMin(3)), want: Outcome{
						Ended:        []Ended{ended(e["b"], Left, atMin(3))},
						Returned:     []string{"s1"},
						AsideChanged: true,
					}},
					{op: opLeaveRefused("b", atMin(3)), want: Outcome{}},
				}
			},
		},
		{
			name:  "a user holding a turn leaves: its seats go on",
			joins: []Entry{ent("a", 1, 2, t0), ent("b", 2, 1, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1", "s2"), want: Outcome{
						Turns: []Turn{trn(e["a"], atMin(1), "s1", "s2")}, AsideChanged: true,
					}, waiting: []UserID{"b"}, turns: []UserID{"a"}},
					{op: opLeaveRefused("zz", atMin(2)), want: Outcome{},
						waiting: []UserID{"b"}, turns: []UserID{"a"}},
					{op: opLeave("a", atMin(2)), want: Outcome{
						Turns:        []Turn{trn(e["b"], atMin(2), "s1")},
						Ended:        []Ended{ended(e["a"], Left, atMin(2), "s1", "s2")},
						Returned:     []string{"s2"},
						AsideChanged: true,
					}, turns: []UserID{"b"}},
					{op: opLeaveRefused("a", atMin(2)), want: Outcome{}, turns: []UserID{"b"}},
				}
			},
		},
		{
			name:  "the head times out with seats set aside",
			joins: []Entry{ent("a", 1, 3, t0), ent("b", 2, 1, atMin(5)), ent("c", 3, 3, atMin(6))},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1", "s2"), want: Outcome{AsideChanged: true},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c"}},
					{op: opLapse(atMin(10).Add(-time.Nanosecond)), want: Outcome{},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c"}},
					{op: opLapse(atMin(10)), want: Outcome{
						Turns:        []Turn{trn(e["b"], atMin(10), "s1")},
						Ended:        []Ended{ended(e["a"], TimedOut, atMin(10))},
						AsideChanged: true,
					}, aside: []string{"s2"}, waiting: []UserID{"c"}, turns: []UserID{"b"}},
					// b's turn lapses and c times out together: with
					// nobody left, the aside and b's seat go back.
					{op: opLapse(atMin(16)), want: Outcome{
						Ended: []Ended{
							ended(e["b"], Lapsed, atMin(16), "s1"),
							ended(e["c"], TimedOut, atMin(16)),
						},
						Returned:     []string{"s2", "s1"},
						AsideChanged: true,
					}},
				}
			},
		},
		{
			name:  "sold out ends only those wanting more than left, and advances",
			joins: []Entry{ent("a", 1, 4, t0), ent("b", 2, 2, t0), ent("c", 3, 5, t0), ent("d", 4, 1, t0), ent("e", 5, 10, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(1), "s1", "s2"), want: Outcome{AsideChanged: true},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c", "d", "e"}},
					{op: opSoldOut(10, atMin(2)), want: Outcome{},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c", "d", "e"}},
					{op: opSoldOut(9, atMin(2)), want: Outcome{
						Ended: []Ended{ended(e["e"], SoldOut, atMin(2))},
					}, aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c", "d"}},
					{op: opSoldOut(5, atMin(2)), want: Outcome{},
						aside: []string{"s1", "s2"}, waiting: []UserID{"a", "b", "c", "d"}},
					{op: opSoldOut(3, atMin(3)), want: Outcome{
						Turns:        []Turn{trn(e["b"], atMin(3), "s1", "s2")},
						Ended:        []Ended{ended(e["a"], SoldOut, atMin(3)), ended(e["c"], SoldOut, atMin(3))},
						AsideChanged: true,
					}, waiting: []UserID{"d"}, turns: []UserID{"b"}},
					// A turn is not touched: its seats are offered.
					{op: opSoldOut(0, atMin(4)), want: Outcome{
						Ended: []Ended{ended(e["d"], SoldOut, atMin(4))},
					}, turns: []UserID{"b"}},
				}
			},
		},
		{
			name:  "turn deadlines never decrease when the clock goes back",
			joins: []Entry{ent("a", 1, 1, t0), ent("b", 2, 1, t0)},
			steps: func(e map[UserID]Entry) []wlStep {
				return []wlStep{
					{op: opFree(atMin(5), "s1"), want: Outcome{
						Turns: []Turn{trn(e["a"], atMin(5), "s1")}, AsideChanged: true,
					}, waiting: []UserID{"b"}, turns: []UserID{"a"}},
					{op: opFree(atMin(1), "s2"), want: Outcome{
						Turns: []Turn{clamped(trn(e["b"], atMin(1), "s2"), atMin(7))}, AsideChanged: true,
					}, turns: []UserID{"a", "b"}},
					{op: opLapse(atMin(7).Add(-time.Nanosecond)), want: Outcome{}, turns: []UserID{"a", "b"}},
					{op: opLapse(atMin(7)), want: Outcome{
						Ended:        []Ended{ended(e["a"], Lapsed, atMin(7), "s1"), ended(e["b"], Lapsed, atMin(7), "s2")},
						Returned:     []string{"s1", "s2"},
						AsideChanged: true,
					}},
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := NewWaitlist(testCfg)
			byUser := make(map[UserID]Entry)
			for _, want := range c.joins {
				e, existed, err := w.Join(want.User, want.SeatsWanted, want.JoinedAt, roomy)
				if err != nil || existed || e != want {
					t.Fatalf("join %s: %+v %v %v, want %+v", want.User, e, existed, err, want)
				}
				byUser[want.User] = want
			}
			for i, s := range c.steps(byUser) {
				out := s.op.do(t, w)
				if !sameOutcome(out, s.want) {
					t.Fatalf("step %d %s:\n got %+v\nwant %+v", i, s.op.name, out, s.want)
				}
				if out.Empty() != sameOutcome(s.want, Outcome{}) {
					t.Errorf("step %d %s: Empty() %v", i, s.op.name, out.Empty())
				}
				checkWaitlist(t, w, s.aside, s.waiting, s.turns)
				if t.Failed() {
					t.Fatalf("after step %d %s", i, s.op.name)
				}
			}
		})
	}
}

// TestWaitlistJoin checks Join's refusals in their order, the boundaries of
// each, and that a user on the waitlist, waiting or holding a turn, gets
// its entry back whatever it asks.
func TestWaitlistJoin(t *testing.T) {
	a, b := ent("a", 1, 1, t0), ent("b", 2, 2, t0)
	for _, c := range []struct {
		name   string
		user   UserID
		wanted int
		seats  Seats
		err    error // nil: joins as z, the third
		again  Entry // for a user already on the waitlist
	}{
		{name: "1 seat, 1 held", user: "z", wanted: 1, seats: Seats{Held: 1}},
		{name: "10 seats, 9 available", user: "z", wanted: 10, seats: Seats{Available: 9, Held: 1}},
		{name: "0 seats", user: "z", wanted: 0, seats: roomy, err: ErrSeatsWanted},
		{name: "-1 seats", user: "z", wanted: -1, seats: roomy, err: ErrSeatsWanted},
		{name: "11 seats", user: "z", wanted: 11, seats: roomy, err: ErrSeatsWanted},
		{name: "user limit reached", user: "z", wanted: 3, seats: Seats{Held: 20, User: 8}, err: ErrUserLimit},
		{name: "user limit just met", user: "z", wanted: 3, seats: Seats{Held: 20, User: 7}},
		{name: "as many available", user: "z", wanted: 3, seats: Seats{Available: 3, Held: 20}, err: ErrSeatsAvailable},
		{name: "one fewer available", user: "z", wanted: 3, seats: Seats{Available: 2, Held: 1}},
		{name: "sold out", user: "z", wanted: 3, seats: Seats{Available: 1, Held: 1}, err: ErrSoldOut},
		{name: "offered seats count", user: "z", wanted: 3, seats: Seats{Available: 1, Offered: 2}},
		{name: "seats wanted before user limit", user: "z", wanted: 11, seats: Seats{User: 10}, err: ErrSeatsWanted},
		{name: "user limit before available", user: "z", wanted: 2, seats: Seats{Available: 5, User: 9}, err: ErrUserLimit},
		{name: "user limit before sold out", user: "z", wanted: 1, seats: Seats{User: 10}, err: ErrUserLimit},
		{name: "available before sold out", user: "z", wanted: 1, seats: Seats{Available: 1}, err: ErrSeatsAvailable},
		{name: "again while waiting", user: "b", wanted: 11, seats: Seats{Available: 20, User: 10}, again: b},
		{name: "again holding a turn", user: "a", wanted: 5, seats: roomy, again: a},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := NewWaitlist(testCfg)
			for _, e := range []Entry{a, b} {
				if _, _, err := w.Join(e.User, e.SeatsWanted, e.JoinedAt, roomy); err != nil {
					t.Fatal(err)
				}
			}
			if out := w.Free([]string{"s1"}, t0); len(out.Turns) != 1 {
				t.Fatalf("a got no turn: %+v", out)
			}
			e, existed, err := w.Join(c.user, c.wanted, atMin(1), c.seats)
			switch {
			case c.err != nil:
				if !errors.Is(err, c.err) || existed || e != (Entry{}) {
					t.Fatalf("%+v %v %v, want %v", e, existed, err, c.err)
				}
				checkWaitlist(t, w, nil, []UserID{"b"}, []UserID{"a"})
			case c.again != (Entry{}):
				if err != nil || !existed || e != c.again {
					t.Fatalf("%+v %v %v, want %+v again", e, existed, err, c.again)
				}
				checkWaitlist(t, w, nil, []UserID{"b"}, []UserID{"a"})
			default:
				if want := ent("z", 3, c.wanted, atMin(1)); err != nil || existed || e != want {
					t.Fatalf("%+v %v %v, want %+v", e, existed, err, want)
				}
				checkWaitlist(t, w, nil, []UserID{"b", "z"}, []UserID{"a"})
			}
		})
	}
}

// restoreCopy rebuilds w's state into a fresh waitlist from what it
// persists (entries, turns, aside), rows in Seq order, and checks the copy
// shows the same state.
func restoreCopy(t *testing.T, w *Waitlist) *Waitlist {
	t.Helper()
	type row struct {
		e    Entry
		turn *Turn
	}
	var rows []row
	for e := range w.Entries() {
		rows = append(rows, row{e: e})
	}
	for tr := range w.Turns() {
		rows = append(rows, row{e: tr.Entry, turn: &tr})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.e.Seq, b.e.Seq) })
	c := NewWaitlist(WaitlistConfig{MaxWait: w.MaxWait(), OfferWindow: w.OfferWindow()})
	for _, r := range rows {
		var err error
		if r.turn != nil {
			err = c.RestoreTurn(*r.turn)
		} else {
			err = c.RestoreEntry(r.e)
		}
		if err != nil {
			t.Fatalf("restore %+v: %v", r.e, err)
		}
	}
	if err := c.RestoreAside(w.Aside()); err != nil {
		t.Fatalf("restore aside: %v", err)
	}
	sameWaitlist(t, c, w)
	return c
}

// sameWaitlist checks that got and want hold the same entries, turns and
// set-aside seats, with the same positions.
func sameWaitlist(t *testing.T, got, want *Waitlist) {
	t.Helper()
	if g, w := slices.Collect(got.Entries()), slices.Collect(want.Entries()); !slices.Equal(g, w) {
		t.Fatalf("entries\n got %+v\nwant %+v", g, w)
	}
	g, w := slices.Collect(got.Turns()), slices.Collect(want.Turns())
	if !slices.EqualFunc(g, w, sameTurn) {
		t.Fatalf("turns\n got %+v\nwant %+v", g, w)
	}
	if g, w := got.Aside(), want.Aside(); !slices.Equal(g, w) {
		t.Fatalf("aside %v, want %v", g, w)
	}
	if got.Len() != want.Len() || got.Waiting() != want.Waiting() {
		t.Fatalf("Len %d Waiting %d, want %d %d", got.Len(), got.Waiting(), want.Len(), want.Waiting())
	}
	for e := range want.Entries() {
		gp, gok := got.Position(e.User)
		wp, wok := want.Position(e.User)
		if gp != wp || gok != wok {
			t.Fatalf("position of %s: %d %v, want %d %v", e.User, gp, gok, wp, wok)
		}
	}
}

// TestWaitlistRestoreRoundTrip restores a waitlist with turns, waiting
// users and an aside into a fresh one, and checks both then behave alike.
func TestWaitlistRestoreRoundTrip(t *testing.T) {
	w := NewWaitlist(testCfg)
	for _, e := range []Entry{ent("a", 1, 2, t0), ent("b", 2, 1, t0), ent("c", 3, 3, t0), ent("d", 4, 2, t0), ent("e", 5, 1, t0)} {
		if _, _, err := w.Join(e.User, e.SeatsWanted, e.JoinedAt, roomy); err != nil {
			t.Fatal(err)
		}
	}
	// a gets s1 s2, b s3; s4 is set aside for c.
	w.Free([]string{"s1", "s2", "s3", "s4"}, atMin(1))
	checkWaitlist(t, w, []string{"s4"}, []UserID{"c", "d", "e"}, []UserID{"a", "b"})
	c := restoreCopy(t, w)
	if out := c.Lapse(atMin(2)); !out.Empty() {
		t.Fatalf("Lapse after restore: %+v", out)
	}
	for i, op := range []wlOp{
		opFree(atMin(2), "s5", "s6"), // c: s4 s5 s6
		opLapse(atMin(3)),            // a, b lapse; d: s1 s2, e: s3
		opTake("d", atMin(4), "s1"),  // s2 is set aside with nobody waiting: returned
		opLeave("c", atMin(4)),       // nobody waits: s4 s5 s6 returned
	} {
		want, got := op.do(t, w), op.do(t, c)
		if !sameOutcome(got, want) {
			t.Fatalf("step %d %s:\n restored %+v\noriginal %+v", i, op.name, got, want)
		}
		sameWaitlist(t, c, w)
	}
	checkWaitlist(t, c, nil, nil, []UserID{"e"})
}

// TestWaitlistRestoreThenLapse: RestoreAside may leave the aside enough for
// the head, or with nobody waiting, and turns may be past their deadline;
// the Lapse after a restore settles all of it.
func TestWaitlistRestoreThenLapse(t *testing.T) {
	a := ent("a", 1, 1, t0)
	b := ent("b", 2, 2, t0)
	for _, c := range []struct {
		name    string
		entries []Entry
		turns   []Turn
		aside   []string
		now     time.Time // of the Lapse; zero means atMin(1)
		want    Outcome
		waiting []UserID
		holding []UserID
		left    []string
	}{
		{
			name: "aside enough for the head", entries: []Entry{a, b}, aside: []string{"s1", "s2"},
			want:    Outcome{Turns: []Turn{trn(a, atMin(1), "s1")}, AsideChanged: true},
			waiting: []UserID{"b"}, holding: []UserID{"a"}, left: []string{"s2"},
		},
		{
			name: "aside with nobody waiting", aside: []string{"s1", "s2"},
			want: Outcome{Returned: []string{"s1", "s2"}, AsideChanged: true},
		},
		{
			name: "turn past its deadline", turns: []Turn{trn(a, t0, "s1")}, entries: []Entry{b}, aside: []string{"s2"},
			now: atMin(2),
			want: Outcome{
				Turns:        []Turn{trn(b, atMin(2), "s2", "s1")},
				Ended:        []Ended{ended(a, Lapsed, atMin(2), "s1")},
				AsideChanged: true,
			},
			holding: []UserID{"b"},
		},
		{
			name:    "turn deadlines clamped",
			turns:   []Turn{trn(a, atMin(5), "s1"), trn(b, atMin(1), "s2", "s3")},
			want:    Outcome{},
			holding: []UserID{"a", "b"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := NewWaitlist(testCfg)
			for _, tr := range c.turns {
				if err := w.RestoreTurn(tr); err != nil {
					t.Fatal(err)
				}
			}
			for _, e := range c.entries {
				if err := w.RestoreEntry(e); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.RestoreAside(c.aside); err != nil {
				t.Fatal(err)
			}
			now := c.now
			if now.IsZero() {
				now = atMin(1)
			}
			if out := w.Lapse(now); !sameOutcome(out, c.want) {
				t.Fatalf("Lapse:\n got %+v\nwant %+v", out, c.want)
			}
			checkWaitlist(t, w, c.left, c.waiting, c.holding)
			var prev time.Time
			for tr := range w.Turns() {
				if tr.Deadline.Before(prev) {
					t.Errorf("%s's turn ends at %s, before the turn before it (%s)", tr.User, tr.Deadline, prev)
				}
				prev = tr.Deadline
			}
		})
	}
}

// TestWaitlistRestoreRefusals: rows that contradict each other are
// ErrCorrupt, and a refused row changes nothing: no seat is claimed and the
// join order does not move.
func TestWaitlistRestoreRefusals(t *testing.T) {
	eleven := []string{"x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10"}
	turnOf := func(u UserID, seq int64, seats ...string) Turn {
		return trn(ent(u, seq, len(seats), t0), t0, seats...)
	}
	for _, c := range []struct {
		name string
		call func(w *Waitlist) error
		free []string // seats of the refused row that must not be claimed
	}{
		{"turn seat in another turn", func(w *Waitlist) error { return w.RestoreTurn(turnOf("c", 4, "s2", "s3")) }, []string{"s3"}},
		{"turn seat twice in itself", func(w *Waitlist) error { return w.RestoreTurn(turnOf("c", 4, "s3", "s3")) }, []string{"s3"}},
		{"aside seat in a turn", func(w *Waitlist) error { return w.RestoreAside([]string{"s3", "s1"}) }, []string{"s3"}},
		{"aside seat twice", func(w *Waitlist) error { return w.RestoreAside([]string{"s3", "s3"}) }, []string{"s3"}},
		{"entry seq repeated", func(w *Waitlist) error { return w.RestoreEntry(ent("c", 3, 1, t0)) }, nil},
		{"entry seq lower", func(w *Waitlist) error { return w.RestoreEntry(ent("c", 2, 1, t0)) }, nil},
		{"turn seq repeated", func(w *Waitlist) error { return w.RestoreTurn(turnOf("c", 3, "s3")) }, []string{"s3"}},
		{"turn seq lower", func(w *Waitlist) error { return w.RestoreTurn(turnOf("c", 2, "s3")) }, []string{"s3"}},
		{"waiting user twice", func(w *Waitlist) error { return w.RestoreEntry(ent("b", 5, 1, t0)) }, nil},
		{"waiting user holds a turn", func(w *Waitlist) error { return w.RestoreEntry(ent("a", 5, 1, t0)) }, nil},
		{"turn of a waiting user", func(w *Waitlist) error { return w.RestoreTurn(turnOf("b", 5, "s3")) }, []string{"s3"}},
		{"turn user twice", func(w *Waitlist) error { return w.RestoreTurn(turnOf("a", 5, "s3")) }, []string{"s3"}},
		{"turn without seats", func(w *Waitlist) error { return w.RestoreTurn(trn(ent("c", 5, 1, t0), t0)) }, nil},
		{"turn of 11 seats", func(w *Waitlist) error { return w.RestoreTurn(turnOf("c", 5, eleven...)) }, eleven},
		{"entry wanting no seats", func(w *Waitlist) error { return w.RestoreEntry(ent("c", 5, 0, t0)) }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := NewWaitlist(testCfg)
			if err := w.RestoreTurn(turnOf("a", 1, "s1", "s2")); err != nil {
				t.Fatal(err)
			}
			if err := w.RestoreEntry(ent("b", 3, 2, t0)); err != nil {
				t.Fatal(err)
			}
			if err := c.call(w); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", err)
			}
			checkWaitlist(t, w, nil, []UserID{"b"}, []UserID{"a"})
			if err := w.RestoreEntry(ent("z", 4, 1, t0)); err != nil {
				t.Errorf("the refused row moved the join order: %v", err)
			}
			if err := w.RestoreAside(c.free); err != nil {
				t.Errorf("the refused row claimed seats: %v", err)
			}
		})
	}
}

// The property test's model of a show's seats.
type seatStatus uint8

const (
	seatAvailable seatStatus = iota
	seatHeld
	seatOffered // to a turn's user, or set aside (to "")
	seatBooked
	seatFreed // passed to Free, waiting for its Outcome to place it
)

type mSeat struct {
	status seatStatus
	hold   *mHold // seatHeld, seatBooked
	to     UserID // seatOffered
}

type mHold struct {
	user  UserID
	seats []string
}

// wlModel drives a Waitlist with random calls against a model of the
// show's seats and of the waitlist's users, both updated from the
// Outcomes, and checks the waitlist's invariants after every call.
type wlModel struct {
	t    *testing.T
	r    *rand.Rand
	seed uint64
	step int
	w    *Waitlist
	now  time.Time

	ids       []string // the seats, in a fixed order
	seats     map[string]*mSeat
	holds     []*mHold
	userSeats map[UserID]int // held and booked
	users     []UserID

	waiting     []Entry // in join order
	turns       []Turn  // in the order given
	aside       []string
	lastSeq     int64 // the Seq the newest join got
	lastTurnSeq int64 // the Seq of the newest turn given
	seen        map[string]int
}

func newWlModel(t *testing.T, seed uint64, seats, users int, seen map[string]int) *wlModel {
	m := &wlModel{
		t: t, r: rand.New(rand.NewPCG(seed, 7)), seed: seed,
		w: NewWaitlist(testCfg), now: t0,
		seats: make(map[string]*mSeat), userSeats: make(map[UserID]int),
		seen: seen,
	}
	for i := range seats {
		id := fmt.Sprintf("s%02d", i)
		m.ids = append(m.ids, id)
		m.seats[id] = &mSeat{}
	}
	for i := range users {
		m.users = append(m.users, UserID(fmt.Sprintf("u%02d", i)))
	}
	return m
}

func (m *wlModel) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d step %d: "+format, append([]any{m.seed, m.step}, args...)...)
}

func (m *wlModel) counts() (available, held, offered int) {
	for _, s := range m.seats {
		switch s.status {
		case seatAvailable:
			available++
		case seatHeld:
			held++
		case seatOffered:
			offered++
		}
	}
	return available, held, offered
}

func (m *wlModel) seatsIn(status seatStatus) []string {
	var out []string
	for _, id := range m.ids {
		if m.seats[id].status == status {
			out = append(out, id)
		}
	}
	return out
}

// member returns user's entry, waiting or holding a turn.
func (m *wlModel) member(user UserID) (Entry, bool) {
	for _, e := range m.waiting {
		if e.User == user {
			return e, true
		}
	}
	for _, tr := range m.turns {
		if tr.User == user {
			return tr.Entry, true
		}
	}
	return Entry{}, false
}

func (m *wlModel) turnIndex(user UserID) int {
	return slices.IndexFunc(m.turns, func(tr Turn) bool { return tr.User == user })
}

func (m *wlModel) randomStep() {
	m.now = m.now.Add(time.Duration(m.r.IntN(20)) * time.Second)
	switch op := m.r.IntN(100); {
	case op < 25:
		m.join()
	case op < 45:
		m.hold()
	case op < 57:
		m.release()
	case op < 67:
		m.take()
	case op < 73:
		m.leave()
	case op < 88:
		m.lapse()
	case op < 91:
		m.book()
	case op < 93:
		m.soldOut()
	case op < 95:
		m.restore()
	}
}

func (m *wlModel) join() {
	u := m.users[m.r.IntN(len(m.users))]
	wanted := 1 + m.r.IntN(3)
	if m.r.IntN(3) == 0 {
		wanted = m.r.IntN(MaxSeatsWanted + 2) // 0 to 11
	}
	available, held, offered := m.counts()
	s := Seats{Available: available, Held: held, Offered: offered, User: m.userSeats[u]}
	e, existed, err := m.w.Join(u, wanted, m.now, s)
	if old, ok := m.member(u); ok {
		if err != nil || !existed || e != old {
			m.fatalf("join %s again: %+v %v %v, want %+v", u, e, existed, err, old)
		}
		m.seen["join again"]++
		return
	}
	var want error
	switch {
	case wanted < 1 || wanted > MaxSeatsWanted:
		want = ErrSeatsWanted
	case s.User+wanted > MaxSeatsWanted:
		want = ErrUserLimit
	case s.Available >= wanted:
		want = ErrSeatsAvailable
	case s.Available+s.Held+s.Offered < wanted:
		want = ErrSoldOut
	}
	if want != nil {
		if !errors.Is(err, want) || existed {
			m.fatalf("join %s wanting %d with %+v: %v %v, want %v", u, wanted, s, existed, err, want)
		}
		m.seen["join refused: "+want.Error()]++
		return
	}
	deadline := m.now.Add(testMaxWait)
	if n := len(m.waiting); n > 0 && m.waiting[n-1].Deadline.After(deadline) {
		deadline = m.waiting[n-1].Deadline
	}
	wantE := Entry{User: u, Seq: m.lastSeq + 1, SeatsWanted: wanted, JoinedAt: m.now, Deadline: deadline}
	if err != nil || existed || e != wantE {
		m.fatalf("join %s wanting %d with %+v: %+v %v %v, want %+v", u, wanted, s, e, existed, err, wantE)
	}
	m.lastSeq = e.Seq
	m.waiting = append(m.waiting, e)
	m.seen["join"]++
}

// hold: a user not on the waitlist holds available seats.
func (m *wlModel) hold() {
	u := m.users[m.r.IntN(len(m.users))]
	if _, ok := m.member(u); ok {
		return
	}
	free := m.seatsIn(seatAvailable)
	k := min(1+m.r.IntN(6), len(free), MaxSeatsWanted-m.userSeats[u])
	if k <= 0 {
		return
	}
	m.r.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	m.addHold(u, free[:k])
}

func (m *wlModel) addHold(u UserID, seats []string) {
	h := &mHold{user: u, seats: slices.Clone(seats)}
	for _, id := range seats {
		*m.seats[id] = mSeat{status: seatHeld, hold: h}
	}
	m.userSeats[u] += len(seats)
	m.holds = append(m.holds, h)
}

func (m *wlModel) popHold() *mHold {
	i := m.r.IntN(len(m.holds))
	h := m.holds[i]
	m.holds = slices.Delete(m.holds, i, i+1)
	return h
}

// release: a hold expires or is released; its seats come free.
func (m *wlModel) release() {
	if len(m.holds) == 0 {
		return
	}
	h := m.popHold()
	for _, id := range h.seats {
		*m.seats[id] = mSeat{status: seatFreed}
	}
	m.userSeats[h.user] -= len(h.seats)
	out := m.w.Free(h.seats, m.now)
	if len(out.Ended) != 0 {
		m.fatalf("Free ended entries: %+v", out.Ended)
	}
	m.apply(out)
	m.seen["free"]++
}

// take: a user with a turn holds some of its offer (and perhaps another
// seat), or, now and then, only seats not of its offer.
func (m *wlModel) take() {
	if len(m.turns) == 0 {
		return
	}
	tr := m.turns[m.r.IntN(len(m.turns))]
	var other []string
	if free := m.seatsIn(seatAvailable); len(free) > 0 && m.userSeats[tr.User]+tr.SeatsWanted < MaxSeatsWanted {
		other = free[m.r.IntN(len(free)):][:1]
	}
	if m.r.IntN(5) == 0 {
		if out, ok := m.w.Take(tr.User, other, m.now); ok || !out.Empty() {
			m.fatalf("Take(%s, %v), none of its offer: %v %+v", tr.User, other, ok, out)
		}
		m.seen["take refused"]++
		return
	}
	offer := slices.Clone(tr.Seats)
	m.r.Shuffle(len(offer), func(i, j int) { offer[i], offer[j] = offer[j], offer[i] })
	held := offer[:1+m.r.IntN(len(offer))]
	if m.r.IntN(2) == 0 {
		held = append(held, other...)
	}
	m.addHold(tr.User, held)
	out, ok := m.w.Take(tr.User, held, m.now)
	if !ok || len(out.Ended) == 0 || out.Ended[0].User != tr.User || out.Ended[0].Reason != Done {
		m.fatalf("Take(%s, %v): %v %+v", tr.User, held, ok, out)
	}
	m.apply(out)
	m.seen["take"]++
}

func (m *wlModel) leave() {
	var u UserID
	switch i := m.r.IntN(10); {
	case i < 5 && len(m.waiting) > 0:
		u = m.waiting[m.r.IntN(len(m.waiting))].User
	case i < 9 && len(m.turns) > 0:
		u = m.turns[m.r.IntN(len(m.turns))].User
	default:
		u = m.users[m.r.IntN(len(m.users))]
	}
	out, err := m.w.Leave(u, m.now)
	if _, ok := m.member(u); !ok {
		if !errors.Is(err, ErrNotWaiting) || !out.Empty() {
			m.fatalf("Leave(%s), not on the waitlist: %v %+v", u, err, out)
		}
		m.seen["leave refused"]++
		return
	}
	if err != nil || len(out.Ended) == 0 || out.Ended[0].User != u || out.Ended[0].Reason != Left {
		m.fatalf("Leave(%s): %v %+v", u, err, out)
	}
	m.apply(out)
}

// lapse: time passes (now and then the clock goes back) and Lapse runs.
func (m *wlModel) lapse() {
	d := time.Duration(m.r.IntN(120)) * time.Second
	if m.r.IntN(10) == 0 {
		d = -time.Duration(m.r.IntN(60)) * time.Second
	}
	m.now = m.now.Add(d)
	before := slices.Clone(m.turns)
	out := m.w.Lapse(m.now)
	for _, e := range out.Ended {
		switch e.Reason {
		case Lapsed:
			i := slices.IndexFunc(before, func(tr Turn) bool { return tr.User == e.User })
			if i < 0 || before[i].Deadline.After(m.now) {
				m.fatalf("%s's turn lapsed early at %s: %+v", e.User, m.now, e)
			}
		case TimedOut:
			if e.Deadline.After(m.now) {
				m.fatalf("%s timed out early at %s: %+v", e.User, m.now, e)
			}
		default:
			m.fatalf("Lapse ended %s as %s", e.User, e.Reason)
		}
	}
	m.apply(out)
	for _, tr := range m.turns {
		if !tr.Deadline.After(m.now) {
			m.fatalf("%s's turn outlived its deadline %s at %s", tr.User, tr.Deadline, m.now)
		}
	}
	for _, e := range m.waiting {
		if !e.Deadline.After(m.now) {
			m.fatalf("%s waits past its deadline %s at %s", e.User, e.Deadline, m.now)
		}
	}
}

// book: a hold is booked, its seats gone for good, and the waitlist learns
// how many could still come free.
func (m *wlModel) book() {
	if len(m.holds) == 0 {
		return
	}
	h := m.popHold()
	for _, id := range h.seats {
		m.seats[id].status = seatBooked
	}
	m.soldOut()
}

func (m *wlModel) soldOut() {
	available, held, offered := m.counts()
	left := available + held + offered
	out := m.w.SoldOut(left, m.now)
	for _, e := range out.Ended {
		if e.Reason != SoldOut || e.SeatsWanted <= left || left >= MaxSeatsWanted {
			m.fatalf("SoldOut(%d) ended %+v", left, e)
		}
	}
	m.apply(out)
	for _, e := range m.waiting {
		if e.SeatsWanted > left {
			m.fatalf("%s waits for %d seats, %d left", e.User, e.SeatsWanted, left)
		}
	}
}

// restore swaps the waitlist for one rebuilt from its persisted state.
// The rebuilt one only knows the Seqs of live rows, so it may give a new
// join the Seq of an ended one: order holds only against live rows.
func (m *wlModel) restore() {
	m.w = restoreCopy(m.t, m.w)
	var maxSeq int64
	for _, e := range m.waiting {
		maxSeq = max(maxSeq, e.Seq)
	}
	for _, tr := range m.turns {
		maxSeq = max(maxSeq, tr.Seq)
	}
	m.lastSeq = maxSeq
	m.lastTurnSeq = min(m.lastTurnSeq, maxSeq)
	m.seen["restore"]++
}

// placeable reports whether the waitlist may place seat id: it came free in
// this call, or it is set aside, or it was offered to a turn that ended.
func (m *wlModel) placeable(id string) bool {
	s := m.seats[id]
	return s.status == seatFreed || s.status == seatOffered && (s.to == "" || m.turnIndex(s.to) < 0)
}

// apply checks out against the model and applies it: the ended leave, each
// turn goes to the head of the queue, the aside and returned seats move.
func (m *wlModel) apply(out Outcome) {
	m.t.Helper()
	for _, e := range out.Ended {
		if !e.At.Equal(m.now) {
			m.fatalf("%s ended at %s, now is %s", e.User, e.At, m.now)
		}
		if i := m.turnIndex(e.User); i >= 0 {
			tr := m.turns[i]
			if e.Entry != tr.Entry || !slices.Equal(e.Seats, tr.Seats) || e.Reason != Done && e.Reason != Lapsed && e.Reason != Left {
				m.fatalf("ended %+v, its turn %+v", e, tr)
			}
			m.turns = slices.Delete(m.turns, i, i+1)
		} else if i := slices.IndexFunc(m.waiting, func(w Entry) bool { return w.User == e.User }); i >= 0 {
			if e.Entry != m.waiting[i] || e.Seats != nil || e.Reason != Left && e.Reason != SoldOut && e.Reason != TimedOut {
				m.fatalf("ended %+v, its entry %+v", e, m.waiting[i])
			}
			m.waiting = slices.Delete(m.waiting, i, i+1)
		} else {
			m.fatalf("ended %+v, not on the waitlist", e)
		}
		m.seen["ended "+e.Reason.String()]++
	}
	for _, tr := range out.Turns {
		// (a) strictly first come first served.
		if len(m.waiting) == 0 || tr.Entry != m.waiting[0] {
			m.fatalf("turn to %+v, the queue is %+v", tr.Entry, m.waiting)
		}
		if tr.Seq <= m.lastTurnSeq {
			m.fatalf("turn to %s (Seq %d) after a turn to Seq %d", tr.User, tr.Seq, m.lastTurnSeq)
		}
		// (c) exactly the seats wanted.
		if len(tr.Seats) != tr.SeatsWanted {
			m.fatalf("turn to %s offers %v, it wants %d", tr.User, tr.Seats, tr.SeatsWanted)
		}
		// (e) now plus the window, clamped to the turn given before.
		deadline := m.now.Add(testWindow)
		if n := len(m.turns); n > 0 && m.turns[n-1].Deadline.After(deadline) {
			deadline = m.turns[n-1].Deadline
		}
		if !tr.OfferedAt.Equal(m.now) || !tr.Deadline.Equal(deadline) {
			m.fatalf("turn to %s offered at %s until %s; now %s, want until %s", tr.User, tr.OfferedAt, tr.Deadline, m.now, deadline)
		}
		for _, id := range tr.Seats {
			if !m.placeable(id) {
				m.fatalf("turn to %s offers %s, which is %+v", tr.User, id, *m.seats[id])
			}
			*m.seats[id] = mSeat{status: seatOffered, to: tr.User}
		}
		m.waiting = m.waiting[1:]
		m.turns = append(m.turns, tr)
		m.lastTurnSeq = tr.Seq
		m.seen["turn"]++
	}
	aside := m.w.Aside()
	if out.AsideChanged {
		for _, id := range aside {
			if !m.placeable(id) {
				m.fatalf("sets %s aside, which is %+v", id, *m.seats[id])
			}
			*m.seats[id] = mSeat{status: seatOffered}
		}
		m.aside = aside
	} else if !slices.Equal(aside, m.aside) {
		m.fatalf("aside %v, was %v, and AsideChanged is false", aside, m.aside)
	}
	for _, id := range out.Returned {
		if !m.placeable(id) {
			m.fatalf("returns %s, which is %+v", id, *m.seats[id])
		}
		*m.seats[id] = mSeat{}
		m.seen["returned"]++
	}
}

// check checks the waitlist against the model and its invariants.
func (m *wlModel) check() {
	m.t.Helper()
	w := m.w
	// (f) entries in join order, positions 0 to n-1; (a) all behind the
	// newest turn.
	entries := slices.Collect(w.Entries())
	if !slices.Equal(entries, m.waiting) {
		m.fatalf("entries\n got %+v\nwant %+v", entries, m.waiting)
	}
	for i, e := range entries {
		if p, ok := w.Position(e.User); !ok || p != i {
			m.fatalf("position of %s: %d %v, want %d", e.User, p, ok, i)
		}
		if e.Seq <= m.lastTurnSeq {
			m.fatalf("%s (Seq %d) waits behind a turn given to Seq %d", e.User, e.Seq, m.lastTurnSeq)
		}
		if i > 0 && (e.Seq <= entries[i-1].Seq || e.Deadline.Before(entries[i-1].Deadline)) {
			m.fatalf("entries out of order: %+v after %+v", e, entries[i-1])
		}
	}
	if w.Waiting() != len(m.waiting) || w.Len() != len(m.waiting)+len(m.turns) {
		m.fatalf("Waiting %d Len %d, want %d %d", w.Waiting(), w.Len(), len(m.waiting), len(m.waiting)+len(m.turns))
	}
	placed := make(map[string]UserID)
	turns := slices.Collect(w.Turns())
	if !slices.EqualFunc(turns, m.turns, sameTurn) {
		m.fatalf("turns\n got %+v\nwant %+v", turns, m.turns)
	}
	for i, tr := range turns {
		if len(tr.Seats) != tr.SeatsWanted { // (c)
			m.fatalf("%s's turn offers %v, it wants %d", tr.User, tr.Seats, tr.SeatsWanted)
		}
		if i > 0 && tr.Deadline.Before(turns[i-1].Deadline) { // (e)
			m.fatalf("%s's turn ends at %s, before %s's at %s", tr.User, tr.Deadline, turns[i-1].User, turns[i-1].Deadline)
		}
		if _, ok := w.Position(tr.User); ok {
			m.fatalf("%s holds a turn and has a position", tr.User)
		}
		if e, ok := w.Get(tr.User); !ok || e != tr.Entry {
			m.fatalf("Get(%s): %+v %v", tr.User, e, ok)
		}
		for _, id := range tr.Seats {
			if to, dup := placed[id]; dup {
				m.fatalf("seat %s offered to %s and %s", id, to, tr.User)
			}
			placed[id] = tr.User
		}
	}
	// (d) fewer aside than the head wants; none with nobody waiting.
	aside := w.Aside()
	if !slices.Equal(aside, m.aside) {
		m.fatalf("aside %v, want %v", aside, m.aside)
	}
	if len(entries) > 0 && len(aside) >= entries[0].SeatsWanted || len(entries) == 0 && len(aside) > 0 {
		m.fatalf("aside %v, waiting %+v", aside, entries)
	}
	if len(entries) > 0 && len(aside) > 0 {
		m.seen["aside while waiting"]++
	}
	for _, id := range aside {
		if to, dup := placed[id]; dup {
			m.fatalf("seat %s aside and offered to %s", id, to)
		}
		placed[id] = ""
	}
	// (b) the seats offered in the model are exactly those placed, each
	// to the right user.
	for _, id := range m.ids {
		s := m.seats[id]
		to, ok := placed[id]
		switch {
		case s.status == seatFreed:
			m.fatalf("seat %s came free and was not placed", id)
		case s.status == seatOffered && (!ok || to != s.to):
			m.fatalf("seat %s offered to %q in the model, placed to %q (%v)", id, s.to, to, ok)
		case s.status != seatOffered && ok:
			m.fatalf("seat %s is %+v in the model, placed to %q", id, *s, to)
		}
	}
}

// TestWaitlistRandom drives waitlists with seeded random joins, leaves,
// holds and their expiry, takes, lapses and bookings against a model of
// the show's seats, checking after every step that turns go strictly in
// join order, that no seat is in two places, that every turn offers
// exactly the seats wanted with deadlines that never decrease, that the
// aside stays below the head's want, and that positions count from 0.
func TestWaitlistRandom(t *testing.T) {
	const seeds, steps, seats, users = 200, 500, 30, 40
	seen := make(map[string]int)
	for seed := range uint64(seeds) {
		m := newWlModel(t, seed, seats, users, seen)
		for m.step = range steps {
			m.randomStep()
			m.check()
		}
	}
	// The driver must reach every case, or the checks above prove little.
	for _, k := range []string{
		"join", "join again", "free", "take", "take refused", "leave refused", "restore", "turn", "returned", "aside while waiting",
		"join refused: " + ErrSeatsWanted.Error(), "join refused: " + ErrUserLimit.Error(),
		"join refused: " + ErrSeatsAvailable.Error(), "join refused: " + ErrSoldOut.Error(),
		"ended " + Done.String(), "ended " + Lapsed.String(), "ended " + Left.String(),
		"ended " + SoldOut.String(), "ended " + TimedOut.String(),
	} {
		if seen[k] == 0 {
			t.Errorf("the driver never reached %q", k)
		}
	}
	t.Logf("reached: %v", seen)
}
