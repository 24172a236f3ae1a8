package engine_test

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
	"github.com/boxoffice/boxoffice/persistence"
)

// waitBadInput is a badInput whose state also covers the waitlists: their
// rows, and the entries of the users it follows as PollWaitlist answers
// them.
type waitBadInput struct {
	*badInput
	follow map[string][]string // show → users whose entries must not change
}

// waitBadInputState is what a refused waitlist request must leave unchanged.
type waitBadInputState struct {
	badInputState
	WaitRows map[string]string
	Entries  map[string]string // "show/user" → the entry, or "-" if none
}

func (b *waitBadInput) state(t *testing.T) waitBadInputState {
	t.Helper()
	s := waitBadInputState{badInputState: b.badInput.state(t), WaitRows: map[string]string{}, Entries: map[string]string{}}
	for name, q := range map[string]string{
		"waitlist_entries": `SELECT count(*) || ' rows: ' || coalesce(string_agg(concat_ws('/', show_id, user_id, seq, seats_wanted,
				joined_at, deadline, offer_seats, offered_at, offer_deadline), ', ' ORDER BY show_id, user_id), '') FROM waitlist_entries`,
		"waitlist_aside": `SELECT count(*) || ' rows: ' || coalesce(string_agg(show_id || '=' || seat_ids::text, ', ' ORDER BY show_id), '') FROM waitlist_aside`,
	} {
		var v string
		if err := b.n.Store.Pool().QueryRow(context.Background(), q).Scan(&v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.WaitRows[name] = v
	}
	for show, users := range b.follow {
		for _, user := range users {
			r, err := b.n.Waitlist.PollWaitlist(b.ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: user})
			switch {
			case err == nil:
				s.Entries[show+"/"+user] = entryString(r.GetEntry())
			case apiErrorOf(err).Reason == "NOT_WAITING":
				s.Entries[show+"/"+user] = "-"
			default:
				t.Fatalf("PollWaitlist %s %s: %v", show, user, err)
			}
		}
	}
	return s
}

// entryString is every field of e a refusal must leave as it was.
func entryString(e *pb.WaitlistEntry) string {
	s := fmt.Sprintf("%v position %d wants %d seq %d version %d joined %s deadline %s",
		e.GetState(), e.GetPosition(), e.GetSeatsWanted(), e.GetSequence(), e.GetVersion(),
		e.GetJoinedAt().AsTime().Format(time.RFC3339Nano), e.GetDeadline().AsTime().Format(time.RFC3339Nano))
	if e.EstimatedWait != nil {
		s += " estimate " + e.GetEstimatedWait().AsDuration().String()
	}
	if tu := e.GetTurn(); tu != nil {
		s += fmt.Sprintf(" turn %v offered %s until %s", tu.GetSeatIds(),
			tu.GetOfferedAt().AsTime().Format(time.RFC3339Nano), tu.GetDeadline().AsTime().Format(time.RFC3339Nano))
	}
	return s
}

// waitBadInputCase is one refused request; seats, if set, is the
// ErrorInfo's "seats" metadata the refusal must carry.
type waitBadInputCase struct {
	name   string
	code   codes.Code
	reason string
	seats  string
	call   func() error
}

