package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BinDir returns the directory holding initdb and pg_ctl: the PG_BINDIR
// environment variable if set (an error wrapping ErrNoBinaries if it lacks
// them), otherwise the newest /usr/lib/postgresql/VERSION/bin that has both
// (Debian's layout). The error wraps ErrNoBinaries when none is found.
func BinDir() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		if !hasBinaries(dir) {
			return "", fmt.Errorf("%w: PG_BINDIR=%s has no initdb and pg_ctl", ErrNoBinaries, dir)
		}
		return dir, nil
	}
	const root = "/usr/lib/postgresql"
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("pgcluster: %w", err)
	}
	type candidate struct {
		version []int
		dir     string
	}
	var found []candidate
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		dir := filepath.Join(root, e.Name(), "bin")
		if ok && hasBinaries(dir) {
			found = append(found, candidate{v, dir})
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("%w in %s/*/bin (install the Debian package postgresql, or set PG_BINDIR)", ErrNoBinaries, root)
	}
	newest := slices.MaxFunc(found, func(a, b candidate) int { return slices.Compare(a.version, b.version) })
	return newest.dir, nil
}

// parseVersion parses a directory name such as "15" or "9.6".
func parseVersion(name string) ([]int, bool) {
	var v []int
	for part := range strings.SplitSeq(name, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

func hasBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// install installs Debian's postgresql package. Only root can.
func install(ctx context.Context, log io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("pgcluster: installing PostgreSQL needs root")
	}
	fmt.Fprintln(log, "pgcluster: installing PostgreSQL with apt-get")
	for _, args := range [][]string{
		{"update"},
		// The lock timeout lets test binaries of several packages install
		// at the same time without one failing on dpkg's lock.
		{"-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends", "postgresql"},
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
			return fmt.Errorf("pgcluster: apt-get %s: %w\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	return nil
}

// ensurePostgresUser makes sure the postgres system user exists, creating
// it when it does not (only root gets here).
func ensurePostgresUser(ctx context.Context, log io.Writer) (*user.User, error) {
	u, err := user.Lookup("postgres")
	if err == nil {
		return u, nil
	}
	var unknown user.UnknownUserError
	if !errors.As(err, &unknown) {
		return nil, fmt.Errorf("pgcluster: looking up user postgres: %w", err)
	}
	fmt.Fprintln(log, "pgcluster: creating system user postgres")
	out, err := exec.CommandContext(ctx, "useradd", "--system", "--user-group", "--no-create-home", "postgres").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgcluster: no user postgres and useradd failed: %w: %s", err, out)
	}
	u, err = user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgcluster: looking up user postgres after useradd: %w", err)
	}
	return u, nil
}

// chown gives path to the postgres user.
func chown(path string, u *user.User) error {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("pgcluster: uid of postgres: %w", err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("pgcluster: gid of postgres: %w", err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("pgcluster: %w", err)
	}
	return nil
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

// fileTail returns the last lines of the file at path, or a note saying why
// it could not be read.
func fileTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > tailSize {
		if _, err := f.Seek(fi.Size()-tailSize, io.SeekStart); err != nil {
			return fmt.Sprintf("(log unreadable: %v)", err)
		}
	}
	var t tail
	if _, err := io.Copy(&t, f); err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return t.String()
}
