// Package pgcluster runs a private PostgreSQL server from the system's
// binaries: initdb into a directory, pg_ctl start on a loopback port, and
// stop, kill or restart it on demand. Tests use it for a throwaway database
// and the demo command for a local one.
//
// initdb and pg_ctl refuse to run as root, so when the process is root they
// run as the postgres system user (through runuser) and the directory is
// given to that user.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Database is the database Start creates and URL points at.
const Database = "boxoffice"

// superuser is the role initdb creates; authentication is trust.
const superuser = "postgres"

// startTimeout bounds how long pg_ctl waits for the server to accept
// connections, crash recovery after Kill included.
const startTimeout = 60 * time.Second

// Config says where and how to run the cluster. The zero value runs a
// cluster in a new temporary directory on a free port, with durable
// settings, and fails if PostgreSQL is not installed.
type Config struct {
	// Dir holds the data directory (Dir/data), the server log
	// (Dir/postgres.log) and the Unix socket. If Dir already holds a
	// cluster, Start reuses it; otherwise Start creates one, and Dir too if
	// needed. Stop keeps Dir. When running as root, the postgres user must
	// be able to reach Dir (every parent directory searchable by others).
	// If empty, Start creates a temporary directory that Stop removes.
	Dir string
	// Port is the TCP port on 127.0.0.1 the server listens on.
	// If 0, Start picks a free one. Restart keeps the port.
	Port int
	// Install, when the binaries are missing and the process is root, runs
	// apt-get update && apt-get install postgresql (Debian) first.
	// If false and the binaries are missing, Start returns an error
	// wrapping ErrNoBinaries.
	Install bool
	// Log receives progress lines. If nil, they are discarded. The
	// server's own output goes to Dir/postgres.log.
	Log io.Writer
	// Settings are extra postgresql.conf settings, applied after and over
	// the defaults (listen_addresses, port, unix_socket_directories,
	// max_connections=200, shared_buffers=128MB). Names are lower-case
	// identifiers; values are written quoted. If nil, fsync and
	// synchronous_commit stay on: nothing trades durability by default.
	Settings map[string]string
}

// Cluster is a running (or killed, or stopped) PostgreSQL server started by
// Start. Its methods are safe for concurrent use; lifecycle methods (Stop,
// Kill, Restart) are serialized.
type Cluster struct {
	bin      string     // directory of initdb, pg_ctl
	dir      string     // Config.Dir, absolute
	port     int        // TCP port on 127.0.0.1, fixed for the cluster's life
	tempDir  bool       // Start created dir; Stop removes it
	postgres *user.User // non-nil when commands run as postgres through runuser
	log      io.Writer

	mu      sync.Mutex // guards running and removed; held across pg_ctl calls to serialize them
	running bool
	removed bool
}

// Start makes the cluster ready: it finds (or installs) the binaries, runs
// initdb unless Dir already holds a cluster, starts the server with pg_ctl,
// waits until it accepts connections and creates database "boxoffice" if
// missing. On error nothing is left running and a temporary directory is
// removed; a server start failure includes the tail of the server log.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	for name, value := range cfg.Settings {
		if !validSettingName(name) || strings.ContainsAny(value, "\n\r\x00") {
			return nil, fmt.Errorf("pgcluster: invalid setting %q = %q", name, value)
		}
	}
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	bin, err := BinDir()
	if errors.Is(err, ErrNoBinaries) && cfg.Install {
		if ierr := install(ctx, log); ierr != nil {
			return nil, fmt.Errorf("%w (%w)", err, ierr)
		}
		bin, err = BinDir()
	}
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, port: cfg.Port, log: log}
	if os.Geteuid() == 0 {
		if c.postgres, err = ensurePostgresUser(ctx, log); err != nil {
			return nil, err
		}
	}
	if err := c.makeDir(ctx, cfg.Dir); err != nil {
		return nil, err
	}
	if err := c.start(ctx, cfg.Settings); err != nil {
		if c.tempDir {
			_ = os.RemoveAll(c.dir)
		}
		return nil, err
	}
	return c, nil
}

