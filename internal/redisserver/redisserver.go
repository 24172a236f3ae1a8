// Package redisserver runs a throwaway Redis server from Debian's
// redis-server package: a child process on a loopback port, with no
// persistence (no RDB snapshots, no append-only file), stopped and removed
// on demand. The bench uses it for the Redis baseline and its tests.
package redisserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoBinary means redis-server was not found (and was not installed,
// see Config.Install).
var ErrNoBinary = errors.New("redisserver: redis-server not found")

// DefaultBinary is where Debian's redis-server package puts the server.
const DefaultBinary = "/usr/bin/redis-server"

// startTimeout bounds how long Start waits for the server to answer PING.
const startTimeout = 30 * time.Second

// stopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// Config says where and how to run the server. The zero value runs a server
// in a new temporary directory on a free port and fails if redis-server is
// not installed.
type Config struct {
	// Dir is the server's working directory (--dir) and holds its log
	// (Dir/redis.log). Nothing else is written there: persistence is off.
	// Start creates it if needed; Stop keeps it. If empty, Start creates a
	// temporary directory that Stop removes.
	Dir string
	// Port is the TCP port on 127.0.0.1 the server listens on. If 0, Start
	// picks a free one (and tries another if it was taken meanwhile).
	Port int
	// Install, when redis-server is missing and the process is root, runs
	// apt-get update && apt-get install redis-server (Debian) first. If
	// false and the binary is missing, Start returns an error wrapping
	// ErrNoBinary.
	Install bool
	// Log receives progress lines. If nil, they are discarded. The
	// server's own output goes to Dir/redis.log.
	Log io.Writer
}

// Server is a running redis-server child process started by Start. Its
// methods are safe for concurrent use.
type Server struct {
	dir     string // working directory, absolute
	port    int
	tempDir bool // Start created dir; Stop removes it
	log     io.Writer
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // the process's exit status; read after exited is closed

	mu      sync.Mutex // guards stopped and serializes Stop
	stopped bool
}

// Binary returns the path of redis-server: the REDIS_SERVER environment
// variable if set (an error wrapping ErrNoBinary if it is not an executable
// file), otherwise DefaultBinary, otherwise redis-server on PATH.
func Binary() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		if !executable(p) {
			return "", fmt.Errorf("%w: REDIS_SERVER=%s is not an executable file", ErrNoBinary, p)
		}
		return p, nil
	}
	if executable(DefaultBinary) {
		return DefaultBinary, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w at %s or on PATH (install the Debian package redis-server, or set REDIS_SERVER)", ErrNoBinary, DefaultBinary)
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start finds (or installs) redis-server, starts it on 127.0.0.1 without
// persistence and waits until it answers PING. On error nothing is left
// running and a temporary directory is removed; a failed start includes the
// tail of the server log. ctx bounds the start only, not the server's life.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	bin, err := Binary()
	if errors.Is(err, ErrNoBinary) && cfg.Install {
		if ierr := install(ctx, log); ierr != nil {
			return nil, fmt.Errorf("%w (%w)", err, ierr)
		}
		bin, err = Binary()
	}
	if err != nil {
		return nil, err
	}

	s := &Server{log: log}
	if cfg.Dir == "" {
		if s.dir, err = os.MkdirTemp("", "redisserver-"); err != nil {
			return nil, fmt.Errorf("redisserver: %w", err)
		}
		s.tempDir = true
	} else {
		if s.dir, err = filepath.Abs(cfg.Dir); err != nil {
			return nil, fmt.Errorf("redisserver: %w", err)
		}
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return nil, fmt.Errorf("redisserver: %w", err)
		}
	}

	// A free port found by listening may be taken again before the server
	// binds it; with a port of our choosing, try a few.
	attempts := 1
	if cfg.Port == 0 {
		attempts = 3
	}
	for i := range attempts {
		port := cfg.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				break
			}
		}
		s.port = port
		err = s.start(ctx, bin)
		if err == nil || !errors.Is(err, errAddrInUse) || i == attempts-1 {
			break
		}
		fmt.Fprintf(log, "redisserver: port %d was taken, trying another\n", port)
	}
	if err != nil {
		if s.tempDir {
			_ = os.RemoveAll(s.dir)
		}
		return nil, err
	}
	return s, nil
}

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("address already in use")

