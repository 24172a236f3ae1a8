package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// statusConfig is what `status` needs, from flags and environment.
type statusConfig struct {
	Addr       string
	AdminToken string // empty: call without a token (a node serving --insecure)
	Timeout    time.Duration
	Shows      int // owned shows printed per node; the rest are counted
	JSON       bool
	LocalOnly  bool
}

// parseStatus reads status's flags, each defaulting to its BOXOFFICE_*
// environment variable as serve's do.
func parseStatus(args []string) (statusConfig, error) {
	env := func(name, def string) string {
		if v, ok := os.LookupEnv("BOXOFFICE_" + name); ok {
			return v
		}
		return def
	}
	var c statusConfig
	var adminTokenFile string
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.StringVar(&c.Addr, "addr", env("ADDR", "127.0.0.1:7070"), "gRPC address (host:port) of any node of the cluster [BOXOFFICE_ADDR]")
	fs.StringVar(&c.AdminToken, "admin-token", env("ADMIN_TOKEN", ""), "the nodes' admin token [BOXOFFICE_ADMIN_TOKEN]")
	fs.StringVar(&adminTokenFile, "admin-token-file", env("ADMIN_TOKEN_FILE", ""), "file holding the admin token, instead of --admin-token [BOXOFFICE_ADMIN_TOKEN_FILE]")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "deadline of the call")
	fs.IntVar(&c.Shows, "shows", 20, "owned shows to print per node (0: none); the rest are counted")
	fs.BoolVar(&c.JSON, "json", false, "print the answer as JSON instead of tables")
	fs.BoolVar(&c.LocalOnly, "local", false, "ask the node for itself only, not the other members")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("status: unexpected arguments %q", fs.Args())
	}
	var err error
	if c.AdminToken, err = secretFromFile("admin-token", c.AdminToken, adminTokenFile); err != nil {
		return c, fmt.Errorf("status: %w", err)
	}
	switch {
	case c.Addr == "":
		return c, errors.New("status: --addr is required")
	case c.Timeout <= 0:
		return c, errors.New("status: --timeout must be positive")
	case c.Shows < 0:
		return c, errors.New("status: --shows must not be negative")
	}
	return c, nil
}

func runStatus(ctx context.Context, args []string) error {
	return statusTo(ctx, args, os.Stdout)
}

// statusTo runs `status` with args, printing to w. It returns an error when
// the flags are bad or the call fails.
func statusTo(ctx context.Context, args []string, w io.Writer) error {
	c, err := parseStatus(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	resp, err := callClusterStatus(ctx, c)
	if err != nil {
		return err
	}
	if c.JSON {
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(resp)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	return printStatus(w, resp, c.Shows)
}

func callClusterStatus(ctx context.Context, c statusConfig) (*pb.ClusterStatusResponse, error) {
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if c.AdminToken != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.AdminToken)
	}
	resp, err := pb.NewAdminServiceClient(conn).ClusterStatus(ctx, &pb.ClusterStatusRequest{LocalOnly: c.LocalOnly})
	if err != nil {
		if status.Code(err) == codes.Unauthenticated && c.AdminToken == "" {
			return nil, fmt.Errorf("status: %s: %w (give --admin-token, --admin-token-file or BOXOFFICE_ADMIN_TOKEN)", c.Addr, err)
		}
		return nil, fmt.Errorf("status: %s: %w", c.Addr, err)
	}
	return resp, nil
}

// printStatus prints resp as a members table, then per node its owned
// shows (at most maxShows) and what went wrong asking it.
func printStatus(w io.Writer, resp *pb.ClusterStatusResponse, maxShows int) error {
	ew := &errWriter{w: w}
	nodes := map[string]*pb.NodeStatus{}
	for _, ns := range resp.GetNodes() {
		nodes[ns.GetName()] = ns
	}
	if resp.GetPartitionCount() > 0 {
		fmt.Fprintf(ew, "cluster as %s sees it: ring version %d, %d partitions, %d members\n\n",
			resp.GetSelf(), resp.GetRingVersion(), resp.GetPartitionCount(), len(resp.GetMembers()))
	} else {
		fmt.Fprintf(ew, "%s is alone (no ring): it owns every show\n\n", resp.GetSelf())
	}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tSTATE\tGRPC\tGOSSIP\tPARTITIONS\tLOADED\tOWNED")
	for _, m := range resp.GetMembers() {
		loaded, owned := "-", "-"
		if ns := nodes[m.GetName()]; ns != nil {
			owned = fmt.Sprint(ns.GetOwnedTotal())
			if ns.GetReached() {
				loaded = fmt.Sprint(ns.GetLoadedTotal())
			}
		}
		name := m.GetName()
		if name == resp.GetSelf() {
			name += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", name, stateName(m.GetState()), dash(m.GetGrpcAddr()), dash(m.GetGossipAddr()), m.GetPartitions(), loaded, owned)
	}
	tw.Flush()

	for _, ns := range resp.GetNodes() {
		if ns.GetReached() {
			fmt.Fprintf(ew, "\n%s: %d loaded, %d owned", ns.GetName(), ns.GetLoadedTotal(), ns.GetOwnedTotal())
		} else {
			fmt.Fprintf(ew, "\n%s: not reached, %d owned", ns.GetName(), ns.GetOwnedTotal())
		}
		if ns.GetTruncated() {
			fmt.Fprint(ew, " (lists truncated by the node)")
		}
		fmt.Fprintln(ew)
		if e := ns.GetError(); e != "" {
			fmt.Fprintf(ew, "  error: %s\n", e)
		}
		loaded := map[string]bool{}
		for _, id := range ns.GetLoadedShows() {
			loaded[id] = true
		}
		owned := ns.GetOwnedShows()
		if len(owned) > 0 && maxShows > 0 {
			tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  SHOW\tEPOCH\tLEASE\tLOADED")
			for _, o := range owned[:min(len(owned), maxShows)] {
				lease := "expired"
				if d := o.GetLeaseRemaining().AsDuration(); d > 0 {
					lease = d.Round(time.Millisecond).String()
				}
				isLoaded := "-" // unknown: the node did not answer
				if ns.GetReached() {
					isLoaded = yes(loaded[o.GetShowId()])
				}
				fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", o.GetShowId(), o.GetEpoch(), lease, isLoaded)
			}
			tw.Flush()
		}
		if more := int(ns.GetOwnedTotal()) - min(len(owned), maxShows); more > 0 && maxShows > 0 {
			fmt.Fprintf(ew, "  ... and %d more owned\n", more)
		}
		// A loaded show without an ownership row naming the node is one it
		// is about to lose (or a row beyond the listed ones).
		var stray []string
		if int(ns.GetOwnedTotal()) == len(owned) {
			for _, id := range ns.GetLoadedShows() {
				if !slices.ContainsFunc(owned, func(o *pb.OwnedShow) bool { return o.GetShowId() == id }) {
					stray = append(stray, id)
				}
			}
		}
		if len(stray) > 0 {
			fmt.Fprintf(ew, "  loaded without an ownership row: %s\n", strings.Join(stray, ", "))
		}
	}
	return ew.err
}

func stateName(s pb.MemberState) string {
	name, ok := strings.CutPrefix(s.String(), "MEMBER_STATE_")
	if !ok {
		return s.String()
	}
	return strings.ToLower(name)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// errWriter keeps the first write error, so printing checks it once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
