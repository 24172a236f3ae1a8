package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// Helpers shared by the integration tests that check the engine against
// what PostgreSQL says (race, expiry, fencing, database down).

// apiError is a refusal as the API gives it: the gRPC code and the reason
// and metadata of its google.rpc.ErrorInfo.
type apiError struct {
	Code   codes.Code
	Reason string
	Meta   map[string]string
	Msg    string
}

func (e apiError) String() string { return fmt.Sprintf("%v %s (%s)", e.Code, e.Reason, e.Msg) }

// apiErrorOf decodes err. It does not fail the test, so goroutines may call
// it; an error that is not a gRPC status comes back with code Unknown and
// reason "NOT_A_STATUS".
func apiErrorOf(err error) apiError {
	st, ok := status.FromError(err)
	if !ok {
		return apiError{Code: codes.Unknown, Reason: "NOT_A_STATUS", Msg: fmt.Sprint(err)}
	}
	e := apiError{Code: st.Code(), Msg: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == engine.ErrorDomain {
			e.Reason, e.Meta = info.GetReason(), info.GetMetadata()
		}
	}
	return e
}

// wantAPIError fails the test unless err is a refusal with code and reason.
func wantAPIError(t testing.TB, what string, err error, code codes.Code, reason string) apiError {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want %v %s", what, code, reason)
	}
	e := apiErrorOf(err)
	if e.Code != code || e.Reason != reason {
		t.Fatalf("%s: got %s, want %v %s", what, e, code, reason)
	}
	return e
}

// openDB opens a pool of its own on url for checking the database; it is
// closed at cleanup.
func openDB(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	db, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(db.Close)
	return db
}

// dbReservation is a reservations row.
type dbReservation struct {
	ID, User, Status string
	Seats            []string
	CreatedAt        time.Time
	ExpiresAt        time.Time
	BookedAt         *time.Time
	EndedAt          *time.Time
	PaymentRef       *string
}

// dbReservations returns the show's reservations by ID.
func dbReservations(t testing.TB, db *pgxpool.Pool, show string) map[string]dbReservation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, _ := db.Query(ctx, `SELECT reservation_id, user_id, status, seat_ids, created_at, expires_at,
			booked_at, ended_at, payment_ref
		FROM reservations WHERE show_id = $1`, show)
	out := map[string]dbReservation{}
	var r dbReservation
	_, err := pgx.ForEachRow(rows, []any{&r.ID, &r.User, &r.Status, &r.Seats, &r.CreatedAt, &r.ExpiresAt,
		&r.BookedAt, &r.EndedAt, &r.PaymentRef}, func() error {
		out[r.ID] = r
		r = dbReservation{}
		return nil
	})
	if err != nil {
		t.Fatalf("reservations of %s: %v", show, err)
	}
	return out
}

// dbReservationOf returns one reservations row; ok is false if there is none.
func dbReservationOf(t testing.TB, db *pgxpool.Pool, show, id string) (dbReservation, bool) {
	t.Helper()
	r, ok := dbReservations(t, db, show)[id]
	return r, ok
}

// dbClaims returns the show's seat claims: seat → reservation.
func dbClaims(t testing.TB, db *pgxpool.Pool, show string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, _ := db.Query(ctx, `SELECT seat_id, reservation_id FROM seat_claims WHERE show_id = $1`, show)
	out := map[string]string{}
	var seat, id string
	if _, err := pgx.ForEachRow(rows, []any{&seat, &id}, func() error {
		if prev, dup := out[seat]; dup {
			t.Errorf("seat %s claimed by %s and %s", seat, prev, id)
		}
		out[seat] = id
		return nil
	}); err != nil {
		t.Fatalf("seat claims of %s: %v", show, err)
	}
	return out
}

// dbOwner returns the show's owner node and epoch.
func dbOwner(t testing.TB, db *pgxpool.Pool, show string) (string, int64) {
	t.Helper()
	var node string
	var epoch int64
	if err := db.QueryRow(context.Background(), `SELECT owner_node, epoch FROM show_owners WHERE show_id = $1`, show).Scan(&node, &epoch); err != nil {
		t.Fatalf("owner of %s: %v", show, err)
	}
	return node, epoch
}

// dbEvent is a reservation_events row.
type dbEvent struct {
	ID                int64
	Reservation, User string
	Kind, Node        string
	Seats             []string
	Epoch             int64
	At                time.Time
}

