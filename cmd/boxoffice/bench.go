package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/boxoffice/boxoffice/bench"
	"github.com/boxoffice/boxoffice/internal/pgcluster"
	"github.com/boxoffice/boxoffice/internal/redisserver"
)

// benchConfig is what `bench` and `bench compare` take from their flags.
type benchConfig struct {
	Targets  []string
	Scenario string
	Sc       bench.ScenarioConfig
	Run      bench.RunConfig
	Rounds   int
	Out      string
	Quiet    bool

	Addr, Token, AdminToken string // a running engine; empty Addr: the bench starts one
	DatabaseURL             string // empty: the bench starts PostgreSQL
	RedisAddr               string // empty: the bench starts redis-server when a target needs it
	Conns                   int    // gRPC connections to the engine
	ProfileDir              string // CPU profiles of the bench and of the engine it started
	BaselineMapCache        time.Duration
	ClientGOGC              int // the bench process's GC percent
	EngineProcs             int // the started engine's GOMAXPROCS
}

func parseBench(args []string, compare bool) (benchConfig, error) {
	var c benchConfig
	fs, targets := benchFlags(&c, compare)
	name := fs.Name()
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%s: unexpected arguments %q", name, fs.Args())
	}
	for _, t := range strings.Split(*targets, ",") {
		switch t = strings.TrimSpace(t); t {
		case "boxoffice", "boxoffice-unary", "pg-status", "redis-setnx", "redis-rueidis":
			c.Targets = append(c.Targets, t)
		default:
			return c, fmt.Errorf("%s: unknown target %q (have boxoffice, boxoffice-unary, pg-status, redis-setnx, redis-rueidis)", name, t)
		}
	}
	if !compare && len(c.Targets) != 1 {
		return c, fmt.Errorf("bench: one --target (use 'bench compare' for several)")
	}
	if compare && c.Rounds < 1 {
		return c, fmt.Errorf("bench compare: --rounds %d: want ≥ 1", c.Rounds)
	}
	if c.ClientGOGC < 1 {
		return c, fmt.Errorf("%s: --client-gogc %d: want ≥ 1", name, c.ClientGOGC)
	}
	if c.EngineProcs < 1 {
		return c, fmt.Errorf("%s: --engine-procs %d: want ≥ 1", name, c.EngineProcs)
	}
	if p := c.Sc.ConfirmProb; !(p >= 0 && p <= 1) { // also refuses NaN
		return c, fmt.Errorf("%s: --confirm %v: want a probability from 0 (nobody pays) to 1 (everyone pays)", name, p)
	}
	if c.Sc.Retries < 0 {
		return c, fmt.Errorf("%s: --retries %d: want ≥ 0", name, c.Sc.Retries)
	}
	if c.Run.Watchers < 0 {
		return c, fmt.Errorf("%s: --watchers %d: want ≥ 0", name, c.Run.Watchers)
	}
	if c.Run.Watchers > 0 && !slices.ContainsFunc(c.Targets, isEngine) {
		return c, fmt.Errorf("%s: --watchers needs a boxoffice target (the baselines serve no seat-map streams)", name)
	}
	if c.Sc.PayDelay < 0 {
		return c, fmt.Errorf("%s: --pay-delay %v: want ≥ 0", name, c.Sc.PayDelay)
	}
	if c.Addr != "" && c.DatabaseURL == "" {
		return c, errors.New("bench: --addr needs --database-url (the verification reads the engine's database)")
	}
	if c.Out == "" {
		c.Out = filepath.Join("bench-results", time.Now().Format("20060102-150405"))
	}
	// Build the scenario once to check its settings before starting servers.
	if _, err := bench.NewScenario(c.Scenario, c.Sc); err != nil {
		return c, err
	}
	return c, nil
}

