package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// CPUMeter reads the processor time (user + system) that a process has used
// since it started. A run reads each of its meters as its load begins and
// ends (see RunConfig.CPU).
type CPUMeter func() (time.Duration, error)

// SelfCPU is the CPUMeter of this process, the load generator: the user and
// system time of all its threads, from getrusage(RUSAGE_SELF), which
// excludes child processes (an engine the bench started is measured apart).
// It counts everything this process does: the virtual users, the recorder,
// the seat-map sampler, the Go runtime and its GC, and the client code of
// the target (gRPC for the engine; go-redis, rueidis and pgx for the
// baselines, whose client side runs here).
func SelfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// clockTicks is the unit of the times in /proc/<pid>/stat: USER_HZ, which
// Linux fixes at 100 per second on every architecture Go supports.
const clockTicks = 100

// ProcessTreeCPU returns a CPUMeter of process pid and all its descendants,
// read from Linux's /proc: for every live process of the tree its user and
// system time plus those of its children that exited and were waited for
// (cutime, cstime), so that a process which ends between two readings (a
// Postgres backend whose connection closed) still counts once. The unit is
// a clock tick, 10 ms: over a run of a few seconds that is within about 1%.
// It fails if pid does not exist.
func ProcessTreeCPU(pid int) CPUMeter {
	return func() (time.Duration, error) { return treeCPU("/proc", pid) }
}

// treeCPU adds up the times of pid and its live descendants under procDir.
func treeCPU(procDir string, pid int) (time.Duration, error) {
	root, err := readProcStat(procDir, pid)
	if err != nil {
		return 0, err
	}
	children := map[int][]procStat{} // by parent
	if entries, err := os.ReadDir(procDir); err == nil {
		for _, e := range entries {
			p, err := strconv.Atoi(e.Name())
			if err != nil || p == pid {
				continue
			}
			if st, err := readProcStat(procDir, p); err == nil { // gone since the listing: skip it
				children[st.ppid] = append(children[st.ppid], st)
			}
		}
	}
	ticks := int64(0)
	for todo := []procStat{root}; len(todo) > 0; {
		st := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		ticks += st.ticks
		todo = append(todo, children[st.pid]...)
	}
	return time.Duration(ticks) * (time.Second / clockTicks), nil
}

// procStat is what treeCPU needs of /proc/<pid>/stat.
type procStat struct {
	pid, ppid int
	ticks     int64 // utime + stime + cutime + cstime
}

// readProcStat parses /proc/<pid>/stat (see proc(5)): the command name, in
// parentheses, may hold spaces and parentheses itself, so the fields are
// counted from the last ')'.
func readProcStat(procDir string, pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(pid, string(b))
}

func parseProcStat(pid int, s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields after the name, want ≥ 15", pid, len(f))
	}
	st := procStat{pid: pid}
	var err error
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: ppid: %w", pid, err)
	}
	for _, x := range f[11:15] { // utime, stime, cutime, cstime: fields 14–17
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("/proc/%d/stat: times: %w", pid, err)
		}
		st.ticks += n
	}
	return st, nil
}

// RedisPID asks the Redis server at addr for its process ID (INFO server,
// process_id), so that a bench that started the server can measure it with
// ProcessTreeCPU. The pid is only meaningful for a server on this machine.
func RedisPID(ctx context.Context, addr string) (int, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("redis at %s: INFO server has no process_id", addr)
}
