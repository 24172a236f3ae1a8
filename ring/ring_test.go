package ring

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
)

// threeNodes starts a, then b and c joining a, and waits until they agree.
func threeNodes(t *testing.T, keys []string) []*Ring {
	t.Helper()
	a := start(t, testConfig(t, "a"))
	b := start(t, testConfig(t, "b", a.GossipAddr()))
	c := start(t, testConfig(t, "c", a.GossipAddr()))
	rings := []*Ring{a, b, c}
	d := waitFor(t, 5*time.Second, "three nodes agree", func() error {
		return agree(rings, []string{"a", "b", "c"}, keys)
	})
	t.Logf("three nodes agreed %v after the last join", d.Round(time.Millisecond))
	return rings
}

func TestThreeNodesAgree(t *testing.T) {
	keys := showIDs(1000)
	rings := threeNodes(t, keys)
	for _, r := range rings {
		if !r.Joined() {
			t.Errorf("%s: Joined() = false", r.Self().Name)
		}
		total := 0
		for name, n := range r.Partitions() {
			if n == 0 {
				t.Errorf("%s: member %s owns no partition", r.Self().Name, name)
			}
			total += n
		}
		if total != DefaultPartitionCount {
			t.Errorf("%s: partitions add up to %d, want %d", r.Self().Name, total, DefaultPartitionCount)
		}
		for _, m := range r.Status() {
			if m.State != StateAlive {
				t.Errorf("%s: %s is %s", r.Self().Name, m.Name, m.State)
			}
		}
	}
	t.Logf("partitions: %v", rings[0].Partitions())
	counts := map[string]int{}
	for _, k := range keys {
		counts[rings[0].Owner(k).Name]++
	}
	t.Logf("owners of %d shows: %v", len(keys), counts)
}

func TestGracefulLeave(t *testing.T) {
	keys := showIDs(10000)
	rings := threeNodes(t, keys)
	a, b, c := rings[0], rings[1], rings[2]
	before := owners(a, keys)
	drain(a.Changes())

	start := time.Now()
	if err := c.Leave(2 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	left := time.Since(start)
	d := waitFor(t, 2*time.Second, "a and b drop c", func() error {
		return agree([]*Ring{a, b}, []string{"a", "b"}, keys)
	})
	dropped := left + d
	t.Logf("Leave took %v; a and b agreed without c %v after Leave was called", left.Round(time.Millisecond), dropped.Round(time.Millisecond))
	if dropped > time.Second {
		t.Errorf("peers dropped the leaver after %v, want < 1s", dropped)
	}
	select {
	case <-a.Changes():
	default:
		t.Error("Changes() did not fire on a")
	}
	for _, r := range []*Ring{a, b} {
		if s := stateOf(r, "c"); s != StateLeft {
			t.Errorf("%s: Status says c is %s, want %s", r.Self().Name, s, StateLeft)
		}
	}

	after := owners(a, keys)
	stayed, kept := 0, 0
	for _, k := range keys {
		switch {
		case before[k] == "c" && after[k] == "c":
			t.Fatalf("%s still owned by the leaver", k)
		case before[k] != "c":
			stayed++
			if after[k] == before[k] {
				kept++
			}
		}
	}
	frac := float64(kept) / float64(stayed)
	t.Logf("of %d shows owned by a or b, %.1f%% kept their owner", stayed, 100*frac)
	if frac < 0.9 {
		t.Errorf("only %.1f%% of the remaining nodes' shows kept their owner", 100*frac)
	}

	if err := c.Leave(time.Second); err != nil {
		t.Errorf("second Leave: %v", err)
	}
	if err := c.Shutdown(); err != nil {
		t.Errorf("Shutdown after Leave: %v", err)
	}
}

func TestCrashDetected(t *testing.T) {
	keys := showIDs(1000)
	rings := threeNodes(t, keys)
	a, b, c := rings[0], rings[1], rings[2]
	drain(a.Changes())
	drain(b.Changes())

	if err := c.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	d := waitFor(t, 5*time.Second, "a and b drop the crashed c", func() error {
		return agree([]*Ring{a, b}, []string{"a", "b"}, keys)
	})
	t.Logf("crash detected by both peers after %v", d.Round(time.Millisecond))
	for _, r := range []*Ring{a, b} {
		select {
		case <-r.Changes():
		default:
			t.Errorf("%s: Changes() did not fire", r.Self().Name)
		}
		if s := stateOf(r, "c"); s != StateDead {
			t.Errorf("%s: Status says c is %s, want %s", r.Self().Name, s, StateDead)
		}
	}
}

func TestRestartSameNameNewPort(t *testing.T) {
	keys := showIDs(1000)
	rings := threeNodes(t, keys)
	a, b, c := rings[0], rings[1], rings[2]
	oldGossip := c.GossipAddr()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a and b drop the crashed c", func() error {
		return agree([]*Ring{a, b}, []string{"a", "b"}, nil)
	})

	// Restart at once, on another port and with another gRPC address: the
	// peers saw c die less than DeadNodeReclaimTime ago.
	start := time.Now()
	c2 := startRestarted(t, oldGossip, b.GossipAddr())
	if c2.GossipAddr() == oldGossip {
		t.Fatalf("restarted on the same address %s", oldGossip)
	}
	d := waitFor(t, 10*time.Second, "restarted c accepted", func() error {
		for _, r := range []*Ring{a, b} {
			var got Member
			for _, m := range r.Members() {
				if m.Name == "c" {
					got = m
				}
			}
			if got.GossipAddr != c2.GossipAddr() || got.GRPCAddr != c2.cfg.GRPCAddr {
				return fmt.Errorf("%s has c as %+v, want gossip %s gRPC %s", r.Self().Name, got, c2.GossipAddr(), c2.cfg.GRPCAddr)
			}
		}
		return agree([]*Ring{a, b, c2}, []string{"a", "b", "c"}, keys)
	})
	t.Logf("restarted c (%s -> %s) accepted by all %v after New was called", oldGossip, c2.GossipAddr(), time.Since(start).Round(time.Millisecond))
	_ = d
}

