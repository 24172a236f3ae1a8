package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// The name holds a space and a ')'; fields 14–17 are 5, 3, 1, 1.
	line := "4242 (we) ird) S 17 4242 4242 0 -1 4194560 100 0 0 0 5 3 1 1 20 0 1 0 123 1000 10 18446744073709551615\n"
	st, err := parseProcStat(4242, line)
	if err != nil {
		t.Fatal(err)
	}
	if st.pid != 4242 || st.ppid != 17 || st.ticks != 10 {
		t.Errorf("parsed %+v, want ppid 17 and 10 ticks", st)
	}
	for _, bad := range []string{"4242 no name", "4242 (x) S 17 1 2", "4242 (x) S ppid 0 0 0 0 0 0 0 0 0 5 3 1 1"} {
		if _, err := parseProcStat(4242, bad); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
}

// TestTreeCPU checks the sum over a process tree on a /proc of files:
// the root, its child and grandchild count, an unrelated process does not.
func TestTreeCPU(t *testing.T) {
	dir := t.TempDir()
	write := func(pid, ppid, utime, stime, cutime, cstime int) {
		t.Helper()
		p := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		line := strconv.Itoa(pid) + " (p) S " + strconv.Itoa(ppid) + " 0 0 0 -1 0 0 0 0 0 " +
			strconv.Itoa(utime) + " " + strconv.Itoa(stime) + " " + strconv.Itoa(cutime) + " " + strconv.Itoa(cstime) + " 20 0 1 0\n"
		if err := os.WriteFile(filepath.Join(p, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(10, 1, 5, 3, 1, 1)    // root: 10 ticks, with reaped children
	write(11, 10, 60, 40, 0, 0) // child: 100
	write(12, 11, 4, 3, 0, 0)   // grandchild: 7
	write(13, 1, 900, 100, 0, 0)
	if err := os.Mkdir(filepath.Join(dir, "self"), 0o755); err != nil { // not a pid: skipped
		t.Fatal(err)
	}
	got, err := treeCPU(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := 117 * 10 * time.Millisecond; got != want {
		t.Errorf("treeCPU = %v, want %v", got, want)
	}
	if _, err := treeCPU(dir, 99); err == nil {
		t.Error("treeCPU of a missing pid: no error")
	}
}

// burn spends about d of this goroutine's processor time, bounded by 10 d
// of wall time.
func burn(d time.Duration) {
	start := time.Now()
	x := 0
	for time.Since(start) < d {
		for i := range 100_000 {
			x += i
		}
	}
	_ = x
}

func TestSelfCPU(t *testing.T) {
	before, err := SelfCPU()
	if err != nil {
		t.Fatal(err)
	}
	burn(100 * time.Millisecond)
	after, err := SelfCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 20*time.Millisecond {
		t.Errorf("100 ms of busy work counted %v of CPU", d)
	}
}

// TestProcessTreeCPU measures a real process whose child burnt CPU and was
// waited for: the child's time counts in the parent's tree (cutime).
func TestProcessTreeCPU(t *testing.T) {
	// The child, a subshell, counts to 100,000 (a few tenths of a second
	// of CPU in sh), exits and is waited for; the parent then sleeps.
	cmd := exec.Command("sh", "-c", `(i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done); exec sleep 30`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	meter := ProcessTreeCPU(cmd.Process.Pid)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := meter()
		if err != nil {
			t.Fatal(err)
		}
		if d >= 50*time.Millisecond {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the tree used %v of CPU, want its child's counting (≥ 50 ms)", d)
		case <-tick.C:
		}
	}
}
