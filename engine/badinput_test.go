package engine_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// badInput is a node on a fresh database with the shows a test of bad input
// refers to, and the means to check that a refusal changed nothing.
type badInput struct {
	n     *tc.Node
	url   string
	shows []string        // the shows whose seat maps are compared
	ctx   context.Context // carries the service token
	admin context.Context // carries the admin token
}

// newBadInput starts a node and creates shows of 4 rows (A-D) of 10 seats.
func newBadInput(t *testing.T, opts tc.Options, shows ...string) *badInput {
	t.Helper()
	n, url := newNode(t, opts)
	b := &badInput{n: n, url: url, shows: shows,
		ctx: tc.Ctx(context.Background()), admin: tc.AdminCtx(context.Background())}
	for _, id := range shows {
		n.CreateShow(t, id, 4, 10, 0)
	}
	b.state(t) // loads the shows, so that no refusal is the first use of one
	return b
}

// restart stops the node and starts a new one on the same database.
func (b *badInput) restart(t *testing.T) {
	t.Helper()
	b.n.Stop()
	b.n = tc.StartNode(t, b.url, tc.Options{})
	b.state(t)
}

// badInputState is what a refusal must leave unchanged: every seat map of
// the test's shows and the rows of the database.
type badInputState struct {
	SeatMaps map[string]string
	Rows     map[string]string
}

func (b *badInput) state(t *testing.T) badInputState {
	t.Helper()
	s := badInputState{SeatMaps: map[string]string{}, Rows: map[string]string{}}
	for _, id := range b.shows {
		sm, err := b.n.Reservations.GetSeatMap(b.ctx, &pb.GetSeatMapRequest{ShowId: id})
		if err != nil {
			t.Fatalf("GetSeatMap %s: %v", id, err)
		}
		s.SeatMaps[id] = fmt.Sprintf("version %d, %d/%d/%d available/held/booked, statuses %x",
			sm.GetVersion(), sm.GetAvailable(), sm.GetHeld(), sm.GetBooked(), sm.GetStatuses())
	}
	for name, q := range map[string]string{
		"shows":              `SELECT count(*)::text FROM shows`,
		"reservations":       `SELECT count(*) || ' rows, ' || coalesce(md5(string_agg(reservation_id || status || coalesce(payment_ref, ''), ',' ORDER BY reservation_id)), '') FROM reservations`,
		"seat_claims":        `SELECT count(*)::text FROM seat_claims`,
		"reservation_events": `SELECT count(*)::text FROM reservation_events`,
		"idempotency_keys":   `SELECT count(*)::text FROM idempotency_keys`,
	} {
		var v string
		if err := b.n.Store.Pool().QueryRow(context.Background(), q).Scan(&v); err != nil {
			t.Fatalf("count %s: %v", name, err)
		}
		s.Rows[name] = v
	}
	return s
}

// refused calls call and checks that it fails with code and reason and
// changes neither a seat map nor a row.
func (b *badInput) refused(t *testing.T, code codes.Code, reason string, call func() error) {
	t.Helper()
	before := b.state(t)
	err := call()
	wantStatus(t, err, code, reason)
	if after := b.state(t); !reflect.DeepEqual(before, after) {
		t.Errorf("refusal changed state:\nbefore %+v\nafter  %+v", before, after)
	}
}

// badInputReason returns the code of err and the reason of its
// google.rpc.ErrorInfo ("" if it has none).
func badInputReason(t *testing.T, err error) (codes.Code, string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a gRPC status: %v", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetDomain() != engine.ErrorDomain {
				t.Errorf("ErrorInfo domain %q, want %q", info.GetDomain(), engine.ErrorDomain)
			}
			if !strings.HasPrefix(st.Message(), info.GetReason()+": ") {
				t.Errorf("message %q does not start with the reason %s", st.Message(), info.GetReason())
			}
			return st.Code(), info.GetReason()
		}
	}
	return st.Code(), ""
}

func wantStatus(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, want %v %s", code, reason)
	}
	if gotCode, gotReason := badInputReason(t, err); gotCode != code || gotReason != reason {
		t.Fatalf("got %v %q (%v), want %v %q", gotCode, gotReason, err, code, reason)
	}
}

// holdSeats holds seats and fails the test if it cannot.
func (b *badInput) holdSeats(t *testing.T, show, user string, seats ...string) *pb.HoldSeatsResponse {
	t.Helper()
	h, err := b.n.Reservations.HoldSeats(b.ctx, &pb.HoldSeatsRequest{ShowId: show, UserId: user, SeatIds: seats})
	if err != nil {
		t.Fatalf("HoldSeats %s %s %v: %v", show, user, seats, err)
	}
	return h
}

func (b *badInput) confirm(t *testing.T, hold, user, ref string) *pb.Reservation {
	t.Helper()
	c, err := b.n.Reservations.ConfirmHold(b.ctx, &pb.ConfirmHoldRequest{HoldId: hold, UserId: user, PaymentRef: ref})
	if err != nil {
		t.Fatalf("ConfirmHold %s: %v", hold, err)
	}
	return c.GetReservation()
}

func (b *badInput) release(t *testing.T, hold, user string) {
	t.Helper()
	if _, err := b.n.Reservations.ReleaseHold(b.ctx, &pb.ReleaseHoldRequest{HoldId: hold, UserId: user}); err != nil {
		t.Fatalf("ReleaseHold %s: %v", hold, err)
	}
}

func seatRange(row string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", row, i))
	}
	return out
}

// badInputCase is one refused request.
type badInputCase struct {
	name   string
	code   codes.Code
	reason string
	call   func() error
}

