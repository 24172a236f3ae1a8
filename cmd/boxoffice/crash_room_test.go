package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// Shape of the waiting room crash test.
const (
	roomCrashShow    = "crash-room"
	roomCrashUsers   = 5000
	roomCrashCap     = 100 // admitted at once, then the cap holds everyone else
	roomCrashWorkers = 32
	roomCrashTimeout = 90 * time.Second
)

// roomCrashEntry is what the test compares of a user's entry.
type roomCrashEntry struct {
	State    pb.QueueState
	Seq      int64
	Position int32
	Deadline time.Time
	Token    string
}

// TestCrashWaitingRoom is the acceptance test of the waiting room's
// durability: 5,000 users join a room that admits fast under a cap of 100;
// once 100 are admitted, the built binary is killed with kill -9 and
// started again on the same database. Then every queued user keeps their
// sequence and position, every admission its deadline (and token), nobody
// is admitted twice or anew beyond the cap, and an admitted user's token
// from before the crash still holds seats.
func TestCrashWaitingRoom(t *testing.T) {
	bin := buildBinary(t)
	url := pgclustertest.Shared(t)
	key := []byte(tc.AdmissionKey())
	first := startServe(t, bin, serveOptions{DatabaseURL: url, NodeID: "crash-room-1", Migrate: true, AdmissionKey: key})
	conn := dialServe(t, first)
	req := tc.ShowRequest(roomCrashShow, 10, 50, time.Hour)
	req.WaitingRoom = &pb.WaitingRoom{OpensAt: timestamppb.Now(), AdmitPerSecond: 1000, MaxActiveShoppers: roomCrashCap}
	actx, cancel := context.WithTimeout(tc.AdminCtx(t.Context()), roomCrashTimeout)
	defer cancel()
	if _, err := pb.NewCatalogServiceClient(conn).CreateShow(actx, req); err != nil {
		t.Fatalf("CreateShow: %v", err)
	}
	ctx, cancel := context.WithTimeout(tc.Ctx(t.Context()), roomCrashTimeout)
	defer cancel()
	room := pb.NewWaitingRoomServiceClient(conn)
	users := make([]string, roomCrashUsers)
	for i := range users {
		users[i] = fmt.Sprintf("room-u%04d", i)
	}
	if err := wlParallel(len(users), roomCrashWorkers, func(i int) error {
		r, err := room.JoinQueue(ctx, &pb.JoinQueueRequest{ShowId: roomCrashShow, UserId: users[i]})
		if err != nil {
			return fmt.Errorf("JoinQueue %s: %v", users[i], err)
		}
		if r.GetEntry().GetSequence() <= 0 || r.GetExisted() {
			return fmt.Errorf("JoinQueue %s: %v", users[i], r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	snapshot := func(room pb.WaitingRoomServiceClient) map[string]roomCrashEntry {
		t.Helper()
		out := make(map[string]roomCrashEntry, len(users))
		entries := make([]roomCrashEntry, len(users))
		if err := wlParallel(len(users), roomCrashWorkers, func(i int) error {
			r, err := room.PollQueue(ctx, &pb.PollQueueRequest{ShowId: roomCrashShow, UserId: users[i]})
			if err != nil {
				return fmt.Errorf("PollQueue %s: %v", users[i], err)
			}
			e := r.GetEntry()
			entries[i] = roomCrashEntry{State: e.GetState(), Seq: e.GetSequence(), Position: e.GetPosition(), Token: e.GetAdmissionToken()}
			if e.GetAdmissionDeadline() != nil {
				entries[i].Deadline = e.GetAdmissionDeadline().AsTime()
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for i, u := range users {
			out[u] = entries[i]
		}
		return out
	}
	admittedOf := func(s map[string]roomCrashEntry) []int64 {
		var seqs []int64
		for _, e := range s {
			if e.State == pb.QueueState_QUEUE_STATE_ADMITTED {
				seqs = append(seqs, e.Seq)
			}
		}
		slices.Sort(seqs)
		return seqs
	}
	var before map[string]roomCrashEntry
	pollFor(t, roomCrashTimeout, func() error {
		before = snapshot(room)
		if n := len(admittedOf(before)); n != roomCrashCap {
			return fmt.Errorf("%d admitted, want %d", n, roomCrashCap)
		}
		return nil
	})
	// The admitted are the first 100 in join order; the rest queue behind
	// them in order.
	if got := admittedOf(before); got[len(got)-1] != roomCrashCap {
		t.Fatalf("admitted sequences %v..%v, want 1..%d", got[0], got[len(got)-1], roomCrashCap)
	}
	for u, e := range before {
		if e.State == pb.QueueState_QUEUE_STATE_QUEUED && int64(e.Position) != e.Seq-roomCrashCap-1 {
			t.Fatalf("%s queued with sequence %d at position %d", u, e.Seq, e.Position)
		}
	}

	first.Kill(t)
	second := startServe(t, bin, serveOptions{DatabaseURL: url, NodeID: "crash-room-2", AdmissionKey: key})
	conn2 := dialServe(t, second)
	after := snapshot(pb.NewWaitingRoomServiceClient(conn2))
	changed := 0
	for u, b := range before {
		a := after[u]
		if a.State != b.State || a.Seq != b.Seq || a.Position != b.Position || !a.Deadline.Equal(b.Deadline) || a.Token != b.Token {
			if changed < 5 {
				t.Errorf("%s after the crash: %+v, before %+v", u, a, b)
			}
			changed++
		}
	}
	if changed > 0 {
		t.Fatalf("%d of %d users' entries changed across the crash", changed, len(users))
	}
	var holder string
	for u, e := range after {
		if e.State == pb.QueueState_QUEUE_STATE_ADMITTED {
			holder = u
			break
		}
	}
	if _, err := pb.NewReservationServiceClient(conn2).HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: roomCrashShow, UserId: holder, SeatIds: []string{"A-1"}, AdmissionToken: after[holder].Token}); err != nil {
		t.Fatalf("%s holds with the token from before the crash: %v", holder, err)
	}
}