// benchFlags defines the flags of `bench` (or `bench compare`) on a new
// flag set, storing into c; the returned string is the --target value.
// The scenario's flags default to bench.DefaultScenarioConfig.
func benchFlags(c *benchConfig, compare bool) (*flag.FlagSet, *string) {
	name := "bench"
	if compare {
		name = "bench compare"
	}
	def := bench.DefaultScenarioConfig()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	targets := fs.String("target", "boxoffice", "target: boxoffice (through package client), boxoffice-unary (one RPC per call), pg-status, redis-setnx (go-redis) or redis-rueidis (rueidis, auto-pipelined)")
	if compare {
		*targets = "boxoffice,pg-status,redis-setnx,redis-rueidis"
		fs.Lookup("target").Usage = "targets to compare, comma-separated; the first is the reference of the ratios"
		fs.Lookup("target").DefValue = *targets
		fs.IntVar(&c.Rounds, "rounds", 3, "rounds; each runs every target once, in turn")
	}
	fs.StringVar(&c.Scenario, "scenario", "flash-sale", "scenario: "+strings.Join(bench.ScenarioNames(), ", ")+" (hold-storm: one hold attempt per user on seats drawn without reading the map, nothing confirmed)")
	fs.IntVar(&c.Sc.Users, "users", 0, "virtual users (default 200,000)")
	fs.IntVar(&c.Sc.Rows, "rows", 0, "rows per show (default 100)")
	fs.IntVar(&c.Sc.SeatsPerRow, "seats-per-row", 0, "seats per row (default 150)")
	fs.IntVar(&c.Sc.Shows, "shows", 0, "shows (browse; default 20)")
	fs.DurationVar(&c.Sc.HoldTTL, "hold-ttl", 0, "hold TTL of the shows (default 15s for flash-sale, 10m for hold-storm; the engine accepts 10s..1h)")
	fs.IntVar(&c.Sc.MaxSeats, "max-seats", 0, "a user wants 1..N adjacent seats (default 4)")
	fs.IntVar(&c.Sc.Retries, "retries", def.Retries, "flash-sale: new attempts after seats were taken (0: none)")
	fs.Float64Var(&c.Sc.ConfirmProb, "confirm", def.ConfirmProb, "flash-sale: probability, 0..1, that a user pays for a hold (0: nobody pays)")
	fs.DurationVar(&c.Sc.PayDelay, "pay-delay", def.PayDelay, "flash-sale: the longest a user takes to pay (0: at once)")
	fs.Float64Var(&c.Sc.FrontSkew, "front-skew", 0, "≥ 1: how much users crowd the front rows (default 2 for flash-sale, 1 (uniform) for hold-storm)")
	fs.DurationVar(&c.Sc.Arrivals, "arrivals", 0, "on-sale: the users arrive evenly over this, open loop (default 20s)")
	fs.Float64Var(&c.Sc.AdmitPerSecond, "admit-per-second", 0, "on-sale: the waiting room's admissions a second (default 2,000)")
	fs.IntVar(&c.Sc.MaxActive, "max-active", 0, "on-sale: the waiting room's cap on shoppers at once (0: none)")
	fs.BoolVar(&c.Sc.NoRoom, "no-room", false, "on-sale: no waiting room, the same crowd shops at once (any target)")
	fs.IntVar(&c.Run.Concurrency, "concurrency", 1000, "closed loop: users in flight")
	fs.Float64Var(&c.Run.Rate, "rate", 0, "open loop: users arriving per second (0: closed loop)")
	fs.IntVar(&c.Run.MaxInFlight, "max-in-flight", 20000, "open loop: most users in progress")
	fs.IntVar(&c.Run.Watchers, "watchers", 0,
		"extra WatchSeatMap streams on the first show during the run (boxoffice targets only), to measure the engine's cost of fan-out: "+
			"compare the engine's CPU seconds per second of load (measured when the bench starts the engine) of a run with N and of one without; the watchers' reading shows in the client's CPU")
	fs.Uint64Var(&c.Run.Seed, "seed", 1, "seed of the users' choices")
	fs.DurationVar(&c.Run.MaxDuration, "max-duration", 5*time.Minute, "end the run after this long")
	fs.DurationVar(&c.Run.CallTimeout, "call-timeout", 10*time.Second, "deadline of every call")
	fs.StringVar(&c.Out, "out", "", "directory for result.json and the HTML report (default bench-results/<time>)")
	fs.BoolVar(&c.Quiet, "quiet", false, "no progress display")
	fs.StringVar(&c.Addr, "addr", os.Getenv("BOXOFFICE_BENCH_ADDR"), "gRPC address of a running engine (default: start one) [BOXOFFICE_BENCH_ADDR]")
	fs.StringVar(&c.Token, "token", os.Getenv("BOXOFFICE_TOKEN"), "the engine's service token, with --addr [BOXOFFICE_TOKEN]")
	fs.StringVar(&c.AdminToken, "admin-token", os.Getenv("BOXOFFICE_ADMIN_TOKEN"), "the engine's admin token, with --addr [BOXOFFICE_ADMIN_TOKEN]")
	fs.StringVar(&c.DatabaseURL, "database-url", os.Getenv("BOXOFFICE_DATABASE_URL"), "PostgreSQL URL (default: start a private server) [BOXOFFICE_DATABASE_URL]")
	fs.StringVar(&c.RedisAddr, "redis-addr", "", "Redis address for redis-setnx and redis-rueidis (default: start redis-server)")
	fs.IntVar(&c.Conns, "conns", 4, "gRPC connections to the engine")
	fs.DurationVar(&c.BaselineMapCache, "baseline-map-cache", time.Second,
		"the baselines answer seat maps from a cache this old at most, as those designs do in practice (0: read every time); boxoffice always answers from live memory")
	fs.IntVar(&c.ClientGOGC, "client-gogc", 400,
		"GC percent of the bench process, the load generator (its seat-map buffers churn the heap); it also applies to the baselines' code, which runs in this process, while the engine it starts runs with serve's --gogc default (400) unless GOGC is set")
	fs.IntVar(&c.EngineProcs, "engine-procs", defaultEngineProcs(runtime.NumCPU()),
		"processors the engine the bench starts runs Go code on at once (its GOMAXPROCS; default half of this machine's, at least 1): it shares the machine with PostgreSQL and the load generator")
	fs.StringVar(&c.ProfileDir, "profile-dir", "", "write CPU profiles of each run here: the bench's (the client side, every target), and the engine's when the bench started it")
	return fs, targets
}

