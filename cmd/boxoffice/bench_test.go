package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/boxoffice/boxoffice/bench"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/internal/redisserver"
)

func TestParseBench(t *testing.T) {
	c, err := parseBench(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"boxoffice"}) || c.Scenario != "flash-sale" || c.ClientGOGC != 400 || c.Conns != 4 ||
		c.EngineProcs != defaultEngineProcs(runtime.NumCPU()) {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseBench(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"boxoffice", "pg-status", "redis-setnx", "redis-rueidis"}) || c.Rounds != 3 {
		t.Errorf("compare defaults: targets %v, rounds %d", c.Targets, c.Rounds)
	}
	c, err = parseBench([]string{"--target", "redis-rueidis", "--scenario", "hold-storm"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"redis-rueidis"}) || c.Scenario != "hold-storm" {
		t.Errorf("--target redis-rueidis --scenario hold-storm: targets %v, scenario %s", c.Targets, c.Scenario)
	}

	for _, tc := range []struct {
		args    []string
		compare bool
		want    string
	}{
		{[]string{"--target", "mysql"}, false, "unknown target"},
		{[]string{"--target", "boxoffice,pg-status"}, false, "one --target"},
		{[]string{"--rounds", "0"}, true, "--rounds 0"},
		{[]string{"--client-gogc", "0"}, false, "--client-gogc 0"},
		{[]string{"--engine-procs", "0"}, true, "--engine-procs 0: want ≥ 1"},
		{[]string{"--addr", "127.0.0.1:7070", "--database-url", ""}, false, "needs --database-url"},
		{[]string{"--max-seats", "11"}, false, "11"},
		{[]string{"--confirm", "1.5"}, false, "--confirm 1.5: want a probability from 0"},
		{[]string{"--confirm", "-0.1"}, true, "--confirm -0.1: want a probability from 0"},
		{[]string{"--confirm", "NaN"}, false, "--confirm NaN: want a probability from 0"},
		{[]string{"--confirm", "2", "--scenario", "browse"}, false, "--confirm 2"},
		{[]string{"--retries", "-1"}, false, "--retries -1"},
		{[]string{"--pay-delay", "-1s"}, false, "--pay-delay -1s"},
		{[]string{"--scenario", "hold-storm", "--max-seats", "11"}, false, "hold-storm: max seats 11"},
		{[]string{"--scenario", "storm"}, false, "unknown scenario"},
		{[]string{"extra"}, false, "unexpected arguments"},
	} {
		if _, err := parseBench(tc.args, tc.compare); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseBench(%q, compare %v) = %v, want an error with %q", tc.args, tc.compare, err, tc.want)
		}
	}
}

