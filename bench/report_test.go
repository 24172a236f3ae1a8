package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/draw"
	_ "image/png"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The reports show the runner's verification through Verdict.
var _ Verdict = Verification{}

// reportVerification stands in for the runner's verification result.
type reportVerification struct {
	OK         bool     `json:"verified"`
	Violations []string `json:"violations,omitempty"`
}

func (v reportVerification) Verified() bool { return v.OK }

func (v reportVerification) String() string {
	if v.OK {
		return "VERIFIED"
	}
	return "VIOLATED: " + strings.Join(v.Violations, "; ")
}

// syntheticSaleResult plays a 30-second flash sale of 30,000 seats into a
// Recorder: calls rising and falling, latencies growing with load, a stall
// at 12 s, holds that expire after 4 s unless confirmed, seats held and
// booked sampled every 250 ms.
func syntheticSaleResult(t *testing.T, seed uint64) *Result {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	start := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	rec := NewRecorder(start)
	const capacity = 30_000
	held, booked := 0, 0
	var expiring []time.Time // unconfirmed holds of 2 seats, by hold time
	for ms := 0; ms < 30_000; ms += 10 {
		now := start.Add(time.Duration(ms) * time.Millisecond)
		for len(expiring) > 0 && now.Sub(expiring[0]) >= 4*time.Second {
			held -= 2
			expiring = expiring[1:]
		}
		sec := float64(ms) / 1000
		load := 40 * math.Exp(-math.Pow(sec-8, 2)/40)
		for range int(load) + 1 {
			lat := time.Duration((0.3 + 0.05*load + rng.ExpFloat64()*(0.2+0.1*load)) * float64(time.Millisecond))
			if ms >= 12_000 && ms < 12_500 {
				lat += 400 * time.Millisecond // a stall
			}
			rec.Observe(OpSeatMap, OK, now.Add(-lat), now)
			out := OK
			switch r := rng.Float64(); {
			case held+booked+2 > capacity, r < 0.3:
				out = Taken
			case r < 0.31:
				out = Unavailable
			}
			rec.Observe(OpHold, out, now.Add(-2*lat), now)
			if out != OK {
				continue
			}
			if rng.Float64() < 0.8 {
				rec.Observe(OpConfirm, OK, now.Add(-lat), now)
				booked += 2
			} else {
				held += 2
				expiring = append(expiring, now)
			}
		}
		if ms%250 == 0 {
			rec.Progress(now, held, booked)
		}
	}
	res := rec.Result()
	res.Target, res.Scenario, res.Loop = "boxoffice", "flash-sale", "closed"
	res.Concurrency, res.Users, res.Capacity, res.Seed = 500, 20_000, capacity, seed
	res.AllHeldAfter, res.SoldOutAfter = 9.75, 14.5
	res.Config = map[string]any{"users": 20000, "rows": 30, "seats_per_row": 100, "confirm_prob": 0.8}
	res.Verification = reportVerification{OK: true}
	return res
}

