package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/persistence"
)

// logRecorder is a slog.Handler that keeps every record, at every level.
type logRecorder struct {
	mu      sync.Mutex // guards records
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// find returns the records at level whose message is msg.
func (r *logRecorder) find(level slog.Level, msg string) []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Record
	for _, rec := range r.records {
		if rec.Level == level && rec.Message == msg {
			out = append(out, rec)
		}
	}
	return out
}

// attr returns the value of a record's attribute key.
func attr(rec slog.Record, key string) slog.Value {
	var v slog.Value
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// insertKeys inserts idempotency records of show, created age ago by the
// database's clock, straight into the table.
func insertKeys(t testing.TB, s *persistence.Store, show string, age time.Duration, keys ...string) {
	t.Helper()
	_, err := s.Pool().Exec(context.Background(), `INSERT INTO idempotency_keys (show_id, idempotency_key, fingerprint, reservation_id, created_at)
		SELECT $1, k, 'fp-' || k, $1 || ':' || k, now() - $2::interval FROM unnest($3::text[]) AS k`, show, age, keys)
	if err != nil {
		t.Fatalf("insert keys of %s: %v", show, err)
	}
}

// keysIn returns the sorted "show/key" names of the idempotency table's
// rows.
func keysIn(t testing.TB, s *persistence.Store) []string {
	t.Helper()
	rows, _ := s.Pool().Query(context.Background(), `SELECT show_id || '/' || idempotency_key FROM idempotency_keys ORDER BY 1`)
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// loadedKeys returns the sorted keys of the show's snapshot, checking that
// each record's CreatedAt is the table's.
func loadedKeys(t testing.TB, s *persistence.Store, show string) []string {
	t.Helper()
	ctx := context.Background()
	snap, err := s.LoadShow(ctx, show)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, rec := range snap.Idempotency {
		var created time.Time
		if err := s.Pool().QueryRow(ctx, `SELECT created_at FROM idempotency_keys WHERE show_id = $1 AND idempotency_key = $2`,
			show, rec.Key).Scan(&created); err != nil {
			t.Fatal(err)
		}
		if !rec.CreatedAt.Equal(created) || rec.Fingerprint != "fp-"+rec.Key || rec.ReservationID != show+":"+rec.Key {
			t.Fatalf("record %+v; the row was created at %v", rec, created)
		}
		keys = append(keys, rec.Key)
	}
	slices.Sort(keys)
	return keys
}

// TestLoadShowIdempotencyRetention: a snapshot holds the show's records
// younger than the retention, with their creation time, and no older ones.
func TestLoadShowIdempotencyRetention(t *testing.T) {
	url := newDB(t)
	setup := openStore(t, url, nil)
	ownShow(t, setup, "s")
	ownShow(t, setup, "other")
	for _, k := range []struct {
		key string
		age time.Duration
	}{{"k-now", 0}, {"k-30m", 30 * time.Minute}, {"k-2h", 2 * time.Hour}, {"k-23h", 23 * time.Hour}, {"k-25h", 25 * time.Hour}, {"k-30d", 30 * 24 * time.Hour}} {
		insertKeys(t, setup, "s", k.age, k.key)
	}
	insertKeys(t, setup, "other", 0, "o-now")
	for _, c := range []struct {
		name      string
		retention time.Duration
		want      []string
	}{
		{"default 24h", 0, []string{"k-23h", "k-2h", "k-30m", "k-now"}},
		{"1h", time.Hour, []string{"k-30m", "k-now"}},
		{"10m", 10 * time.Minute, []string{"k-now"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t, url, func(cfg *persistence.Config) {
				cfg.IdempotencyRetention = c.retention
				cfg.PruneInterval = time.Hour // no prune during the test
			})
			if got := loadedKeys(t, s, "s"); !slices.Equal(got, c.want) {
				t.Fatalf("loaded %v, want %v", got, c.want)
			}
		})
	}
	if n := count(t, setup.Pool(), `SELECT count(*) FROM idempotency_keys`); n != 7 {
		t.Fatalf("%d rows after loading, want 7 (loading prunes nothing)", n)
	}
}

// TestPruneIdempotency: PruneIdempotency deletes exactly the records older
// than the retention, of every show, in statements of PruneBatch rows.
func TestPruneIdempotency(t *testing.T) {
	ctx := context.Background()
	var logs logRecorder
	s := openStore(t, newDB(t), func(c *persistence.Config) {
		c.IdempotencyRetention = time.Hour
		c.PruneBatch = 3
		c.PruneInterval = time.Hour // only the test prunes
		c.Logger = slog.New(&logs)
	})
	insertKeys(t, s, "a", 2*time.Hour, "a1", "a2", "a3", "a4")
	insertKeys(t, s, "a", 48*time.Hour, "a5", "a6")
	insertKeys(t, s, "b", 61*time.Minute, "b1", "b2", "b3", "b4")
	insertKeys(t, s, "a", 59*time.Minute, "a-fresh1")
	insertKeys(t, s, "a", 0, "a-fresh2")
	insertKeys(t, s, "b", 0, "b-fresh1", "b-fresh2")

	n, err := s.PruneIdempotency(ctx)
	if err != nil || n != 10 {
		t.Fatalf("PruneIdempotency = %d, %v; want 10 rows", n, err)
	}
	want := []string{"a/a-fresh1", "a/a-fresh2", "b/b-fresh1", "b/b-fresh2"}
	if got := keysIn(t, s); !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	recs := logs.find(slog.LevelDebug, "pruned idempotency keys")
	if len(recs) != 1 || attr(recs[0], "rows").Int64() != 10 || attr(recs[0], "batches").Int64() != 4 {
		t.Fatalf("debug logs %v, want one of 10 rows in 4 batches (3+3+3+1)", recs)
	}

	if n, err := s.PruneIdempotency(ctx); err != nil || n != 0 {
		t.Fatalf("second PruneIdempotency = %d, %v; want 0 rows", n, err)
	}
	if got := keysIn(t, s); !slices.Equal(got, want) {
		t.Fatalf("left %v after a second prune, want %v", got, want)
	}
}

// TestPrunerRuns: the store's own pruner deletes expired records every
// PruneInterval.
func TestPrunerRuns(t *testing.T) {
	s := openStore(t, newDB(t), func(c *persistence.Config) {
		c.IdempotencyRetention = time.Hour
		c.PruneInterval = 20 * time.Millisecond
	})
	for round := range 2 {
		insertKeys(t, s, "s", 2*time.Hour, fmt.Sprintf("old-%d-1", round), fmt.Sprintf("old-%d-2", round))
		insertKeys(t, s, "s", 0, fmt.Sprintf("new-%d", round))
		for deadline := time.Now().Add(30 * time.Second); count(t, s.Pool(), `SELECT count(*) FROM idempotency_keys WHERE idempotency_key LIKE 'old-%'`) > 0; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: expired keys left: %v", round, keysIn(t, s))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if got, want := keysIn(t, s), []string{"s/new-0", "s/new-1"}; !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
}

// TestPrunerCloseCancels: Close cancels a prune in progress (here one
// waiting for a row lock, with a QueryTimeout far away) and returns
// promptly.
func TestPrunerCloseCancels(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	insertKeys(t, openStore(t, url, func(c *persistence.Config) { c.PruneInterval = time.Hour }), "s", 2*time.Hour, "locked")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if n := count(t, tx, `SELECT count(*) FROM (SELECT 1 FROM idempotency_keys FOR UPDATE) l`); n != 1 {
		t.Fatalf("locked %d rows, want 1", n)
	}
	// pg_stat_activity is read once per transaction: watch from outside tx.
	watch, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	s := openStore(t, url, func(c *persistence.Config) {
		c.IdempotencyRetention = time.Hour
		c.PruneInterval = 10 * time.Millisecond
		c.QueryTimeout = 5 * time.Minute
	})
	const waiting = `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM idempotency_keys%'`
	for deadline := time.Now().Add(30 * time.Second); count(t, watch, waiting) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the pruner did not wait for the locked row")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	within(t, 10*time.Second, "Close", func() {
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("Close took %v", time.Since(start))
	const active = `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'DELETE FROM idempotency_keys%' AND state = 'active'`
	for deadline := time.Now().Add(10 * time.Second); count(t, watch, active) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the pruner's statement still runs after Close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := count(t, tx, `SELECT count(*) FROM idempotency_keys`); n != 1 {
		t.Fatalf("%d rows, want the locked one", n)
	}
}

// TestPrunerOutage: with the database down, the pruner fails once per
// interval, logging a warning each time; it does not spin.
func TestPrunerOutage(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	const interval = 20 * time.Millisecond
	var logs logRecorder
	start := time.Now()
	openStore(t, "postgres://nobody@"+addr+"/nodb?sslmode=disable", func(c *persistence.Config) {
		c.PruneInterval = interval
		c.QueryTimeout = time.Second
		c.Logger = slog.New(&logs)
	})
	const msg = "pruning idempotency keys failed; retrying next interval"
	for deadline := time.Now().Add(30 * time.Second); len(logs.find(slog.LevelWarn, msg)) < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("%d warnings in 30 s, want 5", len(logs.find(slog.LevelWarn, msg)))
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	warns := logs.find(slog.LevelWarn, msg)
	if most := int(elapsed/interval) + 1; len(warns) > most {
		t.Fatalf("%d failed prunes in %v, want at most %d (one per %v)", len(warns), elapsed, most, interval)
	}
	if err, _ := attr(warns[0], "err").Any().(error); !errors.Is(err, persistence.ErrUnavailable) {
		t.Fatalf("warning's error %v, want ErrUnavailable", err)
	}
}

// TestIdempotencyKeyReuse: a mutation may reuse a key older than the
// retention even before the pruner deleted it, and the record then names
// the new reservation; reusing a younger key fails with ErrConflict, alone
// or in a batch, where the other mutations still commit.
func TestIdempotencyKeyReuse(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	var obs batches
	s := openStore(t, url, func(c *persistence.Config) {
		c.IdempotencyRetention = time.Hour
		c.PruneInterval = time.Hour // only the test prunes
		c.Observer = obs.observe
	})
	e := ownShow(t, s, "s")
	withKey := func(m persistence.Mutation, key, fp string) persistence.Mutation {
		m.IdempotencyKey, m.Fingerprint = key, fp
		return m
	}
	age := func(t *testing.T, key string, d time.Duration) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - $2::interval
			WHERE show_id = 's' AND idempotency_key = $1`, key, d); err != nil {
			t.Fatal(err)
		}
	}
	record := func(t *testing.T, key string) persistence.IdempotencyRecord {
		t.Helper()
		snap, err := s.LoadShow(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range snap.Idempotency {
			if rec.Key == key {
				return rec
			}
		}
		return persistence.IdempotencyRecord{}
	}

	t.Run("alone", func(t *testing.T) {
		write(t, s, withKey(holdM(e, "s", "s:r1", "u1", t0, "A-1"), "k", "fp1"))
		age(t, "k", 61*time.Minute)
		if rec := record(t, "k"); rec.Key != "" {
			t.Fatalf("expired record loaded: %+v", rec)
		}
		write(t, s, withKey(holdM(e, "s", "s:r2", "u2", t0, "A-2"), "k", "fp2"))
		rec := record(t, "k")
		if rec.Fingerprint != "fp2" || rec.ReservationID != "s:r2" || time.Since(rec.CreatedAt).Abs() > time.Minute {
			t.Fatalf("reused key's record %+v, want fp2 of s:r2 created now", rec)
		}
		age(t, "k", 59*time.Minute)
		if err := s.Write(withKey(holdM(e, "s", "s:r3", "u3", t0, "A-3"), "k", "fp3")); !errors.Is(err, persistence.ErrConflict) {
			t.Fatalf("reusing a key within the retention: %v, want ErrConflict", err)
		}
		if rec := record(t, "k"); rec.Fingerprint != "fp2" || rec.ReservationID != "s:r2" {
			t.Fatalf("after the refused reuse, record %+v, want fp2 of s:r2", rec)
		}
		if _, err := s.GetReservation(ctx, "s", "s:r3"); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("the refused hold: %v, want ErrNotFound", err)
		}
	})

	t.Run("in a batch", func(t *testing.T) {
		write(t, s, withKey(holdM(e, "s", "s:old", "u", t0, "B-1"), "old", "fp-old"))
		write(t, s, withKey(holdM(e, "s", "s:young", "u", t0, "B-2"), "young", "fp-young"))
		age(t, "old", 2*time.Hour)
		age(t, "young", 30*time.Minute)
		release, blocker := blockCommitter(t, s, url, "gate", ownShow(t, s, "gate"))
		cases := []struct {
			m    persistence.Mutation
			want error
		}{
			{withKey(holdM(e, "s", "s:b1", "u", t0, "B-11"), "old", "fp-b1"), nil},
			{withKey(holdM(e, "s", "s:b2", "u", t0, "B-12"), "young", "fp-b2"), persistence.ErrConflict},
			{withKey(holdM(e, "s", "s:b3", "u", t0, "B-13"), "new", "fp-b3"), nil},
			{withKey(holdM(e, "s", "s:b4", "u", t0, "B-14"), "twice", "fp-b4"), nil},
			{withKey(holdM(e, "s", "s:b5", "u", t0, "B-15"), "twice", "fp-b5"), persistence.ErrConflict},
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
				t.Errorf("%s with key %s: %v, want %v", cases[i].m.ReservationID, cases[i].m.IdempotencyKey, err, cases[i].want)
			}
		}
		if sizes := obs.sizes(); !slices.Contains(sizes, len(cases)) {
			t.Fatalf("batches of %v mutations, want one of %d", sizes, len(cases))
		}
		for key, want := range map[string]string{"old": "s:b1", "young": "s:young", "new": "s:b3", "twice": "s:b4"} {
			if rec := record(t, key); rec.ReservationID != want {
				t.Errorf("record of %s: %+v, want reservation %s", key, rec, want)
			}
		}
	})
}

// TestLoadShowMillionExpiredKeys times LoadShow of a show with a million
// expired idempotency keys and a few fresh ones: it reads only the fresh
// ones. The time is reported; the bound is only a sanity check.
func TestLoadShowMillionExpiredKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("generates a million rows")
	}
	ctx := context.Background()
	s := openStore(t, newDB(t), func(c *persistence.Config) {
		c.PruneInterval = time.Hour // no prune during the test
		c.QueryTimeout = time.Minute
	})
	ownShow(t, s, "big")
	start := time.Now()
	if _, err := s.Pool().Exec(ctx, `INSERT INTO idempotency_keys (show_id, idempotency_key, fingerprint, reservation_id, created_at)
		SELECT 'big', 'expired-' || i, 'fp-' || i, 'big:r' || i, now() - interval '2 days'
		FROM generate_series(1, 1000000) AS i`); err != nil {
		t.Fatal(err)
	}
	t.Logf("generating 1,000,000 expired keys took %v", time.Since(start).Round(time.Millisecond))
	fresh := []string{"fresh-1", "fresh-2", "fresh-3", "fresh-4", "fresh-5"}
	insertKeys(t, s, "big", 0, fresh...)

	rows, _ := s.Pool().Query(ctx, `EXPLAIN SELECT idempotency_key FROM idempotency_keys
		WHERE show_id = 'big' AND created_at > now() - interval '24 hours'`)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan of the keys' query:\n%s", strings.Join(plan, "\n"))

	for i := range 3 {
		start := time.Now()
		snap, err := s.LoadShow(ctx, "big")
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, rec := range snap.Idempotency {
			keys = append(keys, rec.Key)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, fresh) {
			t.Fatalf("loaded %d keys, want %v", len(keys), fresh)
		}
		t.Logf("LoadShow %d with 1,000,000 expired keys: %v", i+1, took.Round(time.Microsecond))
		if took > 2*time.Second {
			t.Fatalf("LoadShow took %v", took)
		}
	}
}

// TestOpenRejectsNegativeRetention: Open refuses negative retention and
// pruning settings.
func TestOpenRejectsNegativeRetention(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*persistence.Config)
	}{
		{"IdempotencyRetention", func(c *persistence.Config) { c.IdempotencyRetention = -time.Hour }},
		{"PruneInterval", func(c *persistence.Config) { c.PruneInterval = -time.Second }},
		{"PruneBatch", func(c *persistence.Config) { c.PruneBatch = -1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := persistence.Config{URL: "postgres://nobody@127.0.0.1:1/nodb", NodeID: "n"}
			c.edit(&cfg)
			if s, err := persistence.Open(context.Background(), cfg); err == nil {
				s.Close(context.Background())
				t.Fatal("Open succeeded")
			}
		})
	}
}