func (b *waitBadInput) run(t *testing.T, cases []waitBadInputCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := b.state(t)
			err := c.call()
			wantStatus(t, err, c.code, c.reason)
			if got := apiErrorOf(err).Meta["seats"]; c.seats != "" && got != c.seats {
				t.Errorf("seats metadata %q, want %q", got, c.seats)
			}
			if after := b.state(t); !reflect.DeepEqual(before, after) {
				t.Errorf("refusal changed state:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

// watchFirst opens a WatchWaitlist stream and returns its first message or
// its error.
func watchFirst(ctx context.Context, n *tc.Node, show, user string) (*pb.WatchWaitlistResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := n.Waitlist.WatchWaitlist(ctx, &pb.WatchWaitlistRequest{ShowId: show, UserId: user})
	if err != nil {
		return nil, err
	}
	return s.Recv()
}

// TestWaitlistBadInput sends the waitlist's refusable requests against a
// show with a turn, seats set aside for the head and users waiting:
// unknown and malformed shows, seats_wanted out of 1-10, bad user IDs,
// joins that seats available now, a sold-out show or the user's seat limit
// refuse, leaving or following a waitlist one is not on, poll waits out of
// 0-30 s, holds of seats offered to someone else or set aside, and every
// waitlist RPC without the token. Each is answered its code and reason and
// leaves the seat maps, the rows (waitlist_entries, waitlist_aside,
// reservation_events among them) and every entry (state, position,
// version, turn) as they were.
func TestWaitlistBadInput(t *testing.T) {
	// The clock stands still, so that no hold expires, no turn lapses and
	// no estimate moves between a case's two snapshots.
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	bi := newBadInput(t, tc.Options{Clock: clock})
	n := bi.n
	db := openDB(t, bi.url)
	// wl: A-1..A-6, B-1..B-6.
	n.CreateShow(t, "wl", 2, 6, 0)
	n.CreateShow(t, "other", 1, 5, 0)
	bi.shows = []string{"wl", "other"}
	b := &waitBadInput{badInput: bi, follow: map[string][]string{
		"wl":    {"t", "w", "x", "quitter", "h1", "booker"},
		"other": {"t"},
	}}

	booked := b.holdSeats(t, "wl", "booker", "A-1", "A-2", "A-3")
	b.confirm(t, booked.GetHoldId(), "booker", "pay-booker")
	toTurn := b.holdSeats(t, "wl", "h1", "A-4", "A-5")
	toAside := b.holdSeats(t, "wl", "h1", "A-6")
	b.holdSeats(t, "wl", "h1", seatRange("B", 1, 5)...)
	// B-6 stays available; 9 seats could come free.
	join(t, n, "wl", "t", 2)
	join(t, n, "wl", "w", 5)
	join(t, n, "wl", "x", 2)
	join(t, n, "wl", "quitter", 2)
	if _, err := n.Waitlist.LeaveWaitlist(b.ctx, &pb.LeaveWaitlistRequest{ShowId: "wl", UserId: "quitter"}); err != nil {
		t.Fatal(err)
	}
	b.release(t, toTurn.GetHoldId(), "h1")  // t's turn
	b.release(t, toAside.GetHoldId(), "h1") // A-6 set aside for w, who wants 5
	if e := pollEntry(t, n, "wl", "t"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN ||
		!slices.Equal(e.GetTurn().GetSeatIds(), []string{"A-4", "A-5"}) {
		t.Fatalf("t: %v", e)
	}
	for user, pos := range map[string]int32{"w": 0, "x": 1} {
		if e := pollEntry(t, n, "wl", user); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || e.GetPosition() != pos {
			t.Fatalf("%s: %v, want waiting at %d", user, e, pos)
		}
	}
	if e := pollEntry(t, n, "wl", "quitter"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_LEFT {
		t.Fatalf("quitter: %v", e)
	}
	sm := getSeatMap(t, n, "wl")
	if sm.GetAvailable() != 1 || sm.GetHeld() != 5 || sm.GetBooked() != 3 || sm.GetOffered() != 3 || sm.GetWaiting() != 3 {
		t.Fatalf("seat map: %d/%d/%d/%d available/held/booked/offered, %d waiting",
			sm.GetAvailable(), sm.GetHeld(), sm.GetBooked(), sm.GetOffered(), sm.GetWaiting())
	}
	if aside := dbOffered(t, db, "wl"); !reflect.DeepEqual(aside, map[string]string{"A-4": "t", "A-5": "t", "A-6": ""}) {
		t.Fatalf("offered in the database: %v", aside)
	}

	w := n.Waitlist
	joinAs := func(ctx context.Context, show, user string, wanted int32) func() error {
		return func() error {
			_, err := w.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: show, UserId: user, SeatsWanted: wanted})
			return err
		}
	}
	leaveAs := func(ctx context.Context, show, user string) func() error {
		return func() error {
			_, err := w.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: show, UserId: user})
			return err
		}
	}
	pollAs := func(ctx context.Context, show, user string, wait *durationpb.Duration) func() error {
		return func() error {
			_, err := w.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: user, Wait: wait})
			return err
		}
	}
	watchAs := func(ctx context.Context, show, user string) func() error {
		return func() error {
			_, err := watchFirst(ctx, n, show, user)
			return err
		}
	}
	joinWL := func(user string, wanted int32) func() error { return joinAs(b.ctx, "wl", user, wanted) }
	holdWL := func(user string, seats ...string) func() error {
		return func() error {
			_, err := hold(t, n, "wl", user, seats...)
			return err
		}
	}
	// The four RPCs, each as a request that would succeed but for what a
	// case changes: the show, the user, the context.
	type rpc struct {
		name string
		call func(ctx context.Context, show, user string) func() error
	}
	rpcs := []rpc{
		{"Join", func(ctx context.Context, show, user string) func() error { return joinAs(ctx, show, user, 2) }},
		{"Leave", leaveAs},
		{"Poll", func(ctx context.Context, show, user string) func() error { return pollAs(ctx, show, user, nil) }},
		{"Watch", watchAs},
	}

	var cases []waitBadInputCase
	for _, m := range rpcs {
		// "nu" is nobody yet: joining wl for 2 would succeed; "w" may leave,
		// poll and watch.
		user := "w"
		if m.name == "Join" {
			user = "nu"
		}
		cases = append(cases, waitBadInputCase{m.name + "/unknown show", codes.NotFound, "SHOW_NOT_FOUND", "", m.call(b.ctx, "nosuch", user)})
		for _, id := range []string{"", "-wl", "wl show", "wl\x00"} {
			cases = append(cases, waitBadInputCase{fmt.Sprintf("%s/malformed show %q", m.name, id), codes.InvalidArgument, "INVALID_ARGUMENT", "", m.call(b.ctx, id, user)})
		}
		for name, u := range map[string]string{"empty user": "", "user ID too long": strings.Repeat("u", 129), "NUL in user": "u\x00"} {
			cases = append(cases, waitBadInputCase{m.name + "/" + name, codes.InvalidArgument, "INVALID_ARGUMENT", "", m.call(b.ctx, "wl", u)})
		}
		for name, ctx := range map[string]context.Context{
			"no token":     context.Background(),
			"wrong token":  metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer wrong-token"),
			"empty bearer": metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "),
		} {
			cases = append(cases, waitBadInputCase{m.name + "/" + name, codes.Unauthenticated, "UNAUTHENTICATED", "", m.call(ctx, "wl", user)})
		}
	}
	for _, wanted := range []int32{0, -1, 11, math.MaxInt32, math.MinInt32} {
		cases = append(cases, waitBadInputCase{fmt.Sprintf("Join/%d seats wanted", wanted), codes.InvalidArgument, "INVALID_SEATS_WANTED", "", joinWL("nu", wanted)})
	}
	for _, user := range []string{"stranger", "h1", "quitter", "T"} {
		cases = append(cases,
			waitBadInputCase{"Leave/not waiting/" + user, codes.NotFound, "NOT_WAITING", "", leaveAs(b.ctx, "wl", user)})
	}
	for _, user := range []string{"stranger", "h1", "T", strings.Repeat("u", 128)} {
		name := user[:min(len(user), 10)]
		cases = append(cases,
			waitBadInputCase{"Poll/not waiting/" + name, codes.NotFound, "NOT_WAITING", "", pollAs(b.ctx, "wl", user, nil)},
			waitBadInputCase{"Watch/not waiting/" + name, codes.NotFound, "NOT_WAITING", "", watchAs(b.ctx, "wl", user)})
	}
	for _, m := range rpcs[1:] {
		cases = append(cases, waitBadInputCase{m.name + "/waiting on another show", codes.NotFound, "NOT_WAITING", "", m.call(b.ctx, "other", "t")})
	}
	for name, d := range map[string]*durationpb.Duration{
		"31 s":               durationpb.New(31 * time.Second),
		"30 s and 1 ns":      durationpb.New(engine.MaxPollWait + time.Nanosecond),
		"-1 s":               durationpb.New(-time.Second),
		"-1 ns":              durationpb.New(-time.Nanosecond),
		"mixed signs":        {Seconds: 1, Nanos: -1},
		"nanos out of range": {Nanos: 1e9},
	} {
		cases = append(cases, waitBadInputCase{"Poll/wait " + name, codes.InvalidArgument, "INVALID_ARGUMENT", "", pollAs(b.ctx, "wl", "w", d)})
	}
	cases = append(cases, []waitBadInputCase{
		// A user on the waitlist is answered its entry whatever seats_wanted
		// is, but only a valid seats_wanted gets that far.
		{"Join/on the list, 11 seats wanted", codes.InvalidArgument, "INVALID_SEATS_WANTED", "", joinWL("w", 11)},
		{"Join/on the list, 0 seats wanted", codes.InvalidArgument, "INVALID_SEATS_WANTED", "", joinWL("t", 0)},
		{"Join/seats available now", codes.FailedPrecondition, "SEATS_AVAILABLE", "", joinWL("nu", 1)},
		{"Join/seats available now on a show with nobody waiting", codes.FailedPrecondition, "SEATS_AVAILABLE", "", joinAs(b.ctx, "other", "nu", 5)},
		{"Join/more than could ever come free", codes.ResourceExhausted, "SOLD_OUT", "", joinWL("nu", 10)},
		{"Join/wanted and held pass 10", codes.ResourceExhausted, "USER_SEAT_LIMIT", "", joinWL("h1", 6)},
		{"Join/wanted and held pass 10, 10 wanted", codes.ResourceExhausted, "USER_SEAT_LIMIT", "", joinWL("h1", 10)},
		{"Join/wanted and booked pass 10", codes.ResourceExhausted, "USER_SEAT_LIMIT", "", joinWL("booker", 8)},
		// Seats offered to another user's turn are refused as any taken seat
		// is: AlreadyExists SEATS_TAKEN, naming them. That is the engine's
		// answer for seats offered to someone else, whoever asks: the head,
		// a user further back, a holder, a stranger.
		{"Hold/offered to another, by the next in line", codes.AlreadyExists, "SEATS_TAKEN", "A-5", holdWL("w", "A-5")},
		{"Hold/offered to another, by a user further back", codes.AlreadyExists, "SEATS_TAKEN", "A-4", holdWL("x", "A-4")},
		{"Hold/offered to another, by a holder", codes.AlreadyExists, "SEATS_TAKEN", "A-4", holdWL("h1", "A-4")},
		{"Hold/offered to another, by a stranger", codes.AlreadyExists, "SEATS_TAKEN", "A-4,A-5", holdWL("stranger", "A-4", "A-5")},
		{"Hold/offered to another, with an available seat", codes.AlreadyExists, "SEATS_TAKEN", "A-5", holdWL("stranger", "B-6", "A-5")},
		// Seats set aside are offered to nobody yet: the head waits for more
		// and may not take them either.
		{"Hold/set aside, by the head", codes.AlreadyExists, "SEATS_TAKEN", "A-6", holdWL("w", "A-6")},
		{"Hold/set aside, by a user further back", codes.AlreadyExists, "SEATS_TAKEN", "A-6", holdWL("x", "A-6")},
		{"Hold/set aside, by the user with a turn", codes.AlreadyExists, "SEATS_TAKEN", "A-6", holdWL("t", "A-6")},
		{"Hold/set aside, by a stranger", codes.AlreadyExists, "SEATS_TAKEN", "A-6", holdWL("stranger", "A-6")},
		// All or nothing: the turn's own seats with one set aside or booked
		// take neither, and the turn stays.
		{"Hold/own offer and a set-aside seat", codes.AlreadyExists, "SEATS_TAKEN", "A-6", holdWL("t", "A-4", "A-6")},
		{"Hold/own offer and a booked seat", codes.AlreadyExists, "SEATS_TAKEN", "A-1", holdWL("t", "A-5", "A-1")},
	}...)
	b.run(t, cases)

	checkSeatMapEqualsDB(t, n, db, "wl")
	checkSeatMapEqualsDB(t, n, db, "other")
	checkDBInvariants(t, db, "wl")

	// The setup was sound: t takes one seat of its turn, and the other goes
	// on, set aside for w beside A-6.
	if _, err := hold(t, n, "wl", "t", "A-4"); err != nil {
		t.Fatalf("t takes its turn: %v", err)
	}
	if e := pollEntry(t, n, "wl", "t"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_DONE {
		t.Errorf("t after its take: %v", e)
	}
	if aside := dbOffered(t, db, "wl"); !reflect.DeepEqual(aside, map[string]string{"A-5": "", "A-6": ""}) {
		t.Errorf("offered in the database after t's take: %v", aside)
	}
	checkSeatMapEqualsDB(t, n, db, "wl")
}

