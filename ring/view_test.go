package ring

import (
	"fmt"
	"testing"

	"github.com/buraksezer/consistent"
)

func TestViewMatchesConsistent(t *testing.T) {
	cfg := DefaultConfig()
	for n := 1; n <= 9; n++ {
		members := make([]Member, n)
		cm := make([]consistent.Member, n)
		for i := range members {
			name := fmt.Sprintf("node-%d", i)
			members[i] = Member{Name: name, GRPCAddr: fmt.Sprintf("10.0.0.%d:7070", i), State: StateAlive}
			cm[i] = memberName(name)
		}
		v := buildView(1, "node-0", members, members, cfg)
		c := consistent.New(cm, consistent.Config{
			Hasher: xxhasher{}, PartitionCount: cfg.PartitionCount,
			ReplicationFactor: cfg.ReplicationFactor, Load: cfg.Load,
		})
		for i := range 5000 {
			k := fmt.Sprintf("show-%d", i)
			want := c.LocateKey([]byte(k)).String()
			if got := v.Owner(k); got.Name != want {
				t.Fatalf("%d members: owner of %s is %s, consistent says %s", n, k, got.Name, want)
			}
			if v.Owns(k) != (want == "node-0") {
				t.Fatalf("%d members: Owns(%s) wrong", n, k)
			}
		}
		maxLoad := 0
		for _, p := range v.Partitions() {
			maxLoad = max(maxLoad, p)
		}
		t.Logf("%d members: partitions %v", n, v.Partitions())
		if limit := float64(cfg.PartitionCount) / float64(n) * cfg.Load; float64(maxLoad) > limit+1 {
			t.Errorf("%d members: a member owns %d partitions, bound %.1f", n, maxLoad, limit)
		}
	}
}

func TestOwnerDoesNotAllocate(t *testing.T) {
	members := []Member{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	v := buildView(1, "a", members, members, DefaultConfig())
	if n := testing.AllocsPerRun(1000, func() { _ = v.Owner("show-12345") }); n != 0 {
		t.Errorf("Owner allocates %v times", n)
	}
}

// TestMoveFraction measures, over many sets of node names, the share of shows
// that move when a fourth node joins three: consistent hashing moves about
// 1/4, a modulo hash about 3/4.
func TestMoveFraction(t *testing.T) {
	cfg := DefaultConfig()
	keys := showIDs(10000)
	const trials = 40
	sum, lo, hi := 0.0, 1.0, 0.0
	for tr := range trials {
		build := func(n int) *View {
			ms := make([]Member, n)
			for i := range ms {
				ms[i] = Member{Name: fmt.Sprintf("set%d-node-%d", tr, i)}
			}
			return buildView(1, ms[0].Name, ms, ms, cfg)
		}
		v3, v4 := build(3), build(4)
		moved := 0
		for _, k := range keys {
			if v3.Owner(k).Name != v4.Owner(k).Name {
				moved++
			}
		}
		f := float64(moved) / float64(len(keys))
		sum += f
		lo, hi = min(lo, f), max(hi, f)
	}
	mean := sum / trials
	t.Logf("3→4 nodes over %d name sets: %.1f%% of %d keys moved on average (min %.1f%%, max %.1f%%)", trials, 100*mean, len(keys), 100*lo, 100*hi)
	if mean < 0.22 || mean > 0.28 {
		t.Errorf("mean moved fraction %.1f%%, want about 25%%", 100*mean)
	}
}