func runBench(ctx context.Context, args []string) error {
	compare := len(args) > 0 && args[0] == "compare"
	if compare {
		args = args[1:]
	}
	cfg, err := parseBench(args, compare)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	debug.SetGCPercent(cfg.ClientGOGC)
	env, err := startBenchEnv(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer env.close()

	rounds := max(cfg.Rounds, 1)
	cmp := bench.Comparison{Targets: cfg.Targets, Results: map[string][]*bench.Result{}}
	failed := false
	for round := range rounds {
		for _, name := range cfg.Targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			dir := cfg.Out
			if compare {
				dir = filepath.Join(cfg.Out, fmt.Sprintf("round%d-%s", round+1, name))
				fmt.Fprintf(os.Stderr, "\n== round %d/%d: %s\n", round+1, rounds, name)
			}
			res, err := env.runOne(ctx, cfg, name, fmt.Sprintf("r%d-%d", round+1, time.Now().UnixNano()%1e6))
			if err != nil {
				return err
			}
			if err := writeResult(dir, res); err != nil {
				return err
			}
			if v, ok := res.Verification.(bench.Verification); ok && !v.Verified() {
				failed = true
			}
			cmp.Results[name] = append(cmp.Results[name], res)
		}
		if compare { // after every round, so that an interrupted comparison keeps its finished rounds
			if err := bench.WriteCompareJSON(filepath.Join(cfg.Out, "compare.json"), cmp); err != nil {
				return err
			}
		}
	}
	if compare {
		fmt.Println()
		if err := bench.WriteCompareText(os.Stdout, cmp); err != nil {
			return err
		}
		fmt.Printf("comparison: %s\n", filepath.Join(cfg.Out, "compare.json"))
	}
	if failed {
		return errors.New("bench: VERIFICATION FAILED (see the violations above)")
	}
	return nil
}