func TestReportText(t *testing.T) {
	res := syntheticSaleResult(t, 1)
	res.Verification = reportVerification{Violations: []string{"seat A-1 booked twice"}}
	var b bytes.Buffer
	if err := WriteText(&b, res); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	hold, _ := res.Op("hold")
	for _, want := range []string{
		"flash-sale against boxoffice", "p99.9 ms", "unavailable",
		"hold", "seatmap", "confirm",
		" " + strconv.FormatInt(hold.Count, 10) + " ", " " + strconv.FormatInt(hold.ByOutcome["taken"], 10) + " ",
		fmtMS(hold.P50), fmtMS(hold.P99), fmtMS(hold.P999), fmtMS(hold.Max), fmtRate(hold.OKPerSecond),
		"all seats held after  9.75 s", "sold out after        14.50 s",
		"verification          VIOLATED: seat A-1 booked twice",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q", want)
		}
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	res := syntheticSaleResult(t, 2)
	path := filepath.Join(t.TempDir(), "result.json")
	if err := WriteJSON(path, res); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(res)
	got, _ := json.Marshal(back)
	if !bytes.Equal(got, want) {
		t.Errorf("round trip differs:\n got %.400s\nwant %.400s", got, want)
	}
	if back.Ops[1].P99 != res.Ops[1].P99 || len(back.Series) != len(res.Series) || !back.Started.Equal(res.Started) {
		t.Errorf("round trip lost figures")
	}
	if line, passed, known := verdictOf(back.Verification); line != "VERIFIED" || !passed || !known {
		t.Errorf("verification read back: %q %v %v", line, passed, known)
	}
	raw, _ := os.ReadFile(path)
	for _, key := range []string{`"p50_ms"`, `"p999_ms"`, `"throughput_per_s"`, `"ok_per_s"`, `"sold_out_after_s"`, `"series"`, `"by_outcome"`} {
		if !bytes.Contains(raw, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

// reportImgSrc finds the images a report page references.
var reportImgSrc = regexp.MustCompile(`<img src="([^"]+)"`)

// decodePNG reads a PNG, as RGBA, and counts its distinct colours up to
// 1,000.
func decodePNG(t *testing.T, path string) (*image.RGBA, int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, format, err := image.Decode(f)
	if err != nil || format != "png" {
		t.Fatalf("%s: %v (format %q)", path, err, format)
	}
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	colours := map[[4]uint8]bool{}
	for i := 0; i+3 < len(rgba.Pix) && len(colours) < 1000; i += 4 {
		colours[[4]uint8(rgba.Pix[i:i+4])] = true
	}
	return rgba, len(colours)
}

// countNear counts the pixels of img within 8 per channel of c.
func countNear(img *image.RGBA, c color.Color) int {
	want := color.RGBAModel.Convert(c).(color.RGBA)
	near := func(a, b uint8) bool { return max(a, b)-min(a, b) <= 8 }
	n := 0
	for i := 0; i+3 < len(img.Pix); i += 4 {
		if near(img.Pix[i], want.R) && near(img.Pix[i+1], want.G) && near(img.Pix[i+2], want.B) {
			n++
		}
	}
	return n
}

// writeReport writes res's HTML report and checks the page and its charts.
func writeReport(t *testing.T, dir string, res *Result) (index string, charts []string) {
	t.Helper()
	index, err := WriteHTML(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range reportImgSrc.FindAllStringSubmatch(string(page), -1) {
		charts = append(charts, m[1])
	}
	if want := []string{chartRates, chartLatency, chartSeats}; !slices.Equal(charts, want) {
		t.Fatalf("page images %v, want %v", charts, want)
	}
	lower := strings.ToLower(string(page))
	for _, banned := range []string{"<script", "http://", "https://", "//cdn"} {
		if strings.Contains(lower, banned) {
			t.Errorf("page contains %q", banned)
		}
	}
	for _, c := range charts {
		img, colours := decodePNG(t, filepath.Join(dir, c))
		if b := img.Bounds(); b.Dx() != 960 || b.Dy() != 384 {
			t.Errorf("%s is %v, want 960×384", c, b)
		}
		if colours < 20 {
			t.Errorf("%s has %d colours: blank?", c, colours)
		}
	}
	return index, charts
}

func TestReportHTML(t *testing.T) {
	res := syntheticSaleResult(t, 3)
	dir := filepath.Join(t.TempDir(), "report")
	index, charts := writeReport(t, dir, res)
	page, _ := os.ReadFile(index)
	for _, want := range []string{"VERIFIED", "flash-sale", "confirm_prob", "seats_per_row", "p99.9 ms", "14.50 s"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Every chart draws its data lines: hold (red) in the rates and latency
	// charts, held seats (red) and booked seats (green) in the seats chart.
	for _, c := range charts {
		img, _ := decodePNG(t, filepath.Join(dir, c))
		if n := countNear(img, chartColor(opColor[OpHold])); n < 200 {
			t.Errorf("%s: %d pixels of the first line colour", c, n)
		}
	}
}

func TestReportHTMLEmptyResult(t *testing.T) {
	res := NewRecorder(time.Now()).Result()
	index, err := WriteHTML(t.TempDir(), res)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(index); err != nil {
		t.Fatal(err)
	}
}

func TestReportCompareText(t *testing.T) {
	mk := func(target string, attempts, okHolds, p50, p99, soldOut float64, verified bool) *Result {
		return &Result{Target: target, SoldOutAfter: soldOut, Verification: reportVerification{OK: verified},
			Ops: []OpResult{{Op: "hold", Count: 1, Throughput: attempts, OKPerSecond: okHolds, P50: p50, P99: p99}}}
	}
	c := Comparison{
		Targets: []string{"boxoffice", "pg-status", "redis-setnx"},
		Results: map[string][]*Result{
			"boxoffice": {
				mk("boxoffice", 40000, 4000, 1, 10, 5, true),
				mk("boxoffice", 44000, 4400, 1.2, 12, 4, true),
				mk("boxoffice", 42000, 4200, 1.1, 11, 4.5, true),
			},
			"pg-status": {
				mk("pg-status", 4000, 400, 10, 200, 50, true),
				mk("pg-status", 4000, 400, 12, 240, 0, true), // did not sell out
				mk("pg-status", 3000, 300, 11, 220, 45, true),
			},
			"redis-setnx": {
				mk("redis-setnx", 20000, 2000, 2, 20, 8, true),
				mk("redis-setnx", 22000, 2200, 2.4, 24, 9, false),
				mk("redis-setnx", 21000, 2100, 2.2, 22, 8, true),
			},
		},
	}
	rows := c.Rows()
	if len(rows) != 3 || rows[0].Target != "boxoffice" {
		t.Fatalf("rows %+v", rows)
	}
	approxEqual(t, "boxoffice median attempts/s", rows[0].AttemptsPerSecond, 42000, 1e-9)
	approxEqual(t, "pg-status median sold out", rows[1].SoldOutAfter, 47.5, 1e-9)
	if rows[1].SoldOut != 2 || rows[2].Verified != 2 || rows[2].VerifyKnown != 3 {
		t.Errorf("pg sold out %d, redis verified %d/%d", rows[1].SoldOut, rows[2].Verified, rows[2].VerifyKnown)
	}
	att := rows[2].Ratios["attempts/s"] // 40/20, 44/22, 42/21: all 2
	approxEqual(t, "redis attempts ratio", att.Median, 2, 1e-9)
	pg := rows[1].Ratios["attempts/s"] // 10, 11, 14
	if pg.N != 3 || math.Abs(pg.Median-11) > 1e-9 || math.Abs(pg.Min-10) > 1e-9 || math.Abs(pg.Max-14) > 1e-9 {
		t.Errorf("pg attempts ratio %+v, want median 11 (10–14)", pg)
	}
	if so := rows[1].Ratios["sold out"]; so.N != 2 || math.Abs(so.Median-10) > 1e-9 { // 50/5, 45/4.5
		t.Errorf("pg sold-out ratio %+v, want 10 over 2 rounds", so)
	}
	approxEqual(t, "redis p99 ratio", rows[2].Ratios["p99"].Median, 2, 1e-9)

	var b bytes.Buffer
	if err := WriteCompareText(&b, c); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"42000", "VERIFIED 3/3", "VIOLATED 1/3", "47.50 s (2/3 rounds)",
		"11.00x (10.00–14.00)", "2.00x (2.00–2.00)", "attempts/s", "sold out"} {
		if !strings.Contains(out, want) {
			t.Errorf("compare text lacks %q", want)
		}
	}
}

func TestProgressPrinter(t *testing.T) {
	snap := func(sec float64, attempts, booked, held int) Snapshot {
		return Snapshot{Elapsed: time.Duration(sec * float64(time.Second)), Users: 1000, UsersDone: int64(attempts / 10),
			HoldAttempts: int64(attempts), HoldsOK: int64(attempts / 2), Errors: 3, Capacity: 100, Held: held, Booked: booked}
	}
	t.Run("terminal", func(t *testing.T) {
		var b bytes.Buffer
		p := NewProgressPrinter(&b, true, time.Second)
		p.Update(snap(1, 1000, 10, 20))
		p.Update(snap(1.5, 1500, 20, 20)) // within the interval: not shown yet
		p.Update(snap(2, 3000, 50, 10))
		p.Update(snap(2.4, 3100, 100, 0))
		p.Done()
		out := b.String()
		t.Logf("%q", out)
		lines := strings.Split(out, "\r")[1:]
		if len(lines) != 3 || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
			t.Fatalf("want 3 status lines rewritten with \\r and one final newline: %q", out)
		}
		for i, want := range []string{
			"[###++++++.....................] sold 10/100 held 20 | 1000 holds/s",
			"[###############+++............] sold 50/100 held 10 | 2000 holds/s",
			"[##############################] sold 100/100 held 0 | 250 holds/s",
		} {
			if !strings.Contains(lines[i], want) {
				t.Errorf("line %d %q lacks %q", i, lines[i], want)
			}
		}
	})
	t.Run("plain", func(t *testing.T) {
		var b bytes.Buffer
		p := NewProgressPrinter(&b, false, 2*time.Second)
		for s := 1; s <= 6; s++ {
			p.Update(snap(float64(s), 1000*s, 10*s, 5))
		}
		p.Done()
		out := b.String()
		t.Logf("%s", out)
		if strings.Contains(out, "\r") {
			t.Error("plain output has \\r")
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "t=1.0s sold=10/100 held=5 holds/s=1000") ||
			!strings.HasPrefix(lines[2], "t=5.0s sold=50/100") || !strings.HasPrefix(lines[3], "t=6.0s sold=60/100") {
			t.Errorf("plain lines at 1, 3, 5 s, then the last (6 s) by Done: %q", lines)
		}
	})
}

// TestHTMLReportInChromium opens a report in Debian's headless chromium,
// served over HTTP from a test server: the page must load every chart it
// references and the screenshot must show them (BENCH_KEEP_SCREENSHOT=file
// keeps it). Without chromium the test is skipped, except in CI (CI=true),
// which must install it.
func TestHTMLReportInChromium(t *testing.T) {
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI (apt-get install -y chromium): %v", chromium, err)
		}
		t.Skipf("no %s (apt-get install chromium)", chromium)
	}
	dir := t.TempDir()
	_, charts := writeReport(t, dir, syntheticSaleResult(t, 4))

	var mu sync.Mutex
	requested := map[string]int{} // path → status
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		files.ServeHTTP(rw, r)
		mu.Lock()
		requested[r.URL.Path] = rw.status
		mu.Unlock()
	}))
	defer srv.Close()

	tmp := t.TempDir()
	shot := filepath.Join(tmp, "shot.png")
	// ~3 s on an idle 2-core machine; the margin is for a loaded one.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-crash-reporter", "--disable-breakpad", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(tmp, "profile"),
		"--screenshot="+shot, "--window-size=1280,2000",
		srv.URL+"/")
	// chromium forks helpers: end the whole process group on timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}

	mu.Lock()
	for _, c := range append([]string{""}, charts...) {
		if status, ok := requested["/"+c]; !ok || status != http.StatusOK {
			t.Errorf("chromium did not load %s (requests: %v)", c, requested)
		}
	}
	mu.Unlock()

	img, colours := decodePNG(t, shot)
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 2000 {
		t.Errorf("screenshot is %v, want 1280×2000", b)
	}
	if colours < 200 {
		t.Errorf("screenshot has %d colours: blank?", colours)
	}
	// The charts show at their size (960 px wide, 1:1), all within the
	// window: the screenshot has about as many pixels of the hold colour as
	// the three charts together.
	red := chartColor(opColor[OpHold])
	inCharts := 0
	for _, c := range charts {
		chart, _ := decodePNG(t, filepath.Join(dir, c))
		inCharts += countNear(chart, red)
	}
	if got := countNear(img, red); float64(got) < 0.9*float64(inCharts) {
		t.Errorf("screenshot has %d pixels of the hold colour, the charts %d: not every chart shows", got, inCharts)
	}
	if os.Getenv("BENCH_KEEP_SCREENSHOT") != "" {
		_ = os.WriteFile(os.Getenv("BENCH_KEEP_SCREENSHOT"), readFileT(t, shot), 0o644)
	}
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// statusRecorder remembers the status of a response.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// TestCompareSummary checks compare.json: medians over rounds, per-round
// ratios to the reference (reference ÷ target for rates, target ÷
// reference for times) with their median, min and max, the reference left
// out of the ratios, each round's verification, and null for what a
// target never had.
func TestCompareSummary(t *testing.T) {
	mk := func(attempts, okHolds, p50, p99, allHeld float64, verified any) *Result {
		return &Result{Scenario: "hold-storm", AllHeldAfter: allHeld, Verification: verified,
			Ops: []OpResult{{Op: "hold", Count: 1, Throughput: attempts, OKPerSecond: okHolds, P50: p50, P99: p99}}}
	}
	ok := reportVerification{OK: true}
	c := Comparison{
		Targets: []string{"boxoffice", "redis-setnx", "pg-status"},
		Results: map[string][]*Result{
			"boxoffice": {
				mk(100_000, 3000, 1, 10, 2, ok),
				mk(120_000, 3600, 1.2, 12, 2.5, ok),
				mk(110_000, 3300, 1.1, 11, 0, ok), // never all held
			},
			"redis-setnx": {
				mk(50_000, 1500, 2, 20, 5, ok),                                              // 2×, 2.5×
				mk(40_000, 1200, 3.6, 36, 5, reportVerification{Violations: []string{"x"}}), // 3×, 2×
				mk(55_000, 1650, 2.2, 22, 6, nil),                                           // 2×; all held unknown for the reference
			},
			"pg-status": {
				{Scenario: "hold-storm"}, // no hold called: nothing to compare
			},
		},
	}
	path := filepath.Join(t.TempDir(), "compare.json")
	if err := WriteCompareJSON(path, c); err != nil {
		t.Fatal(err)
	}
	raw := readFileT(t, path)
	t.Log("\n" + string(raw))
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, []string{"medians", "ratios", "reference", "verified"}) {
		t.Fatalf("top-level keys %v", keys)
	}
	if got["reference"] != "boxoffice" {
		t.Errorf("reference %v", got["reference"])
	}
	metricKeys := []string{"all_held_s", "hold_attempts_per_s", "hold_p50_ms", "hold_p99_ms", "holds_granted_per_s", "sold_out_s"}
	medians := got["medians"].(map[string]any)
	for _, target := range c.Targets {
		m, _ := medians[target].(map[string]any)
		if keys := slices.Sorted(maps.Keys(m)); !slices.Equal(keys, metricKeys) {
			t.Errorf("medians[%s] keys %v, want %v", target, keys, metricKeys)
		}
	}
	num := func(v any) float64 {
		t.Helper()
		f, isNum := v.(float64)
		if !isNum {
			t.Fatalf("%v is not a number", v)
		}
		return f
	}
	bm := medians["boxoffice"].(map[string]any)
	approxEqual(t, "boxoffice attempts median", num(bm["hold_attempts_per_s"]), 110_000, 1e-9)
	approxEqual(t, "boxoffice all held median", num(bm["all_held_s"]), 2.25, 1e-9) // of the two rounds that got there
	approxEqual(t, "boxoffice p99 median", num(bm["hold_p99_ms"]), 11, 1e-9)
	if bm["sold_out_s"] != nil {
		t.Errorf("sold_out_s %v, want null (never sold out)", bm["sold_out_s"])
	}
	for k, v := range medians["pg-status"].(map[string]any) {
		if v != nil {
			t.Errorf("pg-status median %s = %v, want null (no hold called)", k, v)
		}
	}

	ratios := got["ratios"].(map[string]any)
	if _, has := ratios["boxoffice"]; has || len(ratios) != 2 {
		t.Errorf("ratios for %v, want redis-setnx and pg-status, not the reference", slices.Sorted(maps.Keys(ratios)))
	}
	rr := ratios["redis-setnx"].(map[string]any)
	if keys := slices.Sorted(maps.Keys(rr)); !slices.Equal(keys, metricKeys) {
		t.Errorf("ratios[redis-setnx] keys %v", keys)
	}
	att := rr["hold_attempts_per_s"].(map[string]any) // 100/50, 120/40, 110/55
	approxEqual(t, "attempts ratio median", num(att["median"]), 2, 1e-9)
	approxEqual(t, "attempts ratio min", num(att["min"]), 2, 1e-9)
	approxEqual(t, "attempts ratio max", num(att["max"]), 3, 1e-9)
	p50 := rr["hold_p50_ms"].(map[string]any) // 2/1, 3.6/1.2, 2.2/1.1: times are target ÷ reference
	approxEqual(t, "p50 ratio median", num(p50["median"]), 2, 1e-9)
	approxEqual(t, "p50 ratio max", num(p50["max"]), 3, 1e-9)
	held := rr["all_held_s"].(map[string]any) // 5/2, 5/2.5; round 3 has no reference figure
	approxEqual(t, "all held ratio median", num(held["median"]), 2.25, 1e-9)
	approxEqual(t, "all held ratio min", num(held["min"]), 2, 1e-9)
	approxEqual(t, "all held ratio max", num(held["max"]), 2.5, 1e-9)
	for _, k := range []string{"median", "min", "max"} {
		if v, has := rr["sold_out_s"].(map[string]any)[k]; !has || v != nil {
			t.Errorf("sold_out_s ratio %s = %v (present %v), want null", k, v, has)
		}
	}

	verified := got["verified"].(map[string]any)
	if v := verified["redis-setnx"].([]any); len(v) != 3 || v[0] != true || v[1] != false || v[2] != nil {
		t.Errorf("verified[redis-setnx] = %v, want [true false null]", v)
	}
	if v := verified["boxoffice"].([]any); len(v) != 3 || v[0] != true || v[1] != true || v[2] != true {
		t.Errorf("verified[boxoffice] = %v", v)
	}
	if strings.Contains(string(raw), "NaN") || strings.Contains(string(raw), "Inf") {
		t.Errorf("compare.json has a NaN or Inf:\n%s", raw)
	}
}

