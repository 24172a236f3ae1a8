package persistence_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	"github.com/boxoffice/boxoffice/persistence"
)

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	t.Run("twice", func(t *testing.T) {
		url := pgclustertest.Shared(t)
		for i := range 2 {
			if err := persistence.Migrate(ctx, url); err != nil {
				t.Fatalf("migration %d: %v", i+1, err)
			}
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, table := range []string{"shows", "show_owners", "reservations", "seat_claims", "idempotency_keys", "reservation_events"} {
			if n := count(t, conn, `SELECT count(*) FROM `+table); n != 0 {
				t.Errorf("%s has %d rows", table, n)
			}
		}
	})
	t.Run("concurrently", func(t *testing.T) {
		url := pgclustertest.Shared(t)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = persistence.Migrate(ctx, url) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("migration %d: %v", i, err)
			}
		}
	})
	t.Run("keeps data", func(t *testing.T) {
		url := newDB(t)
		s := openStore(t, url, nil)
		ownShow(t, s, "kept")
		if err := persistence.Migrate(ctx, url); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetShow(ctx, "kept"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCreateShowGetShow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	want := testShow("s1")
	created, err := s.CreateShow(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if created.CreatedAt.IsZero() || time.Since(created.CreatedAt) > time.Minute {
		t.Fatalf("CreatedAt %v", created.CreatedAt)
	}
	got, err := s.GetShow(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.StartsAt.Equal(want.StartsAt) || !got.CreatedAt.Equal(created.CreatedAt) {
		t.Fatalf("times: starts %v created %v, want %v %v", got.StartsAt, got.CreatedAt, want.StartsAt, created.CreatedAt)
	}
	want.StartsAt, want.CreatedAt = got.StartsAt, got.CreatedAt
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip\n got %+v\nwant %+v", got, want)
	}

	t.Run("ErrExists", func(t *testing.T) {
		other := testShow("s1")
		other.Title = "Another"
		if _, err := s.CreateShow(ctx, other); !errors.Is(err, persistence.ErrExists) {
			t.Fatalf("second CreateShow: %v, want ErrExists", err)
		}
		if again, err := s.GetShow(ctx, "s1"); err != nil || again.Title != want.Title {
			t.Fatalf("after a refused create: %+v, %v", again, err)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		if _, err := s.GetShow(ctx, "nosuch"); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetShow of an unknown show: %v, want ErrNotFound", err)
		}
	})
}

// TestAcquireShow: each take raises the epoch by one, whether the same node
// reloads the show or another takes it after a release. (Leases:
// ownership_test.go.)
func TestAcquireShow(t *testing.T) {
	ctx := context.Background()
	url := newDB(t)
	s1 := openStore(t, url, nil)
	s2 := openStore(t, url, func(c *persistence.Config) { c.NodeID = "node-2" })
	if _, err := s1.CreateShow(ctx, testShow("s")); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Owner(ctx, "s"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("Owner before any acquire: %v, want ErrNotFound", err)
	}
	var prev *persistence.Store
	var prevEpoch int64
	for i, c := range []struct {
		s    *persistence.Store
		node string
	}{{s1, "node-1"}, {s1, "node-1"}, {s2, "node-2"}, {s1, "node-1"}} {
		if prev != nil && prev != c.s {
			if err := prev.ReleaseShows(ctx, []persistence.Ownership{{ShowID: "s", Epoch: prevEpoch}}); err != nil {
				t.Fatal(err)
			}
		}
		epoch, err := c.s.AcquireShow(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if epoch != int64(i+1) {
			t.Fatalf("acquire %d by %s: epoch %d, want %d", i+1, c.node, epoch, i+1)
		}
		o, err := s1.Owner(ctx, "s")
		if err != nil || o.ShowID != "s" || o.Node != c.node || o.Epoch != epoch {
			t.Fatalf("Owner = %+v, %v; want %s, %d", o, err, c.node, epoch)
		}
		prev, prevEpoch = c.s, epoch
	}
	if _, err := s1.AcquireShow(ctx, "nosuch"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("AcquireShow of an unknown show: %v, want ErrNotFound", err)
	}
	if n := count(t, s1.Pool(), `SELECT count(*) FROM show_owners`); n != 1 {
		t.Fatalf("%d ownership rows, want 1", n)
	}
}

// TestListUserReservations pages through a user's reservations of two
// shows, several made at the same instant: newest first, ties by ID, no
// duplicates or gaps, other users left out, a show filter.
func TestListUserReservations(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	e1, e2 := ownShow(t, s, "s1"), ownShow(t, s, "s2")
	type res struct {
		id, show string
		at       time.Time
	}
	var mine []res
	for i := range 17 {
		at := t0.Add(time.Duration(i/3) * time.Second) // three at each instant
		show, epoch := "s1", e1
		if i%2 == 1 {
			show, epoch = "s2", e2
		}
		id := fmt.Sprintf("%s:r%02d", show, (i*7)%17) // IDs not in creation order
		write(t, s, holdM(epoch, show, id, "pager", at, fmt.Sprintf("A-%d", i+1)))
		write(t, s, holdM(epoch, show, id+"x", "other", at, fmt.Sprintf("B-%d", i+1)))
		mine = append(mine, res{id, show, at})
	}
	slices.SortFunc(mine, func(a, b res) int {
		return cmp.Or(b.at.Compare(a.at), cmp.Compare(b.id, a.id))
	})
	for _, show := range []string{"", "s2"} {
		var want []string
		for _, r := range mine {
			if show == "" || r.show == show {
				want = append(want, r.id)
			}
		}
		for limit := 1; limit <= len(want)+1; limit++ {
			var got []string
			var after *persistence.ReservationCursor
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatalf("show %q, limit %d: paging does not end", show, limit)
				}
				list, err := s.ListUserReservations(ctx, "pager", show, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range list {
					if r.UserID != "pager" || show != "" && r.ShowID != show {
						t.Fatalf("listed %+v", r)
					}
					got = append(got, r.ID)
				}
				if len(list) < limit {
					break
				}
				last := list[len(list)-1]
				after = &persistence.ReservationCursor{CreatedAt: last.CreatedAt, ID: last.ID}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("show %q, limit %d:\n got %v\nwant %v", show, limit, got, want)
			}
		}
	}
	if list, err := s.ListUserReservations(ctx, "nobody", "", nil, 10); err != nil || len(list) != 0 {
		t.Fatalf("unknown user: %v, %v", list, err)
	}
}

// TestListEvents checks the audit log's filters, order, paging and fields.
func TestListEvents(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDB(t), nil)
	e1, e2 := ownShow(t, s, "s1"), ownShow(t, s, "s2")
	write(t, s, holdM(e1, "s1", "s1:a", "u1", t0, "A-1", "A-2"))
	write(t, s, holdM(e1, "s1", "s1:b", "u2", t0.Add(time.Second), "A-3"))
	write(t, s, holdM(e2, "s2", "s2:c", "u1", t0.Add(2*time.Second), "A-1"))
	confirm := endM(persistence.Confirm, e1, "s1", "s1:a", "u1", t0.Add(3*time.Second), "A-1", "A-2")
	confirm.PaymentRef = "pay-a"
	write(t, s, confirm)
	write(t, s, endM(persistence.Release, e1, "s1", "s1:b", "u2", t0.Add(4*time.Second), "A-3"))
	write(t, s, endM(persistence.Expire, e2, "s2", "s2:c", "u1", t0.Add(5*time.Second), "A-1"))

	type ev struct{ id, kind string }
	list := func(t *testing.T, f persistence.EventFilter) []persistence.Event {
		t.Helper()
		if f.Limit == 0 {
			f.Limit = 100
		}
		out, err := s.ListEvents(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(out); i++ {
			if out[i].ID >= out[i-1].ID {
				t.Fatalf("event %d after %d: not newest first", out[i].ID, out[i-1].ID)
			}
		}
		return out
	}
	summary := func(evs []persistence.Event) []ev {
		out := make([]ev, len(evs))
		for i, e := range evs {
			out[i] = ev{e.ReservationID, e.Kind}
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    persistence.EventFilter
		want []ev
	}{
		{"show", persistence.EventFilter{ShowID: "s1"},
			[]ev{{"s1:b", "RELEASED"}, {"s1:a", "BOOKED"}, {"s1:b", "HELD"}, {"s1:a", "HELD"}}},
		{"reservation", persistence.EventFilter{ReservationID: "s2:c"}, []ev{{"s2:c", "EXPIRED"}, {"s2:c", "HELD"}}},
		{"user", persistence.EventFilter{UserID: "u1"},
			[]ev{{"s2:c", "EXPIRED"}, {"s1:a", "BOOKED"}, {"s2:c", "HELD"}, {"s1:a", "HELD"}}},
		{"show and user", persistence.EventFilter{ShowID: "s1", UserID: "u1"}, []ev{{"s1:a", "BOOKED"}, {"s1:a", "HELD"}}},
		{"show and another show's reservation", persistence.EventFilter{ShowID: "s1", ReservationID: "s2:c"}, []ev{}},
		{"unknown user", persistence.EventFilter{UserID: "nobody"}, []ev{}},
		{"limit", persistence.EventFilter{ShowID: "s1", Limit: 2}, []ev{{"s1:b", "RELEASED"}, {"s1:a", "BOOKED"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := summary(list(t, c.f)); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	t.Run("paging by BeforeID", func(t *testing.T) {
		all := list(t, persistence.EventFilter{UserID: "u1"})
		var got []persistence.Event
		f := persistence.EventFilter{UserID: "u1", Limit: 3}
		for {
			page := list(t, f)
			got = append(got, page...)
			if len(page) < f.Limit {
				break
			}
			f.BeforeID = page[len(page)-1].ID
		}
		if !reflect.DeepEqual(got, all) {
			t.Fatalf("pages %v, all %v", summary(got), summary(all))
		}
	})
	t.Run("fields", func(t *testing.T) {
		evs := list(t, persistence.EventFilter{ReservationID: "s1:a"})
		booked := evs[0]
		if booked.ShowID != "s1" || booked.UserID != "u1" || booked.Kind != "BOOKED" || booked.PaymentRef != "pay-a" ||
			booked.NodeID != "node-1" || booked.Epoch != e1 || !booked.At.Equal(t0.Add(3*time.Second)) ||
			!slices.Equal(booked.SeatIDs, []string{"A-1", "A-2"}) {
			t.Fatalf("booking event %+v", booked)
		}
		if held := evs[1]; held.PaymentRef != "" || !held.At.Equal(t0) {
			t.Fatalf("hold event %+v", held)
		}
	})
	t.Run("no filter", func(t *testing.T) {
		if _, err := s.ListEvents(ctx, persistence.EventFilter{Limit: 10}); err == nil {
			t.Fatal("ListEvents without a filter succeeded")
		}
	})
}
