package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// TestStatusCommand runs `status` against two in-process cluster nodes:
// it prints both members alive with their addresses and counts, and per
// node the shows it owns, with their epochs and leases. The admin token
// comes from the flag, a file or the environment; a wrong one is an error.
func TestStatusCommand(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n0 := tc.StartNode(t, url, tc.Options{NodeID: "s0", Cluster: &tc.ClusterOptions{}})
	n1 := tc.StartNode(t, url, tc.Options{NodeID: "s1", Cluster: &tc.ClusterOptions{Join: []string{n0.Ring.GossipAddr()}}})
	deadline := time.Now().Add(10 * time.Second)
	for len(n0.Ring.Members()) != 2 || len(n1.Ring.Members()) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two nodes did not see each other within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	owners := map[string]string{} // show → owner
	for _, id := range []string{"status-a", "status-b", "status-c", "status-d", "status-e", "status-f"} {
		n0.CreateShow(t, id, 1, 5, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := n0.Reservations.HoldSeats(tc.Ctx(ctx), &pb.HoldSeatsRequest{ShowId: id, UserId: "u1", SeatIds: []string{"A-1"}, IdempotencyKey: "k-" + id})
		cancel()
		if err != nil {
			t.Fatalf("hold on %s: %v", id, err)
		}
		owners[id] = n0.Ring.Owner(id).Name
	}

	var out bytes.Buffer
	if err := statusTo(context.Background(), []string{"--addr", n1.Server.GRPCAddr(), "--admin-token", tc.AdminToken}, &out); err != nil {
		t.Fatalf("status: %v", err)
	}
	text := out.String()
	t.Logf("status output:\n%s", text)
	if !strings.Contains(text, "cluster as s1 sees it: ring version ") || !strings.Contains(text, "271 partitions, 2 members") {
		t.Errorf("no heading naming s1, the partitions and the members")
	}
	for _, n := range []*tc.Node{n0, n1} {
		name := n.Ring.Self().Name
		loaded := 0
		for _, o := range owners {
			if o == name {
				loaded++
			}
		}
		self := ""
		if name == "s1" {
			self = ` \*`
		}
		member := regexp.MustCompile(`(?m)^` + name + self + ` +alive +` + regexp.QuoteMeta(n.Server.GRPCAddr()) + ` +` +
			regexp.QuoteMeta(n.Ring.GossipAddr()) + ` +` + strconv.Itoa(n1.Ring.Partitions()[name]) + ` +` + strconv.Itoa(loaded) + ` +` + strconv.Itoa(loaded) + ` *$`)
		if !member.MatchString(text) {
			t.Errorf("no member line %s", member)
		}
		if want := "\n" + name + ": " + strconv.Itoa(loaded) + " loaded, " + strconv.Itoa(loaded) + " owned\n"; !strings.Contains(text, want) {
			t.Errorf("no node line %q", want)
		}
	}
	for id := range owners {
		show := regexp.MustCompile(`(?m)^  ` + id + ` +[1-9][0-9]* +[0-9.]+m?s +yes *$`)
		if !show.MatchString(text) {
			t.Errorf("no owned-show line for %s (%s)", id, show)
		}
	}
	if strings.Contains(text, "error:") {
		t.Errorf("an error is printed")
	}

	t.Run("token from a file, JSON", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "admin-token")
		if err := os.WriteFile(file, []byte(tc.AdminToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := statusTo(context.Background(), []string{"--addr", n0.Server.GRPCAddr(), "--admin-token-file", file, "--json"}, &out); err != nil {
			t.Fatalf("status: %v", err)
		}
		var resp struct {
			Self    string
			Members []struct{ Name, State string }
			Nodes   []struct{ Name string }
		}
		if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
			t.Fatalf("JSON: %v\n%s", err, out.String())
		}
		if resp.Self != "s0" || len(resp.Members) != 2 || len(resp.Nodes) != 2 || resp.Members[0].State != "MEMBER_STATE_ALIVE" {
			t.Errorf("JSON answer %+v", resp)
		}
	})

	t.Run("token from the environment, local only", func(t *testing.T) {
		t.Setenv("BOXOFFICE_ADMIN_TOKEN", tc.AdminToken)
		t.Setenv("BOXOFFICE_ADDR", n0.Server.GRPCAddr())
		var out bytes.Buffer
		if err := statusTo(context.Background(), []string{"--local"}, &out); err != nil {
			t.Fatalf("status: %v", err)
		}
		if text := out.String(); !strings.Contains(text, "\ns0: ") || strings.Contains(text, "\ns1: ") {
			t.Errorf("local only on s0 prints other nodes, or not s0:\n%s", text)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		var out bytes.Buffer
		err := statusTo(context.Background(), []string{"--addr", n0.Server.GRPCAddr(), "--admin-token", "nope"}, &out)
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("status with a wrong token: %v, want Unauthenticated", err)
		}
	})
}

// TestStatusAlone: `status` against a node without a ring prints it as the
// only member.
func TestStatusAlone(t *testing.T) {
	url := pgclustertest.Shared(t)
	tc.Migrate(t, url)
	n := tc.StartNode(t, url, tc.Options{NodeID: "solo"})
	var out bytes.Buffer
	if err := statusTo(context.Background(), []string{"--addr", n.Server.GRPCAddr(), "--admin-token", tc.AdminToken}, &out); err != nil {
		t.Fatalf("status: %v", err)
	}
	text := out.String()
	member := regexp.MustCompile(`(?m)^solo \* +alive +` + regexp.QuoteMeta(n.Server.GRPCAddr()) + ` +- +0 +0 +0 *$`)
	if !strings.Contains(text, "solo is alone (no ring)") || !member.MatchString(text) {
		t.Errorf("output lacks the heading or the member line %s:\n%s", member, text)
	}
}

// TestStatusBadFlags: bad flags and an unreachable node are errors.
func TestStatusBadFlags(t *testing.T) {
	t.Setenv("BOXOFFICE_ADMIN_TOKEN", "")
	t.Setenv("BOXOFFICE_ADMIN_TOKEN_FILE", "")
	t.Setenv("BOXOFFICE_ADDR", "")
	file := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(file, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "not defined"},
		{"no address", []string{"--admin-token", "t"}, "--addr is required"},
		{"stray argument", []string{"--addr", "127.0.0.1:1", "extra"}, "unexpected arguments"},
		{"zero timeout", []string{"--addr", "127.0.0.1:1", "--timeout", "0s"}, "--timeout must be positive"},
		{"negative shows", []string{"--addr", "127.0.0.1:1", "--shows", "-1"}, "--shows must not be negative"},
		{"token and file", []string{"--addr", "127.0.0.1:1", "--admin-token", "t", "--admin-token-file", file}, "give one"},
		{"empty token file", []string{"--addr", "127.0.0.1:1", "--admin-token-file", file}, "is empty"},
		{"missing token file", []string{"--addr", "127.0.0.1:1", "--admin-token-file", file + ".missing"}, "no such file"},
		{"nobody there", []string{"--addr", "127.0.0.1:1", "--admin-token", "t", "--timeout", "2s"}, "Unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			err := statusTo(context.Background(), c.args, &out)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("status %q: %v, want an error containing %q", c.args, err, c.want)
			}
			if out.Len() > 0 {
				t.Errorf("status %q printed %q", c.args, out.String())
			}
		})
	}
}