// dbEvents returns the show's audit events in commit order.
func dbEvents(t testing.TB, db *pgxpool.Pool, show string) []dbEvent {
	t.Helper()
	rows, _ := db.Query(context.Background(), `SELECT event_id, reservation_id, user_id, kind, node_id, seat_ids, epoch, at
		FROM audit_events WHERE show_id = $1 ORDER BY event_id`, show)
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (dbEvent, error) {
		var e dbEvent
		err := r.Scan(&e.ID, &e.Reservation, &e.User, &e.Kind, &e.Node, &e.Seats, &e.Epoch, &e.At)
		return e, err
	})
	if err != nil {
		t.Fatalf("events of %s: %v", show, err)
	}
	return evs
}

// dbLastEventID returns the highest event ID of the show (0 if none).
func dbLastEventID(t testing.TB, db *pgxpool.Pool, show string) int64 {
	t.Helper()
	var id int64
	if err := db.QueryRow(context.Background(), `SELECT coalesce(max(event_id), 0) FROM audit_events WHERE show_id = $1`, show).Scan(&id); err != nil {
		t.Fatalf("last event of %s: %v", show, err)
	}
	return id
}

// checkDBInvariants runs the invariant queries against the show's rows: no
// seat with two live claims or in two live reservations, every live
// reservation claims all its seats, every claim belongs to a live
// reservation covering that seat, and no user has more than 10 live seats.
func checkDBInvariants(t testing.TB, db *pgxpool.Pool, show string) {
	t.Helper()
	for _, q := range []struct{ what, sql string }{
		{"seats with two live claims", `SELECT seat_id || ' x' || count(*) FROM seat_claims
			WHERE show_id = $1 GROUP BY seat_id HAVING count(*) > 1`},
		{"seats in two live reservations", `SELECT s || ' x' || count(*) FROM reservations r, unnest(r.seat_ids) s
			WHERE r.show_id = $1 AND r.status IN ('HELD', 'BOOKED') GROUP BY s HAVING count(*) > 1`},
		{"live reservations with a seat they do not claim", `SELECT r.reservation_id || ' ' || s
			FROM reservations r, unnest(r.seat_ids) s
			WHERE r.show_id = $1 AND r.status IN ('HELD', 'BOOKED') AND NOT EXISTS (
				SELECT 1 FROM seat_claims c
				WHERE c.show_id = r.show_id AND c.seat_id = s AND c.reservation_id = r.reservation_id)`},
		{"claims without a live reservation covering the seat", `SELECT c.seat_id || ' by ' || c.reservation_id || ' ' || coalesce(r.status, 'missing')
			FROM seat_claims c LEFT JOIN reservations r USING (show_id, reservation_id)
			WHERE c.show_id = $1 AND (r.status IS NULL OR r.status NOT IN ('HELD', 'BOOKED') OR NOT c.seat_id = ANY (r.seat_ids))`},
		{"users over 10 live seats", `SELECT user_id || ' ' || sum(cardinality(seat_ids)) FROM reservations
			WHERE show_id = $1 AND status IN ('HELD', 'BOOKED') GROUP BY user_id HAVING sum(cardinality(seat_ids)) > 10`},
		{"ended reservations without ended_at, bookings without booked_at", `SELECT reservation_id || ' ' || status FROM reservations
			WHERE show_id = $1 AND ((status IN ('RELEASED', 'EXPIRED')) <> (ended_at IS NOT NULL)
				OR (status = 'BOOKED') <> (booked_at IS NOT NULL))`},
	} {
		rows, _ := db.Query(context.Background(), q.sql, show)
		bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q.what, err)
		}
		if len(bad) > 0 {
			t.Errorf("%s in show %s: %v", q.what, show, bad)
		}
	}
}

// seatStatuses returns a seat map as seat ID → status.
func seatStatuses(t testing.TB, sm *pb.GetSeatMapResponse) map[string]ar.SeatStatus {
	t.Helper()
	out := make(map[string]ar.SeatStatus, len(sm.GetStatuses()))
	i := 0
	for _, r := range sm.GetRows() {
		for k := 1; k <= int(r.GetSeatCount()); k++ {
			if i >= len(sm.GetStatuses()) {
				t.Fatalf("seat map has %d statuses, fewer than its rows' seats", len(sm.GetStatuses()))
			}
			out[fmt.Sprintf("%s-%d", r.GetLabel(), k)] = ar.SeatStatus(sm.GetStatuses()[i])
			i++
		}
	}
	if i != len(sm.GetStatuses()) {
		t.Fatalf("seat map has %d statuses for %d seats", len(sm.GetStatuses()), i)
	}
	return out
}

