package engine_test

import (
	"context"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// Tests of the engine's sense of time: when a confirm is judged, holds made
// while the clock goes back, what a replayed hold answers, and hold TTLs at
// the database's precision.

// countingClock is a tc.Clock that counts its readings, so a test can tell
// that a request has reached the engine.
type countingClock struct {
	*tc.Clock
	reads atomic.Int64
}

// Now returns the clock's time and then counts the reading, so a reading
// counted before the clock is moved returned the time before the move.
func (c *countingClock) Now() time.Time {
	now := c.Clock.Now()
	c.reads.Add(1)
	return now
}

// setClock moves clock to at, forward or back.
func setClock(clock *tc.Clock, at time.Time) { clock.Advance(at.Sub(clock.Now())) }

// lockWaiterPIDs returns the pids of the backends of db's database that wait
// for a lock.
func lockWaiterPIDs(t testing.TB, db *pgxpool.Pool) []int32 {
	t.Helper()
	rows, _ := db.Query(context.Background(), `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return pids
}

// TestConfirmJudgedWhenDecided sends confirm B of a hold while confirm A of
// it is being written; B waits for A's write. The clock passes the hold's
// ExpiresAt+grace while B waits, and A's write fails. B must be judged at
// the time it is decided, past the grace, and refused HOLD_EXPIRED; judged
// at its arrival it would book a hold after its grace.
func TestConfirmJudgedWhenDecided(t *testing.T) {
	const (
		show = "judged"
		ttl  = time.Minute
	)
	clock := &countingClock{Clock: tc.NewClock(time.Now().UTC().Truncate(time.Second))}
	// No expiry rounds but ExpireDue's own; a CommitTimeout long enough
	// that only the terminated backend ends A's write.
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: time.Hour,
		Store: persistence.Config{CommitTimeout: 2 * time.Minute}})
	db := openDB(t, url)
	n.CreateShow(t, show, 1, 10, ttl)
	ctx := tc.Ctx(context.Background())
	h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u", SeatIds: []string{"A-1", "A-2"}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := h.GetExpiresAt().AsTime().Add(ar.ConfirmGrace)

	// The test's transaction locks the hold's row, so the writer's UPDATE
	// of A waits for it.
	tx, err := db.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) }) //nolint:errcheck // a no-op once rolled back
	var locked string
	if err := tx.QueryRow(context.Background(), `SELECT reservation_id FROM reservations WHERE reservation_id = $1 FOR UPDATE`,
		h.GetHoldId()).Scan(&locked); err != nil {
		t.Fatalf("locking the hold's row: %v", err)
	}

	type answer struct {
		r   *pb.ConfirmHoldResponse
		err error
	}
	confirm := func(ref string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			r, err := n.Reservations.ConfirmHold(cctx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: "u", PaymentRef: ref})
			ch <- answer{r, err}
		}()
		return ch
	}
	await := func(what string, ch <-chan answer) answer {
		t.Helper()
		select {
		case a := <-ch:
			return a
		case <-time.After(time.Minute):
			t.Fatalf("%s not answered within a minute", what)
			return answer{}
		}
	}

	a := confirm("pay-a")
	var writer int32
	pollUntil(t, 30*time.Second, "confirm A's write to wait for the row lock", func() bool {
		pids := lockWaiterPIDs(t, db)
		if len(pids) > 1 {
			t.Fatalf("backends %v wait for locks, want only the writer's", pids)
		}
		if len(pids) == 1 {
			writer = pids[0]
		}
		return len(pids) == 1
	})
	reads := clock.reads.Load()
	b := confirm("pay-b")
	pollUntil(t, 30*time.Second, "confirm B to reach the engine", func() bool { return clock.reads.Load() > reads })
	// B arrived within the grace. Now the grace runs out while A is in
	// flight and B waits for it.
	if now := clock.Now(); now.After(deadline) {
		t.Fatalf("B arrived at %s, after the hold's ExpiresAt+grace %s", now, deadline)
	}
	setClock(clock.Clock, deadline.Add(time.Second))
	select {
	case got := <-b:
		t.Fatalf("B answered while A's write was in flight: %v, %v", got.r, got.err)
	default:
	}

	// A fails without committing: its backend is terminated while it waits.
	var terminated bool
	if err := db.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, writer).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", writer, terminated, err)
	}
	gotA := await("confirm A", a)
	wantAPIError(t, "confirm A, its write's backend terminated", gotA.err, codes.Unavailable, "DATABASE_UNAVAILABLE")
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatalf("rollback: %v", err)
	}

	gotB := await("confirm B", b)
	if gotB.err == nil {
		t.Errorf("confirm B, decided at %s after the hold's ExpiresAt+grace %s, booked the hold: %v",
			clock.Now(), deadline, gotB.r.GetReservation())
	} else if e := apiErrorOf(gotB.err); e.Code != codes.FailedPrecondition || e.Reason != "HOLD_EXPIRED" {
		t.Errorf("confirm B: %s, want FailedPrecondition HOLD_EXPIRED", e)
	}
	if r, ok := dbReservationOf(t, db, show, h.GetHoldId()); !ok || r.Status == "BOOKED" || r.BookedAt != nil || r.PaymentRef != nil {
		t.Errorf("the database has the hold as %+v (found %v), want it not booked", r, ok)
	}
	checkSeatMapEqualsDB(t, n, db, show)

	// The hold is past its grace: the next expiry round ends it, durably.
	if k := n.Engine.ExpireDue(); k != 1 {
		t.Errorf("ExpireDue expired %d holds, want 1", k)
	}
	if r, _ := dbReservationOf(t, db, show, h.GetHoldId()); r.Status != "EXPIRED" {
		t.Errorf("after ExpireDue the database has the hold %s, want EXPIRED", r.Status)
	}
	checkSeatMapEqualsDB(t, n, db, show)
	checkDBInvariants(t, db, show)
}

// TestExpiryWhenClockGoesBack makes holds while the node's clock goes back
// and forth. Each answered expires_at is no earlier than the one before it
// (and than created_at+TTL), the database has what was answered, and every
// hold expires in the first ExpireDue at its answered expires_at+grace, not
// before: none waits behind a hold that is not due.
func TestExpiryWhenClockGoesBack(t *testing.T) {
	const (
		show = "clockback"
		ttl  = time.Minute
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{Clock: clock, ExpiryInterval: time.Hour})
	db := openDB(t, url)
	n.CreateShow(t, show, 1, 10, ttl)
	ctx := tc.Ctx(context.Background())
	start := clock.Now()

	type made struct {
		name      string
		id, seat  string
		createdAt time.Time
		expiresAt time.Time // as answered
	}
	var holds []made
	for i, step := range []struct {
		name string
		at   time.Duration // the clock when the hold is made, from start
	}{
		{"A", 0},
		{"B, the clock set back a minute", -time.Minute},
		{"C, back ten more", -11 * time.Minute},
		{"D, the clock past A's time", 30 * time.Second},
	} {
		setClock(clock, start.Add(step.at))
		seat := tc.SeatID(0, i+1)
		h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u" + seat, SeatIds: []string{seat}})
		if err != nil {
			t.Fatalf("hold %s: %v", step.name, err)
		}
		m := made{name: step.name, id: h.GetHoldId(), seat: seat, createdAt: clock.Now(), expiresAt: h.GetExpiresAt().AsTime()}
		if m.expiresAt.Before(m.createdAt.Add(ttl)) {
			t.Errorf("hold %s made at %s expires at %s, before created_at+TTL", m.name, m.createdAt, m.expiresAt)
		}
		if i > 0 && m.expiresAt.Before(holds[i-1].expiresAt) {
			t.Errorf("hold %s expires at %s, before hold %s made earlier (%s)", m.name, m.expiresAt, holds[i-1].name, holds[i-1].expiresAt)
		}
		if r, _ := dbReservationOf(t, db, show, m.id); r.Status != "HELD" || !r.ExpiresAt.Equal(m.expiresAt) || !r.CreatedAt.Equal(m.createdAt) {
			t.Errorf("hold %s: database has %+v, want HELD, created %s, expiring %s as answered", m.name, r, m.createdAt, m.expiresAt)
		}
		holds = append(holds, m)
	}

	// Visit the holds by answered expiry (so also if they were answered
	// out of order): just before a hold's due time it is still held, and
	// the ExpireDue at its due time ends it.
	byExpiry := slices.Clone(holds)
	slices.SortStableFunc(byExpiry, func(a, b made) int { return a.expiresAt.Compare(b.expiresAt) })
	endedAt := map[string]time.Time{}
	for _, h := range byExpiry {
		due := h.expiresAt.Add(ar.ConfirmGrace)
		if _, done := endedAt[h.id]; !done {
			setClock(clock, due.Add(-time.Microsecond))
			n.Engine.ExpireDue()
			if r, _ := dbReservationOf(t, db, show, h.id); r.Status != "HELD" {
				t.Errorf("hold %s is %s 1 µs before its expires_at+grace %s", h.name, r.Status, due)
			}
			setClock(clock, due)
			n.Engine.ExpireDue()
			for _, o := range holds {
				if r, _ := dbReservationOf(t, db, show, o.id); r.Status == "EXPIRED" {
					if _, seen := endedAt[o.id]; !seen {
						endedAt[o.id] = *r.EndedAt
					}
				}
			}
		}
		at, done := endedAt[h.id]
		switch {
		case !done:
			t.Errorf("hold %s still held after ExpireDue at its expires_at+grace %s", h.name, due)
		case !at.Equal(due):
			t.Errorf("hold %s expired at %s, want at its expires_at+grace %s", h.name, at, due)
		}
		checkSeatMapEqualsDB(t, n, db, show)
	}
	if sm := getSeatMap(t, n, show); sm.GetHeld() != 0 || sm.GetAvailable() != 10 {
		t.Errorf("seat map after every due time: %d held, %d available; want 0, 10", sm.GetHeld(), sm.GetAvailable())
	}
	checkDBInvariants(t, db, show)
}

// TestHoldReplayAnswersStatus replays HoldSeats requests by idempotency
// key: the replay answers the same hold as it is now, HELD, RELEASED,
// BOOKED or EXPIRED, makes no new hold and changes nothing, also after a
// restart of the node.
func TestHoldReplayAnswersStatus(t *testing.T) {
	const show = "replay"
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	opts := tc.Options{Clock: clock, ExpiryInterval: time.Hour}
	b := newBadInput(t, opts, show) // default TTL
	db := openDB(t, b.url)
	request := func(key, user string, seats ...string) *pb.HoldSeatsRequest {
		return &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats, IdempotencyKey: key}
	}
	hold := func(t *testing.T, req *pb.HoldSeatsRequest) *pb.HoldSeatsResponse {
		t.Helper()
		h, err := b.n.Reservations.HoldSeats(b.ctx, req)
		if err != nil {
			t.Fatalf("HoldSeats %s: %v", req.GetIdempotencyKey(), err)
		}
		if h.GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD {
			t.Fatalf("new hold %s answered status %v, want HELD", req.GetIdempotencyKey(), h.GetStatus())
		}
		return h
	}
	// replay sends req again and checks that it answers first with status
	// want and changes nothing.
	replay := func(t *testing.T, req *pb.HoldSeatsRequest, first *pb.HoldSeatsResponse, want pb.ReservationStatus) {
		t.Helper()
		before := b.state(t)
		got, err := b.n.Reservations.HoldSeats(b.ctx, req)
		if err != nil {
			t.Fatalf("replay of %s: %v", req.GetIdempotencyKey(), err)
		}
		w := proto.Clone(first).(*pb.HoldSeatsResponse)
		w.Status = want
		if !proto.Equal(got, w) {
			t.Errorf("replay of %s answered\n%v\nwant\n%v", req.GetIdempotencyKey(), got, w)
		}
		if after := b.state(t); !reflect.DeepEqual(before, after) {
			t.Errorf("replay of %s changed state:\nbefore %+v\nafter  %+v", req.GetIdempotencyKey(), before, after)
		}
	}

	heldReq := request("k-held", "u1", "A-1", "A-2")
	held := hold(t, heldReq)
	replay(t, heldReq, held, pb.ReservationStatus_RESERVATION_STATUS_HELD)
	b.release(t, held.GetHoldId(), "u1")
	replay(t, heldReq, held, pb.ReservationStatus_RESERVATION_STATUS_RELEASED)

	bookedReq := request("k-booked", "u2", "B-1")
	booked := hold(t, bookedReq)
	b.confirm(t, booked.GetHoldId(), "u2", "pay-2")
	replay(t, bookedReq, booked, pb.ReservationStatus_RESERVATION_STATUS_BOOKED)

	expiredReq := request("k-expired", "u3", "C-1", "C-2", "C-3")
	expired := hold(t, expiredReq)
	clock.Advance(ar.DefaultHoldTTL + ar.ConfirmGrace + time.Second)
	if k := b.n.Engine.ExpireDue(); k != 1 {
		t.Fatalf("ExpireDue expired %d holds, want 1", k)
	}
	if r, _ := dbReservationOf(t, db, show, expired.GetHoldId()); r.Status != "EXPIRED" {
		t.Fatalf("the database has the expired hold as %s", r.Status)
	}
	replay(t, expiredReq, expired, pb.ReservationStatus_RESERVATION_STATUS_EXPIRED)

	t.Run("after a restart", func(t *testing.T) {
		b.n.Stop()
		b.n = tc.StartNode(t, b.url, opts)
		replay(t, expiredReq, expired, pb.ReservationStatus_RESERVATION_STATUS_EXPIRED)
		replay(t, heldReq, held, pb.ReservationStatus_RESERVATION_STATUS_RELEASED)
		replay(t, bookedReq, booked, pb.ReservationStatus_RESERVATION_STATUS_BOOKED)
		checkSeatMapEqualsDB(t, b.n, db, show)
	})
	checkDBInvariants(t, db, show)
}

// TestCreateShowAnswersStoredTTL creates a show with a hold TTL finer than
// the database keeps (milliseconds): CreateShow, GetShow before and after
// a restart, and the holds all use the TTL as stored.
func TestCreateShowAnswersStoredTTL(t *testing.T) {
	const (
		show   = "ttl"
		asked  = 30*time.Second + 400*time.Microsecond
		stored = 30 * time.Second
	)
	n, url := newNode(t, tc.Options{})
	db := openDB(t, url)
	admin, ctx := tc.AdminCtx(context.Background()), tc.Ctx(context.Background())
	created, err := n.Catalog.CreateShow(admin, tc.ShowRequest(show, 1, 10, asked))
	if err != nil {
		t.Fatal(err)
	}
	if got := created.GetShow().GetHoldTtl().AsDuration(); got != stored {
		t.Errorf("CreateShow with hold_ttl %s answered %s, want %s as stored", asked, got, stored)
	}
	checkShow := func(t *testing.T, n *tc.Node, seat string) {
		t.Helper()
		got, err := n.Catalog.GetShow(ctx, &pb.GetShowRequest{ShowId: show})
		if err != nil {
			t.Fatal(err)
		}
		if ttl := got.GetShow().GetHoldTtl().AsDuration(); ttl != stored {
			t.Errorf("GetShow answered hold_ttl %s, want %s", ttl, stored)
		}
		if !proto.Equal(got.GetShow(), created.GetShow()) {
			t.Errorf("GetShow answered\n%v\nCreateShow\n%v", got.GetShow(), created.GetShow())
		}
		h, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: "u" + seat, SeatIds: []string{seat}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := n.Reservations.GetReservation(ctx, &pb.GetReservationRequest{HoldId: h.GetHoldId()})
		if err != nil {
			t.Fatal(err)
		}
		res := r.GetReservation()
		if d := res.GetExpiresAt().AsTime().Sub(res.GetCreatedAt().AsTime()); d != stored || !res.GetExpiresAt().AsTime().Equal(h.GetExpiresAt().AsTime()) {
			t.Errorf("hold created %s, expiring %s (answered %s): a TTL of %s, want %s",
				res.GetCreatedAt().AsTime(), res.GetExpiresAt().AsTime(), h.GetExpiresAt().AsTime(), d, stored)
		}
		if row, _ := dbReservationOf(t, db, show, h.GetHoldId()); row.ExpiresAt.Sub(row.CreatedAt) != stored {
			t.Errorf("the database has the hold with a TTL of %s, want %s", row.ExpiresAt.Sub(row.CreatedAt), stored)
		}
	}
	checkShow(t, n, "A-1")
	t.Run("after a restart", func(t *testing.T) {
		n.Stop()
		checkShow(t, tc.StartNode(t, url, tc.Options{}), "A-2")
	})
}
