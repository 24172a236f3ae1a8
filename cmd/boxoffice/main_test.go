package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/internal/testcluster"
)

// This file holds what the package's tests share: TestMain, the built
// binary, and `boxoffice serve` run as a child process for tests that must
// exercise the real binary (crash with kill -9, restart).

// builtBinary is the boxoffice binary that tests run as a child process,
// built at most once per test binary by buildBinary into dir, a temporary
// directory that TestMain creates before the tests and removes after them.
// It is process state on purpose, like pgclustertest's shared cluster: its
// lifetime is the test binary's, and tests that do not need it never pay
// for the build.
var builtBinary struct {
	dir  string // set by TestMain before any test runs
	once sync.Once
	path string // set by once
	err  error  // set by once
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "boxoffice-test-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "boxoffice tests: temporary directory for the binary: %v\n", err)
		os.Exit(1)
	}
	builtBinary.dir = dir
	pgclustertest.Main(m)
	os.RemoveAll(dir)
}

// buildBinaryTimeout bounds `go build` of the binary; generous, because a
// cold build cache on a loaded 2-core machine compiles every dependency.
const buildBinaryTimeout = 5 * time.Minute

// buildBinary returns the path of the boxoffice binary built from this
// package's directory (the test's working directory) with `go build`. The
// first call builds it; later calls, from any test, return the same path.
// When the test binary has the race detector, so does the built binary:
// the build then reuses what `go test -race` compiled, and the child's own
// data races show up in its output (see serveProcess.checkOutput). A
// failed build fails every test that asks for it.
func buildBinary(t testing.TB) string {
	t.Helper()
	builtBinary.once.Do(func() {
		builtBinary.path, builtBinary.err = goBuild(builtBinary.dir)
	})
	if builtBinary.err != nil {
		t.Fatalf("building the boxoffice binary: %v", builtBinary.err)
	}
	return builtBinary.path
}

// goBuild builds the package in the working directory into dir/boxoffice.
func goBuild(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("no directory for the binary: TestMain did not run")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, "boxoffice")
	args := []string{"build", "-o", out}
	if testBinaryHasRace() {
		args = append(args, "-race")
	}
	args = append(args, ".")
	ctx, cancel := context.WithTimeout(context.Background(), buildBinaryTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = "." // the package's directory: go test runs tests there
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", goTool, strings.Join(args, " "), err, b)
	}
	return out, nil
}

// testBinaryHasRace reports whether this test binary was built with -race.
func testBinaryHasRace() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// serveOptions are the flags of a `boxoffice serve` child process that
// tests vary. Unless Token and AdminToken are set, the tokens are
// testcluster.Token and testcluster.AdminToken, so testcluster.Ctx and
// testcluster.AdminCtx authorize calls to it.
type serveOptions struct {
	DatabaseURL string
	NodeID      string
	Migrate     bool

	Token, AdminToken string
	// SecretsDir, if not empty, is a directory where the tokens and the
	// database URL are written to files, each with a trailing newline, and
	// given to the child as BOXOFFICE_TOKEN_FILE, --admin-token-file and
	// --database-url-file: no secret is on its command line.
	SecretsDir string

	// Gossip makes the child a cluster member (--gossip-addr) gossiping on
	// a free loopback port, serveProcess.GossipAddr; Join are the gossip
	// addresses of members it joins (--join; empty: it starts a cluster).
	Gossip bool
	Join   []string

	// AdmissionKey, if set, is given as --admission-key (base64).
	AdmissionKey []byte
}

// serveProcess is `boxoffice serve` running as a child process on free
// loopback ports. Its methods are not safe for concurrent use, except
// Output and Exited.
type serveProcess struct {
	GRPCAddr, HTTPAddr string
	GossipAddr         string // empty unless serveOptions.Gossip

	cmd     *exec.Cmd
	out     *childOutput
	exited  chan struct{} // closed when the process has exited and waitErr is set
	waitErr error
}

// serveReadyTimeout bounds a child's start until it is ready; generous for
// a race-enabled binary on a loaded 2-core machine.
const serveReadyTimeout = 60 * time.Second

// startServe starts `boxoffice serve` from bin with opts and waits until it
// is ready: gRPC health says SERVING and /readyz answers 200. If a port
// picked free was taken meanwhile, it tries again on other ports. The
// process is killed at t.Cleanup if still running, and its output is
// logged if the test failed.
func startServe(t testing.TB, bin string, opts serveOptions) *serveProcess {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := launchServe(t, bin, opts)
		err := p.waitReady(serveReadyTimeout)
		if err == nil {
			return p
		}
		p.Kill(t)
		if attempt < 3 && strings.Contains(p.Output(), "address already in use") {
			t.Logf("serve %s: a port was taken; trying other ports", opts.NodeID)
			continue
		}
		t.Fatalf("serve %s: %v\noutput:\n%s", opts.NodeID, err, p.Output())
	}
}

