package persistence_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/persistence"
)

// claimsOf returns the seat claims of a show: seat → reservation.
func claimsOf(t *testing.T, s *persistence.Store, show string) map[string]string {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT seat_id, reservation_id FROM seat_claims WHERE show_id = $1`, show)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var seat, id string
		if err := rows.Scan(&seat, &id); err != nil {
			t.Fatal(err)
		}
		out[seat] = id
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// eventKinds returns "<reservation> <kind>" of a show's events, oldest first.
func eventKinds(t *testing.T, s *persistence.Store, show string) []string {
	t.Helper()
	evs, err := s.ListEvents(context.Background(), persistence.EventFilter{ShowID: show, Limit: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, e := range evs {
		out[len(evs)-1-i] = e.ReservationID + " " + e.Kind
	}
	return out
}

func reservation(t *testing.T, s *persistence.Store, show, id string) persistence.Reservation {
	t.Helper()
	r, err := s.GetReservation(context.Background(), show, id)
	if err != nil {
		t.Fatalf("reservation %s: %v", id, err)
	}
	return r
}

// TestWriterMutations writes each kind of mutation and checks the rows it
// leaves, then what LoadShow rebuilds from them.
func TestWriterMutations(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	e := ownShow(t, s, "s")
	ownShow(t, s, "other")

	r1 := holdM(e, "s", "s:r1", "u1", t0, "A-1", "A-2")
	r1.ExpiresAt = t0.Add(3 * time.Minute)
	r1.IdempotencyKey, r1.Fingerprint = "k1", "fp1"
	write(t, s, r1)
	got := reservation(t, s, "s", "s:r1")
	want := persistence.Reservation{ShowID: "s", ID: "s:r1", UserID: "u1", Status: "HELD", SeatIDs: []string{"A-1", "A-2"},
		CreatedAt: t0, ExpiresAt: t0.Add(3 * time.Minute)}
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("hold times %v %v, want %v %v", got.CreatedAt, got.ExpiresAt, want.CreatedAt, want.ExpiresAt)
	}
	got.CreatedAt, got.ExpiresAt = want.CreatedAt, want.ExpiresAt
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hold row\n got %+v\nwant %+v", got, want)
	}
	if c := claimsOf(t, s, "s"); !reflect.DeepEqual(c, map[string]string{"A-1": "s:r1", "A-2": "s:r1"}) {
		t.Fatalf("claims after hold: %v", c)
	}

	r2 := holdM(e, "s", "s:r2", "u2", t0.Add(time.Second), "B-1")
	r2.ExpiresAt = t0.Add(time.Minute)
	r3 := holdM(e, "s", "s:r3", "u3", t0.Add(2*time.Second), "B-2", "B-3")
	r3.ExpiresAt = t0.Add(30 * time.Second) // booked: its expiry no longer counts
	r4 := holdM(e, "s", "s:r4", "u4", t0.Add(3*time.Second), "B-4")
	r5 := holdM(e, "s", "s:r5", "u5", t0.Add(4*time.Second), "B-5")
	r5.ExpiresAt = t0.Add(90 * time.Second)
	for _, m := range []persistence.Mutation{r2, r3, r4, r5} {
		write(t, s, m)
	}

	confirm := endM(persistence.Confirm, e, "s", "s:r3", "u3", t0.Add(10*time.Second), "B-2", "B-3")
	confirm.PaymentRef, confirm.IdempotencyKey, confirm.Fingerprint = "pay-3", "k3", "fp3"
	write(t, s, confirm)
	if r := reservation(t, s, "s", "s:r3"); r.Status != "BOOKED" || r.PaymentRef != "pay-3" ||
		!r.BookedAt.Equal(t0.Add(10*time.Second)) || !r.EndedAt.IsZero() {
		t.Fatalf("booked row %+v", r)
	}

	write(t, s, endM(persistence.Release, e, "s", "s:r4", "u4", t0.Add(20*time.Second), "B-4"))
	if r := reservation(t, s, "s", "s:r4"); r.Status != "RELEASED" || !r.EndedAt.Equal(t0.Add(20*time.Second)) || !r.BookedAt.IsZero() {
		t.Fatalf("released row %+v", r)
	}
	write(t, s, endM(persistence.Expire, e, "s", "s:r2", "u2", t0.Add(65*time.Second), "B-1"))
	if r := reservation(t, s, "s", "s:r2"); r.Status != "EXPIRED" || !r.EndedAt.Equal(t0.Add(65*time.Second)) {
		t.Fatalf("expired row %+v", r)
	}
	// A freed seat can be claimed again.
	write(t, s, holdM(e, "s", "s:r6", "u6", t0.Add(70*time.Second), "B-4"))
	r6end := endM(persistence.Release, e, "s", "s:r6", "u6", t0.Add(71*time.Second), "B-4")
	write(t, s, r6end)
	// Another show's seats are its own.
	write(t, s, holdM(ownShow(t, s, "third"), "third", "third:r1", "u1", t0, "A-1"))

	wantClaims := map[string]string{"A-1": "s:r1", "A-2": "s:r1", "B-2": "s:r3", "B-3": "s:r3", "B-5": "s:r5"}
	if c := claimsOf(t, s, "s"); !reflect.DeepEqual(c, wantClaims) {
		t.Fatalf("claims %v, want %v", c, wantClaims)
	}
	wantEvents := []string{"s:r1 HELD", "s:r2 HELD", "s:r3 HELD", "s:r4 HELD", "s:r5 HELD", "s:r3 BOOKED",
		"s:r4 RELEASED", "s:r2 EXPIRED", "s:r6 HELD", "s:r6 RELEASED"}
	if ev := eventKinds(t, s, "s"); !slices.Equal(ev, wantEvents) {
		t.Fatalf("events %v, want %v", ev, wantEvents)
	}
	// A hold's HELD event is its reservations row, not a row of its own.
	for table, want := range map[string]int{"reservations": 7, "seat_claims": 6, "audit_events": 11, "idempotency_keys": 2,
		"reservation_events WHERE kind = 'HELD'": 0} {
		if n := count(t, s.Pool(), `SELECT count(*) FROM `+table); n != want {
			t.Errorf("%s: %d rows, want %d", table, n, want)
		}
	}

	snap, err := s.LoadShow(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Show.ID != "s" || snap.Show.Capacity != 30 || len(snap.Show.Rows) != 2 {
		t.Fatalf("snapshot show %+v", snap.Show)
	}
	var live []string
	for _, r := range snap.Live {
		live = append(live, r.ID+" "+r.Status)
	}
	if want := []string{"s:r5 HELD", "s:r1 HELD", "s:r3 BOOKED"}; !slices.Equal(live, want) {
		t.Fatalf("live %v, want %v (HELD by expiry, then BOOKED)", live, want)
	}
	if b := snap.Live[2]; b.PaymentRef != "pay-3" || !b.BookedAt.Equal(t0.Add(10*time.Second)) || !slices.Equal(b.SeatIDs, []string{"B-2", "B-3"}) {
		t.Fatalf("live booking %+v", b)
	}
	idem := slices.Clone(snap.Idempotency)
	slices.SortFunc(idem, func(a, b persistence.IdempotencyRecord) int { return cmp.Compare(a.Key, b.Key) })
	for i, rec := range idem {
		if d := time.Since(rec.CreatedAt); d < -time.Minute || d > time.Minute {
			t.Fatalf("idempotency record %s created at %v, not about now", rec.Key, rec.CreatedAt)
		}
		idem[i].CreatedAt = time.Time{}
	}
	wantIdem := []persistence.IdempotencyRecord{{Key: "k1", Fingerprint: "fp1", ReservationID: "s:r1"}, {Key: "k3", Fingerprint: "fp3", ReservationID: "s:r3"}}
	if !reflect.DeepEqual(idem, wantIdem) {
		t.Fatalf("idempotency %+v, want %+v", idem, wantIdem)
	}
	if other, err := s.LoadShow(ctx, "other"); err != nil || len(other.Live)+len(other.Idempotency) != 0 {
		t.Fatalf("other show: %+v, %v", other, err)
	}
	if _, err := s.LoadShow(ctx, "nosuch"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("LoadShow of an unknown show: %v, want ErrNotFound", err)
	}
	if _, err := s.GetReservation(ctx, "other", "s:r1"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("GetReservation in the wrong show: %v, want ErrNotFound", err)
	}
}

// TestWriterStaleEpoch queues, in one batch, mutations of a show whose
// epoch has moved on, of a show nobody owns, and of a show whose epoch is
// current: only the last commits.
func TestWriterStaleEpoch(t *testing.T) {
	url := newDB(t)
	var obs batches
	s := openStore(t, url, func(c *persistence.Config) { c.Observer = obs.observe })
	stale := ownShow(t, s, "moved")
	if _, err := s.AcquireShow(context.Background(), "moved"); err != nil { // another node took it
		t.Fatal(err)
	}
	current := ownShow(t, s, "mine")
	if _, err := s.CreateShow(context.Background(), testShow("unowned")); err != nil {
		t.Fatal(err)
	}
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))

	var ps []*persistence.Pending
	for _, m := range []persistence.Mutation{
		holdM(stale, "moved", "moved:1", "u1", t0, "A-1"),
		holdM(current, "mine", "mine:1", "u1", t0, "A-1"),
		holdM(stale+2, "moved", "moved:2", "u1", t0, "A-2"), // a future epoch is as wrong as a past one
		holdM(1, "unowned", "unowned:1", "u1", t0, "A-1"),
		holdM(current, "mine", "mine:2", "u2", t0, "A-2"),
		holdM(current, "nosuch", "nosuch:1", "u2", t0, "A-2"),
	} {
		p, err := s.Enqueue(m)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	want := []error{persistence.ErrNotOwner, nil, persistence.ErrNotOwner, persistence.ErrNotOwner, nil, persistence.ErrNotOwner}
	for i, err := range waitAll(ps) {
		if !isErr(err, want[i]) {
			t.Errorf("mutation %d: %v, want %v", i, err, want[i])
		}
	}
	if sizes := obs.sizes(); !slices.Equal(sizes, []int{1, 6}) {
		t.Fatalf("batches of %v mutations, want [1 6]", sizes)
	}
	if b := obs.last(); b.Err != nil || b.Failed != 4 {
		t.Errorf("the batch's stats: error %v, %d failed; want nil, 4 fenced off", b.Err, b.Failed)
	}
	for _, show := range []string{"moved", "unowned", "nosuch"} {
		if n := count(t, s.Pool(), `SELECT (SELECT count(*) FROM reservations WHERE show_id = $1) +
			(SELECT count(*) FROM seat_claims WHERE show_id = $1) + (SELECT count(*) FROM reservation_events WHERE show_id = $1)`, show); n != 0 {
			t.Errorf("show %s has %d rows", show, n)
		}
	}
	if ev := eventKinds(t, s, "mine"); !slices.Equal(ev, []string{"mine:1 HELD", "mine:2 HELD"}) {
		t.Fatalf("events of mine: %v", ev)
	}
}

// TestWriterConflict queues, in one batch, mutations that contradict the
// database among good ones, and one of a show that moved: the batch fails,
// it is committed in parts, and only the culprits fail, with ErrConflict
// (the moved show's with ErrNotOwner).
func TestWriterConflict(t *testing.T) {
	url := newDB(t)
	var obs batches
	s := openStore(t, url, func(c *persistence.Config) { c.Observer = obs.observe })
	e, e2 := ownShow(t, s, "s"), ownShow(t, s, "s2")
	stale := ownShow(t, s, "moved")
	if _, err := s.AcquireShow(context.Background(), "moved"); err != nil { // another node took it
		t.Fatal(err)
	}
	r0 := holdM(e, "s", "s:r0", "u0", t0, "A-1")
	r0.IdempotencyKey, r0.Fingerprint = "k0", "fp0"
	write(t, s, r0)
	write(t, s, holdM(e, "s", "s:gone", "u0", t0, "A-9"))
	write(t, s, endM(persistence.Release, e, "s", "s:gone", "u0", t0.Add(time.Second), "A-9"))
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))

	reusedKey := holdM(e, "s", "s:r5", "u5", t0, "A-5")
	reusedKey.IdempotencyKey, reusedKey.Fingerprint = "k0", "fp5"
	cases := []struct {
		name string
		m    persistence.Mutation
		want error
	}{
		{"good hold", holdM(e, "s", "s:r1", "u1", t0, "A-2"), nil},
		{"seat claimed", holdM(e, "s", "s:r2", "u2", t0, "A-3", "A-1"), persistence.ErrConflict},
		{"good hold of another show", holdM(e2, "s2", "s2:r3", "u3", t0, "A-1"), nil},
		{"confirm of no reservation", endM(persistence.Confirm, e, "s", "s:nosuch", "u1", t0, "A-4"), persistence.ErrConflict},
		{"reservation ID taken", holdM(e, "s", "s:r0", "u4", t0, "A-4"), persistence.ErrConflict},
		{"idempotency key taken", reusedKey, persistence.ErrConflict},
		{"release of a released hold", endM(persistence.Release, e, "s", "s:gone", "u0", t0, "A-9"), persistence.ErrConflict},
		{"expire of no reservation", endM(persistence.Expire, e, "s", "s:nosuch2", "u0", t0, "A-8"), persistence.ErrConflict},
		{"hold of a show that moved", holdM(stale, "moved", "moved:1", "u6", t0, "A-1"), persistence.ErrNotOwner},
		{"good confirm", func() persistence.Mutation {
			m := endM(persistence.Confirm, e, "s", "s:r0", "u0", t0.Add(time.Second), "A-1")
			m.PaymentRef = "pay-0"
			return m
		}(), nil},
	}
	var ms []persistence.Mutation
	for _, c := range cases {
		ms = append(ms, c.m)
	}
	ps := enqueueAll(t, s, ms...)
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(ps) {
		if !isErr(err, cases[i].want) {
			t.Errorf("%s: %v, want %v", cases[i].name, err, cases[i].want)
		}
	}
	if sizes := obs.sizes(); len(sizes) < 5 || !slices.Equal(sizes[3:5], []int{1, len(cases)}) {
		t.Fatalf("batches of %v mutations, want [... 1 %d] (the blocker, then one batch)", sizes, len(cases))
	}
	culprits := 0
	for _, c := range cases {
		if c.want != nil {
			culprits++
		}
	}
	if b := obs.last(); b.Err == nil || b.Failed != culprits {
		t.Errorf("the batch's stats: error %v, %d failed; want its transaction's error, %d failed", b.Err, b.Failed, culprits)
	}
	wantClaims := map[string]string{"A-1": "s:r0", "A-2": "s:r1"}
	if c := claimsOf(t, s, "s"); !reflect.DeepEqual(c, wantClaims) {
		t.Fatalf("claims %v, want %v", c, wantClaims)
	}
	wantEvents := []string{"s:r0 HELD", "s:gone HELD", "s:gone RELEASED", "s:r1 HELD", "s:r0 BOOKED"}
	if ev := eventKinds(t, s, "s"); !slices.Equal(ev, wantEvents) {
		t.Fatalf("events %v, want %v", ev, wantEvents)
	}
	if r := reservation(t, s, "s", "s:r0"); r.UserID != "u0" || r.Status != "BOOKED" {
		t.Fatalf("r0 is now %+v", r)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservations WHERE show_id = 's2'`); n != 1 {
		t.Fatalf("s2 has %d reservations, want 1", n)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM idempotency_keys`); n != 1 {
		t.Fatalf("%d idempotency keys, want 1", n)
	}
	if n := count(t, s.Pool(), `SELECT (SELECT count(*) FROM reservations WHERE show_id = 'moved') +
		(SELECT count(*) FROM seat_claims WHERE show_id = 'moved')`); n != 0 {
		t.Fatalf("the moved show has %d rows", n)
	}
}

// TestWriterOverloaded fills a queue of one while the committer is blocked:
// of many concurrent Enqueues exactly one gets in, and the others are
// refused at once with ErrOverloaded and write nothing.
func TestWriterOverloaded(t *testing.T) {
	url := newDB(t)
	s := openStore(t, url, func(c *persistence.Config) { c.QueueSize = 1 })
	e := ownShow(t, s, "s")
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))

	const callers = 32
	ps := make([]*persistence.Pending, callers)
	errs := make([]error, callers)
	within(t, 10*time.Second, "Enqueue on a full queue", func() {
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				ps[i], errs[i] = s.Enqueue(holdM(e, "s", fmt.Sprintf("s:r%d", i), "u", t0, fmt.Sprintf("A-%d", i)))
			})
		}
		wg.Wait()
	})
	var in []int
	for i, err := range errs {
		switch {
		case err == nil:
			in = append(in, i)
		case !errors.Is(err, persistence.ErrOverloaded):
			t.Errorf("Enqueue %d: %v, want nil or ErrOverloaded", i, err)
		}
	}
	if len(in) != 1 {
		t.Fatalf("%d of %d Enqueues got in a queue of 1, want 1", len(in), callers)
	}
	if err := s.Write(holdM(e, "s", "s:late", "u", t0, "B-1")); !errors.Is(err, persistence.ErrOverloaded) {
		t.Fatalf("Write on a full queue: %v, want ErrOverloaded", err)
	}
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ps[in[0]].Wait(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM reservations WHERE show_id = 's'`); n != 1 {
		t.Fatalf("%d reservations, want 1", n)
	}
	if n := count(t, s.Pool(), `SELECT count(*) FROM audit_events WHERE show_id = 's'`); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	// The queue has room again.
	write(t, s, holdM(e, "s", "s:after", "u2", t0, "B-2"))
}