// TestParseBenchZeros checks that --confirm, --retries and --pay-delay
// default to 0.8, 3 and 3s, shown so in -h, and that 0 given for any of
// them is kept as 0 rather than replaced by its default.
func TestParseBenchZeros(t *testing.T) {
	c, err := parseBench(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sc.ConfirmProb != 0.8 || c.Sc.Retries != 3 || c.Sc.PayDelay != 3*time.Second {
		t.Errorf("defaults: confirm %v, retries %d, pay delay %v; want 0.8, 3, 3s", c.Sc.ConfirmProb, c.Sc.Retries, c.Sc.PayDelay)
	}
	c, err = parseBench([]string{"--confirm", "0", "--retries", "0", "--pay-delay", "0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sc.ConfirmProb != 0 || c.Sc.Retries != 0 || c.Sc.PayDelay != 0 {
		t.Errorf("--confirm 0 --retries 0 --pay-delay 0: confirm %v, retries %d, pay delay %v; want all 0",
			c.Sc.ConfirmProb, c.Sc.Retries, c.Sc.PayDelay)
	}

	fs, _ := benchFlags(&benchConfig{}, false)
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for name, def := range map[string]string{"confirm": "0.8", "retries": "3", "pay-delay": "3s"} {
		f := fs.Lookup(name)
		if f == nil || f.DefValue != def {
			t.Errorf("--%s: flag %+v, want default %s", name, f, def)
			continue
		}
		if strings.Contains(f.Usage, "default") {
			t.Errorf("--%s: usage %q states a default itself", name, f.Usage)
		}
		if want := f.Usage + " (default " + def + ")"; !strings.Contains(help.String(), want) {
			t.Errorf("-h lacks %q:\n%s", want, help.String())
		}
	}
}

// TestBenchResultConfig checks that result.json and index.html report the
// confirm probability used, 0.8 by default and 0 when asked, and the
// scenario's hold TTL, its default included.
func TestBenchResultConfig(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		confirm float64
		html    string
	}{
		{nil, 0.8, "<th>confirm</th><td>0.8</td>"},
		{[]string{"--confirm", "0"}, 0, "<th>confirm</th><td>0</td>"},
	} {
		c, err := parseBench(tc.args, false)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := bench.NewScenario(c.Scenario, c.Sc)
		if err != nil {
			t.Fatal(err)
		}
		e := &benchEnv{conns: c.Conns, mapCache: c.BaselineMapCache}
		res := &bench.Result{Target: "boxoffice", Scenario: c.Scenario}
		res.Config = e.resultConfig(c, "boxoffice", sc, c.Run, 15000)
		dir := t.TempDir()
		if err := bench.WriteJSON(filepath.Join(dir, "result.json"), res); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "result.json"))
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Config map[string]any }
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Config["confirm"] != tc.confirm || got.Config["hold_ttl"] != "15s" ||
			got.Config["pay_delay"] != "3s" || got.Config["retries"] != 3.0 {
			t.Errorf("%q: result.json config %v, want confirm %v, hold_ttl 15s, pay_delay 3s, retries 3", tc.args, got.Config, tc.confirm)
		}
		index, err := bench.WriteHTML(dir, res)
		if err != nil {
			t.Fatal(err)
		}
		if b, err = os.ReadFile(index); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), tc.html) {
			t.Errorf("%q: index.html lacks %q", tc.args, tc.html)
		}
	}
}

// TestServeArgs checks the command line of the engine the bench starts:
// --pprof-addr with a loopback address when profiling and not otherwise,
// the secrets only as files of permission 0600 (no secret, nor --token,
// --admin-token or --database-url, among the arguments), and that serve
// parses it into the addresses and secrets given.
func TestServeArgs(t *testing.T) {
	clearBoxofficeEnv(t)
	token, adminToken := randomSecret(t, "tok-"), randomSecret(t, "adm-")
	url := "postgres://bench:" + randomSecret(t, "pw-") + "@127.0.0.1:5432/bench"
	for _, profile := range []bool{false, true} {
		child, err := newEngineChild(token, adminToken, url, profile)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		args, err := serveArgs(dir, child)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.Index(args, "--pprof-addr")
		switch {
		case !profile && i >= 0:
			t.Errorf("profile off: args %q have --pprof-addr", args)
		case profile && i < 0:
			t.Errorf("profile on: args %q lack --pprof-addr", args)
		case profile:
			if i+1 >= len(args) {
				t.Fatalf("profile on: --pprof-addr without a value in %q", args)
			}
			host, port, err := net.SplitHostPort(args[i+1])
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() || port == "0" || port == "" {
				t.Errorf("profile on: --pprof-addr %q (%v), want a loopback address with a port", args[i+1], err)
			}
		}
		for _, a := range args {
			for what, secret := range map[string]string{"token": token, "admin token": adminToken, "database URL": url} {
				if strings.Contains(a, secret) {
					t.Errorf("profile %v: argument %q holds the %s", profile, a, what)
				}
			}
			if flag, _, _ := strings.Cut(a, "="); flag == "--token" || flag == "--admin-token" || flag == "--database-url" {
				t.Errorf("profile %v: args %q have %s", profile, args, flag)
			}
		}
		for _, flag := range []string{"--token-file", "--admin-token-file", "--database-url-file", "--admission-key-file"} {
			j := slices.Index(args, flag)
			if j < 0 || j+1 >= len(args) {
				t.Errorf("profile %v: args %q lack %s and its file", profile, args, flag)
				continue
			}
			fi, err := os.Stat(args[j+1])
			if err != nil {
				t.Errorf("%s: %v", flag, err)
			} else if fi.Mode().Perm() != 0o600 || filepath.Dir(args[j+1]) != dir {
				t.Errorf("%s %s: mode %v, want a file of mode 0600 in %s", flag, args[j+1], fi.Mode().Perm(), dir)
			}
		}

		if len(args) == 0 || args[0] != "serve" {
			t.Fatalf("args %q: want serve first", args)
		}
		c, err := parseServe(args[1:])
		if err != nil {
			t.Fatalf("profile %v: parseServe(%q): %v", profile, args[1:], err)
		}
		if c.Token != token || c.AdminToken != adminToken || c.DatabaseURL != url || c.Insecure || !c.Migrate ||
			c.GRPCAddr != child.GRPCAddr || c.HTTPAddr != child.HTTPAddr || c.PprofAddr != child.PprofAddr ||
			base64.StdEncoding.EncodeToString(c.AdmissionKey) != child.AdmissionKey || c.GRPCMaxStreams != uint32(benchMaxStreams) {
			t.Errorf("profile %v: serve parses %q into %+v, want the secrets, migrate, and the addresses of %+v", profile, args[1:], c, child)
		}
		if _, err := serveArgs(dir, child); err == nil {
			t.Errorf("profile %v: serveArgs over existing files: no error", profile)
		}
	}
}