func (b *badInput) run(t *testing.T, cases []badInputCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b.refused(t, c.code, c.reason, c.call)
		})
	}
}

func TestBadInputShowIDs(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "known")
	r, cat := b.n.Reservations, b.n.Catalog
	var cases []badInputCase
	for _, id := range []string{"nosuch", "Known", "known2"} {
		cases = append(cases,
			badInputCase{"GetSeatMap/unknown/" + id, codes.NotFound, "SHOW_NOT_FOUND", func() error {
				_, err := r.GetSeatMap(b.ctx, &pb.GetSeatMapRequest{ShowId: id})
				return err
			}},
			badInputCase{"HoldSeats/unknown/" + id, codes.NotFound, "SHOW_NOT_FOUND", func() error {
				_, err := r.HoldSeats(b.ctx, &pb.HoldSeatsRequest{ShowId: id, UserId: "u1", SeatIds: []string{"A-1"}})
				return err
			}},
			badInputCase{"GetShow/unknown/" + id, codes.NotFound, "SHOW_NOT_FOUND", func() error {
				_, err := cat.GetShow(b.ctx, &pb.GetShowRequest{ShowId: id})
				return err
			}},
		)
	}
	for _, id := range []string{"", "-known", "known show", "known:1", "kn/own", "ünknown", strings.Repeat("k", 65)} {
		name := fmt.Sprintf("%q", id)
		if len(name) > 20 {
			name = name[:20]
		}
		cases = append(cases,
			badInputCase{"GetSeatMap/malformed/" + name, codes.InvalidArgument, "INVALID_ARGUMENT", func() error {
				_, err := r.GetSeatMap(b.ctx, &pb.GetSeatMapRequest{ShowId: id})
				return err
			}},
			badInputCase{"HoldSeats/malformed/" + name, codes.InvalidArgument, "INVALID_ARGUMENT", func() error {
				_, err := r.HoldSeats(b.ctx, &pb.HoldSeatsRequest{ShowId: id, UserId: "u1", SeatIds: []string{"A-1"}})
				return err
			}},
			badInputCase{"GetShow/malformed/" + name, codes.InvalidArgument, "INVALID_ARGUMENT", func() error {
				_, err := cat.GetShow(b.ctx, &pb.GetShowRequest{ShowId: id})
				return err
			}},
		)
		if id != "" { // an empty show_id means "every show" there
			cases = append(cases, badInputCase{"ListUserReservations/malformed/" + name, codes.InvalidArgument, "INVALID_ARGUMENT", func() error {
				_, err := r.ListUserReservations(b.ctx, &pb.ListUserReservationsRequest{UserId: "u1", ShowId: id})
				return err
			}})
		}
	}
	b.run(t, cases)
}

