package waitinguser

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// atSec returns t0 plus s seconds.
func atSec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// roomStep is one call on a room and what it must answer.
type roomStep struct {
	at   float64 // seconds after t0
	do   string  // "join u", "leave u", "finish u", "admit", "lapse", "sellout", "close", "rate 0.5", "cap 2", "get u"
	want string  // the answer, as roomAnswer writes it
}

// roomAnswer runs step on r and writes its answer: users in order, places,
// or an error's text.
func roomAnswer(r *Room, s roomStep) string {
	now := atSec(s.at)
	verb, arg, _ := strings.Cut(s.do, " ")
	user := UserID(arg)
	ends := func(ls []RoomEnd) string {
		var out []string
		for _, l := range ls {
			out = append(out, fmt.Sprintf("%s:%s", l.User, l.Reason))
		}
		return strings.Join(out, " ")
	}
	place := func(p Place, existed bool) string {
		s := ""
		switch p.State {
		case Queued:
			s = fmt.Sprintf("queued #%d seq %d", p.Position, p.Entry.Seq)
		case Admitted:
			s = fmt.Sprintf("admitted seq %d until +%gs", p.Admission.Seq, p.Admission.Deadline.Sub(t0).Seconds())
		default:
			s = "absent"
		}
		if existed {
			s += " (again)"
		}
		return s
	}
	switch verb {
	case "join":
		p, existed, err := r.Join(user, now)
		if err != nil {
			return "error: " + err.Error()
		}
		return place(p, existed)
	case "get":
		return place(r.Get(user), false)
	case "leave":
		l, err := r.Leave(user, now)
		if err != nil {
			return "error: " + err.Error()
		}
		return ends([]RoomEnd{l})
	case "finish":
		l, ok := r.Finish(user, now)
		if !ok {
			return "not admitted"
		}
		return ends([]RoomEnd{l})
	case "admit":
		var out []string
		for _, a := range r.Admit(now) {
			out = append(out, string(a.User))
		}
		return strings.Join(out, " ")
	case "lapse":
		return ends(r.Lapse(now))
	case "sellout":
		return ends(r.SellOut(now))
	case "close":
		return ends(r.Close(now))
	case "rate":
		var v float64
		fmt.Sscan(arg, &v)
		if err := r.SetRate(v, now); err != nil {
			return "error: " + err.Error()
		}
		return ""
	case "cap":
		var v int
		fmt.Sscan(arg, &v)
		if err := r.SetMaxActive(v); err != nil {
			return "error: " + err.Error()
		}
		return ""
	}
	return "unknown step " + s.do
}