// validSettingName reports whether name looks like a postgresql.conf
// parameter name (lower-case letters, digits, '_' and '.' for extensions).
func validSettingName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' || name[0] == '.' {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// makeDir sets c.dir, creating the directory if needed, and hands it to the
// postgres user when running as root.
func (c *Cluster) makeDir(ctx context.Context, dir string) error {
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pgcluster-"); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		c.tempDir = true
	} else {
		if dir, err = filepath.Abs(dir); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		// Parents created here must be searchable by postgres.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
	}
	c.dir = dir
	fail := func(err error) error {
		if c.tempDir {
			_ = os.RemoveAll(dir)
		}
		return err
	}
	// A Unix socket path is limited to 107 bytes.
	if sock := filepath.Join(dir, ".s.PGSQL.65535"); len(sock) > 107 {
		return fail(fmt.Errorf("pgcluster: directory %s is too long for a Unix socket path (%d > 107 bytes)", dir, len(sock)))
	}
	if c.postgres == nil {
		return nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fail(fmt.Errorf("pgcluster: %w", err))
	}
	if err := chown(dir, c.postgres); err != nil {
		return fail(err)
	}
	if out, err := c.command(ctx, "test", "-w", dir).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pgcluster: user postgres cannot write %s (is a parent directory not searchable by others?): %w %s", dir, err, out))
	}
	return nil
}

// start runs initdb if needed, writes the settings and starts the server.
func (c *Cluster) start(ctx context.Context, settings map[string]string) error {
	picked := c.port == 0
	if picked {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.port = port
	}
	data := c.dataDir()
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err == nil {
		fmt.Fprintf(c.log, "pgcluster: reusing the cluster in %s\n", data)
	} else {
		if err := c.initdb(ctx, settings); err != nil {
			return err
		}
	}
	if err := c.writeSettings(settings); err != nil {
		return err
	}
	// A port picked free may be taken by another process before the server
	// binds it (tests start many servers at once): then another is tried.
	for attempt := 1; ; attempt++ {
		err := c.pgStart(ctx)
		if err == nil {
			break
		}
		if !picked || attempt == 3 || !strings.Contains(err.Error(), "could not create any TCP/IP sockets") {
			return err
		}
		port, perr := freePort()
		if perr != nil {
			return err
		}
		fmt.Fprintf(c.log, "pgcluster: port %d was taken meanwhile; trying %d\n", c.port, port)
		c.port = port
		if err := c.writeSettings(settings); err != nil {
			return err
		}
	}
	if err := c.createDatabase(ctx); err != nil {
		_, _ = c.pgCtl(context.Background(), "stop", "-m", "immediate")
		return err
	}
	c.running = true
	return nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "postgres.log") }

func (c *Cluster) initdb(ctx context.Context, settings map[string]string) error {
	fmt.Fprintf(c.log, "pgcluster: initdb %s\n", c.dataDir())
	args := []string{"-D", c.dataDir(), "-U", superuser, "-A", "trust", "-E", "UTF8", "--locale=C"}
	if settings["fsync"] == "off" {
		args = append(args, "--no-sync") // the caller gave up durability anyway
	}
	if out, err := c.command(ctx, filepath.Join(c.bin, "initdb"), args...).CombinedOutput(); err != nil {
		return fmt.Errorf("pgcluster: initdb: %w\n%s", err, lastLines(out))
	}
	return nil
}

// includeFile holds this package's settings; postgresql.conf includes it
// last, so its settings win over initdb's.
const includeFile = "pgcluster.conf"

// writeSettings writes includeFile for this start and makes sure
// postgresql.conf includes it. Settings are rewritten at every Start, so a
// reused cluster gets the current port and directory.
func (c *Cluster) writeSettings(extra map[string]string) error {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(c.port),
		"unix_socket_directories": c.dir,
		"max_connections":         "200",
		"shared_buffers":          "128MB",
	}
	maps.Copy(settings, extra)
	var b strings.Builder
	b.WriteString("# Written by pgcluster at every start; edits are lost.\n")
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(settings[name], "'", "''"))
	}
	path := filepath.Join(c.dataDir(), includeFile)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if c.postgres != nil {
		if err := chown(path, c.postgres); err != nil {
			return err
		}
	}
	conf := filepath.Join(c.dataDir(), "postgresql.conf")
	content, err := os.ReadFile(conf)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	include := fmt.Sprintf("include_if_exists = '%s'", includeFile)
	if slices.Contains(strings.Split(string(content), "\n"), include) {
		return nil
	}
	f, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n%s\n", include)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
}