func TestBadInputHoldSeats(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "show")
	b.holdSeats(t, "show", "taker", "C-1", "C-2")
	b.holdSeats(t, "show", "greedy", seatRange("A", 1, 6)...)
	booked := b.holdSeats(t, "show", "greedy", "A-7", "A-8")
	b.confirm(t, booked.GetHoldId(), "greedy", "pay-1")
	hold := func(user string, seats []string, key string) func() error {
		return func() error {
			_, err := b.n.Reservations.HoldSeats(b.ctx, &pb.HoldSeatsRequest{ShowId: "show", UserId: user, SeatIds: seats, IdempotencyKey: key})
			return err
		}
	}
	b.run(t, []badInputCase{
		{"unknown seat", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"A-1", "Z-1"}, "")},
		{"seat number 0", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"A-0"}, "")},
		{"seat past the row", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"A-11"}, "")},
		{"seat with leading zero", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"A-01"}, "")},
		{"lower-case row", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"a-1"}, "")},
		{"two seats in one ID", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"B-1,B-2"}, "")},
		{"empty seat ID", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{""}, "")},
		{"duplicate seat", codes.InvalidArgument, "DUPLICATE_SEAT", hold("u1", []string{"B-1", "B-2", "B-1"}, "")},
		{"duplicate unknown seat", codes.InvalidArgument, "DUPLICATE_SEAT", hold("u1", []string{"Z-1", "Z-1"}, "")},
		{"no seats", codes.InvalidArgument, "INVALID_SEAT_COUNT", hold("u1", nil, "")},
		{"11 seats", codes.InvalidArgument, "INVALID_SEAT_COUNT", hold("u1", append(seatRange("B", 1, 10), "C-10"), "")},
		{"11 seats, some taken", codes.InvalidArgument, "INVALID_SEAT_COUNT", hold("u1", append(seatRange("B", 1, 10), "C-1"), "")},
		{"empty user", codes.InvalidArgument, "INVALID_ARGUMENT", hold("", []string{"B-1"}, "")},
		{"user ID too long", codes.InvalidArgument, "INVALID_ARGUMENT", hold(strings.Repeat("u", 129), []string{"B-1"}, "")},
		{"idempotency key too long", codes.InvalidArgument, "INVALID_ARGUMENT", hold("u1", []string{"B-1"}, strings.Repeat("k", 129))},
		// PostgreSQL text cannot hold NUL: such a write would fail after the
		// decision in memory and drop the show.
		{"NUL in user", codes.InvalidArgument, "INVALID_ARGUMENT", hold("u\x001", []string{"B-1"}, "")},
		{"NUL in idempotency key", codes.InvalidArgument, "INVALID_ARGUMENT", hold("u1", []string{"B-1"}, "k\x00")},
		{"NUL in seat", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"B-1\x00"}, "")},
		// Nor can it hold text that is not UTF-8, which the engine's codec
		// does not check (the test client's codec sends it as is).
		{"user not UTF-8", codes.InvalidArgument, "INVALID_ARGUMENT", hold("u\xff", []string{"B-1"}, "")},
		{"idempotency key not UTF-8", codes.InvalidArgument, "INVALID_ARGUMENT", hold("u1", []string{"B-1"}, "k\xc3")},
		{"seat not UTF-8", codes.NotFound, "SEAT_NOT_FOUND", hold("u1", []string{"B-\xff"}, "")},
		{"seats taken", codes.AlreadyExists, "SEATS_TAKEN", hold("u1", []string{"B-1", "C-2"}, "")},
		{"seats booked", codes.AlreadyExists, "SEATS_TAKEN", hold("u1", []string{"A-8"}, "")},
		{"user limit", codes.ResourceExhausted, "USER_SEAT_LIMIT", hold("greedy", []string{"B-1", "B-2", "B-3"}, "")},
		{"user limit with a key", codes.ResourceExhausted, "USER_SEAT_LIMIT", hold("greedy", []string{"B-1", "B-2", "B-3"}, "k-greedy")},
	})

	t.Run("taken seats are named", func(t *testing.T) {
		_, err := b.n.Reservations.HoldSeats(b.ctx, &pb.HoldSeatsRequest{ShowId: "show", UserId: "u1", SeatIds: []string{"C-2", "B-1", "A-7", "C-1"}})
		st, _ := status.FromError(err)
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				if got := info.GetMetadata()["seats"]; got != "C-2,A-7,C-1" {
					t.Fatalf("seats metadata %q, want C-2,A-7,C-1", got)
				}
				return
			}
		}
		t.Fatalf("%v: no ErrorInfo", err)
	})
	t.Run("user limit counts held and booked seats exactly", func(t *testing.T) {
		b.holdSeats(t, "show", "greedy", "B-1", "B-2") // 10 seats: allowed
		b.refused(t, codes.ResourceExhausted, "USER_SEAT_LIMIT", hold("greedy", []string{"B-3"}, ""))
	})
	t.Run("a refused key is not used up", func(t *testing.T) {
		b.refused(t, codes.AlreadyExists, "SEATS_TAKEN", hold("u2", []string{"C-1"}, "k-u2"))
		if err := hold("u2", []string{"C-3"}, "k-u2")(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBadInputConfirmReleaseGet(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "show", "other")
	held := b.holdSeats(t, "show", "alice", "A-1", "A-2").GetHoldId()
	booked := b.holdSeats(t, "show", "bob", "B-1").GetHoldId()
	first := b.confirm(t, booked, "bob", "pay-bob")
	released := b.holdSeats(t, "show", "carol", "C-1").GetHoldId()
	b.release(t, released, "carol")
	// A show that exists but is not loaded: its holds are looked up in the
	// database.
	b.n.CreateShow(t, "cold", 1, 5, 0)

	r := b.n.Reservations
	confirm := func(hold, user, ref string) func() error {
		return func() error {
			_, err := r.ConfirmHold(b.ctx, &pb.ConfirmHoldRequest{HoldId: hold, UserId: user, PaymentRef: ref})
			return err
		}
	}
	release := func(hold, user string) func() error {
		return func() error {
			_, err := r.ReleaseHold(b.ctx, &pb.ReleaseHoldRequest{HoldId: hold, UserId: user})
			return err
		}
	}
	get := func(hold string) func() error {
		return func() error {
			_, err := r.GetReservation(b.ctx, &pb.GetReservationRequest{HoldId: hold})
			return err
		}
	}
	var cases []badInputCase
	for _, id := range []string{
		"show:nosuchhold", "show:", "other:" + held[len("show:"):], "cold:abc", "nosuch:abc", // unknown
		"", "show", ":abc", "bad show:abc", "-show:abc", held + " ", held + "\x00", "show:\x00", strings.Repeat("s", 65) + ":abc", // malformed
	} {
		cases = append(cases,
			badInputCase{fmt.Sprintf("ConfirmHold/%q", id), codes.NotFound, "HOLD_NOT_FOUND", confirm(id, "alice", "pay-1")},
			badInputCase{fmt.Sprintf("ReleaseHold/%q", id), codes.NotFound, "HOLD_NOT_FOUND", release(id, "alice")},
			badInputCase{fmt.Sprintf("GetReservation/%q", id), codes.NotFound, "HOLD_NOT_FOUND", get(id)},
		)
	}
	cases = append(cases, []badInputCase{
		{"ConfirmHold/not the holder", codes.PermissionDenied, "NOT_HOLDER", confirm(held, "mallory", "pay-1")},
		{"ConfirmHold/not the holder of a booking", codes.PermissionDenied, "NOT_HOLDER", confirm(booked, "mallory", "pay-bob")},
		{"ConfirmHold/not the holder of a released hold", codes.PermissionDenied, "NOT_HOLDER", confirm(released, "mallory", "pay-1")},
		{"ReleaseHold/not the holder", codes.PermissionDenied, "NOT_HOLDER", release(held, "mallory")},
		{"ReleaseHold/not the holder of a booking", codes.PermissionDenied, "NOT_HOLDER", release(booked, "mallory")},
		{"ReleaseHold/not the holder of a released hold", codes.PermissionDenied, "NOT_HOLDER", release(released, "mallory")},
		{"ConfirmHold/user IDs are case-sensitive", codes.PermissionDenied, "NOT_HOLDER", confirm(held, "Alice", "pay-1")},
		{"ConfirmHold/no payment_ref", codes.InvalidArgument, "INVALID_ARGUMENT", confirm(held, "alice", "")},
		{"ConfirmHold/payment_ref too long", codes.InvalidArgument, "INVALID_ARGUMENT", confirm(held, "alice", strings.Repeat("p", 201))},
		{"ConfirmHold/NUL in payment_ref", codes.InvalidArgument, "INVALID_ARGUMENT", confirm(held, "alice", "pay\x00")},
		{"ConfirmHold/payment_ref not UTF-8", codes.InvalidArgument, "INVALID_ARGUMENT", confirm(held, "alice", "pay\xff")},
		{"ConfirmHold/empty user", codes.InvalidArgument, "INVALID_ARGUMENT", confirm(held, "", "pay-1")},
		{"ConfirmHold/NUL in user", codes.InvalidArgument, "INVALID_ARGUMENT", confirm(held, "alice\x00", "pay-1")},
		{"ConfirmHold/NUL in idempotency key", codes.InvalidArgument, "INVALID_ARGUMENT", func() error {
			_, err := r.ConfirmHold(b.ctx, &pb.ConfirmHoldRequest{HoldId: held, UserId: "alice", PaymentRef: "pay-1", IdempotencyKey: "\x00"})
			return err
		}},
		{"ReleaseHold/empty user", codes.InvalidArgument, "INVALID_ARGUMENT", release(held, "")},
		{"ReleaseHold/NUL in user", codes.InvalidArgument, "INVALID_ARGUMENT", release(held, "alice\x00")},
		{"ConfirmHold/booked with another payment_ref", codes.FailedPrecondition, "HOLD_ENDED", confirm(booked, "bob", "pay-other")},
		{"ConfirmHold/released", codes.FailedPrecondition, "HOLD_ENDED", confirm(released, "carol", "pay-1")},
		{"ReleaseHold/booked", codes.FailedPrecondition, "HOLD_ENDED", release(booked, "bob")},
	}...)
	b.run(t, cases)

	t.Run("ConfirmHold/again with the same payment_ref", func(t *testing.T) {
		before := b.state(t)
		again := b.confirm(t, booked, "bob", "pay-bob")
		if !proto.Equal(again, first) {
			t.Fatalf("second confirm answered\n%v\nfirst\n%v", again, first)
		}
		if after := b.state(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("repeated confirm changed state:\nbefore %+v\nafter  %+v", before, after)
		}
	})
	t.Run("ReleaseHold/again by its user", func(t *testing.T) {
		before := b.state(t)
		if _, err := r.ReleaseHold(b.ctx, &pb.ReleaseHoldRequest{HoldId: released, UserId: "carol"}); err != nil {
			t.Fatal(err)
		}
		if after := b.state(t); !reflect.DeepEqual(before, after) {
			t.Fatalf("repeated release changed state:\nbefore %+v\nafter  %+v", before, after)
		}
	})
	t.Run("the held hold is intact", func(t *testing.T) {
		g, err := r.GetReservation(b.ctx, &pb.GetReservationRequest{HoldId: held})
		if err != nil {
			t.Fatal(err)
		}
		if g.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_HELD || g.GetReservation().GetUserId() != "alice" {
			t.Fatalf("held reservation is now %v", g.GetReservation())
		}
	})
}

func TestBadInputIdempotencyKeys(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "show")
	holdReq := &pb.HoldSeatsRequest{ShowId: "show", UserId: "u1", SeatIds: []string{"A-1", "A-2"}, IdempotencyKey: "k-hold"}
	first, err := b.n.Reservations.HoldSeats(b.ctx, holdReq)
	if err != nil {
		t.Fatal(err)
	}
	other := b.holdSeats(t, "show", "u1", "A-5").GetHoldId()
	confirmReq := &pb.ConfirmHoldRequest{HoldId: first.GetHoldId(), UserId: "u1", PaymentRef: "pay-1", IdempotencyKey: "k-confirm"}
	booked, err := b.n.Reservations.ConfirmHold(b.ctx, confirmReq)
	if err != nil {
		t.Fatal(err)
	}

	hold := func(user string, seats []string, key string) func() error {
		return func() error {
			_, err := b.n.Reservations.HoldSeats(b.ctx, &pb.HoldSeatsRequest{ShowId: "show", UserId: user, SeatIds: seats, IdempotencyKey: key})
			return err
		}
	}
	confirm := func(hold, ref, key string) func() error {
		return func() error {
			_, err := b.n.Reservations.ConfirmHold(b.ctx, &pb.ConfirmHoldRequest{HoldId: hold, UserId: "u1", PaymentRef: ref, IdempotencyKey: key})
			return err
		}
	}
	reused := func() []badInputCase {
		return []badInputCase{
			{"HoldSeats/other seats", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", hold("u1", []string{"A-3"}, "k-hold")},
			{"HoldSeats/more seats", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", hold("u1", []string{"A-1", "A-2", "A-3"}, "k-hold")},
			{"HoldSeats/other user", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", hold("u2", []string{"A-1", "A-2"}, "k-hold")},
			{"HoldSeats/key of a confirm", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", hold("u1", []string{"B-1"}, "k-confirm")},
			{"ConfirmHold/other payment_ref", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", confirm(first.GetHoldId(), "pay-2", "k-confirm")},
			{"ConfirmHold/other hold", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", confirm(other, "pay-1", "k-confirm")},
			{"ConfirmHold/key of a hold", codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED", confirm(other, "pay-1", "k-hold")},
		}
	}
	replays := func(t *testing.T) {
		t.Run("HoldSeats/same request replays", func(t *testing.T) {
			before := b.state(t)
			again, err := b.n.Reservations.HoldSeats(b.ctx, holdReq)
			if err != nil {
				t.Fatal(err)
			}
			// The hold as it is now: booked since the first answer.
			want := proto.Clone(first).(*pb.HoldSeatsResponse)
			want.Status = pb.ReservationStatus_RESERVATION_STATUS_BOOKED
			if !proto.Equal(again, want) {
				t.Fatalf("replay answered\n%v\nwant\n%v", again, want)
			}
			if after := b.state(t); !reflect.DeepEqual(before, after) {
				t.Fatalf("replay changed state:\nbefore %+v\nafter  %+v", before, after)
			}
		})
		t.Run("ConfirmHold/same request replays", func(t *testing.T) {
			before := b.state(t)
			again, err := b.n.Reservations.ConfirmHold(b.ctx, confirmReq)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(again, booked) {
				t.Fatalf("replay answered\n%v\nfirst answer\n%v", again, booked)
			}
			if after := b.state(t); !reflect.DeepEqual(before, after) {
				t.Fatalf("replay changed state:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}

	b.run(t, reused())
	replays(t)
	t.Run("restart", func(t *testing.T) {
		b.restart(t)
		b.run(t, reused())
		replays(t)
	})
}

func TestBadInputCreateShow(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "show")
	original, err := b.n.Catalog.GetShow(b.ctx, &pb.GetShowRequest{ShowId: "show"})
	if err != nil {
		t.Fatal(err)
	}
	req := func(edit func(*pb.CreateShowRequest)) func() error {
		return func() error {
			r := tc.ShowRequest("new", 3, 10, 0)
			edit(r)
			_, err := b.n.Catalog.CreateShow(b.admin, r)
			return err
		}
	}
	row := func(label string, seats int32, cat string) *pb.Row {
		return &pb.Row{Label: label, SeatCount: seats, Category: cat}
	}
	invalid := func(name string, edit func(*pb.CreateShowRequest)) badInputCase {
		return badInputCase{name, codes.InvalidArgument, "INVALID_ARGUMENT", req(edit)}
	}
	b.run(t, []badInputCase{
		invalid("no rows", func(r *pb.CreateShowRequest) { r.Rows = nil }),
		invalid("row of zero seats", func(r *pb.CreateShowRequest) { r.Rows[1].SeatCount = 0 }),
		invalid("row of negative seats", func(r *pb.CreateShowRequest) { r.Rows[1].SeatCount = -3 }),
		invalid("only a row of zero seats", func(r *pb.CreateShowRequest) { r.Rows = []*pb.Row{row("A", 0, "standard")} }),
		invalid("too many seats in a row", func(r *pb.CreateShowRequest) { r.Rows[0].SeatCount = 100_001 }),
		invalid("too many seats in all", func(r *pb.CreateShowRequest) {
			r.Rows = []*pb.Row{row("A", 60_000, "standard"), row("B", 40_001, "standard")}
		}),
		invalid("duplicate row labels", func(r *pb.CreateShowRequest) { r.Rows[2].Label = "A" }),
		invalid("empty row label", func(r *pb.CreateShowRequest) { r.Rows[0].Label = "" }),
		invalid("row label with a dash", func(r *pb.CreateShowRequest) { r.Rows[0].Label = "A-1" }),
		invalid("row label with a comma", func(r *pb.CreateShowRequest) { r.Rows[0].Label = "A,B" }),
		invalid("row label too long", func(r *pb.CreateShowRequest) { r.Rows[0].Label = "ABCDEFGHI" }),
		invalid("unknown category", func(r *pb.CreateShowRequest) { r.Rows[1].Category = "vip" }),
		invalid("duplicate category", func(r *pb.CreateShowRequest) {
			r.Categories = append(r.Categories, &pb.Category{Name: "standard", PriceCents: 1})
		}),
		invalid("category without a name", func(r *pb.CreateShowRequest) { r.Categories[0].Name = "" }),
		invalid("negative price", func(r *pb.CreateShowRequest) { r.Categories[0].PriceCents = -1 }),
		invalid("hold_ttl too short", func(r *pb.CreateShowRequest) { r.HoldTtl = durationpb.New(9 * time.Second) }),
		invalid("hold_ttl too long", func(r *pb.CreateShowRequest) { r.HoldTtl = durationpb.New(time.Hour + time.Second) }),
		invalid("hold_ttl negative", func(r *pb.CreateShowRequest) { r.HoldTtl = durationpb.New(-5 * time.Minute) }),
		invalid("hold_ttl malformed", func(r *pb.CreateShowRequest) { r.HoldTtl = &durationpb.Duration{Seconds: 60, Nanos: -1} }),
		invalid("no title", func(r *pb.CreateShowRequest) { r.Title = "" }),
		invalid("NUL in title", func(r *pb.CreateShowRequest) { r.Title = "T\x00" }),
		invalid("NUL in city", func(r *pb.CreateShowRequest) { r.City = "P\x00" }),
		invalid("city not UTF-8", func(r *pb.CreateShowRequest) { r.City = "P\xff" }),
		invalid("NUL in venue", func(r *pb.CreateShowRequest) { r.Venue = "H\x00" }),
		invalid("NUL in a category", func(r *pb.CreateShowRequest) {
			r.Categories[0].Name = "standard\x00"
			for _, row := range r.Rows {
				row.Category = "standard\x00"
			}
		}),
		invalid("starts_at out of range", func(r *pb.CreateShowRequest) { r.StartsAt = &timestamppb.Timestamp{Seconds: 1e13} }),
		invalid("starts_at nanos out of range", func(r *pb.CreateShowRequest) {
			r.StartsAt = &timestamppb.Timestamp{Seconds: 1e9, Nanos: -1}
		}),
		invalid("empty show_id", func(r *pb.CreateShowRequest) { r.ShowId = "" }),
		invalid("malformed show_id", func(r *pb.CreateShowRequest) { r.ShowId = "new show" }),
		invalid("show_id with a colon", func(r *pb.CreateShowRequest) { r.ShowId = "new:1" }),
		invalid("show_id too long", func(r *pb.CreateShowRequest) { r.ShowId = strings.Repeat("n", 65) }),
		{"duplicate show_id", codes.AlreadyExists, "SHOW_EXISTS", req(func(r *pb.CreateShowRequest) {
			r.ShowId, r.Title = "show", "Another title"
		})},
	})
	t.Run("the existing show is unchanged", func(t *testing.T) {
		got, err := b.n.Catalog.GetShow(b.ctx, &pb.GetShowRequest{ShowId: "show"})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, original) {
			t.Fatalf("show is now\n%v\nwas\n%v", got, original)
		}
	})
	t.Run("the edges are allowed", func(t *testing.T) {
		for i, ttl := range []time.Duration{10 * time.Second, time.Hour} {
			r := tc.ShowRequest(fmt.Sprintf("edge%d", i), 1, 1, ttl)
			if i == 1 {
				r.Rows = []*pb.Row{row("A", 100_000, "standard")}
			}
			if _, err := b.n.Catalog.CreateShow(b.admin, r); err != nil {
				t.Fatalf("hold_ttl %s: %v", ttl, err)
			}
		}
	})
}

func TestBadInputPaging(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "show")
	b.holdSeats(t, "show", "u1", "A-1")
	garbage := []string{"!!!", "not-a-token", base64.RawURLEncoding.EncodeToString([]byte("not json")),
		base64.RawURLEncoding.EncodeToString([]byte(`{"CreatedAt":"2026-01-01T00:00:00Z","ID":"show:\u0000"}`)),
		base64.StdEncoding.EncodeToString([]byte(`{"CreatedAt":"2026-01-01T00:00:00Z"}`)) + "==="}
	list := func(req *pb.ListUserReservationsRequest) func() error {
		return func() error { _, err := b.n.Reservations.ListUserReservations(b.ctx, req); return err }
	}
	events := func(req *pb.ListReservationEventsRequest) func() error {
		return func() error { _, err := b.n.Admin.ListReservationEvents(b.admin, req); return err }
	}
	cases := []badInputCase{
		{"ListUserReservations/negative page_size", codes.InvalidArgument, "INVALID_ARGUMENT",
			list(&pb.ListUserReservationsRequest{UserId: "u1", PageSize: -1})},
		{"ListUserReservations/empty user", codes.InvalidArgument, "INVALID_ARGUMENT",
			list(&pb.ListUserReservationsRequest{})},
		{"ListUserReservations/user ID too long", codes.InvalidArgument, "INVALID_ARGUMENT",
			list(&pb.ListUserReservationsRequest{UserId: strings.Repeat("u", 129)})},
		{"ListUserReservations/NUL in user", codes.InvalidArgument, "INVALID_ARGUMENT",
			list(&pb.ListUserReservationsRequest{UserId: "u1\x00"})},
		{"ListReservationEvents/NUL in user", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{UserId: "u1\x00"})},
		{"ListReservationEvents/NUL in hold", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{ShowId: "show", HoldId: "show:\x00"})},
		{"ListReservationEvents/malformed show", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{ShowId: "show\x00"})},
		{"ListReservationEvents/negative page_size", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{ShowId: "show", PageSize: -5})},
		{"ListReservationEvents/no filter", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{})},
		{"ListReservationEvents/no filter, paged", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{PageSize: 10})},
		{"ListReservationEvents/user's token", codes.InvalidArgument, "INVALID_ARGUMENT",
			events(&pb.ListReservationEventsRequest{ShowId: "show",
				PageToken: base64.RawURLEncoding.EncodeToString([]byte(`{"CreatedAt":"2026-01-01T00:00:00Z","ID":"x"}`))})},
	}
	for i, tok := range garbage {
		cases = append(cases,
			badInputCase{fmt.Sprintf("ListUserReservations/garbage page_token %d", i), codes.InvalidArgument, "INVALID_ARGUMENT",
				list(&pb.ListUserReservationsRequest{UserId: "u1", PageToken: tok})},
			badInputCase{fmt.Sprintf("ListReservationEvents/garbage page_token %d", i), codes.InvalidArgument, "INVALID_ARGUMENT",
				events(&pb.ListReservationEventsRequest{ShowId: "show", PageToken: tok})},
		)
	}
	b.run(t, cases)
}

func TestBadInputAuth(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "show")
	held := b.holdSeats(t, "show", "u1", "A-1").GetHoldId()
	held2 := b.holdSeats(t, "show", "u1", "A-2").GetHoldId()
	n := b.n
	type rpc struct {
		name  string
		admin bool
		call  func(ctx context.Context) error
	}
	rpcs := []rpc{
		{"CreateShow", true, func(ctx context.Context) error {
			_, err := n.Catalog.CreateShow(ctx, tc.ShowRequest("auth", 1, 5, 0))
			return err
		}},
		{"GetShow", false, func(ctx context.Context) error {
			_, err := n.Catalog.GetShow(ctx, &pb.GetShowRequest{ShowId: "show"})
			return err
		}},
		{"GetSeatMap", false, func(ctx context.Context) error {
			_, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: "show"})
			return err
		}},
		{"HoldSeats", false, func(ctx context.Context) error {
			_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{ShowId: "show", UserId: "u2", SeatIds: []string{"B-1"}})
			return err
		}},
		{"ConfirmHold", false, func(ctx context.Context) error {
			_, err := n.Reservations.ConfirmHold(ctx, &pb.ConfirmHoldRequest{HoldId: held, UserId: "u1", PaymentRef: "pay"})
			return err
		}},
		{"ReleaseHold", false, func(ctx context.Context) error {
			_, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: held2, UserId: "u1"})
			return err
		}},
		{"GetReservation", false, func(ctx context.Context) error {
			_, err := n.Reservations.GetReservation(ctx, &pb.GetReservationRequest{HoldId: held})
			return err
		}},
		{"ListUserReservations", false, func(ctx context.Context) error {
			_, err := n.Reservations.ListUserReservations(ctx, &pb.ListUserReservationsRequest{UserId: "u1"})
			return err
		}},
		{"ListReservationEvents", true, func(ctx context.Context) error {
			_, err := n.Admin.ListReservationEvents(ctx, &pb.ListReservationEventsRequest{ShowId: "show"})
			return err
		}},
	}
	bearer := func(v ...string) context.Context {
		ctx := context.Background()
		for _, s := range v {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", s)
		}
		return ctx
	}
	unauthenticated := []struct {
		name string
		ctx  context.Context
	}{
		{"no token", context.Background()},
		{"empty header", bearer("")},
		{"wrong token", bearer("Bearer wrong-token")},
		{"token prefix", bearer("Bearer " + tc.Token[:len(tc.Token)-1])},
		{"token with a suffix", bearer("Bearer " + tc.Token + "x")},
		{"no scheme", bearer(tc.Token)},
		{"basic scheme", bearer("Basic " + tc.AdminToken)},
		{"empty bearer", bearer("Bearer ")},
		{"token in another header", metadata.AppendToOutgoingContext(context.Background(), "x-token", tc.AdminToken)},
		{"two headers", bearer("Bearer "+tc.Token, "Bearer "+tc.AdminToken)},
	}
	for _, m := range rpcs {
		for _, c := range unauthenticated {
			t.Run(m.name+"/"+c.name, func(t *testing.T) {
				b.refused(t, codes.Unauthenticated, "UNAUTHENTICATED", func() error { return m.call(c.ctx) })
			})
		}
		if m.admin {
			t.Run(m.name+"/service token", func(t *testing.T) {
				b.refused(t, codes.PermissionDenied, "ADMIN_ONLY", func() error { return m.call(tc.Ctx(context.Background())) })
			})
		}
	}
	t.Run("the scheme in any case", func(t *testing.T) {
		getShow := rpcs[1] // a service RPC that changes nothing
		for _, scheme := range []string{"bearer", "BEARER", "bEaReR"} {
			if err := getShow.call(bearer(scheme + " " + tc.Token)); err != nil {
				t.Errorf("%s with scheme %q: %v", getShow.name, scheme, err)
			}
		}
	})
	t.Run("admin token on every RPC", func(t *testing.T) {
		for _, m := range rpcs {
			if err := m.call(tc.AdminCtx(context.Background())); err != nil {
				t.Errorf("%s with the admin token: %v", m.name, err)
			}
		}
	})
	t.Run("health check needs no token", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(n.Conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %v", resp.GetStatus())
		}
	})
	t.Run("reflection needs no token", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := reflectionpb.NewServerReflectionClient(n.Conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
		}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"boxoffice.v1.ReservationService", "boxoffice.v1.CatalogService", "boxoffice.v1.AdminService"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v, without %s", names, want)
			}
		}
		stream.CloseSend()
	})
}