// TestRoomRules walks rooms through joins, admissions by rate and by cap,
// lapses, leaves, sell-outs, closes and refusals.
func TestRoomRules(t *testing.T) {
	opensAt := atSec(10)
	for _, c := range []struct {
		name  string
		cfg   RoomConfig
		steps []roomStep
	}{
		{"joins before the opening wait, in join order", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 2}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{1, "join b", "queued #1 seq 2"},
			{2, "join c", "queued #2 seq 3"},
			{2, "join b", "queued #1 seq 2 (again)"},
			{9.9, "admit", ""},
			{10, "admit", "a"}, // the first admission at the opening
			{11, "admit", "b c"},
			{11, "get a", "admitted seq 1 until +610s"},
			{11, "join a", "admitted seq 1 until +610s (again)"},
			{11, "get c", "admitted seq 3 until +611s"},
			{11, "admit", ""},
		}},
		{"a slow rate admits one every two seconds", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 0.5}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{0, "join b", "queued #1 seq 2"},
			{0, "join c", "queued #2 seq 3"},
			{10, "admit", "a"},
			{11, "admit", ""},
			{12, "admit", "b"},
			{13.9, "admit", ""},
			{14, "admit", "c"},
		}},
		{"credit saved while nobody waits is one second's worth", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 3}, []roomStep{
			{10, "admit", ""},
			{60, "join a", "queued #0 seq 1"},
			{60, "join b", "queued #1 seq 2"},
			{60, "join c", "queued #2 seq 3"},
			{60, "join d", "queued #3 seq 4"},
			{60, "join e", "queued #4 seq 5"},
			{60, "admit", "a b c"},
			{60.4, "admit", "d"},
			{60.5, "admit", ""},
			{60.7, "admit", "e"},
		}},
		{"the cap admits as shoppers finish, leave or lapse", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 100, MaxActive: 2, ShoppingWindow: time.Minute}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{0, "join b", "queued #1 seq 2"},
			{0, "join c", "queued #2 seq 3"},
			{0, "join d", "queued #3 seq 4"},
			{0, "join e", "queued #4 seq 5"},
			{11, "admit", "a b"},
			{12, "admit", ""},
			{12, "get c", "queued #0 seq 3"},
			{13, "finish a", "a:DONE"},
			{13, "finish a", "not admitted"},
			{13, "admit", "c"},
			{14, "leave b", "b:LEFT"},
			{14, "admit", "d"},
			{70, "lapse", ""},
			{72, "lapse", ""},
			{73, "lapse", "c:LAPSED"},
			{73, "admit", "e"},
			{74, "lapse", "d:LAPSED"},
			{74, "admit", ""},
		}},
		{"the operator's brake", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 10}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{0, "join b", "queued #1 seq 2"},
			{0, "join c", "queued #2 seq 3"},
			{0, "join d", "queued #3 seq 4"},
			{0, "join e", "queued #4 seq 5"},
			{0, "cap 1", ""},
			{10, "admit", "a"},
			{11, "admit", ""}, // the cap; ten admissions' credit is saved meanwhile
			{11, "cap 0", ""},
			{11, "rate 0.5", ""}, // the brake: at most one at once, then one every two seconds
			{11, "admit", "b"},
			{12, "admit", ""},
			{13, "admit", "c"},
			{13, "rate 3", ""},
			{14, "admit", "d e"},
			{10, "rate 0", "error: invalid waiting room: admit_per_second 0 must be 1/3600 to 100000"},
			{10, "rate 200000", "error: invalid waiting room: admit_per_second 200000 must be 1/3600 to 100000"},
			{10, "cap -1", "error: invalid waiting room: max_active_shoppers -1 must not be negative"},
		}},
		{"leaving the queue moves the others up; rejoining goes to the tail", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 1}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{0, "join b", "queued #1 seq 2"},
			{0, "join c", "queued #2 seq 3"},
			{1, "leave a", "a:LEFT"},
			{1, "get c", "queued #1 seq 3"},
			{1, "leave a", "error: not waiting: a"},
			{1, "join a", "queued #2 seq 4"},
			{10, "admit", "b"},
			{10, "finish b", "b:DONE"},
			{10, "join b", "queued #2 seq 5"},
		}},
		{"a sell-out tells every queued user and stops admitting", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 1}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{0, "join b", "queued #1 seq 2"},
			{0, "join c", "queued #2 seq 3"},
			{10, "admit", "a"},
			{11, "sellout", "b:SOLD_OUT c:SOLD_OUT"},
			{11, "sellout", ""},
			{12, "admit", ""},
			{12, "join d", "error: sold out"},
			{12, "get a", "admitted seq 1 until +610s"}, // a shopper may still take seats that come free
			{12, "join a", "admitted seq 1 until +610s (again)"},
			{610, "lapse", "a:LAPSED"},
		}},
		{"closing the room", RoomConfig{OpensAt: opensAt, AdmitPerSecond: 1}, []roomStep{
			{0, "join a", "queued #0 seq 1"},
			{0, "join b", "queued #1 seq 2"},
			{5, "close", "a:CLOSED b:CLOSED"},
			{6, "join c", "error: waiting room closed"},
			{10, "admit", ""},
			{10, "get a", "absent"},
			{10, "leave a", "error: not waiting: a"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewRoom(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range c.steps {
				if got := roomAnswer(r, s); got != s.want {
					t.Fatalf("step %d, at +%gs, %q: %q, want %q", i, s.at, s.do, got, s.want)
				}
			}
		})
	}
}

