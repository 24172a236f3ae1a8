package engine_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// scrape reads a node's /metrics: each sample line's value by its
// "name{labels}" text.
func scrape(t testing.TB, n *tc.Node) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.Server.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sample returns the value of the metric name whose labels include every
// one of labels (each `key="value"`), and whether there is one.
func sample(m map[string]float64, name string, labels ...string) (float64, bool) {
	for k, v := range m {
		metric, rest, _ := strings.Cut(k, "{")
		if metric != name {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all {
			return v, true
		}
	}
	return 0, false
}

// TestMetrics drives a hold, a refused hold, a confirm and a seat-map
// read, and finds each counted on the node's /metrics, with the writer's
// batches and the loaded show; /healthz and /readyz answer 200.
func TestMetrics(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, "m", 2, 10, 0)
	ctx := tc.Ctx(context.Background())
	if _, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "m"}); err != nil {
		t.Fatal(err)
	}
	h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "m", UserId: "u1", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "m", UserId: "u2", SeatIds: []string{"A-2"}})
	if status.Code(err) != codes.AlreadyExists {
		t.Fatalf("hold of a held seat: %v", err)
	}
	if _, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: "u1", PaymentRef: "p"}); err != nil {
		t.Fatal(err)
	}

	m := scrape(t, n)
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"boxoffice_rpc_requests_total", []string{`method="HoldSeats"`, `code="OK"`}, 1},
		{"boxoffice_rpc_requests_total", []string{`method="HoldSeats"`, `code="AlreadyExists"`}, 1},
		{"boxoffice_rpc_requests_total", []string{`method="GetSeatMap"`, `code="OK"`}, 1},
		{"boxoffice_rpc_duration_seconds_count", []string{`method="ConfirmHold"`}, 1},
		{"boxoffice_reservation_ops_total", []string{`op="hold"`, `result="ok"`}, 1},
		{"boxoffice_reservation_ops_total", []string{`op="hold"`, `result="seat_taken"`}, 1},
		{"boxoffice_reservation_ops_total", []string{`op="confirm"`, `result="ok"`}, 1},
		{"boxoffice_writer_batch_mutations_count", nil, 2},
		{"boxoffice_writer_batch_mutations_sum", nil, 2},
		{"boxoffice_writer_commit_seconds_count", nil, 2},
		{"boxoffice_shows_loaded", nil, 1},
	} {
		if v, ok := sample(m, c.name, c.labels...); !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
	for _, name := range []string{"boxoffice_writer_failed_mutations_total", "boxoffice_writer_batch_errors_total"} {
		if v, ok := sample(m, name); !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0", name, v, ok)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + n.Server.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
		}
	}
}

// TestPipelineMetrics drives Pipeline calls of each kind to an answer
// (granted, refused by the rules, refused before they reach the show) and
// finds each counted by method and code, its latency observed, its hold or
// release counted by result, and the stream's messages counted.
func TestPipelineMetrics(t *testing.T) {
	const show = "pm"
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, show, 2, 10, 0)
	p := openPipe(t, n.Reservations)
	p.send(pipeHold(1, show, "u1", "", "A-1"))
	p.waitFor(1)
	h := p.one(1).GetHold()
	if h == nil {
		t.Fatalf("hold: %v", p.one(1))
	}
	p.send(
		pipeHold(2, show, "u2", "", "A-1"),
		pipeRelease(3, h.GetHoldId(), "u2"),
		&pb.PipelineCall{CallId: 4},
	)
	p.waitFor(4)
	p.send(pipeRelease(5, h.GetHoldId(), "u1"))
	p.waitFor(5)
	if err := p.end(); err != nil {
		t.Fatal(err)
	}

	m := scrape(t, n)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"boxoffice_rpc_requests_total", []string{`method="Pipeline.HoldSeats"`, `code="OK"`}, 1},
		{"boxoffice_rpc_requests_total", []string{`method="Pipeline.HoldSeats"`, `code="AlreadyExists"`}, 1},
		{"boxoffice_rpc_requests_total", []string{`method="Pipeline.ReleaseHold"`, `code="PermissionDenied"`}, 1},
		{"boxoffice_rpc_requests_total", []string{`method="Pipeline.ReleaseHold"`, `code="OK"`}, 1},
		{"boxoffice_rpc_requests_total", []string{`method="Pipeline"`, `code="InvalidArgument"`}, 1},
		{"boxoffice_rpc_duration_seconds_count", []string{`method="Pipeline.HoldSeats"`}, 2},
		{"boxoffice_rpc_duration_seconds_count", []string{`method="Pipeline.ReleaseHold"`}, 2},
		{"boxoffice_reservation_ops_total", []string{`op="hold"`, `result="ok"`}, 1},
		{"boxoffice_reservation_ops_total", []string{`op="hold"`, `result="seat_taken"`}, 1},
		{"boxoffice_reservation_ops_total", []string{`op="release"`, `result="ok"`}, 1},
		{"boxoffice_pipeline_messages_total", []string{`direction="received"`}, 3},
	} {
		if v, ok := sample(m, c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
}

// TestWaitlistMetrics checks the waitlist's collectors: joins by result,
// turns, ends by reason, the users waiting and the longest list (gauges
// the expiry loop updates), and the wait from join to turn.
func TestWaitlistMetrics(t *testing.T) {
	n, _ := newNode(t, tc.Options{})
	n.CreateShow(t, "wm", 1, 2, 0)
	ctx := tc.Ctx(context.Background())
	h, err := hold(t, n, "wm", "h", "A-1", "A-2")
	if err != nil {
		t.Fatal(err)
	}
	join(t, n, "wm", "w1", 1)
	join(t, n, "wm", "w2", 1)
	join(t, n, "wm", "w3", 2)
	if _, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "wm", UserId: "w4", SeatsWanted: 3}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("join for 3 of 2 seats: %v", err)
	}
	if _, err := n.Waitlist.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: "wm", UserId: "w3"}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 5*time.Second, "the gauges count 2 waiting users", func() bool {
		v, _ := sample(scrape(t, n), "boxoffice_waitlist_users")
		l, _ := sample(scrape(t, n), "boxoffice_waitlist_longest")
		return v == 2 && l == 2
	})
	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "h"}); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, n)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{`event="join"`, `result="ok"`}, 3},
		{[]string{`event="join"`, `result="sold_out"`}, 1},
		{[]string{`event="left"`}, 1},
		{[]string{`event="turn"`}, 2},
	} {
		if v, _ := sample(m, "boxoffice_waitlist_events_total", c.labels...); v != c.want {
			t.Errorf("boxoffice_waitlist_events_total%v = %v, want %v", c.labels, v, c.want)
		}
	}
	if v, _ := sample(m, "boxoffice_waitlist_wait_seconds_count"); v != 2 {
		t.Errorf("boxoffice_waitlist_wait_seconds_count = %v, want 2", v)
	}
}
