package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
)

// TestOnSale runs a small on-sale end to end against the engine: 1,500
// users arrive over half a second, queue before the room opens, and are
// admitted at 500 a second to buy 120 seats. Every user's join is
// answered, the admissions keep the join order (no fairness inversion),
// the shoppers hold with their tokens, the room's wait is recorded, and
// the verification passes. The same crowd without a room shops at once.
func TestOnSale(t *testing.T) {
	b, _ := startBoxoffice(t, false)
	for _, noRoom := range []bool{false, true} {
		sc, err := NewScenario("on-sale", ScenarioConfig{
			Users: 1500, Rows: 4, SeatsPerRow: 30, Arrivals: 500 * time.Millisecond, AdmitPerSecond: 500, NoRoom: noRoom,
			HoldTTL: 10 * time.Second, PayDelay: 200 * time.Millisecond, Retries: 3, ConfirmProb: 1, ShowPrefix: "os-" + map[bool]string{false: "room", true: "none"}[noRoom],
		})
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(t.Context(), RunConfig{Target: b, Scenario: sc, Seed: 5, MaxDuration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		checkSale(t, res)
		if res.Loop != "open" || res.Rate != 3000 {
			t.Errorf("no room %v: a %s loop at %v users/s, want open at 3,000", noRoom, res.Loop, res.Rate)
		}
		join, joined := res.Op("join")
		if noRoom {
			if joined || res.Room != nil {
				t.Errorf("without a room: joins %+v, room %+v", join, res.Room)
			}
			continue
		}
		q := res.Room
		if q == nil || q.Joined != 1500 || join.ByOutcome["ok"] != 1500 {
			t.Fatalf("room %+v, joins %v: want 1,500 joined", q, join.ByOutcome)
		}
		if q.Inversions != 0 {
			t.Errorf("%d fairness inversions", q.Inversions)
		}
		adm, _ := res.Op("admission")
		if q.Admitted == 0 || adm.Count != q.Admitted || q.PeakQueued < 1000 {
			t.Errorf("room %+v, %d admissions recorded: want admissions, each recorded, and the crowd queued before the opening", q, adm.Count)
		}
		if q.AdmittedPerSecond > 600 {
			t.Errorf("admitted %.0f users a second (%+v), the room's rate is 500", q.AdmittedPerSecond, q)
		}
		if !strings.Contains(q.Summary(), "0 fairness inversions") {
			t.Errorf("summary %q", q.Summary())
		}
	}
}

// TestOnSaleNeedsARoom: a target without waiting rooms is refused the
// on-sale, before anything is created; without a room it runs.
func TestOnSaleNeedsARoom(t *testing.T) {
	url := pgclustertest.Start(t).URL()
	target, err := NewPGStatus(t.Context(), PGStatusConfig{DatabaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	sc, err := NewScenario("on-sale", ScenarioConfig{Users: 10, Rows: 1, SeatsPerRow: 10, ShowPrefix: "os-pg"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc}); err == nil || !strings.Contains(err.Error(), "waiting room") {
		t.Fatalf("an on-sale with a room on pg-status: %v, want a refusal naming the waiting room", err)
	}
	if recs, err := target.Records(t.Context(), sc.Shows()[0]); err != nil || len(recs) != 0 {
		t.Fatalf("the refused run left %d records (%v)", len(recs), err)
	}
}

// TestRoomStatsInversions counts the users admitted before someone who
// joined earlier: later, or never while still queued; users whose fate is
// unknown are left out.
func TestRoomStatsInversions(t *testing.T) {
	o := &onSale{room: &RoomSpec{}, users: []admission{
		{seq: 1, at: 10, known: true},
		{seq: 2, at: 30, known: true},
		{seq: 3, at: 20, known: true}, // before seq 2: one inversion
		{seq: 4, known: true},         // still queued
		{seq: 5, at: 40, known: true}, // before seq 4 (never): one more
		{seq: 6, at: 5},               // unknown: left out
		{},                            // never joined
	}}
	if got := o.RoomStats().Inversions; got != 2 {
		t.Fatalf("%d inversions, want 2", got)
	}
	fair := &onSale{room: &RoomSpec{}, users: []admission{{seq: 2, at: 20, known: true}, {seq: 1, at: 20, known: true}, {seq: 3, known: true}}}
	if got := fair.RoomStats().Inversions; got != 0 {
		t.Fatalf("%d inversions in a fair room (one round, then a user still queued), want 0", got)
	}
}
