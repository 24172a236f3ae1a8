package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// randomSecret returns prefix followed by random hex, unlike any string
// another process on the machine could hold.
func randomSecret(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// TestSecretsFromFiles runs the built binary with the service token from
// BOXOFFICE_TOKEN_FILE, the admin token from --admin-token-file and the
// database URL from --database-url-file: both tokens authorize calls, and
// no process on the machine has a secret on its command line.
func TestSecretsFromFiles(t *testing.T) {
	bin := buildBinary(t)
	url := pgclustertest.Shared(t)
	token, adminToken := randomSecret(t, "tok-"), randomSecret(t, "adm-")
	p := startServe(t, bin, serveOptions{
		DatabaseURL: url, NodeID: "secrets-1", Migrate: true,
		Token: token, AdminToken: adminToken, SecretsDir: t.TempDir(),
	})
	conn := dialServe(t, p)
	cat := pb.NewCatalogServiceClient(conn)
	call := func(tok string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	if _, err := cat.GetShow(call(token), &pb.GetShowRequest{ShowId: "missing"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetShow of a missing show with the token from the file: %v, want NotFound", err)
	}
	if _, err := cat.GetShow(call("not-"+token), &pb.GetShowRequest{ShowId: "missing"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("GetShow with a wrong token: %v, want Unauthenticated", err)
	}
	if _, err := cat.CreateShow(call(adminToken), tc.ShowRequest("secrets", 1, 5, 0)); err != nil {
		t.Errorf("CreateShow with the admin token from the file: %v", err)
	}

	// Every process's command line, the child's among them.
	paths, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	childSeen := false
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the process has exited, or is not ours to read
		}
		if path == filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "cmdline") {
			childSeen = bytes.Contains(b, []byte("serve"))
		}
		for what, secret := range map[string]string{"token": token, "admin token": adminToken, "database URL": url} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s: the %s is on the command line %q", path, what, strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
	if !childSeen {
		t.Errorf("the child's command line (pid %d) was not among the %d read", p.cmd.Process.Pid, len(paths))
	}
}

// TestParseServeSecrets: each secret comes from its value or its file,
// trimmed of surrounding white space; both, an empty file or a missing
// one is an error.
func TestParseServeSecrets(t *testing.T) {
	clearBoxofficeEnv(t)
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tokFile := file("token", "s3cret\n")
	crlfFile := file("token-crlf", "  s3cret \r\n")
	adminFile := file("admin", "adm1n\n")
	urlFile := file("url", "postgres://u:pw@127.0.0.1:5432/db\n")
	emptyFile := file("empty", "")
	newlineFile := file("newline", "\n")
	missing := filepath.Join(dir, "missing")
	base := []string{"--node-id", "n1"}

	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string // substring; empty: no error
		want    serveConfig
	}{
		{name: "values", args: []string{"--database-url", "postgres://x", "--token", "t", "--admin-token", "a"},
			want: serveConfig{DatabaseURL: "postgres://x", Token: "t", AdminToken: "a"}},
		{name: "files by flag", args: []string{"--database-url-file", urlFile, "--token-file", tokFile, "--admin-token-file", adminFile},
			want: serveConfig{DatabaseURL: "postgres://u:pw@127.0.0.1:5432/db", Token: "s3cret", AdminToken: "adm1n"}},
		{name: "files by environment",
			env:  map[string]string{"BOXOFFICE_DATABASE_URL_FILE": urlFile, "BOXOFFICE_TOKEN_FILE": crlfFile, "BOXOFFICE_ADMIN_TOKEN_FILE": adminFile},
			want: serveConfig{DatabaseURL: "postgres://u:pw@127.0.0.1:5432/db", Token: "s3cret", AdminToken: "adm1n"}},
		{name: "token and token file", args: []string{"--database-url", "postgres://x", "--token", "t", "--token-file", tokFile, "--admin-token", "a"},
			wantErr: "both --token"},
		{name: "token variable and token file", env: map[string]string{"BOXOFFICE_TOKEN": "t"},
			args:    []string{"--database-url", "postgres://x", "--token-file", tokFile, "--admin-token", "a"},
			wantErr: "both --token"},
		{name: "admin token and its file", args: []string{"--database-url", "postgres://x", "--token", "t", "--admin-token", "a", "--admin-token-file", adminFile},
			wantErr: "both --admin-token"},
		{name: "database URL and its file", env: map[string]string{"BOXOFFICE_DATABASE_URL_FILE": urlFile},
			args: []string{"--database-url", "postgres://x", "--token", "t", "--admin-token", "a"}, wantErr: "both --database-url"},
		{name: "empty file", args: []string{"--database-url", "postgres://x", "--token-file", emptyFile, "--admin-token", "a"},
			wantErr: "is empty"},
		{name: "file of a newline", args: []string{"--database-url-file", newlineFile, "--token", "t", "--admin-token", "a"},
			wantErr: "is empty"},
		{name: "missing file", args: []string{"--database-url", "postgres://x", "--token", "t", "--admin-token-file", missing},
			wantErr: "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			got, err := parseServe(append(append([]string{}, base...), c.args...))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("parseServe: %v, want an error with %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseServe: %v", err)
			}
			if got.DatabaseURL != c.want.DatabaseURL || got.Token != c.want.Token || got.AdminToken != c.want.AdminToken {
				t.Errorf("database URL %q, token %q, admin token %q; want %q, %q, %q",
					got.DatabaseURL, got.Token, got.AdminToken, c.want.DatabaseURL, c.want.Token, c.want.AdminToken)
			}
		})
	}
}