// pgStart starts the server and waits until it accepts connections.
func (c *Cluster) pgStart(ctx context.Context) error {
	fmt.Fprintf(c.log, "pgcluster: starting on 127.0.0.1:%d, log %s\n", c.port, c.logFile())
	secs := strconv.Itoa(int(startTimeout / time.Second))
	if out, err := c.pgCtl(ctx, "start", "-w", "-t", secs, "-l", c.logFile()); err != nil {
		// pg_ctl may have started a server that never got ready.
		_, _ = c.pgCtl(context.Background(), "stop", "-m", "immediate")
		return fmt.Errorf("pgcluster: pg_ctl start: %w\n%s\nserver log %s:\n%s", err, lastLines(out), c.logFile(), fileTail(c.logFile()))
	}
	if err := c.waitReady(ctx); err != nil {
		_, _ = c.pgCtl(context.Background(), "stop", "-m", "immediate")
		return fmt.Errorf("%w\nserver log %s:\n%s", err, c.logFile(), fileTail(c.logFile()))
	}
	return nil
}

// waitReady polls until a connection succeeds, within startTimeout.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgx.Connect(ctx, c.DatabaseURL("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgcluster: server on port %d not ready: %w (last error: %w)", c.port, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func (c *Cluster) createDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.DatabaseURL("postgres"))
	if err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", Database).Scan(&exists); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{Database}.Sanitize()); err != nil {
		return fmt.Errorf("pgcluster: creating database %s: %w", Database, err)
	}
	return nil
}

// command returns a command running name as the postgres user when the
// process is root, or directly otherwise, in the cluster directory.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if c.postgres != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.postgres.Username, "--", name}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, name, args...)
	}
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// pg_ctl hands the server's output to the log file, but never wait
	// long on pipes a child might have kept.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// pgCtl runs pg_ctl with the data directory and returns its output.
func (c *Cluster) pgCtl(ctx context.Context, args ...string) ([]byte, error) {
	args = append(args, "-D", c.dataDir())
	return c.command(ctx, filepath.Join(c.bin, "pg_ctl"), args...).CombinedOutput()
}

// pgStop stops the server in the given pg_ctl shutdown mode. A server that
// is not running (it crashed, or was stopped behind our back) is not an
// error.
func (c *Cluster) pgStop(mode string) error {
	fmt.Fprintf(c.log, "pgcluster: stopping (%s) the server on port %d\n", mode, c.port)
	secs := strconv.Itoa(int(startTimeout / time.Second))
	out, err := c.pgCtl(context.Background(), "stop", "-w", "-t", secs, "-m", mode)
	if err == nil {
		return nil
	}
	// pg_ctl status exits with 3 when no server is running.
	var exit *exec.ExitError
	if _, serr := c.pgCtl(context.Background(), "status"); errors.As(serr, &exit) && exit.ExitCode() == 3 {
		return nil
	}
	return fmt.Errorf("pgcluster: pg_ctl stop -m %s: %w\n%s", mode, err, lastLines(out))
}

// URL returns the connection URL of database "boxoffice" as the superuser
// over TCP, e.g. postgres://postgres@127.0.0.1:5433/boxoffice?sslmode=disable.
// It stays the same across Kill and Restart.
func (c *Cluster) URL() string { return c.DatabaseURL(Database) }

// DatabaseURL returns the connection URL of database name on this cluster,
// like URL. It does not create the database.
func (c *Cluster) DatabaseURL(name string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + name,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on.
func (c *Cluster) Port() int { return c.port }

// Dir returns the cluster directory (absolute), which holds data/ and
// postgres.log.
func (c *Cluster) Dir() string { return c.dir }

// Stop shuts the server down (pg_ctl stop -m fast: sessions are
// disconnected, data is flushed) and, if Start created a temporary
// directory, removes it. It is idempotent: after the first call it returns
// nil. After Kill it only removes the temporary directory.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		if err := c.pgStop("fast"); err != nil {
			return err
		}
		c.running = false
	}
	if c.tempDir && !c.removed {
		if err := os.RemoveAll(c.dir); err != nil {
			return fmt.Errorf("pgcluster: %w", err)
		}
		c.removed = true
	}
	return nil
}

// Kill stops the server at once (pg_ctl stop -m immediate), as a crash
// would: committed data is kept and recovered by Restart. Killing a server
// that is not running returns nil.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	if err := c.pgStop("immediate"); err != nil {
		return err
	}
	c.running = false
	return nil
}

// Restart starts the server again on the same port and data after Kill or
// Stop, and waits until it accepts connections. A running server is first
// stopped (fast). After Stop removed a temporary directory it returns
// ErrRemoved.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return ErrRemoved
	}
	if c.running {
		if err := c.pgStop("fast"); err != nil {
			return err
		}
		c.running = false
	}
	if err := c.pgStart(ctx); err != nil {
		return err
	}
	c.running = true
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgcluster: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lastLines returns the end of a command's output for an error message.
func lastLines(out []byte) string {
	var t tail
	_, _ = t.Write(out)
	return t.String()
}
