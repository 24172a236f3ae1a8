package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/internal/testcluster"
)

// startBoxoffice starts a private Postgres and an engine node on it, and
// returns a Boxoffice target connected to them and the database URL.
func startBoxoffice(t *testing.T, unary bool) (*Boxoffice, string) {
	t.Helper()
	url := pgclustertest.Start(t).URL()
	testcluster.Migrate(t, url)
	n := testcluster.StartNode(t, url, testcluster.Options{Quiet: true})
	b, err := NewBoxoffice(t.Context(), BoxofficeConfig{
		Addr: n.Server.GRPCAddr(), Token: testcluster.Token, AdminToken: testcluster.AdminToken,
		DatabaseURL: url, Conns: 2, Unary: unary,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, url
}

// wantOutcome fails t unless err has outcome want.
func wantOutcome(t *testing.T, what string, err error, want Outcome) {
	t.Helper()
	if got := OutcomeOf(err); got != want {
		t.Fatalf("%s: outcome %v (%v), want %v", what, got, err, want)
	}
}

// seatMapOf reads the show's seat map from the engine's memory
// (FreshSeatMap), waits until SeatMap (the client's replica) shows the
// same, and returns the seats in each status.
func seatMapOf(t *testing.T, b *Boxoffice, show ShowSpec) map[SeatStatus][]string {
	t.Helper()
	sm, err := b.FreshSeatMap(t.Context(), show)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		replica, err := b.SeatMap(t.Context(), show)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(replica.Statuses, sm.Statuses) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica's seat map %v is not GetSeatMap's %v after 5 s", replica.Statuses, sm.Statuses)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ids := show.SeatIDs()
	if len(sm.Statuses) != len(ids) {
		t.Fatalf("%d statuses for %d seats", len(sm.Statuses), len(ids))
	}
	out := map[SeatStatus][]string{}
	for i, s := range sm.Statuses {
		out[s] = append(out[s], ids[i])
	}
	return out
}

// TestBoxofficeTarget runs the target's calls through the client and, with
// Unary, as plain RPCs.
func TestBoxofficeTarget(t *testing.T) {
	for _, unary := range []bool{false, true} {
		t.Run(fmt.Sprintf("unary=%v", unary), func(t *testing.T) { testBoxofficeTarget(t, unary) })
	}
}

func testBoxofficeTarget(t *testing.T, unary bool) {
	b, _ := startBoxoffice(t, unary)
	ctx := t.Context()
	show := ShowSpec{ID: "bo-rt", Rows: []RowSpec{{Label: "A", Seats: 10}, {Label: "B", Seats: 10}}, HoldTTL: time.Minute}
	name := "boxoffice"
	if unary {
		name = "boxoffice-unary"
	}
	if b.Name() != name || !b.HoldsDurable() {
		t.Fatalf("name %q, durable %v", b.Name(), b.HoldsDurable())
	}
	if err := b.CreateShow(ctx, show); err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, "creating the show again", b.CreateShow(ctx, show), Failed)
	if sm := seatMapOf(t, b, show); len(sm[Available]) != 20 {
		t.Fatalf("new show: %v", sm)
	}

	var acks AckLog
	h1, err := b.Hold(ctx, show, "u1", []string{"A-2", "A-1"})
	if err != nil {
		t.Fatal(err)
	}
	acks.Hold(h1)
	if h1.ID == "" || h1.User != "u1" || !sameSeats(h1.Seats, []string{"A-1", "A-2"}) {
		t.Fatalf("hold %+v", h1)
	}
	if d := time.Until(h1.ExpiresAt); d < 50*time.Second || d > 70*time.Second {
		t.Fatalf("hold expires in %v, want about 1m", d)
	}
	// The map's order is the layout's: are its first seats.
	if sm := seatMapOf(t, b, show); !slices.Equal(sm[Held], []string{"A-1", "A-2"}) || len(sm[Available]) != 18 {
		t.Fatalf("after a hold: %v", sm)
	}

	_, err = b.Hold(ctx, show, "u2", []string{"B-1", "A-2"})
	wantOutcome(t, "holding a held seat", err, Taken)
	if got := TakenSeats(err); !slices.Equal(got, []string{"A-2"}) {
		t.Fatalf("taken seats %q, want [A-2]", got)
	}

	h2, err := b.Hold(ctx, show, "u2", []string{"B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "B-7", "B-8", "B-9"})
	if err != nil {
		t.Fatal(err)
	}
	acks.Hold(h2)
	_, err = b.Hold(ctx, show, "u2", []string{"B-10", "A-10"})
	wantOutcome(t, "an 11th seat", err, Limit)

	if err := b.Confirm(ctx, show, h1, "pay-1"); err != nil {
		t.Fatal(err)
	}
	acks.Confirm(h1.ID, "pay-1")
	if err := b.Confirm(ctx, show, h1, "pay-1"); err != nil {
		t.Fatalf("confirming again with the same payment: %v", err)
	}
	wantOutcome(t, "confirming with another payment", b.Confirm(ctx, show, h1, "pay-2"), Ended)
	wantOutcome(t, "confirming another user's hold", b.Confirm(ctx, show, Hold{ID: h2.ID, User: "u1"}, "pay-3"), Failed)
	if sm := seatMapOf(t, b, show); !slices.Equal(sm[Booked], []string{"A-1", "A-2"}) || len(sm[Held]) != 9 {
		t.Fatalf("after a confirm: %v", sm)
	}

	// A retry with the key of an attempt gets its answer; the key with
	// another request is refused.
	key := NewIdempotencyKey()
	h3, err := b.HoldWithKey(ctx, show, "u3", []string{"A-5"}, key)
	if err != nil {
		t.Fatal(err)
	}
	acks.Hold(h3)
	if again, err := b.HoldWithKey(ctx, show, "u3", []string{"A-5"}, key); err != nil || again.ID != h3.ID {
		t.Fatalf("retry: %+v, %v; want hold %s", again, err, h3.ID)
	}
	_, err = b.HoldWithKey(ctx, show, "u3", []string{"A-6"}, key)
	wantOutcome(t, "a key reused for another request", err, Failed)

	_, err = b.SeatMap(ctx, ShowSpec{ID: "no-such-show", Rows: show.Rows})
	wantOutcome(t, "an unknown show", err, Failed)
	// The first read of a show checks its layout (later reads leave it out).
	other := ShowSpec{ID: "bo-layout", Rows: show.Rows, HoldTTL: time.Minute}
	if err := b.CreateShow(ctx, other); err != nil {
		t.Fatal(err)
	}
	other.Rows = []RowSpec{{Label: "A", Seats: 20}}
	_, err = b.SeatMap(ctx, other)
	wantOutcome(t, "a show of another layout", err, Failed)
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	_, err = b.Hold(expired, show, "u4", []string{"A-7"})
	wantOutcome(t, "a passed deadline", err, Timeout)

	recs, err := b.Records(ctx, show)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{ID: h1.ID, User: "u1", Seats: h1.Seats, State: StateBooked, PaymentRef: "pay-1"},
		{ID: h2.ID, User: "u2", Seats: h2.Seats, State: StateHeld},
		{ID: h3.ID, User: "u3", Seats: []string{"A-5"}, State: StateHeld},
	}
	if len(recs) != len(want) {
		t.Fatalf("records %+v, want %+v", recs, want)
	}
	for i, r := range recs {
		w := want[i]
		if r.ID != w.ID || r.User != w.User || !sameSeats(r.Seats, w.Seats) || r.State != w.State || r.PaymentRef != w.PaymentRef {
			t.Fatalf("record %d: %+v, want %+v", i, r, w)
		}
	}
	if v := Verify(show, recs, acks.Acks(), true); !v.OK || v.Counts.BookedSeats != 2 || v.Counts.HeldSeats != 10 {
		t.Fatalf("verification: %s", v)
	}
	if bad, err := b.CheckStore(ctx, show); err != nil || len(bad) != 0 {
		t.Fatalf("CheckStore: %q, %v", bad, err)
	}
}

// TestBoxofficeVerifyCatchesInjectedFaults is the acceptance test: "the
// verification catches a double booking and a lost acknowledged hold
// injected into the database".
func TestBoxofficeVerifyCatchesInjectedFaults(t *testing.T) {
	b, url := startBoxoffice(t, false)
	ctx := t.Context()
	show := ShowSpec{ID: "bo-faults", Rows: []RowSpec{{Label: "A", Seats: 10}, {Label: "B", Seats: 10}, {Label: "C", Seats: 10}}, HoldTTL: 10 * time.Minute}
	if err := b.CreateShow(ctx, show); err != nil {
		t.Fatal(err)
	}

	// A booking and a hold for sure, then 40 users race for the other 28
	// seats, 1-3 adjacent seats each; every other hold is confirmed.
	var acks AckLog
	booked, err := b.Hold(ctx, show, "buyer", []string{"C-9"})
	if err == nil {
		err = b.Confirm(ctx, show, booked, "pay-buyer")
	}
	if err != nil {
		t.Fatal(err)
	}
	acks.Hold(booked)
	acks.Confirm(booked.ID, "pay-buyer")
	held, err := b.Hold(ctx, show, "holder", []string{"C-10"})
	if err != nil {
		t.Fatal(err)
	}
	acks.Hold(held)
	var wg sync.WaitGroup
	for u := range 40 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(u), 1))
			user := fmt.Sprint("user-", u)
			for range 3 {
				row, n := show.Rows[rng.IntN(3)].Label, 1+rng.IntN(3)
				first := 1 + rng.IntN(10-n+1)
				seats := make([]string, n)
				for i := range seats {
					seats[i] = SeatID(row, first+i)
				}
				h, err := b.Hold(ctx, show, user, seats)
				if OutcomeOf(err) == Taken {
					continue
				}
				if err != nil {
					t.Errorf("%s holding %v: %v", user, seats, err)
					return
				}
				acks.Hold(h)
				if u%2 == 0 {
					ref := "pay-" + h.ID
					if err := b.Confirm(ctx, show, h, ref); err != nil {
						t.Errorf("%s confirming %s: %v", user, h.ID, err)
						return
					}
					acks.Confirm(h.ID, ref)
				}
				return
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	a := acks.Acks()
	verify := func() Verification {
		t.Helper()
		recs, err := b.Records(ctx, show)
		if err != nil {
			t.Fatal(err)
		}
		return Verify(show, recs, a, true)
	}
	v := verify()
	if !v.OK || v.Counts.AckedHolds < 3 || v.Counts.AckedConfirms < 1 || v.Counts.CheckedHolds != len(a.Holds) {
		t.Fatalf("before the faults: %s", v)
	}
	if bad, err := b.CheckStore(ctx, show); err != nil || len(bad) != 0 {
		t.Fatalf("CheckStore before the faults: %q, %v", bad, err)
	}
	t.Logf("before the faults: %s", v)

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// (i) A second booking of a booked seat, as a store without the claims'
	// unique key could let through: only the reservation row, so the
	// verification has to find it from the reservations' seat lists.
	seat := booked.Seats[0]
	if _, err := conn.Exec(ctx, `
		INSERT INTO reservations (show_id, reservation_id, user_id, status, seat_ids, created_at, expires_at, booked_at, payment_ref)
		VALUES ($1, $2, 'mallory', 'BOOKED', $3, now(), now() + interval '10 minutes', now(), 'pay-mallory')`,
		show.ID, show.ID+":injected", []string{seat}); err != nil {
		t.Fatal(err)
	}
	v = verify()
	if v.OK || v.ByKind[ViolationDoubleBooking] != 1 || v.ViolationCount != 1 {
		t.Fatalf("after a double booking: %s", v)
	}
	if line := v.Violations[0]; !strings.HasPrefix(line, ViolationDoubleBooking+": seat "+seat+" ") ||
		!strings.Contains(line, booked.ID) || !strings.Contains(line, show.ID+":injected") {
		t.Fatalf("double booking reported as %q", line)
	}
	bad, err := b.CheckStore(ctx, show)
	if err != nil || len(bad) != 1 || !strings.HasPrefix(bad[0], ViolationClaimMismatch+": seat "+seat+" of live reservation "+show.ID+":injected") {
		t.Fatalf("CheckStore after a double booking: %q, %v", bad, err)
	}
	t.Logf("after a double booking: %s", v)

	// (ii) An acknowledged hold lost: its rows deleted, claims and audit
	// events first.
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, table := range []string{"seat_claims", "reservation_events", "idempotency_keys", "reservations"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE show_id = $1 AND reservation_id = $2", show.ID, held.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	v = verify()
	if v.OK || v.ByKind[ViolationLostHold] != 1 || v.ByKind[ViolationDoubleBooking] != 1 || v.ViolationCount != 2 {
		t.Fatalf("after losing a hold: %s", v)
	}
	lost := slices.IndexFunc(v.Violations, func(s string) bool { return strings.HasPrefix(s, ViolationLostHold+": ") })
	if line := v.Violations[lost]; !strings.Contains(line, held.ID) || !strings.Contains(line, held.User) {
		t.Fatalf("lost hold reported as %q", line)
	}
	if !strings.HasPrefix(v.String(), "VIOLATIONS (2): ") {
		t.Fatalf("String() = %q", v)
	}
	t.Logf("after losing a hold: %s", v)
}

func TestBoxofficeErrors(t *testing.T) {
	withInfo := func(code codes.Code, reason string, md map[string]string) error {
		st, err := status.New(code, reason+": something").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "boxoffice.v1", Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	tests := []struct {
		name  string
		err   error
		want  Outcome
		seats []string
	}{
		{"seats taken", withInfo(codes.AlreadyExists, "SEATS_TAKEN", map[string]string{"seats": "A-1,B-2"}), Taken, []string{"A-1", "B-2"}},
		{"seats taken, unnamed", status.Error(codes.AlreadyExists, "SEATS_TAKEN: A-1"), Taken, nil},
		{"show exists", withInfo(codes.AlreadyExists, "SHOW_EXISTS", nil), Failed, nil},
		{"user limit", withInfo(codes.ResourceExhausted, "USER_SEAT_LIMIT", nil), Limit, nil},
		{"sold out", withInfo(codes.ResourceExhausted, "SOLD_OUT", map[string]string{"seats": "A-1"}), Limit, nil},
		{"overloaded", withInfo(codes.ResourceExhausted, "OVERLOADED", nil), Unavailable, nil},
		{"overloaded, by message", status.Error(codes.ResourceExhausted, "OVERLOADED: queue full"), Unavailable, nil},
		{"hold expired", withInfo(codes.FailedPrecondition, "HOLD_EXPIRED", nil), Ended, nil},
		{"moved", withInfo(codes.Unavailable, "SHOW_MOVED", nil), Unavailable, nil},
		{"no connection", status.Error(codes.Unavailable, "connection refused"), Unavailable, nil},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), Timeout, nil},
		{"canceled", status.Error(codes.Canceled, "context canceled"), Timeout, nil},
		{"context", fmt.Errorf("dialing: %w", context.DeadlineExceeded), Timeout, nil},
		{"invalid", withInfo(codes.InvalidArgument, "INVALID_SEAT_COUNT", nil), Failed, nil},
		{"not holder", withInfo(codes.PermissionDenied, "NOT_HOLDER", nil), Failed, nil},
		{"internal", status.Error(codes.Internal, "INTERNAL: boom"), Failed, nil},
		{"other", errors.New("boom"), Failed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := boxofficeError(tt.err)
			if got := OutcomeOf(err); got != tt.want {
				t.Fatalf("outcome %v, want %v", got, tt.want)
			}
			if tt.want == Taken && !slices.Equal(TakenSeats(err), tt.seats) {
				t.Fatalf("seats %q, want %q", TakenSeats(err), tt.seats)
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("%v does not wrap %v", err, tt.err)
			}
		})
	}
	if boxofficeError(nil) != nil {
		t.Fatal("nil is not nil")
	}
}

func TestBoxofficeConfigRefused(t *testing.T) {
	for _, cfg := range []BoxofficeConfig{
		{DatabaseURL: "postgres://localhost/x"},
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", DatabaseURL: "postgres://localhost/x", Conns: -1},
	} {
		if b, err := NewBoxoffice(t.Context(), cfg); err == nil {
			b.Close()
			t.Fatalf("%+v accepted", cfg)
		}
	}
}
