package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/boxoffice/boxoffice/persistence"
)

// roomM is a mutation of the waiting room alone.
func roomM(epoch int64, show string, c persistence.RoomChange) persistence.Mutation {
	return persistence.Mutation{Kind: persistence.Room, Epoch: epoch, ShowID: show, Room: &c}
}

// queued is a room entry of a user who joined at t0+seq seconds.
func queued(user string, seq int64) persistence.RoomEntry {
	return persistence.RoomEntry{UserID: user, Seq: seq, JoinedAt: t0.Add(time.Duration(seq) * time.Second)}
}

// admitted is e admitted at at for ten minutes.
func admitted(e persistence.RoomEntry, at time.Time) persistence.RoomEntry {
	e.AdmittedAt, e.Deadline = at, at.Add(10*time.Minute)
	return e
}

func checkRoom(t *testing.T, s *persistence.Store, show string, want []persistence.RoomEntry, wantEnded string) {
	t.Helper()
	snap, err := s.LoadShow(context.Background(), show)
	if err != nil {
		t.Fatalf("load %s: %v", show, err)
	}
	for i := range snap.Room {
		e := &snap.Room[i]
		e.JoinedAt = e.JoinedAt.UTC()
		if !e.AdmittedAt.IsZero() {
			e.AdmittedAt, e.Deadline = e.AdmittedAt.UTC(), e.Deadline.UTC()
		}
	}
	if len(snap.Room) == 0 && len(want) == 0 {
		snap.Room, want = nil, nil
	}
	if !reflect.DeepEqual(snap.Room, want) || snap.RoomEnded != wantEnded {
		t.Errorf("room of %s\n got %+v, ended %q\nwant %+v, ended %q", show, snap.Room, snap.RoomEnded, want, wantEnded)
	}
}

// TestRoomRoundTrip writes queued and admitted users and a room's end;
// LoadShow returns them by Seq with every field, and the last change of a
// row in one transaction wins.
func TestRoomRoundTrip(t *testing.T) {
	s := openStore(t, newDB(t), nil)
	sh := testShow("s")
	sh.Room = &persistence.WaitingRoom{OpensAt: t0, AdmitPerSecond: 2, MaxActive: 3, ShoppingWindow: 10 * time.Minute}
	if _, err := s.CreateShow(context.Background(), sh); err != nil {
		t.Fatal(err)
	}
	e, err := s.AcquireShow(context.Background(), "s")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetShow(context.Background(), "s"); err != nil || got.Room == nil || !got.Room.OpensAt.Equal(t0) || *got.Room != (persistence.WaitingRoom{OpensAt: got.Room.OpensAt, AdmitPerSecond: 2, MaxActive: 3, ShoppingWindow: 10 * time.Minute}) {
		t.Fatalf("the show's room: %+v, %v", got.Room, err)
	}
	ownShow(t, s, "other")
	if got := persistence.Room.String(); got != "ROOM" {
		t.Fatalf("Room.String() = %q", got)
	}
	checkRoom(t, s, "s", nil, "")

	a, b, c := queued("a", 1), queued("b", 2), queued("c", 3)
	write(t, s, roomM(e, "s", persistence.RoomChange{Put: []persistence.RoomEntry{c, a}}))
	write(t, s, roomM(e, "s", persistence.RoomChange{Put: []persistence.RoomEntry{b},
		Events: []persistence.WaitEvent{{UserID: "b", Kind: "ROOM_JOINED", At: t0}}}))
	checkRoom(t, s, "s", []persistence.RoomEntry{a, b, c}, "")
	checkRoom(t, s, "other", nil, "")
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservation_events WHERE kind = 'ROOM_JOINED' AND user_id = 'b'`); n != 1 {
		t.Errorf("%d ROOM_JOINED events of b, want 1", n)
	}

	// Admissions replace rows; a leave deletes one; in one batch the last
	// change of a row wins.
	a = admitted(a, t0.Add(time.Minute))
	ps := enqueueAll(t, s,
		roomM(e, "s", persistence.RoomChange{Put: []persistence.RoomEntry{a, b}}),
		roomM(e, "s", persistence.RoomChange{Delete: []string{"b", "nobody"}}),
	)
	for _, p := range ps {
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	checkRoom(t, s, "s", []persistence.RoomEntry{a, c}, "")

	// The operator's brake: the rate and cap change, in shows.
	write(t, s, roomM(e, "s", persistence.RoomChange{Rate: &persistence.WaitingRoom{AdmitPerSecond: 0.5, MaxActive: 7}}))
	var rate float64
	var maxActive int
	if err := s.Pool().QueryRow(context.Background(), `SELECT room_admit_per_second, room_max_active FROM shows WHERE show_id = 's'`).Scan(&rate, &maxActive); err != nil || rate != 0.5 || maxActive != 7 {
		t.Errorf("after the brake: rate %v, cap %d, %v", rate, maxActive, err)
	}

	// A room's end, with its queue gone.
	write(t, s, roomM(e, "s", persistence.RoomChange{Delete: []string{"c"}, End: persistence.RoomSoldOut}))
	checkRoom(t, s, "s", []persistence.RoomEntry{a}, persistence.RoomSoldOut)
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservations`) + count(t, s.Pool(), `SELECT count(*) FROM seat_claims`); n != 0 {
		t.Fatalf("room mutations wrote %d reservation rows", n)
	}
}

