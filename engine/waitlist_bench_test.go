package engine_test

import (
	"context"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// BenchmarkJoinWaitlistGRPC measures JoinWaitlist end to end: 256
// concurrent callers, each join a new user wanting one seat of a show whose
// seats are all held, answered after its commit. An op is one join.
func BenchmarkJoinWaitlistGRPC(b *testing.B) {
	n, _, _ := benchNode(b, 1)
	n.CreateShow(b, "wjoin", 1, 10, 0)
	seats := make([]string, 10)
	for i := range seats {
		seats[i] = tc.SeatID(0, i+1)
	}
	if _, err := hold(b, n, "wjoin", "holder", seats...); err != nil {
		b.Fatal(err)
	}
	ctx := tc.Ctx(context.Background())
	st := drive(b, benchCallers, func(_, i int) (bool, error) {
		_, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: "wjoin", UserId: "w" + strconv.Itoa(i), SeatsWanted: 1})
		return false, err
	})
	st.report(b, "joins")
}

// BenchmarkWaitlistTurnLatency measures, on an otherwise idle node, the
// time from a seat coming free to the turn reaching the waiting user's
// WatchWaitlist stream: from the moment ReleaseHold is sent (so the
// release's own commit is included, then the hand-over's commit and the
// stream's wake-up and send) to the stream's TURN message. Each op: a user
// joins, opens its stream, a one-seat hold is released, the turn arrives,
// the user takes it; the seat is then released and held again for the next
// op, untimed.
func BenchmarkWaitlistTurnLatency(b *testing.B) {
	n, _, _ := benchNode(b, 1)
	n.CreateShow(b, "wturn", 1, 2, 0)
	ctx := tc.Ctx(context.Background())
	if _, err := hold(b, n, "wturn", "blocker", "A-2"); err != nil { // A-1 is the only seat that comes free
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		h, err := hold(b, n, "wturn", "holder", "A-1")
		if err != nil {
			b.Fatal(err)
		}
		user := "t" + strconv.Itoa(i)
		join(b, n, "wturn", user, 1)
		sctx, cancel := context.WithCancel(ctx)
		stream, err := n.Waitlist.WatchWaitlist(sctx, &pb.WatchWaitlistRequest{ShowId: "wturn", UserId: user})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // the entry as it is: waiting
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "holder"}); err != nil {
			b.Fatal(err)
		}
		for {
			msg, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if msg.GetEntry().GetState() == pb.WaitlistState_WAITLIST_STATE_TURN {
				break
			}
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		cancel()
		took, err := hold(b, n, "wturn", user, "A-1")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: took.GetHoldId(), UserId: user}); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(percentile(lat, 0.50), "p50-µs")
	b.ReportMetric(percentile(lat, 0.99), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkJoinQueueGRPC measures JoinQueue end to end: 256 concurrent
// callers, each a new user joining a waiting room that does not open
// during the run, answered after its commit. An op is one join.
// cpu-us/join is this process's CPU per join, the test client's and the
// engine's together (PostgreSQL's apart): an upper bound of the engine's.
func BenchmarkJoinQueueGRPC(b *testing.B) {
	n, _, _ := benchNode(b, 1)
	req := tc.ShowRequest("qjoin", 1, 10, 0)
	req.WaitingRoom = &pb.WaitingRoom{OpensAt: timestamppb.New(time.Now().Add(time.Hour)), AdmitPerSecond: 100}
	if _, err := n.Catalog.CreateShow(tc.AdminCtx(context.Background()), req); err != nil {
		b.Fatal(err)
	}
	ctx := tc.Ctx(context.Background())
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before) //nolint:errcheck // RUSAGE_SELF cannot fail
	st := drive(b, benchCallers, func(_, i int) (bool, error) {
		_, err := n.Room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: "qjoin", UserId: "q" + strconv.Itoa(i)})
		return false, err
	})
	syscall.Getrusage(syscall.RUSAGE_SELF, &after) //nolint:errcheck // as above
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/join")
	st.report(b, "joins")
}