// dbWaiting reports whether user has a waitlist_entries row for show.
func dbWaiting(t testing.TB, db *pgxpool.Pool, show, user string) bool {
	t.Helper()
	var k int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM waitlist_entries WHERE show_id = $1 AND user_id = $2`, show, user).Scan(&k); err != nil {
		t.Fatalf("waitlist_entries: %v", err)
	}
	return k > 0
}

// TestWaitlistJoinDatabaseDown joins a waitlist while the database is
// black-holed, then while it is cut off: the join is answered Unavailable
// within the store's CommitTimeout and a second, not at the caller's
// deadline. Once the database is back the show agrees with it — the user
// is on the waitlist in memory and in the database, or in neither, and the
// seat map equals the database — and the join, retried, succeeds, behind
// the user who joined before the fault.
func TestWaitlistJoinDatabaseDown(t *testing.T) {
	const commitTimeout = 2 * time.Second
	const bound = commitTimeout + time.Second
	for _, fault := range []string{"black hole", "cut"} {
		t.Run(fault, func(t *testing.T) {
			const show = "wldown"
			app := "wldown-" + strings.ReplaceAll(fault, " ", "")
			dbURL := pgclustertest.Shared(t)
			tc.Migrate(t, dbURL)
			db := openDB(t, dbURL)
			n, px := proxiedNode(t, dbURL, app, commitTimeout, commitTimeout)
			n.CreateShow(t, show, 1, 4, 0)
			bg := tc.Ctx(context.Background())
			if _, err := hold(t, n, show, "h", "A-1", "A-2", "A-3", "A-4"); err != nil {
				t.Fatal(err)
			}
			join(t, n, show, "early", 2)

			switch fault {
			case "black hole":
				px.BlackHole()
			case "cut":
				px.Cut()
			}
			ctx, cancel := context.WithTimeout(bg, 4*bound)
			start := time.Now()
			_, err := n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: show, UserId: "w", SeatsWanted: 2})
			took := time.Since(start)
			cancel()
			if err == nil {
				t.Fatalf("join with the database %s succeeded", fault)
			}
			e := apiErrorOf(err)
			if e.Code != codes.Unavailable {
				t.Errorf("join with the database %s: %s after %s, want Unavailable", fault, e, took)
			}
			if took > bound {
				t.Errorf("join with the database %s answered after %s, bound %s", fault, took, bound)
			}
			t.Logf("join with the database %s: %s after %s", fault, e, took)
			if r, err := n.Waitlist.PollWaitlist(bg, &pb.PollWaitlistRequest{ShowId: show, UserId: "w"}); err == nil {
				t.Logf("during the fault, memory has w %v", r.GetEntry().GetState())
			} else {
				t.Logf("during the fault, memory has no w: %s", apiErrorOf(err))
			}

			switch fault {
			case "black hole":
				px.Lift()
			case "cut":
				px.Reconnect()
			}
			// inMemory is whether PollWaitlist answers w waiting; ok is false
			// while it cannot tell.
			inMemory := func() (in, ok bool) {
				ctx, cancel := context.WithTimeout(bg, 2*time.Second)
				defer cancel()
				r, err := n.Waitlist.PollWaitlist(ctx, &pb.PollWaitlistRequest{ShowId: show, UserId: "w"})
				if err != nil {
					return false, apiErrorOf(err).Reason == "NOT_WAITING"
				}
				return r.GetEntry().GetState() == pb.WaitlistState_WAITLIST_STATE_WAITING, true
			}
			var inDB bool
			pollUntil(t, 30*time.Second, "memory to agree with the database", func() bool {
				mem, ok := inMemory()
				inDB = dbWaiting(t, db, show, "w")
				return ok && mem == inDB && seatMapDiff(t, n, db, show) == ""
			})
			t.Logf("after the fault w is on the waitlist: %v", inDB)
			checkSeatMapEqualsDB(t, n, db, show)
			if e := pollEntry(t, n, show, "early"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || e.GetPosition() != 0 {
				t.Errorf("early after the fault: %v", e)
			}

			var r *pb.JoinWaitlistResponse
			pollUntil(t, 20*time.Second, "a retried join to be answered", func() bool {
				ctx, cancel := context.WithTimeout(bg, 2*time.Second)
				defer cancel()
				r, err = n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: show, UserId: "w", SeatsWanted: 2})
				if err != nil && apiErrorOf(err).Code != codes.Unavailable {
					t.Fatalf("retried join: %v", err)
				}
				return err == nil
			})
			if r.GetExisted() != inDB {
				t.Errorf("retried join answered existed %v, but the database had w: %v", r.GetExisted(), inDB)
			}
			if e := r.GetEntry(); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING || e.GetPosition() != 1 {
				t.Errorf("w after the retried join: %v", e)
			}
			if !dbWaiting(t, db, show, "w") {
				t.Error("w is not in the database after the retried join")
			}
			checkSeatMapEqualsDB(t, n, db, show)
			checkDBInvariants(t, db, show)
		})
	}
}

// TestWaitlistNotEvicted moves an injected clock past IdleEvictAfter while
// a show's waitlist has a turn and a user waiting, with no live hold: the
// show stays in memory. Once everybody has left, it is evicted like any
// idle show, and loads again with an empty waitlist.
func TestWaitlistNotEvicted(t *testing.T) {
	const (
		show = "wlidle"
		idle = time.Minute // less than the offer window: no turn is due
		ttl  = 30 * time.Minute
	)
	clock := tc.NewClock(time.Now().UTC().Truncate(time.Second))
	n, url := newNode(t, tc.Options{
		Clock: clock, ExpiryInterval: time.Hour, // the test evicts, not the loop
		Engine: func(c *engine.Config) { c.IdleEvictAfter = idle },
	})
	db := openDB(t, url)
	ctx := tc.Ctx(context.Background())
	n.CreateShow(t, show, 1, 2, ttl)

	h, err := hold(t, n, show, "h", "A-1", "A-2")
	if err != nil {
		t.Fatal(err)
	}
	join(t, n, show, "w1", 2)
	join(t, n, show, "w2", 1)
	if _, err := n.Reservations.ReleaseHold(ctx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "h"}); err != nil {
		t.Fatal(err)
	}
	// evicts moves the clock by d and evicts; the state is checked after,
	// as every read is a use.
	evicts := func(d time.Duration) int {
		t.Helper()
		clock.Advance(d)
		return n.Engine.EvictIdle()
	}

	if got := evicts(idle); got != 0 || !loaded(n, show) {
		t.Errorf("with a turn and a user waiting, no live hold: EvictIdle evicted %d, loaded %v", got, loaded(n, show))
	}
	if e := pollEntry(t, n, show, "w1"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN {
		t.Errorf("w1: %v, want its turn", e)
	}
	if e := pollEntry(t, n, show, "w2"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_WAITING {
		t.Errorf("w2: %v, want waiting", e)
	}
	if sm := getSeatMap(t, n, show); sm.GetHeld() != 0 || sm.GetOffered() != 2 {
		t.Errorf("seat map with w1's turn: %d held, %d offered", sm.GetHeld(), sm.GetOffered())
	}

	// w1 leaves: w2 gets A-1 of its turn; A-2 goes back to everyone.
	if _, err := n.Waitlist.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: show, UserId: "w1"}); err != nil {
		t.Fatal(err)
	}
	if got := evicts(idle); got != 0 || !loaded(n, show) {
		t.Errorf("with a turn alone: EvictIdle evicted %d, loaded %v", got, loaded(n, show))
	}
	if e := pollEntry(t, n, show, "w2"); e.GetState() != pb.WaitlistState_WAITLIST_STATE_TURN || len(e.GetTurn().GetSeatIds()) != 1 {
		t.Errorf("w2 after w1 left: %v, want a turn of 1 seat", e)
	}

	if _, err := n.Waitlist.LeaveWaitlist(ctx, &pb.LeaveWaitlistRequest{ShowId: show, UserId: "w2"}); err != nil {
		t.Fatal(err)
	}
	if got := evicts(idle - time.Second); got != 0 || !loaded(n, show) {
		t.Errorf("used %s ago: EvictIdle evicted %d, loaded %v", idle-time.Second, got, loaded(n, show))
	}
	if got := evicts(time.Second); got != 1 || loaded(n, show) {
		t.Errorf("nobody waiting, idle for %s: EvictIdle evicted %d, loaded %v", idle, got, loaded(n, show))
	}
	if dbWaiting(t, db, show, "w1") || dbWaiting(t, db, show, "w2") {
		t.Error("waitlist rows left after both left")
	}
	// Used again: loaded with nobody waiting and every seat available.
	sm := getSeatMap(t, n, show)
	if sm.GetAvailable() != 2 || sm.GetWaiting() != 0 {
		t.Errorf("seat map after the reload: %d available, %d waiting", sm.GetAvailable(), sm.GetWaiting())
	}
	if !slices.Contains(n.Engine.LoadedShows(), ar.ShowID(show)) {
		t.Errorf("%s not loaded after use", show)
	}
	checkSeatMapEqualsDB(t, n, db, show)
}

// TestWaitlistRepeatedJoinWaitsForTheFirst: a user's second join, sent
// while the first one's write is still in flight, is not answered from
// memory (existed) before that write is durable. The first write fails
// here (its transaction waits for a lock past the commit timeout): the
// second join then joins anew, durably. Before, it was answered at once,
// and the join it confirmed was in neither memory nor the database once
// the first write had failed.
func TestWaitlistRepeatedJoinWaitsForTheFirst(t *testing.T) {
	const show, user = "wl-twice", "u-twice"
	n, url := newNode(t, tc.Options{Store: persistence.Config{CommitTimeout: time.Second}})
	db := openDB(t, url)
	n.CreateShow(t, show, 1, 2, 0)
	if _, err := hold(t, n, show, "h", "A-1", "A-2"); err != nil { // sold out: joins are allowed
		t.Fatal(err)
	}
	second := joinTwiceAcrossAFailedWrite(t, db, show, func(ctx context.Context) (proto.Message, error) {
		return n.Waitlist.JoinWaitlist(ctx, &pb.JoinWaitlistRequest{ShowId: show, UserId: user, SeatsWanted: 1})
	})
	if !dbWaiting(t, db, show, user) {
		t.Fatalf("the second join was answered %v, but the user is not on the waitlist in the database", second)
	}
}

// joinTwiceAcrossAFailedWrite calls join twice for one user of show: the
// first call's transaction waits for a lock on the show's ownership row
// past the commit timeout and fails, and the second is sent meanwhile. It
// returns the second call's answer, failing the test if the first
// succeeded or the second failed.
func joinTwiceAcrossAFailedWrite(t *testing.T, db *pgxpool.Pool, show string, join func(context.Context) (proto.Message, error)) proto.Message {
	t.Helper()
	type answer struct {
		r   proto.Message
		err error
	}
	call := func(out chan<- answer) {
		ctx, cancel := context.WithTimeout(tc.Ctx(context.Background()), 20*time.Second)
		defer cancel()
		r, err := join(ctx)
		out <- answer{r, err}
	}
	first, second := make(chan answer, 1), make(chan answer, 1)
	plug := lockOwnerRow(t, db, show)
	go call(first)
	pollUntil(t, 10*time.Second, "the first join's transaction to wait for the lock", func() bool {
		var k int
		err := db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'`).Scan(&k)
		return err == nil && k > 0
	})
	go call(second)
	a := <-first
	if a.err == nil {
		t.Fatalf("the first join committed through the lock: %v", a.r)
	}
	if err := plug.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := <-second
	if b.err != nil {
		t.Fatalf("the second join (the first failed: %v): %v", a.err, b.err)
	}
	return b.r
}