// TestEngineEnv checks that the engine's environment lacks the variables
// that would conflict with its secret files, keeps the others, and sets
// GOMAXPROCS to the bench's --engine-procs rather than its own.
func TestEngineEnv(t *testing.T) {
	got := engineEnv([]string{"PATH=/bin", "BOXOFFICE_TOKEN=t", "BOXOFFICE_ADMIN_TOKEN=a", "GOMAXPROCS=8",
		"BOXOFFICE_DATABASE_URL=postgres://x", "BOXOFFICE_NODE_ID=n", "BOXOFFICE_TOKEN_X=y"}, 1)
	if want := []string{"PATH=/bin", "BOXOFFICE_NODE_ID=n", "BOXOFFICE_TOKEN_X=y", "GOMAXPROCS=1"}; !slices.Equal(got, want) {
		t.Errorf("engineEnv = %q, want %q", got, want)
	}
	if got, want := engineEnv([]string{"BOXOFFICE_TOKEN=t"}, 3), []string{"GOMAXPROCS=3"}; !slices.Equal(got, want) {
		t.Errorf("engineEnv of only a secret = %q, want %q", got, want)
	}
	for cpus, want := range map[int]int{1: 1, 2: 1, 3: 1, 8: 4} {
		if got := defaultEngineProcs(cpus); got != want {
			t.Errorf("defaultEngineProcs(%d) = %d, want %d", cpus, got, want)
		}
	}
}

func TestEngineProfileSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{
		0: 1, 300 * time.Millisecond: 1, 2 * time.Second: 2, 2500 * time.Millisecond: 3, 5 * time.Minute: 60,
	} {
		if got := engineProfileSeconds(d); got != want {
			t.Errorf("engineProfileSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestPostmasterPID(t *testing.T) {
	dir := t.TempDir()
	if _, err := postmasterPID(dir); err == nil {
		t.Error("no postmaster.pid: no error")
	}
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "postmaster.pid"), []byte("4242\n/var/lib/data\n1700000000\n5432\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if pid, err := postmasterPID(dir); err != nil || pid != 4242 {
		t.Errorf("postmasterPID = %d, %v; want 4242", pid, err)
	}
}

// benchTestRedis makes sure redis-server can be started (installing
// Debian's when absent and root), as the bench will start its own: if it
// cannot, the test is skipped, or failed when CI=true.
func benchTestRedis(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	rs, err := redisserver.Start(ctx, redisserver.Config{Install: true, Log: io.Discard})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis unavailable (failing, not skipping, because CI=true): %v", err)
		}
		t.Skipf("Redis unavailable, skipping: %v", err)
	}
	if err := rs.Stop(); err != nil {
		t.Fatal(err)
	}
}