// TestRoomFencedAndRefused: a room change at a stale epoch gets
// ErrNotOwner, a row the database refuses (an admission without its
// deadline, an unknown end) ErrConflict; neither changes anything.
func TestRoomFencedAndRefused(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	stale := ownShow(t, s, "s")
	a := queued("a", 1)
	write(t, s, roomM(stale, "s", persistence.RoomChange{Put: []persistence.RoomEntry{a}}))
	current, err := s.AcquireShow(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(roomM(stale, "s", persistence.RoomChange{Delete: []string{"a"}, End: persistence.RoomClosed})); !errors.Is(err, persistence.ErrNotOwner) {
		t.Errorf("a stale write: %v, want ErrNotOwner", err)
	}
	half := queued("b", 2)
	half.AdmittedAt = t0
	for _, m := range []persistence.Mutation{
		roomM(current, "s", persistence.RoomChange{Put: []persistence.RoomEntry{half}}),
		roomM(current, "s", persistence.RoomChange{End: "MAYBE"}),
	} {
		if err := s.Write(m); !errors.Is(err, persistence.ErrConflict) {
			t.Errorf("%+v: %v, want ErrConflict", m.Room, err)
		}
	}
	checkRoom(t, s, "s", []persistence.RoomEntry{a}, "")
}

// TestRoomQueuesBesideItsShow: a show's waiting room changes wait in a
// queue of their own, so a crowd joining an on-sale does not delay the
// show's holds: a hold queued behind three batches of joins commits in a
// transaction that began before the last of them.
func TestRoomQueuesBesideItsShow(t *testing.T) {
	url := newDB(t)
	s := openStore(t, url, nil)
	epoch := ownShow(t, s, "crowd")
	var ms []persistence.Mutation
	for i := range 3 * 1024 { // three batches of the default MaxBatch
		u := fmt.Sprint("q", i)
		ms = append(ms, roomM(epoch, "crowd", persistence.RoomChange{Put: []persistence.RoomEntry{queued(u, int64(i+1))},
			Events: []persistence.WaitEvent{{UserID: u, Kind: "ROOM_JOINED", At: t0}}}))
	}
	ps := enqueueAll(t, s, append(ms, holdM(epoch, "crowd", "crowd:h1", "shopper", t0, "A-1"))...)
	for i, err := range waitAll(ps) {
		if err != nil {
			t.Fatalf("mutation %d: %v", i, err)
		}
	}
	ctx := context.Background()
	var holdTx, lastJoinTx int64
	if err := s.Pool().QueryRow(ctx, `SELECT xmin::text::bigint FROM reservations WHERE reservation_id = 'crowd:h1'`).Scan(&holdTx); err != nil {
		t.Fatal(err)
	}
	if err := s.Pool().QueryRow(ctx, `SELECT max(xmin::text::bigint) FROM room_entries WHERE show_id = 'crowd'`).Scan(&lastJoinTx); err != nil {
		t.Fatal(err)
	}
	if holdTx >= lastJoinTx {
		t.Fatalf("the hold committed in transaction %d, the last joins in %d: it waited for the room's queue", holdTx, lastJoinTx)
	}
}