// TestWriterCloseDrains closes the store while mutations are queued behind
// a blocked committer: Close waits for them and they commit; afterwards
// writes are refused with ErrClosed.
func TestWriterCloseDrains(t *testing.T) {
	url := newDB(t)
	s, err := persistence.Open(context.Background(), persistence.Config{URL: url, NodeID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) }) // in case the test stops early; Close is idempotent
	e := ownShow(t, s, "s")
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))
	var ps []*persistence.Pending
	for i := range 5 {
		p, err := s.Enqueue(holdM(e, "s", fmt.Sprintf("s:r%d", i), "u", t0, fmt.Sprintf("A-%d", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	// Once Close has begun, nothing more gets in.
	var late []*persistence.Pending
	for deadline := time.Now().Add(10 * time.Second); ; {
		p, err := s.Enqueue(holdM(e+100, "s", "s:late", "u", t0, "B-1")) // a wrong epoch: writes nothing if it gets in
		if errors.Is(err, persistence.ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		late = append(late, p)
		if time.Now().After(deadline) {
			t.Fatal("Enqueue not refused after Close")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while mutations were queued behind a blocked committer", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(ps) {
		if err != nil {
			t.Errorf("queued mutation %d: %v", i, err)
		}
	}
	for _, err := range waitAll(late) {
		if !errors.Is(err, persistence.ErrNotOwner) {
			t.Errorf("late mutation: %v, want ErrNotOwner", err)
		}
	}
	if err := s.Write(holdM(e, "s", "s:after", "u", t0, "B-2")); !errors.Is(err, persistence.ErrClosed) {
		t.Fatalf("Write after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	check := openStore(t, url, nil)
	if n := count(t, check.Pool(), `SELECT count(*) FROM reservations WHERE show_id = 's'`); n != len(ps) {
		t.Fatalf("%d reservations committed, want %d", n, len(ps))
	}
}

// TestWriterBatchesKeepShowOrder has many shows write concurrently, each
// pipelining its mutations (Enqueue without waiting): the writer batches
// them, and each show's mutations commit in the order it queued them.
func TestWriterBatchesKeepShowOrder(t *testing.T) {
	var obs batches
	s := openStore(t, newDB(t), func(c *persistence.Config) { c.Observer = obs.observe })
	const shows, holds = 32, 20
	epochs := make([]int64, shows)
	for i := range epochs {
		epochs[i] = ownShow(t, s, fmt.Sprintf("s%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, shows)
	for i := range shows {
		wg.Go(func() {
			show := fmt.Sprintf("s%d", i)
			pipeline := func(ms []persistence.Mutation) error {
				var ps []*persistence.Pending
				for _, m := range ms {
					p, err := s.Enqueue(m)
					if err != nil {
						return err
					}
					ps = append(ps, p)
				}
				return errors.Join(waitAll(ps)...)
			}
			var hs, cs []persistence.Mutation
			for j := range holds {
				id := fmt.Sprintf("%s:r%02d", show, (j*7)%holds) // IDs not in queue order
				seat := fmt.Sprintf("A-%d", j+1)
				user := fmt.Sprintf("u%s-%d", show, j) // at most 10 seats a user
				hs = append(hs, holdM(epochs[i], show, id, user, t0.Add(time.Duration(j)*time.Millisecond), seat))
				c := endM(persistence.Confirm, epochs[i], show, id, user, t0.Add(time.Second), seat)
				c.PaymentRef = "pay"
				cs = append(cs, c)
			}
			slices.Reverse(cs)
			if err := pipeline(hs); err != nil {
				errs <- fmt.Errorf("%s holds: %w", show, err)
				return
			}
			if err := pipeline(cs); err != nil {
				errs <- fmt.Errorf("%s confirms: %w", show, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	sizes := obs.sizes()
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total != shows*holds*2 {
		t.Fatalf("batches hold %d mutations, want %d", total, shows*holds*2)
	}
	if slices.Max(sizes) < 2 {
		t.Fatalf("no batch of more than one mutation in %d batches", len(sizes))
	}
	t.Logf("%d mutations in %d batches, largest %d", total, len(sizes), slices.Max(sizes))
	for i := range shows {
		show := fmt.Sprintf("s%d", i)
		var want []string
		for j := range holds {
			want = append(want, fmt.Sprintf("%s:r%02d HELD", show, (j*7)%holds))
		}
		for j := holds - 1; j >= 0; j-- {
			want = append(want, fmt.Sprintf("%s:r%02d BOOKED", show, (j*7)%holds))
		}
		if got := eventKinds(t, s, show); !slices.Equal(got, want) {
			t.Fatalf("%s: events in order\n%v\nwant\n%v", show, got, want)
		}
	}
}

// TestWriterSplitsRefusedBatch queues one culprit among 256 holds in one
// batch: only the culprit fails, and finding it takes a transaction per
// level of halving (about 2 log2 n), not one per mutation.
func TestWriterSplitsRefusedBatch(t *testing.T) {
	url := newDB(t)
	var obs batches
	s := openStore(t, url, func(c *persistence.Config) { c.Observer = obs.observe })
	e := ownShow(t, s, "s")
	write(t, s, holdM(e, "s", "s:taken", "u-first", t0, "A-1"))
	release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))
	const n, culprit = 256, 100
	var ms []persistence.Mutation
	for i := range n {
		seat := fmt.Sprintf("B-%d", i+1)
		if i == culprit {
			seat = "A-1" // held already
		}
		ms = append(ms, holdM(e, "s", fmt.Sprintf("s:r%d", i), fmt.Sprintf("u%d", i), t0, seat))
	}
	ps := enqueueAll(t, s, ms...)
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(ps) {
		if want := error(nil); i == culprit {
			if !errors.Is(err, persistence.ErrConflict) {
				t.Errorf("the culprit: %v, want ErrConflict", err)
			}
		} else if err != want {
			t.Errorf("hold %d: %v", i, err)
		}
	}
	b := obs.last()
	if b.Mutations != n || b.Failed != 1 {
		t.Fatalf("the batch's stats %+v, want %d mutations, 1 failed", b, n)
	}
	if b.Transactions > 2*8+1 { // log2(256) = 8 levels, two halves each
		t.Errorf("finding one culprit among %d took %d transactions", n, b.Transactions)
	}
	t.Logf("one culprit among %d: %d transactions", n, b.Transactions)
}

// TestWriterStaleWriteTouchesNothing: a write of a show that moved to
// another node runs none of its statements, so it cannot wait on, or
// deadlock with, the new owner's rows. The new owner has an uncommitted
// claim of A-1; the stale hold of A-1 is answered ErrNotOwner at once,
// where an insert of its claim would wait for that transaction to end.
func TestWriterStaleWriteTouchesNothing(t *testing.T) {
	url := newDB(t)
	s := openStore(t, url, func(c *persistence.Config) { c.CommitTimeout = time.Minute })
	stale := ownShow(t, s, "moved")
	if _, err := s.AcquireShow(context.Background(), "moved"); err != nil { // another node took it
		t.Fatal(err)
	}
	ctx := context.Background()
	owner, err := s.Pool().Begin(ctx) // the new owner's transaction, in flight
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Rollback(ctx) //nolint:errcheck // the test's end
	if _, err := owner.Exec(ctx, `INSERT INTO seat_claims (show_id, seat_id, reservation_id) VALUES ('moved', 'A-1', 'moved:new')`); err != nil {
		t.Fatal(err)
	}
	p, err := s.Enqueue(holdM(stale, "moved", "moved:1", "u1", t0, "A-1"))
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan error, 1)
	go func() { answered <- p.Wait() }()
	select {
	case err := <-answered:
		if !errors.Is(err, persistence.ErrNotOwner) {
			t.Fatalf("stale hold: %v, want ErrNotOwner", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stale hold waits for the new owner's transaction: its claim was inserted")
	}
}

// TestBookingIsHeapOnly: a booking changes no indexed column of its
// reservation (migration 009), so PostgreSQL updates the row in place of
// the heap, writing no index entry: the writer's statements for one
// booking and for a batch of them.
func TestBookingIsHeapOnly(t *testing.T) {
	const holds = 12
	url := newDB(t)
	ctx := context.Background()
	s, err := persistence.Open(ctx, persistence.Config{URL: url, NodeID: "node-1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e := ownShow(t, s, "s")
	var ps []*persistence.Pending
	for i := range holds {
		p, err := s.Enqueue(holdM(e, "s", fmt.Sprintf("s:r%d", i), fmt.Sprintf("u%d", i), t0, fmt.Sprintf("B-%d", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for i, err := range waitAll(ps) {
		if err != nil {
			t.Fatalf("hold %d: %v", i, err)
		}
	}
	book := func(i int) persistence.Mutation {
		m := endM(persistence.Confirm, e, "s", fmt.Sprintf("s:r%d", i), fmt.Sprintf("u%d", i), t0.Add(time.Second), fmt.Sprintf("B-%d", i+1))
		m.PaymentRef = fmt.Sprintf("pay-%d", i)
		return m
	}
	write(t, s, book(0)) // one booking alone: its own statement
	ps = ps[:0]
	for i := 1; i < holds; i++ { // the others in a batch, or a few
		p, err := s.Enqueue(book(i))
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	for i, err := range waitAll(ps) {
		if err != nil {
			t.Fatalf("booking %d: %v", i+1, err)
		}
	}
	// The writer's backends report their counts as they exit (or within
	// seconds of going idle).
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	var upd, hot int
	waitFor(t, 30*time.Second, "the bookings in the table's statistics", func() bool {
		if err := db.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'reservations'`).Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		return upd >= holds
	})
	if upd != holds || hot != holds {
		t.Fatalf("%d updates of reservations, %d of them heap-only; want %d, all heap-only", upd, hot, holds)
	}
}