// runBenchBinary runs the built binary with args and returns its standard
// output; it fails the test if the command fails.
func runBenchBinary(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("boxoffice %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestBenchCompareHoldStorm runs the built binary's `bench compare` of a
// small hold-storm against the engine it starts and redis-rueidis on the
// redis-server it starts, two rounds, and checks compare.json (its schema,
// nulls for what never happened, ratios for the non-reference target
// only), the CPU of the processes in each result.json, and the text. Then
// one `bench --profile-dir` run writes the bench's and the engine's CPU
// profiles.
func TestBenchCompareHoldStorm(t *testing.T) {
	clearBoxofficeEnv(t)
	bin := buildBinary(t)
	url := pgclustertest.Shared(t)
	benchTestRedis(t)
	out := t.TempDir()
	small := []string{"--scenario", "hold-storm", "--users", "2000", "--rows", "5", "--seats-per-row", "40",
		"--concurrency", "32", "--quiet", "--database-url", url}
	stdout := runBenchBinary(t, bin, append([]string{"bench", "compare", "--target", "boxoffice,redis-rueidis",
		"--rounds", "2", "--out", out, "--max-duration", "1m"}, small...)...)
	t.Log("\n" + stdout)
	for _, want := range []string{"CPU per hold attempt", "over the whole run", "VERIFIED 2/2",
		"comparison: " + filepath.Join(out, "compare.json")} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	b, err := os.ReadFile(filepath.Join(out, "compare.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cmp struct {
		Reference string                                    `json:"reference"`
		Medians   map[string]map[string]*float64            `json:"medians"`
		Ratios    map[string]map[string]map[string]*float64 `json:"ratios"`
		Verified  map[string][]*bool                        `json:"verified"`
	}
	if err := json.Unmarshal(b, &cmp); err != nil {
		t.Fatalf("compare.json: %v\n%s", err, b)
	}
	if cmp.Reference != "boxoffice" || len(cmp.Medians) != 2 || len(cmp.Ratios) != 1 || cmp.Ratios["redis-rueidis"] == nil {
		t.Fatalf("compare.json: reference %q, medians of %d targets, ratios %v", cmp.Reference, len(cmp.Medians), cmp.Ratios)
	}
	for _, target := range []string{"boxoffice", "redis-rueidis"} {
		m := cmp.Medians[target]
		for _, k := range []string{"hold_attempts_per_s", "holds_granted_per_s", "hold_p50_ms", "hold_p99_ms", "all_held_s"} {
			if v := m[k]; v == nil || !(*v > 0) {
				t.Errorf("medians[%s][%s] = %v, want a positive number", target, k, v)
			}
		}
		if v, has := m["sold_out_s"]; !has || v != nil {
			t.Errorf("medians[%s].sold_out_s = %v (present %v), want null: nothing is confirmed", target, v, has)
		}
		if v := cmp.Verified[target]; len(v) != 2 || v[0] == nil || !*v[0] || v[1] == nil || !*v[1] {
			t.Errorf("verified[%s] = %v, want [true, true]", target, v)
		}
	}
	r := cmp.Ratios["redis-rueidis"]
	for _, k := range []string{"hold_attempts_per_s", "all_held_s"} {
		q := r[k]
		if q["median"] == nil || q["min"] == nil || q["max"] == nil || *q["min"] > *q["median"] || *q["median"] > *q["max"] {
			t.Errorf("ratios[redis-rueidis][%s] = %v, want min ≤ median ≤ max", k, q)
		}
	}
	if q := r["sold_out_s"]; q["median"] != nil {
		t.Errorf("ratios[redis-rueidis].sold_out_s = %v, want null", q)
	}
	for dir, procs := range map[string][]string{"round1-boxoffice": {"client", "engine"}, "round2-redis-rueidis": {"client", "redis-server"}} {
		res, err := bench.ReadJSON(filepath.Join(out, dir, "result.json"))
		if err != nil {
			t.Fatal(err)
		}
		if _, has := res.CPU["postgres"]; has {
			t.Errorf("%s: Postgres measured, but the bench did not start it: %v", dir, res.CPU)
		}
		for _, p := range procs {
			if v, has := res.CPU[p]; !has || v < 0 {
				t.Errorf("%s: CPU %v lacks %s", dir, res.CPU, p)
			}
		}
		if res.CPU["client"] <= 0 {
			t.Errorf("%s: client CPU %v", dir, res.CPU["client"])
		}
		procs, has := res.Config["engine_procs"]
		if want := float64(defaultEngineProcs(runtime.NumCPU())); isEngine(res.Target) && procs != want || !isEngine(res.Target) && has {
			t.Errorf("%s: config engine_procs %v (present %v), want %v for the engine's runs only", dir, procs, has, want)
		}
	}

	// --profile-dir: the bench's profile for every target run, the
	// engine's for the engine's (as long as --max-duration).
	prof := t.TempDir()
	runBenchBinary(t, bin, append([]string{"bench", "--target", "boxoffice", "--out", t.TempDir(),
		"--profile-dir", prof, "--max-duration", "5s"}, small...)...)
	for _, pattern := range []string{"bench-boxoffice-*.cpu.pprof", "engine-*.cpu.pprof"} {
		files, _ := filepath.Glob(filepath.Join(prof, pattern))
		if len(files) != 1 {
			t.Errorf("profile dir: %d files %s, want 1", len(files), pattern)
			continue
		}
		if fi, err := os.Stat(files[0]); err != nil || fi.Size() == 0 {
			t.Errorf("%s: empty or unreadable (%v)", files[0], err)
		}
	}
}

// TestParseBenchWatchers checks --watchers: 0 by default, the number of
// streams when given to a run or a comparison with a boxoffice target,
// refused negative or without one, and reported in the result's config
// of the engine's runs only.
func TestParseBenchWatchers(t *testing.T) {
	c, err := parseBench(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Run.Watchers != 0 {
		t.Errorf("default watchers %d, want 0", c.Run.Watchers)
	}
	for _, tc := range []struct {
		args    []string
		compare bool
	}{
		{[]string{"--watchers", "1000"}, false},
		{[]string{"--watchers", "1000", "--target", "boxoffice-unary"}, false},
		{[]string{"--watchers", "1000", "--target", "redis-rueidis,boxoffice"}, true},
	} {
		c, err := parseBench(tc.args, tc.compare)
		if err != nil {
			t.Fatalf("parseBench(%q): %v", tc.args, err)
		}
		if c.Run.Watchers != 1000 {
			t.Errorf("parseBench(%q): watchers %d, want 1000", tc.args, c.Run.Watchers)
		}
		sc, err := bench.NewScenario(c.Scenario, c.Sc)
		if err != nil {
			t.Fatal(err)
		}
		e := &benchEnv{conns: c.Conns, mapCache: c.BaselineMapCache}
		for _, target := range c.Targets {
			got, has := e.resultConfig(c, target, sc, c.Run, 15000)["watchers"]
			if isEngine(target) && got != 1000 || !isEngine(target) && has {
				t.Errorf("parseBench(%q): config of %s has watchers %v (%v)", tc.args, target, got, has)
			}
		}
	}
	for _, tc := range []struct {
		args    []string
		compare bool
		want    string
	}{
		{[]string{"--watchers", "-1"}, false, "--watchers -1: want ≥ 0"},
		{[]string{"--watchers", "10", "--target", "pg-status"}, false, "--watchers needs a boxoffice target"},
		{[]string{"--watchers", "10", "--target", "pg-status,redis-setnx"}, true, "--watchers needs a boxoffice target"},
	} {
		if _, err := parseBench(tc.args, tc.compare); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseBench(%q, compare %v) = %v, want an error with %q", tc.args, tc.compare, err, tc.want)
		}
	}
}
