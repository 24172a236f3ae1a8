package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestWatchersFlashSale runs a small flash sale against the engine with 20
// extra seat-map watchers of its show: the sale is verified as without
// them, every stream had its snapshot and then the batches of the sale's
// changes, and the result, its JSON and its reports carry the stats. An
// unknown show is refused with nothing left open.
func TestWatchersFlashSale(t *testing.T) {
	b, _ := startBoxoffice(t, false)

	t.Run("unknown show", func(t *testing.T) {
		show := ShowSpec{ID: "no-such-show", Rows: []RowSpec{{Label: "A", Seats: 10}}}
		stop, err := b.WatchSeatMaps(t.Context(), show, 3)
		if err == nil {
			stop()
			t.Fatal("watching an unknown show: no error")
		}
		if c := status.Code(err); c != codes.NotFound {
			t.Errorf("watching an unknown show: %v (code %v), want NotFound", err, c)
		}
	})

	t.Run("sale", func(t *testing.T) {
		res, err := Run(t.Context(), RunConfig{
			Target: b, Scenario: smallSale(t, "w-"), Concurrency: 200, Seed: 7,
			MaxDuration: 2 * time.Minute, Watchers: 20,
		})
		if err != nil {
			t.Fatal(err)
		}
		checkSale(t, res)
		w := res.Watchers
		if w == nil {
			t.Fatal("no watcher stats in the result")
		}
		t.Logf("watchers: %s; CPU %v", w.Summary(res.Duration), res.CPU)
		// 300 seats held then booked by 2,000 users over seconds: far more
		// than one batch per stream beside its snapshot.
		if w.Streams != 20 || w.Messages < 20*10 || w.Errors != 0 {
			t.Errorf("watchers %+v, want 20 streams, each with its snapshot and ≥ 9 batches, no error", *w)
		}
		// Each snapshot alone is 300 status bytes.
		if w.Bytes < 20*300 {
			t.Errorf("watchers received %d bytes, want ≥ %d", w.Bytes, 20*300)
		}

		var text strings.Builder
		if err := WriteText(&text, res); err != nil {
			t.Fatal(err)
		}
		if want := "watchers              20 streams, "; !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "result.json")
		if err := WriteJSON(path, res); err != nil {
			t.Fatal(err)
		}
		back, err := ReadJSON(path)
		if err != nil {
			t.Fatal(err)
		}
		if back.Watchers == nil || *back.Watchers != *w {
			t.Errorf("result.json watchers %+v, want %+v", back.Watchers, *w)
		}
	})
}

// TestWatchersIgnored checks that a target that serves no seat-map
// streams runs as without RunConfig.Watchers, and has no watcher stats.
func TestWatchersIgnored(t *testing.T) {
	sc, err := NewScenario("hold-storm", ScenarioConfig{Users: 50, Rows: 1, SeatsPerRow: 20, ShowPrefix: "wi-"})
	if err != nil {
		t.Fatal(err)
	}
	target := &stallTarget{}
	res, err := Run(t.Context(), RunConfig{Target: target, Scenario: sc, Concurrency: 4, Seed: 1, Watchers: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.Watchers != nil {
		t.Errorf("watcher stats %+v for a target without streams", *res.Watchers)
	}
	if target.holds.Load() != 50 {
		t.Errorf("%d holds, want 50", target.holds.Load())
	}
}

// TestWatchStatsReport checks the watchers' line of the text report and
// of the HTML report's run table: streams, messages with their rate over
// the run, megabytes, resnapshots, and errors only when there were some.
func TestWatchStatsReport(t *testing.T) {
	for _, tc := range []struct {
		stats WatchStats
		want  string
	}{
		{WatchStats{Streams: 1000, Messages: 2_000_000, Bytes: 96_500_000, Resnapshots: 0},
			"1000 streams, 2000000 messages (200000/s), 96.5 MB, 0 resnapshots"},
		{WatchStats{Streams: 20, Messages: 50, Bytes: 6000, Resnapshots: 2, Errors: 1},
			"20 streams, 50 messages (5.0/s), 0.0 MB, 2 resnapshots, 1 errors"},
	} {
		res := &Result{Target: "boxoffice", Scenario: "flash-sale", Duration: 10, Watchers: &tc.stats}
		var text strings.Builder
		if err := WriteText(&text, res); err != nil {
			t.Fatal(err)
		}
		if want := "watchers              " + tc.want + "\n"; !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
		index, err := WriteHTML(t.TempDir(), res)
		if err != nil {
			t.Fatal(err)
		}
		page, err := os.ReadFile(index)
		if err != nil {
			t.Fatal(err)
		}
		if want := "<th>watchers</th><td>" + tc.want + "</td>"; !strings.Contains(string(page), want) {
			t.Errorf("index.html lacks %q", want)
		}
	}
	var text strings.Builder
	if err := WriteText(&text, &Result{Target: "pg-status", Scenario: "flash-sale", Duration: 10}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text.String(), "watchers") {
		t.Errorf("a run without watchers reports them:\n%s", text.String())
	}
}