// writeResult prints the summary and writes result.json and the HTML report.
func writeResult(dir string, res *bench.Result) error {
	fmt.Println()
	if err := bench.WriteText(os.Stdout, res); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := bench.WriteJSON(filepath.Join(dir, "result.json"), res); err != nil {
		return err
	}
	index, err := bench.WriteHTML(dir, res)
	if err != nil {
		return err
	}
	fmt.Printf("report: %s\n", index)
	return nil
}

// benchEnv is what the targets run on: PostgreSQL, Redis and an engine,
// each given or started by the bench.
type benchEnv struct {
	dbURL, redisAddr        string
	addr, token, adminToken string
	pprofAddr               string // the started engine's profiling address; empty: none
	conns                   int
	engineProcs             int // the started engine's GOMAXPROCS
	mapCache                time.Duration
	stops                   []func()

	// Processes the bench started, whose CPU each run measures (0: not
	// started by the bench, so not measured: it may be another machine's).
	enginePID, redisPID, postgresPID int
}

func (e *benchEnv) close() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
}

// startBenchEnv starts what the targets need and was not given.
func startBenchEnv(ctx context.Context, cfg benchConfig, logs io.Writer) (*benchEnv, error) {
	e := &benchEnv{dbURL: cfg.DatabaseURL, redisAddr: cfg.RedisAddr, addr: cfg.Addr,
		token: cfg.Token, adminToken: cfg.AdminToken, conns: cfg.Conns, mapCache: cfg.BaselineMapCache}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	if e.dbURL == "" {
		fmt.Fprintln(logs, "bench: starting a private PostgreSQL (durable settings: fsync and synchronous_commit on)")
		pg, err := pgcluster.Start(ctx, pgcluster.Config{Install: true, Log: logs})
		if err != nil {
			return nil, err
		}
		e.stops = append(e.stops, func() { pg.Stop() })
		e.dbURL = pg.URL()
		if pid, err := postmasterPID(pg.Dir()); err == nil {
			e.postgresPID = pid
		} else {
			fmt.Fprintln(logs, "bench: Postgres's CPU will not be measured:", err)
		}
	}
	needs := func(t string) bool {
		for _, n := range cfg.Targets {
			if n == t {
				return true
			}
		}
		return false
	}
	if (needs("redis-setnx") || needs("redis-rueidis")) && e.redisAddr == "" {
		fmt.Fprintln(logs, "bench: starting redis-server (installing Debian's redis-server if missing)")
		rs, err := redisserver.Start(ctx, redisserver.Config{Install: true, Log: logs})
		if err != nil {
			return nil, err
		}
		e.stops = append(e.stops, func() { rs.Stop() })
		e.redisAddr = rs.Addr()
		if pid, err := bench.RedisPID(ctx, e.redisAddr); err == nil {
			e.redisPID = pid
		} else {
			fmt.Fprintln(logs, "bench: redis-server's CPU will not be measured:", err)
		}
	}
	if (needs("boxoffice") || needs("boxoffice-unary")) && e.addr == "" {
		if err := e.startEngine(ctx, logs, cfg.ProfileDir != "", cfg.EngineProcs); err != nil {
			return nil, err
		}
	}
	ok = true
	return e, nil
}

// startEngine runs `boxoffice serve` as a child process, so that the engine
// and the load generator have their own runtimes, as they would in use.
// The child reads its secrets from files in a private temporary directory,
// removed by e.close after the child has stopped; with profile, it serves
// profiles on a loopback address, e.pprofAddr. Its Go code runs on procs
// processors at once (GOMAXPROCS), whatever this process's environment says.
func (e *benchEnv) startEngine(ctx context.Context, logs io.Writer, profile bool, procs int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child, err := newEngineChild("bench-token", "bench-admin-token", e.dbURL, profile)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "boxoffice-bench-")
	if err != nil {
		return err
	}
	e.stops = append(e.stops, func() { os.RemoveAll(dir) })
	args, err := serveArgs(dir, child)
	if err != nil {
		return err
	}
	e.addr, e.token, e.adminToken, e.pprofAddr = child.GRPCAddr, child.Token, child.AdminToken, child.PprofAddr
	grpcAddr, httpAddr := child.GRPCAddr, child.HTTPAddr
	cmd := exec.Command(self, args...)
	cmd.Env = engineEnv(os.Environ(), procs)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	e.stops = append(e.stops, func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	e.enginePID, e.engineProcs = cmd.Process.Pid, procs
	fmt.Fprintf(logs, "bench: engine started (pid %d) on %s\n", cmd.Process.Pid, grpcAddr)
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("bench: the engine exited at start: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return errors.New("bench: the engine was not ready within a minute")
		case <-tick.C:
		}
	}
}