func TestRoomConfigRefused(t *testing.T) {
	for _, cfg := range []RoomConfig{
		{AdmitPerSecond: 0},
		{AdmitPerSecond: -1},
		{AdmitPerSecond: 1.0 / 7200},
		{AdmitPerSecond: MaxAdmitPerSecond + 1},
		{AdmitPerSecond: 1, MaxActive: -1},
		{AdmitPerSecond: 1, ShoppingWindow: -time.Second},
	} {
		if _, err := NewRoom(cfg); !errors.Is(err, ErrRoomConfig) {
			t.Errorf("NewRoom(%+v): %v, want ErrRoomConfig", cfg, err)
		}
	}
	r, err := NewRoom(RoomConfig{AdmitPerSecond: 1})
	if err != nil || r.Config().ShoppingWindow != DefaultShoppingWindow {
		t.Fatalf("NewRoom without a window: %v, window %v", err, r.Config().ShoppingWindow)
	}
}

// TestRoomAdmitsInJoinOrder: whatever the joins, leaves and admissions
// interleave, users are admitted in the order they joined (their Seq), and
// never more than the cap are counted.
func TestRoomAdmitsInJoinOrder(t *testing.T) {
	r, err := NewRoom(RoomConfig{OpensAt: atSec(0), AdmitPerSecond: 50, MaxActive: 20, ShoppingWindow: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var admitted []int64
	for i := range 5000 {
		now := atSec(float64(i) / 100)
		if _, _, err := r.Join(UserID(fmt.Sprint("u", i)), now); err != nil {
			t.Fatal(err)
		}
		if i%7 == 3 {
			_, _ = r.Leave(UserID(fmt.Sprint("u", i-2)), now)
		}
		if i%11 == 5 {
			for a := range r.Admissions() {
				r.Finish(a.User, now)
				break
			}
		}
		r.Lapse(now)
		for _, a := range r.Admit(now) {
			admitted = append(admitted, a.Seq)
		}
		if r.Active() > 20 {
			t.Fatalf("at +%v: %d shoppers, cap 20", now.Sub(t0), r.Active())
		}
	}
	if len(admitted) < 400 || !slices.IsSorted(admitted) {
		t.Fatalf("%d admitted, in join order: %t", len(admitted), slices.IsSorted(admitted))
	}
}

func TestRoomEstimatedWaitAndNextEvent(t *testing.T) {
	r, _ := NewRoom(RoomConfig{OpensAt: atSec(100), AdmitPerSecond: 4, ShoppingWindow: time.Minute})
	for _, u := range []UserID{"a", "b", "c", "d", "e", "f"} {
		r.Join(u, atSec(0))
	}
	if got, want := r.EstimatedWait(5, atSec(40)), 60*time.Second+1250*time.Millisecond; got != want {
		t.Errorf("wait of position 5 before the opening: %v, want %v", got, want)
	}
	if next, ok := r.NextEvent(atSec(40)); !ok || !next.Equal(atSec(100)) {
		t.Errorf("next event before the opening: %v %t, want the opening", next, ok)
	}
	if got := r.Admit(atSec(100)); len(got) != 1 {
		t.Fatalf("at the opening: %d admitted, want the first", len(got))
	}
	if next, ok := r.NextEvent(atSec(100)); !ok || !next.Equal(atSec(100.25)) {
		t.Errorf("next event after the opening: %v %t, want the next admission's credit at +100.25s", next, ok)
	}
	if got, want := r.EstimatedWait(1, atSec(100)), 500*time.Millisecond; got != want {
		t.Errorf("wait of position 1: %v, want %v", got, want)
	}
	if got := r.Admit(atSec(101)); len(got) != 4 {
		t.Fatalf("a second after the opening, rate 4: %d admitted", len(got))
	}
	if got := r.Admit(atSec(101.25)); len(got) != 1 {
		t.Fatalf("at +101.25s: %d admitted, want the last", len(got))
	}
	if next, ok := r.NextEvent(atSec(102)); !ok || !next.Equal(atSec(160)) {
		t.Errorf("next event with nobody queued: %v %t, want the first lapse", next, ok)
	}
	r.Lapse(atSec(200))
	if _, ok := r.NextEvent(atSec(200)); ok {
		t.Error("a next event in an empty room")
	}
}

// TestRoomRestore: a room rebuilt from its admissions and queue, in order,
// answers as the one it was saved from, and resumes its rate from the
// restore, not from the opening.
func TestRoomRestore(t *testing.T) {
	cfg := RoomConfig{OpensAt: atSec(0), AdmitPerSecond: 2, MaxActive: 3, ShoppingWindow: time.Minute}
	r, _ := NewRoom(cfg)
	for i := range 10 {
		r.Join(UserID(fmt.Sprint("u", i)), atSec(0))
	}
	r.Admit(atSec(1))
	r.Finish("u0", atSec(1))
	r.Admit(atSec(2))
	r.Join("u0", atSec(2)) // again, at the tail

	back, _ := NewRoom(cfg)
	for a := range r.Admissions() {
		if err := back.RestoreAdmission(a); err != nil {
			t.Fatal(err)
		}
	}
	for e := range r.Entries() {
		if err := back.RestoreEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	back.Resume(atSec(3600))
	for i := range 10 {
		u := UserID(fmt.Sprint("u", i))
		if got, want := back.Get(u), r.Get(u); got != want {
			t.Errorf("%s: restored %+v, was %+v", u, got, want)
		}
	}
	if got := back.Admit(atSec(3600)); got != nil {
		t.Errorf("admitted at once after the restore: %v", got)
	}
	back.Lapse(atSec(3600))
	if got := back.Admit(atSec(3601)); len(got) != 2 {
		t.Errorf("a second after the restore, rate 2: %d admitted", len(got))
	}
	if p, existed, _ := back.Join("u9", atSec(3601)); !existed || p.State != Queued {
		t.Errorf("u9 after the restore: %+v", p)
	}
	if p, _, _ := back.Join("new", atSec(3601)); p.Entry.Seq != 12 {
		t.Errorf("a new join after the restore has seq %d, want 12", p.Entry.Seq)
	}

	for _, c := range []struct {
		name string
		fn   func(r *Room) error
	}{
		{"admitted twice", func(r *Room) error {
			r.RestoreAdmission(Admission{User: "a", Seq: 1})
			return r.RestoreAdmission(Admission{User: "a", Seq: 2})
		}},
		{"queued and admitted", func(r *Room) error {
			r.RestoreAdmission(Admission{User: "a", Seq: 1})
			return r.RestoreEntry(Entry{User: "a", Seq: 2, SeatsWanted: 1})
		}},
		{"queue out of order", func(r *Room) error {
			r.RestoreEntry(Entry{User: "a", Seq: 5, SeatsWanted: 1})
			return r.RestoreEntry(Entry{User: "b", Seq: 4, SeatsWanted: 1})
		}},
	} {
		r, _ := NewRoom(cfg)
		if err := c.fn(r); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
	}
}

// TestRoomMemoryPerQueuedUser: 200,000 queued users cost at most 200 bytes
// of heap each, their IDs included.
func TestRoomMemoryPerQueuedUser(t *testing.T) {
	const n = 200_000
	ids := make([]UserID, n)
	for i := range ids {
		ids[i] = UserID(fmt.Sprintf("user-%07d", i)) // 12 bytes, as the web tier's IDs might be
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, _ := NewRoom(RoomConfig{AdmitPerSecond: 1000})
	for i, u := range ids {
		if _, _, err := r.Join(u, atSec(float64(i)/1000)); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes of heap per queued user (besides the 12-byte IDs the caller holds)", per)
	if per > 200-12 {
		t.Errorf("%.0f bytes per queued user plus a 12-byte ID, want at most 200", per)
	}
	if p := r.Get(ids[n-1]); p.Position != n-1 {
		t.Errorf("the last user's position %d, want %d", p.Position, n-1)
	}
	runtime.KeepAlive(ids)
}

func BenchmarkRoomJoin(b *testing.B) {
	ids := make([]UserID, b.N)
	for i := range ids {
		ids[i] = UserID(fmt.Sprintf("user-%07d", i))
	}
	r, _ := NewRoom(RoomConfig{AdmitPerSecond: 1000})
	b.ResetTimer()
	for _, u := range ids {
		if _, _, err := r.Join(u, t0); err != nil {
			b.Fatal(err)
		}
	}
}