// TestListUserReservationsPaging pages through a user's history of two
// shows, with several reservations made at the same instant, at every page
// size: newest first, ties broken by hold ID, no duplicates, no gaps.
func TestListUserReservationsPaging(t *testing.T) {
	clock := tc.NewClock(time.Now())
	b := newBadInput(t, tc.Options{Clock: clock}, "p1", "p2")
	var mine, mineP2 []string
	for i := range 23 {
		if i%3 != 0 { // every third reservation shares the instant of the one before
			clock.Advance(time.Second)
		}
		show := []string{"p1", "p2"}[i%2]
		h := b.holdSeats(t, show, "pager", seatRange("AB"[i/20:i/20+1], i/2%10+1, i/2%10+1)...).GetHoldId()
		mine = append(mine, h)
		if show == "p2" {
			mineP2 = append(mineP2, h)
		}
		switch i % 4 {
		case 0, 1:
			b.release(t, h, "pager")
		case 2:
			b.confirm(t, h, "pager", fmt.Sprintf("pay-%d", i))
		}
		b.holdSeats(t, show, fmt.Sprintf("someone-%d", i), seatRange("CD"[i/20:i/20+1], i/2%10+1, i/2%10+1)...)
	}
	clock.Advance(time.Second)

	page := func(t *testing.T, show string, size int32, token string) *pb.ListUserReservationsResponse {
		t.Helper()
		resp, err := b.n.Reservations.ListUserReservations(b.ctx, &pb.ListUserReservationsRequest{
			UserId: "pager", ShowId: show, PageSize: size, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, c := range []struct {
		show string
		want []string
	}{{"", mine}, {"p2", mineP2}} {
		all := page(t, c.show, 500, "")
		if all.GetNextPageToken() != "" {
			t.Fatalf("show %q: a token after the whole history", c.show)
		}
		var ids []string
		for i, r := range all.GetReservations() {
			ids = append(ids, r.GetHoldId())
			if r.GetUserId() != "pager" || c.show != "" && r.GetShowId() != c.show {
				t.Fatalf("show %q: listed %v", c.show, r)
			}
			if i > 0 {
				prev := all.GetReservations()[i-1]
				p, q := prev.GetCreatedAt().AsTime(), r.GetCreatedAt().AsTime()
				if q.After(p) || q.Equal(p) && r.GetHoldId() >= prev.GetHoldId() {
					t.Fatalf("show %q: %s (%v) listed after %s (%v)", c.show, r.GetHoldId(), q, prev.GetHoldId(), p)
				}
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(ids)), slices.Sorted(slices.Values(c.want))) {
			t.Fatalf("show %q: listed %v, want %v", c.show, ids, c.want)
		}
		for size := 1; size <= len(ids)+1; size++ {
			t.Run(fmt.Sprintf("show=%q/size=%d", c.show, size), func(t *testing.T) {
				var got []string
				token := ""
				for pages := 0; ; pages++ {
					if pages > len(ids)+1 {
						t.Fatal("paging does not end")
					}
					resp := page(t, c.show, int32(size), token)
					for _, r := range resp.GetReservations() {
						got = append(got, r.GetHoldId())
					}
					token = resp.GetNextPageToken()
					if token == "" {
						break
					}
					if len(resp.GetReservations()) != size {
						t.Fatalf("page %d has %d reservations and a next page", pages, len(resp.GetReservations()))
					}
				}
				if !slices.Equal(got, ids) {
					t.Fatalf("pages gave\n%v\nwant\n%v", got, ids)
				}
			})
		}
	}
	t.Run("default page size", func(t *testing.T) {
		if got := len(page(t, "", 0, "").GetReservations()); got != len(mine) {
			t.Fatalf("page_size 0 gave %d reservations, want %d", got, len(mine))
		}
	})
}

// TestListReservationEventsPaging pages through the audit log by show, by
// hold and by user.
func TestListReservationEventsPaging(t *testing.T) {
	b := newBadInput(t, tc.Options{}, "e1", "e2")
	holds := map[string][]string{}
	for i := range 9 {
		show := []string{"e1", "e2"}[i%2]
		user := fmt.Sprintf("u%d", i%3)
		h := b.holdSeats(t, show, user, seatRange("A", i+1, i+1)...).GetHoldId()
		holds[user] = append(holds[user], h)
		switch i % 3 {
		case 0:
			b.release(t, h, user)
		case 1:
			b.confirm(t, h, user, "pay")
		}
	}
	list := func(t *testing.T, req *pb.ListReservationEventsRequest) *pb.ListReservationEventsResponse {
		t.Helper()
		resp, err := b.n.Admin.ListReservationEvents(b.admin, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, c := range []struct {
		name   string
		filter *pb.ListReservationEventsRequest
		want   int
		match  func(*pb.ReservationEvent) bool
	}{
		{"show", &pb.ListReservationEventsRequest{ShowId: "e1"}, 5 + 3,
			func(e *pb.ReservationEvent) bool { return e.GetShowId() == "e1" }},
		{"user", &pb.ListReservationEventsRequest{UserId: "u1"}, 6,
			func(e *pb.ReservationEvent) bool { return e.GetUserId() == "u1" }},
		{"hold", &pb.ListReservationEventsRequest{HoldId: holds["u0"][1]}, 2,
			func(e *pb.ReservationEvent) bool { return e.GetHoldId() == holds["u0"][1] }},
		{"show and user", &pb.ListReservationEventsRequest{ShowId: "e2", UserId: "u2"}, 1,
			func(e *pb.ReservationEvent) bool { return e.GetShowId() == "e2" && e.GetUserId() == "u2" }},
	} {
		all := list(t, c.filter)
		if len(all.GetEvents()) != c.want || all.GetNextPageToken() != "" {
			t.Fatalf("%s: %d events (token %q), want %d", c.name, len(all.GetEvents()), all.GetNextPageToken(), c.want)
		}
		var ids []int64
		for i, e := range all.GetEvents() {
			if !c.match(e) {
				t.Fatalf("%s: listed %v", c.name, e)
			}
			if i > 0 && e.GetEventId() >= ids[i-1] {
				t.Fatalf("%s: event %d after %d: not newest first", c.name, e.GetEventId(), ids[i-1])
			}
			ids = append(ids, e.GetEventId())
		}
		for size := 1; size <= len(ids)+1; size++ {
			t.Run(fmt.Sprintf("%s/size=%d", c.name, size), func(t *testing.T) {
				var got []int64
				req := proto.Clone(c.filter).(*pb.ListReservationEventsRequest)
				req.PageSize = int32(size)
				for pages := 0; ; pages++ {
					if pages > len(ids)+1 {
						t.Fatal("paging does not end")
					}
					resp := list(t, req)
					for _, e := range resp.GetEvents() {
						got = append(got, e.GetEventId())
					}
					if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
						break
					}
					if len(resp.GetEvents()) != size {
						t.Fatalf("page %d has %d events and a next page", pages, len(resp.GetEvents()))
					}
				}
				if !slices.Equal(got, ids) {
					t.Fatalf("pages gave %v, want %v", got, ids)
				}
			})
		}
	}
}
