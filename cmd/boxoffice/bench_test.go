package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/boxoffice/boxoffice/bench"
)

func TestParseBench(t *testing.T) {
	c, err := parseBench(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"boxoffice"}) || c.Scenario != "flash-sale" || c.ClientGOGC != 400 || c.Conns != 4 {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseBench(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"boxoffice", "pg-status", "redis-setnx"}) || c.Rounds != 3 {
		t.Errorf("compare defaults: targets %v, rounds %d", c.Targets, c.Rounds)
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
		{[]string{"--addr", "127.0.0.1:7070", "--database-url", ""}, false, "needs --database-url"},
		{[]string{"--max-seats", "11"}, false, "11"},
		{[]string{"--confirm", "1.5"}, false, "--confirm 1.5: want a probability from 0"},
		{[]string{"--confirm", "-0.1"}, true, "--confirm -0.1: want a probability from 0"},
		{[]string{"--confirm", "NaN"}, false, "--confirm NaN: want a probability from 0"},
		{[]string{"--confirm", "2", "--scenario", "browse"}, false, "--confirm 2"},
		{[]string{"--retries", "-1"}, false, "--retries -1"},
		{[]string{"--pay-delay", "-1s"}, false, "--pay-delay -1s"},
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
		for _, flag := range []string{"--token-file", "--admin-token-file", "--database-url-file"} {
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
			c.GRPCAddr != child.GRPCAddr || c.HTTPAddr != child.HTTPAddr || c.PprofAddr != child.PprofAddr {
			t.Errorf("profile %v: serve parses %q into %+v, want the secrets, migrate, and the addresses of %+v", profile, args[1:], c, child)
		}
		if _, err := serveArgs(dir, child); err == nil {
			t.Errorf("profile %v: serveArgs over existing files: no error", profile)
		}
	}
}

// TestEngineEnv checks that the engine's environment lacks the variables
// that would conflict with its secret files, and keeps the others.
func TestEngineEnv(t *testing.T) {
	got := engineEnv([]string{"PATH=/bin", "BOXOFFICE_TOKEN=t", "BOXOFFICE_ADMIN_TOKEN=a",
		"BOXOFFICE_DATABASE_URL=postgres://x", "BOXOFFICE_NODE_ID=n", "BOXOFFICE_TOKEN_X=y"})
	if want := []string{"PATH=/bin", "BOXOFFICE_NODE_ID=n", "BOXOFFICE_TOKEN_X=y"}; !slices.Equal(got, want) {
		t.Errorf("engineEnv = %q, want %q", got, want)
	}
	if got := engineEnv([]string{"BOXOFFICE_TOKEN=t"}); got == nil || len(got) != 0 {
		t.Errorf("engineEnv of only a secret = %#v, want empty and not nil", got)
	}
}