// getSeatMap reads a show's seat map through n.
func getSeatMap(t testing.TB, n *tc.Node, show string) *pb.GetSeatMapResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 10*time.Second)
	defer cancel()
	sm, err := n.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show, IncludeLayout: true})
	if err != nil {
		t.Fatalf("GetSeatMap %s: %v", show, err)
	}
	return sm
}

// seatMapDiff compares n's seat map of show with the show's rows in the
// database and describes the differences ("" if none).
func seatMapDiff(t testing.TB, n *tc.Node, db *pgxpool.Pool, show string) string {
	t.Helper()
	sm := getSeatMap(t, n, show)
	got := seatStatuses(t, sm)
	res := dbReservations(t, db, show)
	claims := dbClaims(t, db, show)
	offered := dbOffered(t, db, show)
	var diffs []string
	var held, booked int
	for seat, st := range got {
		want := ar.SeatAvailable
		if _, ok := offered[seat]; ok {
			want = ar.SeatOffered
		}
		if id, ok := claims[seat]; ok {
			switch res[id].Status {
			case "HELD":
				want = ar.SeatHeld
			case "BOOKED":
				want = ar.SeatBooked
			}
		}
		switch want {
		case ar.SeatHeld:
			held++
		case ar.SeatBooked:
			booked++
		}
		if st != want {
			diffs = append(diffs, fmt.Sprintf("%s: seat map %d, database %d", seat, st, want))
		}
	}
	for seat := range claims {
		if _, ok := got[seat]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: claimed in the database, not in the seat map", seat))
		}
	}
	for seat, user := range offered {
		if _, ok := claims[seat]; ok {
			diffs = append(diffs, fmt.Sprintf("%s: claimed and offered to %q in the database", seat, user))
		}
	}
	if int(sm.GetHeld()) != held || int(sm.GetBooked()) != booked || int(sm.GetOffered()) != len(offered) ||
		int(sm.GetAvailable()) != len(got)-held-booked-len(offered) {
		diffs = append(diffs, fmt.Sprintf("counts available/held/booked/offered: seat map %d/%d/%d/%d, database %d/%d/%d/%d",
			sm.GetAvailable(), sm.GetHeld(), sm.GetBooked(), sm.GetOffered(), len(got)-held-booked-len(offered), held, booked, len(offered)))
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// dbOffered returns the seats of show the database has set aside for its
// waitlist's head ("") or offered to a user with a turn.
func dbOffered(t testing.TB, db *pgxpool.Pool, show string) map[string]string {
	t.Helper()
	rows, err := db.Query(context.Background(), `
		SELECT unnest(seat_ids), '' FROM waitlist_aside WHERE show_id = $1
		UNION ALL
		SELECT unnest(offer_seats), user_id FROM waitlist_entries WHERE show_id = $1`, show)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	var seat, user string
	if _, err := pgx.ForEachRow(rows, []any{&seat, &user}, func() error {
		if _, dup := out[seat]; dup {
			t.Errorf("seat %s of %s is in the database's waitlist twice", seat, show)
		}
		out[seat] = user
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkSeatMapEqualsDB fails the test if n's seat map of show differs from
// the database.
func checkSeatMapEqualsDB(t testing.TB, n *tc.Node, db *pgxpool.Pool, show string) {
	t.Helper()
	if d := seatMapDiff(t, n, db, show); d != "" {
		t.Errorf("seat map of %s differs from the database:\n%s", show, d)
	}
}

// pollUntil calls cond every 10 ms until it returns true, and fails the
// test with what if it has not within timeout.
func pollUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockOwnerRow locks show's ownership row in a transaction of its own, so
// the node's writer, which locks the row FOR KEY SHARE, waits with its batch in
// flight until the test commits or rolls back the returned transaction
// (rolled back at cleanup).
func lockOwnerRow(t testing.TB, db *pgxpool.Pool, show string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) }) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT 1 FROM show_owners WHERE show_id = $1 FOR UPDATE`, show); err != nil {
		t.Fatal(err)
	}
	return tx
}