// TestReportHoldStormCPU checks the text report of a hold-storm: rates over
// the whole run, and CPU per hold attempt by process.
func TestReportHoldStormCPU(t *testing.T) {
	res := &Result{Target: "boxoffice", Scenario: "hold-storm", Users: 200_000, Capacity: 15_000,
		AllHeldAfter: 1.5, SaleHoldAttempts: 50_000, SaleHoldsOK: 6000, Duration: 5,
		CPU:          map[string]float64{"client": 2, "engine": 5, "postgres": 0.5},
		Ops:          []OpResult{{Op: "hold", Count: 200_000, Throughput: 40_000, OKPerSecond: 1200}},
		Verification: reportVerification{OK: true}}
	if att, ok := res.HoldRates(); att != 40_000 || ok != 1200 {
		t.Errorf("hold-storm rates %v, %v; want the whole run's", att, ok)
	}
	cpu := res.CPUPerAttempt()
	approxEqual(t, "engine µs per attempt", cpu["engine"], 25, 1e-9)
	approxEqual(t, "client µs per attempt", cpu["client"], 10, 1e-9)
	var b bytes.Buffer
	if err := WriteText(&b, res); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"over the whole run    40000 hold attempts/s, 1200 granted/s",
		"CPU per hold attempt  client 10.0 µs, engine 25.0 µs, postgres 2.50 µs (processor time during the load ÷ 200000 attempts)"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q", want)
		}
	}
	if strings.Contains(out, "during the on-sale") {
		t.Error("a hold-storm's rates are reported over the on-sale")
	}

	// A flash sale keeps its on-sale rates.
	res.Scenario = "flash-sale"
	if att, _ := res.HoldRates(); att != 50_000/1.5 {
		t.Errorf("flash-sale attempts/s %v, want over the on-sale", att)
	}
}