// startRestarted starts node c again on a free port other than old's.
func startRestarted(t *testing.T, old string, join string) *Ring {
	t.Helper()
	for range 5 {
		cfg := testConfig(t, "c", join)
		r := start(t, cfg)
		if r.GossipAddr() != old {
			return r
		}
		_ = r.Shutdown()
	}
	t.Fatal("kept getting the old port")
	return nil
}

func TestGrowAndShrink(t *testing.T) {
	keys := showIDs(1000)
	moveKeys := showIDs(10000)
	first := start(t, testConfig(t, "n0"))
	live := []*Ring{first}
	want := []string{"n0"}
	var initial3 map[string]string
	for i := 1; i < 7; i++ {
		before := owners(first, moveKeys)
		name := "n" + strconv.Itoa(i)
		join := live[len(live)-1].GossipAddr() // join the newest, not always the same node
		live = append(live, start(t, testConfig(t, name, join)))
		want = append(want, name)
		d := waitFor(t, 5*time.Second, fmt.Sprintf("%d nodes agree", len(live)), func() error {
			return agree(live, want, keys)
		})
		after := owners(first, moveKeys)
		t.Logf("%d→%d nodes: agreed in %v, %.1f%% of keys moved", len(live)-1, len(live), d.Round(time.Millisecond), 100*movedFraction(before, after))
		switch len(live) {
		case 3:
			initial3 = after
		case 4:
			f := movedFraction(before, after)
			t.Logf("3→4 nodes moved %.1f%% of %d keys (ideal 25%%)", 100*f, len(moveKeys))
			// One set of names; TestMoveFraction checks the average over many.
			if f < 0.10 || f > 0.40 {
				t.Errorf("3→4 moved %.1f%% of keys, want about 25%%", 100*f)
			}
		}
	}
	for len(live) > 1 {
		leaver := live[len(live)-1]
		live = live[:len(live)-1]
		want = want[:len(want)-1]
		if err := leaver.Leave(2 * time.Second); err != nil {
			t.Fatalf("Leave %s: %v", leaver.Self().Name, err)
		}
		d := waitFor(t, 5*time.Second, fmt.Sprintf("%d nodes agree", len(live)), func() error {
			return agree(live, want, keys)
		})
		t.Logf("%d→%d nodes: agreed in %v", len(live)+1, len(live), d.Round(time.Millisecond))
		if len(live) == 3 {
			if f := movedFraction(initial3, owners(first, moveKeys)); f != 0 {
				t.Errorf("back at 3 nodes, %.2f%% of keys have another owner than before", 100*f)
			}
		}
	}
	if got := names(first.Members()); !slices.Equal(got, []string{"n0"}) {
		t.Errorf("alone again, n0 sees %v", got)
	}
}

func TestEncryption(t *testing.T) {
	key := []byte("0123456789abcdef")
	cfg := testConfig(t, "a")
	cfg.SecretKey = key
	a := start(t, cfg)
	cfg = testConfig(t, "b", a.GossipAddr())
	cfg.SecretKey = key
	b := start(t, cfg)
	waitFor(t, 5*time.Second, "a and b agree", func() error {
		return agree([]*Ring{a, b}, []string{"a", "b"}, showIDs(100))
	})

	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"other key", []byte("0123456789abcdef0123456789abcdef")},
		{"no key", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "intruder", a.GossipAddr())
			cfg.SecretKey = tc.key
			cfg.JoinTimeout = 500 * time.Millisecond
			start := time.Now()
			r, err := New(cfg)
			took := time.Since(start)
			if err == nil {
				_ = r.Shutdown()
				t.Fatal("New joined a cluster with another key")
			}
			if !errors.Is(err, ErrJoinFailed) {
				t.Errorf("error %v does not wrap ErrJoinFailed", err)
			}
			t.Logf("New failed after %v: %v", took.Round(time.Millisecond), err)
			if took > 3*time.Second {
				t.Errorf("New took %v with JoinTimeout %v", took, cfg.JoinTimeout)
			}
		})
	}
	for _, r := range []*Ring{a, b} {
		if s := stateOf(r, "intruder"); s != "unknown" {
			t.Errorf("%s knows the intruder as %s", r.Self().Name, s)
		}
	}
}