// benchMaxStreams is the streams per connection of the engine the bench
// starts: an on-sale's 200,000 queued users on the bench's 4 connections.
const benchMaxStreams = 100_000

// engineChild is the configuration of a `boxoffice serve` the bench starts.
type engineChild struct {
	GRPCAddr, HTTPAddr             string
	PprofAddr                      string // empty: no profiling
	Token, AdminToken, DatabaseURL string
	AdmissionKey                   string // base64, random: the on-sale's waiting rooms
}

// newEngineChild returns an engineChild with the given secrets and gRPC
// and HTTP addresses on 127.0.0.1 ports that were free when it ran; with
// profile, PprofAddr is such an address too, else empty.
func newEngineChild(token, adminToken, databaseURL string, profile bool) (engineChild, error) {
	c := engineChild{Token: token, AdminToken: adminToken, DatabaseURL: databaseURL,
		AdmissionKey: base64.StdEncoding.EncodeToString([]byte(rand.Text()))}
	var err error
	if c.GRPCAddr, err = freeAddr(); err != nil {
		return c, err
	}
	if c.HTTPAddr, err = freeAddr(); err != nil {
		return c, err
	}
	if profile {
		if c.PprofAddr, err = freeAddr(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// serveArgs writes c's token, admin token, database URL and admission key
// to new files in dir, created with permission 0600, and returns the
// arguments (after the program name) of a `boxoffice serve` that applies
// migrations, reads those secrets from the files (--token-file,
// --admin-token-file, --database-url-file, --admission-key-file), listens
// on c's gRPC and HTTP addresses with benchMaxStreams streams per
// connection, and, if c.PprofAddr is not empty, serves profiles there
// (--pprof-addr). The secrets' values are not among the arguments, only
// the files' paths.
func serveArgs(dir string, c engineChild) ([]string, error) {
	args := []string{"serve", "--migrate", "--node-id", "bench-node",
		"--grpc-addr", c.GRPCAddr, "--http-addr", c.HTTPAddr,
		// An on-sale's queued users each keep a long poll open, on the
		// load generator's few connections.
		"--grpc-max-streams", strconv.Itoa(benchMaxStreams)}
	for _, s := range []struct{ flag, value string }{
		{"token", c.Token}, {"admin-token", c.AdminToken}, {"database-url", c.DatabaseURL},
		{"admission-key", c.AdmissionKey},
	} {
		path := filepath.Join(dir, s.flag)
		if err := writeSecret(path, s.value); err != nil {
			return nil, err
		}
		args = append(args, "--"+s.flag+"-file", path)
	}
	if c.PprofAddr != "" {
		args = append(args, "--pprof-addr", c.PprofAddr)
	}
	return args, nil
}

// writeSecret writes value to a new file at path, created with permission
// 0600; it fails if path exists.
func writeSecret(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// engineEnv returns environ without BOXOFFICE_TOKEN, BOXOFFICE_ADMIN_TOKEN
// and BOXOFFICE_DATABASE_URL: serve refuses a secret given both by
// variable and by file, and the bench gives the child its secrets by file.
// Its GOMAXPROCS is procs, whatever environ's is.
func engineEnv(environ []string, procs int) []string {
	var env []string
	for _, kv := range environ {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "BOXOFFICE_TOKEN", "BOXOFFICE_ADMIN_TOKEN", "BOXOFFICE_DATABASE_URL", "GOMAXPROCS":
		default:
			env = append(env, kv)
		}
	}
	return append(env, "GOMAXPROCS="+strconv.Itoa(procs))
}

// defaultEngineProcs is the engine's GOMAXPROCS on a machine with cpus
// processors: half of them, at least 1. The bench runs the engine beside
// PostgreSQL and the load generator; with fewer processors than the
// machine has, its scheduler spins less on cores they need. (On the 2-core
// machine, 1 instead of 2 took 13% less engine CPU per hold-storm attempt
// in the median of 7 alternating pairs, lower in every pair, attempts/s
// unchanged.)
func defaultEngineProcs(cpus int) int { return max(1, cpus/2) }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// isEngine reports whether the named target is the engine (through the
// client, or unary).
func isEngine(target string) bool { return target == "boxoffice" || target == "boxoffice-unary" }

// target connects to the named target.
func (e *benchEnv) target(ctx context.Context, name string) (bench.Target, error) {
	switch name {
	case "boxoffice", "boxoffice-unary":
		return bench.NewBoxoffice(ctx, bench.BoxofficeConfig{
			Addr: e.addr, Token: e.token, AdminToken: e.adminToken, DatabaseURL: e.dbURL, Conns: e.conns,
			Unary: name == "boxoffice-unary",
		})
	case "pg-status":
		return bench.NewPGStatus(ctx, bench.PGStatusConfig{DatabaseURL: e.dbURL, SeatMapMaxAge: e.mapCache})
	case "redis-setnx":
		return bench.NewRedisSetNX(ctx, bench.RedisSetNXConfig{RedisAddr: e.redisAddr, DatabaseURL: e.dbURL, SeatMapMaxAge: e.mapCache})
	case "redis-rueidis":
		return bench.NewRedisSetNX(ctx, bench.RedisSetNXConfig{Client: bench.Rueidis, RedisAddr: e.redisAddr, DatabaseURL: e.dbURL, SeatMapMaxAge: e.mapCache})
	}
	return nil, fmt.Errorf("bench: unknown target %q", name)
}

// runOne runs the scenario once against the named target, with show IDs
// made unique by tag.
func (e *benchEnv) runOne(ctx context.Context, cfg benchConfig, name, tag string) (*bench.Result, error) {
	t, err := e.target(ctx, name)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	sc := cfg.Sc
	sc.ShowPrefix = "bench-" + tag
	scenario, err := bench.NewScenario(cfg.Scenario, sc)
	if err != nil {
		return nil, err
	}
	run := cfg.Run
	run.Target, run.Scenario = t, scenario
	run.CPU = e.cpuMeters(name)
	var progress *bench.ProgressPrinter
	if !cfg.Quiet {
		progress = bench.NewProgressPrinter(os.Stderr, bench.IsTerminal(os.Stderr), time.Second)
		run.Progress = progress.Update
	}
	stopProfiles, err := e.startProfiles(cfg.ProfileDir, tag, name, engineProfileSeconds(run.MaxDuration))
	if err != nil {
		return nil, err
	}
	res, err := bench.Run(ctx, run)
	stopProfiles()
	if progress != nil {
		progress.Done()
	}
	if err != nil {
		return nil, err
	}
	res.Config = e.resultConfig(cfg, name, scenario, run, res.Capacity)
	return res, nil
}

// cpuMeters returns the meters of the processes serving the named target
// that the bench started, beside the bench's own (always measured, as
// "client"): the engine for boxoffice, redis-server for the Redis
// baselines, and Postgres (the postmaster and its backends) for every
// target, as each writes there (the engine its holds, pg-status
// everything, the Redis design its bookings).
func (e *benchEnv) cpuMeters(target string) map[string]bench.CPUMeter {
	m := map[string]bench.CPUMeter{}
	if isEngine(target) && e.enginePID > 0 {
		m["engine"] = bench.ProcessTreeCPU(e.enginePID)
	}
	if strings.HasPrefix(target, "redis-") && e.redisPID > 0 {
		m["redis-server"] = bench.ProcessTreeCPU(e.redisPID)
	}
	if e.postgresPID > 0 {
		m["postgres"] = bench.ProcessTreeCPU(e.postgresPID)
	}
	return m
}

// postmasterPID reads the postmaster's pid from the first line of
// data/postmaster.pid in a pgcluster directory.
func postmasterPID(clusterDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(clusterDir, "data", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: bad pid %q", first)
	}
	return pid, nil
}

// resultConfig is the configuration a result reports (in result.json and
// the HTML report) for a run of scenario against the named target. Users
// and the hold TTL are the scenario's own, its defaults applied. A
// flash-sale's confirm, pay_delay and retries are cfg.Sc's, which it uses
// as given; other scenarios do not use them and do not report them.
func (e *benchEnv) resultConfig(cfg benchConfig, name string, scenario bench.Scenario, run bench.RunConfig, capacity int) map[string]any {
	m := map[string]any{
		"target": name, "scenario": cfg.Scenario, "users": scenario.Users(),
		"capacity": capacity, "concurrency": run.Concurrency, "rate": run.Rate, "seed": run.Seed,
		"conns": e.conns,
	}
	if isEngine(name) && e.enginePID != 0 {
		m["engine_procs"] = e.engineProcs
	}
	if shows := scenario.Shows(); len(shows) > 0 {
		m["hold_ttl"] = shows[0].HoldTTL.String()
	}
	if scenario.Name() == "flash-sale" || scenario.Name() == "on-sale" {
		m["confirm"], m["pay_delay"], m["retries"] = cfg.Sc.ConfirmProb, cfg.Sc.PayDelay.String(), cfg.Sc.Retries
	}
	if scenario.Name() == "on-sale" {
		m["waiting_room"] = "none"
		if r := scenario.Shows()[0].Room; r != nil {
			m["waiting_room"] = fmt.Sprintf("opens after %v, %v admitted/s, cap %d", r.OpensIn, r.AdmitPerSecond, r.MaxActive)
		}
	}
	if !isEngine(name) {
		m["seat_map_cache"] = e.mapCache.String()
	} else if run.Watchers > 0 {
		m["watchers"] = run.Watchers
	}
	return m
}

// startProfiles starts a CPU profile of this process (the client side:
// the load generator and, for a baseline, the design's client code), one
// per target run, and, when the bench started the engine with profiling and
// the target is the engine, one of the engine, for engineSeconds from now
// (from its --pprof-addr). The returned func stops them and waits for the
// engine's. The processes' CPU totals are in the result itself (see
// cpuMeters); the profiles say where the time went.
func (e *benchEnv) startProfiles(dir, tag, target string, engineSeconds int) (stop func(), err error) {
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("bench-%s-%s.cpu.pprof", target, tag)))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	engineDone := make(chan struct{})
	if isEngine(target) && e.pprofAddr != "" {
		go func() {
			defer close(engineDone)
			path := filepath.Join(dir, fmt.Sprintf("engine-%s.cpu.pprof", tag))
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.pprofAddr, engineSeconds)
			if err := fetchProfile(url, path); err != nil {
				fmt.Fprintln(os.Stderr, "bench: engine profile:", err)
			}
		}()
	} else {
		close(engineDone)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if isEngine(target) && e.pprofAddr != "" {
			fmt.Fprintf(os.Stderr, "bench: waiting for the engine's %d s CPU profile\n", engineSeconds)
		}
		<-engineDone
		fmt.Fprintf(os.Stderr, "bench: CPU profiles in %s ('go tool pprof -top <file>')\n", dir)
	}, nil
}

// engineProfileSeconds is how long the engine's profile of a run lasts:
// the run's maximum duration, which the load cannot outlast, rounded up,
// and at most 60 s (so a long run's profile covers its first minute).
func engineProfileSeconds(maxDuration time.Duration) int {
	return int(min(max(math.Ceil(maxDuration.Seconds()), 1), 60))
}

func fetchProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