// launchServe starts the child without waiting for it to be ready.
func launchServe(t testing.TB, bin string, opts serveOptions) *serveProcess {
	t.Helper()
	p := &serveProcess{
		GRPCAddr: freeLoopbackAddr(t),
		HTTPAddr: freeLoopbackAddr(t),
		out:      &childOutput{},
		exited:   make(chan struct{}),
	}
	token, adminToken := opts.Token, opts.AdminToken
	if token == "" {
		token = testcluster.Token
	}
	if adminToken == "" {
		adminToken = testcluster.AdminToken
	}
	args := []string{"serve",
		"--grpc-addr", p.GRPCAddr,
		"--http-addr", p.HTTPAddr,
		"--node-id", opts.NodeID,
	}
	var env []string
	if opts.SecretsDir != "" {
		file := func(name, secret string) string {
			path := filepath.Join(opts.SecretsDir, name)
			if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}
		env = append(env, "BOXOFFICE_TOKEN_FILE="+file("token", token))
		args = append(args,
			"--admin-token-file", file("admin-token", adminToken),
			"--database-url-file", file("database-url", opts.DatabaseURL))
	} else {
		args = append(args, "--database-url", opts.DatabaseURL, "--token", token, "--admin-token", adminToken)
	}
	if opts.Migrate {
		args = append(args, "--migrate")
	}
	if opts.AdmissionKey != nil {
		args = append(args, "--admission-key", base64.StdEncoding.EncodeToString(opts.AdmissionKey))
	}
	if opts.Gossip {
		p.GossipAddr = freeLoopbackAddr(t) // TCP-free a moment ago; memberlist binds TCP and UDP: a clash is retried as above
		args = append(args, "--gossip-addr", p.GossipAddr)
		if len(opts.Join) > 0 {
			args = append(args, "--join", strings.Join(opts.Join, ","))
		}
	}
	// exec.Command, not CommandContext: the test decides when and how the
	// child dies (kill -9 or at cleanup), not a context ending.
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Without BOXOFFICE_* from the environment the flags above (and env)
	// are all the configuration the child has.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BOXOFFICE_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Kill(t)
		p.checkOutput(t)
		if t.Failed() {
			t.Logf("output of serve %s (pid %d):\n%s", opts.NodeID, p.cmd.Process.Pid, p.Output())
		}
	})
	return p
}

// waitReady polls until the child is ready, has exited, or timeout passed.
func (p *serveProcess) waitReady(timeout time.Duration) error {
	// A short reconnect backoff: the child listens a moment after start,
	// and the default backoff would wait a second after the first refusal.
	conn, err := grpc.NewClient(p.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	httpClient := &http.Client{Timeout: 2 * time.Second}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = readyOnce(health, httpClient, p.HTTPAddr); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited before it was ready: %v", p.waitErr)
		case <-deadline.C:
			return fmt.Errorf("not ready within %s: %v", timeout, last)
		case <-tick.C:
		}
	}
}

// readyOnce asks gRPC health and /readyz once.
func readyOnce(health healthpb.HealthClient, httpClient *http.Client, httpAddr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hr, err := health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	if err != nil {
		return fmt.Errorf("grpc health: %w", err)
	}
	if hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("grpc health: %v", hr.GetStatus())
	}
	resp, err := httpClient.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}

// Kill sends SIGKILL (kill -9: no drain, no flush) unless the child has
// exited, and waits until it has. It is idempotent.
func (p *serveProcess) Kill(t testing.TB) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill -9 pid %d: %v", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("pid %d still running 30 s after SIGKILL", p.cmd.Process.Pid)
	}
}

// Exited is closed when the child has exited.
func (p *serveProcess) Exited() <-chan struct{} { return p.exited }

// Output returns what the child has written to stdout and stderr so far.
func (p *serveProcess) Output() string { return p.out.String() }

// checkOutput fails the test if the child reported a data race or a panic.
func (p *serveProcess) checkOutput(t testing.TB) {
	t.Helper()
	out := p.Output()
	for _, bad := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
		if strings.Contains(out, bad) {
			t.Errorf("serve (pid %d) reported %q", p.cmd.Process.Pid, strings.TrimSpace(bad))
		}
	}
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment
// ago. Another process may take it before the child binds it; startServe
// then retries.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// childOutput collects a child process's output; safe for the process's
// writers and concurrent readers.
type childOutput struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (o *childOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *childOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