func TestJoinNobodyAnswers(t *testing.T) {
	// A port nothing listens on: bind one, note it, close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg := testConfig(t, "lonely", addr)
	cfg.JoinTimeout = 300 * time.Millisecond
	start := time.Now()
	r, err := New(cfg)
	if err == nil {
		_ = r.Shutdown()
		t.Fatal("New succeeded without anyone to join")
	}
	if !errors.Is(err, ErrJoinFailed) {
		t.Errorf("error %v does not wrap ErrJoinFailed", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("New took %v with JoinTimeout 300ms", took)
	}
}

func TestJoinListWithOwnAddress(t *testing.T) {
	// Every node may be given the same Join list, itself included.
	tr, err := NewPartitionableTransport("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatal(err)
	}
	self := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	cfg := testConfig(t, "a", self)
	cfg.Transport = tr
	cfg.JoinTimeout = 300 * time.Millisecond
	a := start(t, cfg)
	if a.GossipAddr() != self {
		t.Fatalf("GossipAddr %s, transport bound %s", a.GossipAddr(), self)
	}
	b := start(t, testConfig(t, "b", self, a.GossipAddr()))
	waitFor(t, 5*time.Second, "a and b agree", func() error {
		return agree([]*Ring{a, b}, []string{"a", "b"}, showIDs(100))
	})
}

func TestPartitionHeals(t *testing.T) {
	keys := showIDs(1000)
	a := start(t, testConfig(t, "a"))
	b := start(t, testConfig(t, "b", a.GossipAddr()))
	tr, err := NewPartitionableTransport("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "c", a.GossipAddr())
	cfg.Transport = tr
	c := start(t, cfg)
	all := []*Ring{a, b, c}
	waitFor(t, 5*time.Second, "three nodes agree", func() error {
		return agree(all, []string{"a", "b", "c"}, keys)
	})

	tr.Block()
	d := waitFor(t, 10*time.Second, "a and b declare c dead", func() error {
		return agree([]*Ring{a, b}, []string{"a", "b"}, keys)
	})
	t.Logf("partition: a and b dropped c after %v", d.Round(time.Millisecond))
	for _, r := range []*Ring{a, b} {
		if s := stateOf(r, "c"); s != StateDead {
			t.Errorf("%s: Status says c is %s, want %s", r.Self().Name, s, StateDead)
		}
	}
	d = waitFor(t, 10*time.Second, "c alone", func() error {
		if got := names(c.Members()); !slices.Equal(got, []string{"c"}) {
			return fmt.Errorf("c sees %v", got)
		}
		return nil
	})
	t.Logf("partition: c saw itself alone %v later", d.Round(time.Millisecond))
	for _, k := range keys {
		if o := c.Owner(k); o.Name != "c" {
			t.Fatalf("alone, c says %s is owned by %s", k, o.Name)
		}
	}

	tr.Unblock()
	d = waitFor(t, 15*time.Second, "healed: three nodes agree", func() error {
		return agree(all, []string{"a", "b", "c"}, keys)
	})
	t.Logf("healed: all three agreed %v after Unblock", d.Round(time.Millisecond))
}

func TestStopIsIdempotentAndLeakFree(t *testing.T) {
	base := runtime.NumGoroutine()
	a, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(testConfig(t, "b", a.GossipAddr()))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewPartitionableTransport("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "c", a.GossipAddr())
	cfg.Transport = tr
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "three nodes agree", func() error {
		return agree([]*Ring{a, b, c}, []string{"a", "b", "c"}, nil)
	})

	// Shutdown, then Leave: memberlist itself panics on Leave after Shutdown.
	for _, err := range []error{b.Shutdown(), b.Shutdown(), b.Leave(time.Second)} {
		if err != nil {
			t.Errorf("b: %v", err)
		}
	}
	for _, err := range []error{c.Leave(time.Second), c.Leave(time.Second), c.Shutdown()} {
		if err != nil {
			t.Errorf("c: %v", err)
		}
	}
	if err := a.Leave(time.Second); err != nil {
		t.Errorf("a: %v", err)
	}
	// The view stays readable after stopping.
	_ = a.Owner("show-1")
	_ = b.Members()

	waitFor(t, 10*time.Second, "goroutines end", func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines, %d before", n, base)
		}
		return nil
	})
}
