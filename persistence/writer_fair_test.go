package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/persistence"
)

// writerTx is one writer transaction as the rows it inserted tell it: the
// audit events with its xmin. A HELD event is its reservation's row, which
// a confirm rewrites (a new xmin): its transaction is its seat claim's.
type writerTx struct {
	xid    int64
	events []string // "<show> <reservation> <kind>", in event order
	shows  map[string]int
}

// writerTxs returns the transactions that inserted the database's audit
// events, in the order they took their transaction IDs (a writer
// transaction takes it with its first statement, which locks the
// ownership rows).
func writerTxs(t *testing.T, s *persistence.Store) []writerTx {
	t.Helper()
	rows, _ := s.Pool().Query(context.Background(), `SELECT xmin::text::bigint, show_id, reservation_id, kind, event_id
		FROM reservation_events
		UNION ALL
		SELECT DISTINCT ON (r.reservation_id) c.xmin::text::bigint, r.show_id, r.reservation_id, 'HELD', r.held_event_id
		FROM reservations r JOIN seat_claims c ON c.show_id = r.show_id AND c.reservation_id = r.reservation_id
		WHERE r.held_event_id IS NOT NULL
		ORDER BY event_id`)
	byXid := map[int64]*writerTx{}
	var xid, eventID int64
	var show, id, kind string
	if _, err := pgx.ForEachRow(rows, []any{&xid, &show, &id, &kind, &eventID}, func() error {
		tx := byXid[xid]
		if tx == nil {
			tx = &writerTx{xid: xid, shows: map[string]int{}}
			byXid[xid] = tx
		}
		tx.events = append(tx.events, show+" "+id+" "+kind)
		tx.shows[show]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var out []writerTx
	for _, tx := range byXid {
		out = append(out, *tx)
	}
	slices.SortFunc(out, func(a, b writerTx) int { return int(a.xid - b.xid) })
	return out
}

// TestWriterFairTurns queues a deep queue of a hot show — four batches of
// holds and confirms, each confirm depending on a hold queued before it —
// and then a cold show's two holds, all behind a blocked transaction of
// the hot show. Once it is unblocked, the cold holds commit in the next
// transaction or beside it, alone, instead of after the whole hot queue;
// and the hot show's mutations commit in the order they were queued, in
// batches of its own.
func TestWriterFairTurns(t *testing.T) {
	url := newDB(t)
	s := openStore(t, url, nil)
	hot, cold := ownShow(t, s, "hot"), ownShow(t, s, "cold")
	// The hot show's committer is blocked with a transaction of its own:
	// its later mutations queue, and so does the cold show's, which may
	// not start beside a small transaction.
	release, blocker := blockCommitter(t, s, url, "hot", hot)

	const rounds, batch = 2, 1024 // the default MaxBatch
	var ms []persistence.Mutation
	var wantHot []string
	id := func(j int) string { return fmt.Sprintf("hot:%05d", (j*7919)%(rounds*batch)) } // not in queue order
	for r := range rounds {
		var confirms []persistence.Mutation
		for j := r * batch; j < (r+1)*batch; j++ {
			user, seat := "hu"+strconv.Itoa(j), "H-"+strconv.Itoa(j)
			ms = append(ms, holdM(hot, "hot", id(j), user, t0, seat))
			c := endM(persistence.Confirm, hot, "hot", id(j), user, t0.Add(time.Second), seat)
			c.PaymentRef = "pay"
			confirms = append(confirms, c)
			wantHot = append(wantHot, id(j)+" HELD")
		}
		slices.Reverse(confirms)
		for _, c := range confirms {
			wantHot = append(wantHot, c.ReservationID+" BOOKED")
		}
		ms = append(ms, confirms...)
	}
	ps := enqueueAll(t, s, ms...)
	colds := enqueueAll(t, s, holdM(cold, "cold", "cold:1", "cu1", t0, "A-1"), holdM(cold, "cold", "cold:2", "cu2", t0, "A-2"))
	if n := s.QueueLen(); n != len(ms)+len(colds) {
		t.Fatalf("%d mutations queued behind the blocked transaction, want %d: something committed beside it", n, len(ms)+len(colds))
	}
	release()
	if err := blocker.Wait(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(append(ps, colds...)) {
		if err != nil {
			t.Fatalf("mutation %d: %v", i, err)
		}
	}

	txs := writerTxs(t, s)
	if len(txs) < 2 || txs[0].shows["hot"] != 1 || len(txs[0].events) != 1 {
		t.Fatalf("the first transaction is not the blocker's alone: %+v", txs[0])
	}
	txs = txs[1:]
	coldAt, hotBefore := -1, 0
	for i, tx := range txs {
		if tx.shows["cold"] > 0 {
			if coldAt >= 0 {
				t.Fatalf("the cold show's holds committed in two transactions, %d and %d", coldAt, i)
			}
			coldAt = i
			if tx.shows["cold"] != 2 || len(tx.events) != 2 {
				t.Errorf("the cold show's transaction holds %d events of other shows, want none: it waited for them", len(tx.events)-tx.shows["cold"])
			}
			continue
		}
		if coldAt < 0 {
			hotBefore++
		}
		if len(tx.events) > batch {
			t.Errorf("transaction %d has %d events, more than a batch", i, len(tx.events))
		}
	}
	sizes := make([]int, len(txs))
	for i, tx := range txs {
		sizes[i] = len(tx.events)
	}
	t.Logf("transactions after the blocker, in order, by size: %v; the cold show's: #%d", sizes, coldAt)
	if coldAt < 0 {
		t.Fatal("no transaction has the cold show's holds")
	}
	if hotBefore > 1 {
		t.Fatalf("%d transactions of the hot show began before the cold show's (sizes %v): the cold show waited for the hot show's queue", hotBefore, sizes)
	}
	// The hot show's own order: its events are in queue order (the event
	// IDs are taken as rows are inserted), and every confirm found its hold.
	if got := eventKinds(t, s, "hot"); len(got) != 1+len(wantHot) || !slices.Equal(got[1:], wantHot) {
		t.Fatalf("the hot show's %d events (after the blocker's) are not its %d mutations in queue order", len(got)-1, len(wantHot))
	}
}

// TestWriterAnswersWithinCommitTimeout: with both of the writer's
// transactions stuck (every show's ownership row is locked), every
// mutation — of big turns and small ones, queued before the transactions
// began and while they were stuck — is answered within its CommitTimeout,
// plus processing, with ErrUnavailable: no transaction outlasts the
// deadline of a mutation waiting behind it, and mutations whose deadline
// passed fail at once instead of waiting for their turn.
func TestWriterAnswersWithinCommitTimeout(t *testing.T) {
	const timeout, slack = 500 * time.Millisecond, 400 * time.Millisecond
	url := newDB(t)
	s := openStore(t, url, func(c *persistence.Config) { c.CommitTimeout = timeout })
	shows := []string{"h1", "h2", "h3", "c1", "c2", "c3"}
	epochs := map[string]int64{}
	for _, sh := range shows {
		epochs[sh] = ownShow(t, s, sh)
	}
	ctx := context.Background()
	lock, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Rollback(ctx) }) //nolint:errcheck
	if n := count(t, lock, `SELECT count(*) FROM (SELECT 1 FROM show_owners WHERE show_id = ANY($1) FOR UPDATE) l`, shows); n != len(shows) {
		t.Fatalf("locked %d ownership rows, want %d", n, len(shows))
	}

	type queued struct {
		p  *persistence.Pending
		at time.Time
	}
	var all []queued
	enqueue := func(show string, n int, wave string) {
		for i := range n {
			id := fmt.Sprintf("%s:%s:%d", show, wave, i)
			p, err := s.Enqueue(holdM(epochs[show], show, id, "u-"+id, t0, "S-"+wave+"-"+strconv.Itoa(i)))
			if err != nil {
				t.Fatalf("enqueue %s: %v", id, err)
			}
			all = append(all, queued{p, time.Now()})
		}
	}
	// The first wave: two big turns take both lanes; the rest waits.
	enqueue("h1", 1500, "a")
	enqueue("h2", 1500, "a")
	enqueue("c1", 1, "a")
	enqueue("h3", 600, "a")
	waitLockWaiters(t, url, 2)
	// The second wave, queued while both transactions are stuck.
	enqueue("c2", 2, "b")
	enqueue("h1", 700, "b")
	enqueue("c3", 1, "b")

	took := make([]time.Duration, len(all))
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, q := range all {
		wg.Go(func() {
			errs[i] = q.p.Wait()
			took[i] = time.Since(q.at)
		})
	}
	within(t, 10*time.Second, "the answers", wg.Wait)
	for i, err := range errs {
		if !errors.Is(err, persistence.ErrUnavailable) {
			t.Fatalf("mutation %d: %v, want ErrUnavailable", i, err)
		}
	}
	slowest := slices.Max(took)
	t.Logf("%d mutations answered, the slowest %s after its Enqueue", len(all), slowest)
	if slowest > timeout+slack {
		t.Fatalf("a mutation was answered %s after its Enqueue, more than its CommitTimeout %s plus %s", slowest, timeout, slack)
	}
	// Unlocked, the writer commits again.
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	write(t, s, holdM(epochs["c1"], "c1", "c1:after", "u-after", t0, "A-1"))
}

// waitLockWaiters waits until n of the database's sessions wait for a
// lock on show_owners.
func waitLockWaiters(t *testing.T, url string, n int) {
	t.Helper()
	ctx := context.Background()
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if count(t, watch, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%show_owners%'`) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d writer transactions wait for the ownership rows' lock", n)
		}
		time.Sleep(time.Millisecond)
	}
}