// start runs the server on s.port and waits until it answers PING.
func (s *Server) start(ctx context.Context, bin string) error {
	logPath := s.logFile()
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("redisserver: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	// Note where this start's output begins, for error messages.
	offset, _ := logFile.Seek(0, io.SeekEnd)

	fmt.Fprintf(s.log, "redisserver: starting %s on 127.0.0.1:%d in %s\n", bin, s.port, s.dir)
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--logfile", "", // log to stdout, which is logFile
	)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Kill the server if this process dies without calling Stop, so a
	// crashed test leaves no server behind. (Pdeathsig follows the thread
	// that started the child; Go only ends threads locked by
	// runtime.LockOSThread, which Start does not use.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redisserver: starting %s: %w", bin, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(ctx); err != nil {
		_ = cmd.Process.Kill()
		<-s.exited
		out := logTail(logPath, offset)
		if strings.Contains(out, "Address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("%w; server log %s:\n%s", err, logPath, out)
	}
	return nil
}

// waitReady polls until the server answers PING and says it is our
// process (another server may hold the port), the process exits, or the
// start's deadline passes.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		pid, err := ping(ctx, s.Addr())
		if err == nil {
			if pid == s.cmd.Process.Pid {
				return nil
			}
			err = fmt.Errorf("%s is served by process %d, not by the server started (%d)", s.Addr(), pid, s.cmd.Process.Pid)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redisserver: server on %s not ready: %w (last error: %w)", s.Addr(), ctx.Err(), err)
		case <-s.exited:
			return fmt.Errorf("redisserver: server exited during start: %v (last error: %w)", s.waitErr, err)
		case <-tick.C:
		}
	}
}

// ping sends PING and INFO server over a new connection, expects +PONG,
// and returns the process_id the server reports.
func ping(ctx context.Context, addr string) (int, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	deadline := time.Now().Add(time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return 0, fmt.Errorf("PING answered %q", line)
	}
	// INFO answers a bulk string: $<length>, then lines "name:value".
	line, err = r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "$"))
	if err != nil || !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("INFO answered %q", line)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// Addr returns the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// Dir returns the server's working directory (absolute), which holds
// redis.log.
func (s *Server) Dir() string { return s.dir }

func (s *Server) logFile() string { return filepath.Join(s.dir, "redis.log") }

// Stop ends the server (SIGTERM, then SIGKILL if it has not exited within
// 10 seconds; everything in it is lost, as there is no persistence) and, if
// Start created a temporary directory, removes it. It is idempotent: after
// the first call it returns nil.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	fmt.Fprintf(s.log, "redisserver: stopping the server on %s\n", s.Addr())
	select {
	case <-s.exited:
		// It died on its own; nothing to signal.
	default:
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("redisserver: %w", err)
		}
		t := time.NewTimer(stopTimeout)
		defer t.Stop()
		select {
		case <-s.exited:
		case <-t.C:
			fmt.Fprintf(s.log, "redisserver: no exit %v after SIGTERM, killing\n", stopTimeout)
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	if s.tempDir {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("redisserver: %w", err)
		}
	}
	return nil
}

// install installs Debian's redis-server package. Only root can.
func install(ctx context.Context, log io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("redisserver: installing redis-server needs root")
	}
	fmt.Fprintln(log, "redisserver: installing redis-server with apt-get")
	for _, args := range [][]string{
		{"update"},
		// The lock timeout lets test binaries of several packages install
		// at the same time without one failing on dpkg's lock.
		{"-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "redis-server"},
	} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		var out tail
		cmd.Stdout = io.MultiWriter(log, &out)
		cmd.Stderr = cmd.Stdout
		// The package's scripts may start a server that inherits our
		// pipes; don't wait for it to close them.
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("redisserver: apt-get %s: %w\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redisserver: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail keeps the last few KiB written to it, for error messages.
type tail struct{ buf []byte }

const tailSize = 4 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = slices.Delete(t.buf, 0, over)
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.TrimSpace(string(t.buf)) }

// logTail returns the end of the file at path from offset on, or a note
// saying why it could not be read.
func logTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	var t tail
	if _, err := io.Copy(&t, f); err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return t.String()
}