// TestParseServeLimits: the gRPC limit, keepalive and profiling flags
// default to the engine's defaults, take their variables, and the flag
// wins over a variable that does not parse.
func TestParseServeLimits(t *testing.T) {
	clearBoxofficeEnv(t)
	base := []string{"--node-id", "n1", "--database-url", "postgres://x", "--token", "t", "--admin-token", "a"}
	parse := func(t *testing.T, args ...string) (serveConfig, error) {
		t.Helper()
		return parseServe(append(append([]string{}, base...), args...))
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := parse(t)
		if err != nil {
			t.Fatal(err)
		}
		if c.PprofAddr != "" || c.GRPCMaxStreams != engine.DefaultMaxConcurrentStreams || c.GRPCMaxRecvBytes != engine.DefaultMaxRecvMsgSize ||
			c.GRPCMaxConns != engine.DefaultMaxConns || c.GRPCKeepaliveMinTime != engine.DefaultKeepaliveMinTime ||
			c.GRPCKeepaliveTime != engine.DefaultKeepaliveTime || c.GRPCKeepaliveTimeout != engine.DefaultKeepaliveTimeout ||
			c.HealthInterval != engine.DefaultHealthInterval {
			t.Errorf("defaults: %+v", c)
		}
	})
	t.Run("flags", func(t *testing.T) {
		c, err := parse(t, "--pprof-addr", "127.0.0.1:6060", "--grpc-max-streams", "7", "--grpc-max-recv-bytes", "1000",
			"--grpc-max-conns", "9", "--grpc-keepalive-min-time", "1s", "--grpc-keepalive-time", "2s",
			"--grpc-keepalive-timeout", "3s", "--health-interval", "4s")
		if err != nil {
			t.Fatal(err)
		}
		if c.PprofAddr != "127.0.0.1:6060" || c.GRPCMaxStreams != 7 || c.GRPCMaxRecvBytes != 1000 || c.GRPCMaxConns != 9 ||
			c.GRPCKeepaliveMinTime != time.Second || c.GRPCKeepaliveTime != 2*time.Second ||
			c.GRPCKeepaliveTimeout != 3*time.Second || c.HealthInterval != 4*time.Second {
			t.Errorf("flags: %+v", c)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("BOXOFFICE_PPROF_ADDR", "localhost:6060")
		t.Setenv("BOXOFFICE_GRPC_MAX_STREAMS", "5")
		t.Setenv("BOXOFFICE_GRPC_MAX_RECV_BYTES", "2048")
		t.Setenv("BOXOFFICE_GRPC_MAX_CONNS", "6")
		t.Setenv("BOXOFFICE_HEALTH_INTERVAL", "250ms")
		c, err := parse(t)
		if err != nil {
			t.Fatal(err)
		}
		if c.PprofAddr != "localhost:6060" || c.GRPCMaxStreams != 5 || c.GRPCMaxRecvBytes != 2048 || c.GRPCMaxConns != 6 ||
			c.HealthInterval != 250*time.Millisecond {
			t.Errorf("environment: %+v", c)
		}
	})
	t.Run("admission key", func(t *testing.T) {
		key := base64.StdEncoding.EncodeToString([]byte("sixteen bytes ok"))
		if c, err := parse(t, "--admission-key", key); err != nil || string(c.AdmissionKey) != "sixteen bytes ok" {
			t.Errorf("--admission-key: %q, %v", c.AdmissionKey, err)
		}
		if c, err := parse(t); err != nil || c.AdmissionKey != nil {
			t.Errorf("no admission key: %q, %v", c.AdmissionKey, err)
		}
		for _, bad := range []string{base64.StdEncoding.EncodeToString([]byte("short")), "not base64!"} {
			if _, err := parse(t, "--admission-key", bad); err == nil || !strings.Contains(err.Error(), "--admission-key") {
				t.Errorf("--admission-key %q: %v, want an error naming the flag", bad, err)
			}
		}
		file := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(file, []byte(key+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if c, err := parse(t, "--admission-key-file", file); err != nil || string(c.AdmissionKey) != "sixteen bytes ok" {
			t.Errorf("--admission-key-file: %q, %v", c.AdmissionKey, err)
		}
	})
	t.Run("gogc", func(t *testing.T) {
		t.Setenv("GOGC", "")
		for _, c := range []struct {
			name    string
			env     map[string]string
			args    []string
			want    int
			wantErr bool
		}{
			{name: "default", want: defaultGCPercent},
			{name: "flag", args: []string{"--gogc", "150"}, want: 150},
			{name: "variable", env: map[string]string{"BOXOFFICE_GOGC": "250"}, want: 250},
			{name: "GOGC is kept", env: map[string]string{"GOGC": "80"}, want: 0},
			{name: "the flag over GOGC", env: map[string]string{"GOGC": "80"}, args: []string{"--gogc", "300"}, want: 300},
			{name: "zero", args: []string{"--gogc", "0"}, wantErr: true},
			{name: "zero variable", env: map[string]string{"BOXOFFICE_GOGC": "0"}, wantErr: true},
			{name: "negative", args: []string{"--gogc", "-1"}, wantErr: true},
		} {
			t.Run(c.name, func(t *testing.T) {
				for k, v := range c.env {
					t.Setenv(k, v)
				}
				got, err := parse(t, c.args...)
				if c.wantErr {
					if err == nil {
						t.Fatalf("GC percent %d, want an error", got.GCPercent)
					}
					return
				}
				if err != nil || got.GCPercent != c.want {
					t.Fatalf("GC percent %d (%v), want %d", got.GCPercent, err, c.want)
				}
			})
		}
	})
	t.Run("bad variable", func(t *testing.T) {
		t.Setenv("BOXOFFICE_GRPC_MAX_CONNS", "many")
		if _, err := parse(t); err == nil || !strings.Contains(err.Error(), "BOXOFFICE_GRPC_MAX_CONNS") {
			t.Errorf("parseServe with BOXOFFICE_GRPC_MAX_CONNS=many: %v, want an error naming it", err)
		}
		if c, err := parse(t, "--grpc-max-conns", "3"); err != nil || c.GRPCMaxConns != 3 {
			t.Errorf("the flag over a bad variable: %v, %d", err, c.GRPCMaxConns)
		}
	})
	t.Run("state bounds", func(t *testing.T) {
		d := engine.DefaultConfig()
		c, err := parse(t)
		if err != nil {
			t.Fatal(err)
		}
		if c.IdempotencyRetention != d.IdempotencyRetention || c.IdleEvict != d.IdleEvictAfter ||
			c.NotFoundTTL != d.NotFoundTTL || c.MaxConcurrentLoads != d.MaxConcurrentLoads || c.MaxWaitlist != d.MaxWaitlist {
			t.Errorf("defaults: %+v", c)
		}
		t.Setenv("BOXOFFICE_IDLE_EVICT", "3m")
		c, err = parse(t, "--idempotency-retention", "48h", "--not-found-ttl", "1s", "--max-concurrent-loads", "2", "--max-waitlist", "5")
		if err != nil {
			t.Fatal(err)
		}
		if c.IdempotencyRetention != 48*time.Hour || c.IdleEvict != 3*time.Minute || c.NotFoundTTL != time.Second || c.MaxConcurrentLoads != 2 || c.MaxWaitlist != 5 {
			t.Errorf("flags and environment: %+v", c)
		}
	})
	for _, args := range [][]string{
		{"--grpc-max-streams", "0"}, {"--grpc-max-streams", "4294967296"}, {"--grpc-max-recv-bytes", "0"},
		{"--grpc-max-conns", "-1"}, {"--health-interval", "0s"}, {"--grpc-keepalive-time", "-1s"},
		{"--idempotency-retention", "0s"}, {"--idle-evict", "-1m"}, {"--not-found-ttl", "0s"}, {"--max-concurrent-loads", "0"}, {"--max-waitlist", "0"},
	} {
		t.Run(strings.Join(args, "="), func(t *testing.T) {
			if _, err := parse(t, args...); err == nil {
				t.Errorf("parseServe %v: no error", args)
			}
		})
	}
}

// TestMigrateDatabaseURLFile: migrate takes the URL from a file, and
// refuses both a URL and a file.
func TestMigrateDatabaseURLFile(t *testing.T) {
	clearBoxofficeEnv(t)
	url := pgclustertest.Shared(t)
	path := filepath.Join(t.TempDir(), "url")
	if err := os.WriteFile(path, []byte(url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := runMigrate(ctx, []string{"--database-url-file", path}); err != nil {
		t.Fatalf("migrate --database-url-file: %v", err)
	}
	t.Setenv("BOXOFFICE_DATABASE_URL_FILE", path)
	if err := runMigrate(ctx, []string{"--database-url", url}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("migrate with a URL and BOXOFFICE_DATABASE_URL_FILE: %v, want an error", err)
	}
}

// clearBoxofficeEnv unsets every BOXOFFICE_* variable for the test.
func clearBoxofficeEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "BOXOFFICE_") {
			t.Setenv(k, "") // restores the value at cleanup
			os.Unsetenv(k)
		}
	}
}
