package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"image/color"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Verdict is what the reports need of Result.Verification: a one-line
// summary ("VERIFIED", or the violations) and whether the run passed.
// Verification implements it. Verification read back from JSON (a map) is
// understood when it has a boolean "verified" (or "ok") field and,
// optionally, a "violations" list and a "violation_count".
type Verdict interface {
	Verified() bool
	String() string
}

// verdictOf summarizes v: its line, whether it passed, and whether that is
// known at all.
func verdictOf(v any) (line string, passed, known bool) {
	switch v := v.(type) {
	case nil:
		return "not run", false, false
	case Verdict:
		return v.String(), v.Verified(), true
	case map[string]any:
		ok, isBool := v["verified"].(bool)
		if !isBool {
			ok, isBool = v["ok"].(bool)
		}
		viol, _ := v["violations"].([]any)
		n := len(viol)
		if c, isNum := v["violation_count"].(float64); isNum && int(c) > n {
			n = int(c)
		}
		switch {
		case !isBool:
		case ok:
			return "VERIFIED", true, true
		case len(viol) > 0:
			return fmt.Sprintf("VIOLATED: %d violation(s), first: %v", n, viol[0]), false, true
		default:
			return "VIOLATED", false, true
		}
	case fmt.Stringer:
		return v.String(), false, false
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v), false, false
	}
	return string(b), false, false
}

// summaryHeader and summaryRows are the summary table, shared by the text and
// HTML reports. Latencies are in milliseconds.
var summaryHeader = []string{"op", "calls", "calls/s", "ok/s",
	"ok", "taken", "limit", "ended", "unavailable", "timeout", "failed",
	"p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"}

func summaryRows(r *Result) [][]string {
	var rows [][]string
	for _, o := range r.Ops {
		row := []string{o.Op, strconv.FormatInt(o.Count, 10), fmtRate(o.Throughput), fmtRate(o.OKPerSecond)}
		for out := range numOutcomes {
			row = append(row, strconv.FormatInt(o.ByOutcome[out.String()], 10))
		}
		row = append(row, fmtMS(o.P50), fmtMS(o.P90), fmtMS(o.P99), fmtMS(o.P999), fmtMS(o.Max))
		rows = append(rows, row)
	}
	return rows
}

// fmtMS formats milliseconds with about three significant digits.
func fmtMS(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a < 1:
		return strconv.FormatFloat(v, 'f', 3, 64)
	case a < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// cpuNames orders the processes of a CPU map: client, engine, then the
// rest by name.
func cpuNames(m map[string]float64) []string {
	rank := func(n string) int {
		switch n {
		case "client":
			return 0
		case "engine":
			return 1
		}
		return 2
	}
	names := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	return names
}

// fmtCPUPerAttempt formats CPUPerAttempt: "client 9.10 µs, engine 25.0
// µs"; "" when there is none.
func fmtCPUPerAttempt(m map[string]float64) string {
	var parts []string
	for _, n := range cpuNames(m) {
		parts = append(parts, n+" "+fmtMS(m[n])+" µs")
	}
	return strings.Join(parts, ", ")
}

// fmtRate formats a per-second rate.
func fmtRate(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// fmtSeconds formats a time from the start, "-" for never (0).
func fmtSeconds(s float64) string {
	if s <= 0 {
		return "-"
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

// runHeadline is the run's one-line description.
func runHeadline(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s against %s", orDash(r.Scenario), orDash(r.Target))
	switch {
	case r.Loop == "open":
		fmt.Fprintf(&b, ", open loop at %s users/s", fmtRate(r.Rate))
	case r.Concurrency > 0:
		fmt.Fprintf(&b, ", closed loop with %d users in flight", r.Concurrency)
	}
	fmt.Fprintf(&b, ", %d users, %d seats, seed %d, %.2f s", r.Users, r.Capacity, r.Seed, r.Duration)
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteText writes the run's summary table: per op the calls, the rates, the
// outcomes and the latency percentiles; then when the seats were all held
// and sold out, and the verification.
func WriteText(w io.Writer, r *Result) error {
	var b bytes.Buffer
	fmt.Fprintln(&b, runHeadline(r))
	if r.Stopped != "" {
		fmt.Fprintf(&b, "stopped: %s\n", r.Stopped)
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(summaryHeader, "\t")+"\t")
	for _, row := range summaryRows(r) {
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, o := range r.Ops {
		if o.Clamped > 0 {
			fmt.Fprintf(&b, "%s: %d latencies above %v counted as %v in the percentiles\n", o.Op, o.Clamped, MaxLatency, MaxLatency)
		}
	}
	line, _, _ := verdictOf(r.Verification)
	fmt.Fprintf(&b, "all seats held after  %s\n", fmtSeconds(r.AllHeldAfter))
	if r.onSaleRates() {
		att, ok := r.HoldRates()
		fmt.Fprintf(&b, "during the on-sale    %s hold attempts/s, %s granted/s\n", fmtRate(att), fmtRate(ok))
	} else if hold, called := r.Op(OpHold.String()); called && r.Scenario == "hold-storm" {
		fmt.Fprintf(&b, "over the whole run    %s hold attempts/s, %s granted/s\n", fmtRate(hold.Throughput), fmtRate(hold.OKPerSecond))
	}
	fmt.Fprintf(&b, "sold out after        %s\n", fmtSeconds(r.SoldOutAfter))
	if cpu := r.CPUPerAttempt(); cpu != nil {
		hold, _ := r.Op(OpHold.String())
		fmt.Fprintf(&b, "CPU per hold attempt  %s (processor time during the load ÷ %d attempts)\n", fmtCPUPerAttempt(cpu), hold.Count)
	}
	if l := r.ReplicaLag; l != nil {
		fmt.Fprintf(&b, "seat-map replica lag  p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d messages)\n", l.P50, l.P99, l.Max, l.Count)
	}
	if w := r.Watchers; w != nil {
		fmt.Fprintf(&b, "watchers              %s\n", w.Summary(r.Duration))
	}
	if q := r.Room; q != nil {
		fmt.Fprintf(&b, "waiting room          %s\n", q.Summary())
	}
	fmt.Fprintf(&b, "verification          %s\n", line)
	_, err := w.Write(b.Bytes())
	return err
}

// WriteJSON writes r to path as indented JSON.
func WriteJSON(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encoding result: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a result written by WriteJSON. Its Verification comes back
// as a map[string]any.
func ReadJSON(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: decoding %s: %w", path, err)
	}
	return &r, nil
}

// The report's charts, in dir next to index.html.
const (
	chartRates   = "rates.png"
	chartLatency = "latency.png"
	chartSeats   = "seats.png"
)

// Chart size: 960×384 pixels.
const (
	chartW   = 10 * vg.Inch
	chartH   = 4 * vg.Inch
	chartDPI = 96
)

// WriteHTML writes an HTML report of r into dir (created if needed):
// index.html with the run's settings, the summary table, the verification,
// and three PNG charts beside it — calls and successes per second, latency
// percentiles over time, and seats held and booked over time. The page loads
// nothing but those files and has no script, so it shows offline. It returns
// the path of index.html.
func WriteHTML(dir string, r *Result) (indexPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	charts := []struct {
		file, alt string
		make      func(*Result) *plot.Plot
	}{
		{chartRates, "calls and successes per second", ratesChart},
		{chartLatency, "latency percentiles over time", latencyChart},
		{chartSeats, "seats held and booked over time", seatsChart},
	}
	page := htmlPage{
		Title:    "boxoffice bench: " + orDash(r.Scenario) + " against " + orDash(r.Target),
		Headline: runHeadline(r),
		Header:   summaryHeader,
		Rows:     summaryRows(r),
		Stopped:  r.Stopped,
	}
	for _, c := range charts {
		if err := savePNG(c.make(r), filepath.Join(dir, c.file)); err != nil {
			return "", fmt.Errorf("bench: chart %s: %w", c.file, err)
		}
		page.Charts = append(page.Charts, htmlChart{Src: c.file, Alt: c.alt})
	}
	page.Verdict, page.Passed, page.Known = verdictOf(r.Verification)
	if r.Verification != nil {
		if b, err := json.MarshalIndent(r.Verification, "", "  "); err == nil {
			page.VerificationJSON = string(b)
		}
	}
	page.Run = [][2]string{
		{"target", orDash(r.Target)},
		{"scenario", orDash(r.Scenario)},
		{"loop", orDash(r.Loop)},
	}
	if r.Concurrency > 0 {
		page.Run = append(page.Run, [2]string{"users in flight", strconv.Itoa(r.Concurrency)})
	}
	if r.Rate > 0 {
		page.Run = append(page.Run, [2]string{"arrival rate", fmtRate(r.Rate) + " users/s"})
	}
	page.Run = append(page.Run,
		[2]string{"users", strconv.Itoa(r.Users)},
		[2]string{"seats", strconv.Itoa(r.Capacity)},
		[2]string{"seed", strconv.FormatUint(r.Seed, 10)},
		[2]string{"started", r.Started.Format(time.RFC3339)},
		[2]string{"duration", fmtSeconds(r.Duration)},
		[2]string{"all seats held after", fmtSeconds(r.AllHeldAfter)},
		[2]string{"sold out after", fmtSeconds(r.SoldOutAfter)},
	)
	if l := r.ReplicaLag; l != nil {
		page.Run = append(page.Run, [2]string{"seat-map replica lag", fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d messages)", l.P50, l.P99, l.Max, l.Count)})
	}
	if w := r.Watchers; w != nil {
		page.Run = append(page.Run, [2]string{"watchers", w.Summary(r.Duration)})
	}
	if cpu := r.CPUPerAttempt(); cpu != nil {
		page.Run = append(page.Run, [2]string{"CPU per hold attempt", fmtCPUPerAttempt(cpu)})
	}
	keys := make([]string, 0, len(r.Config))
	for k := range r.Config {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		page.Config = append(page.Config, [2]string{k, fmt.Sprint(r.Config[k])})
	}

	var b bytes.Buffer
	if err := htmlTemplate.Execute(&b, page); err != nil {
		return "", fmt.Errorf("bench: HTML report: %w", err)
	}
	indexPath = filepath.Join(dir, "index.html")
	if err := os.WriteFile(indexPath, b.Bytes(), 0o644); err != nil {
		return "", err
	}
	return indexPath, nil
}

type htmlPage struct {
	Title, Headline, Stopped string
	Run, Config              [][2]string
	Header                   []string
	Rows                     [][]string
	Verdict                  string
	Passed, Known            bool
	VerificationJSON         string
	Charts                   []htmlChart
}

type htmlChart struct{ Src, Alt string }

var htmlTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
.ok { color: #176f2c; font-weight: bold; }
.bad { color: #b00020; font-weight: bold; }
img { display: block; margin: 1em 0; max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Headline}}</p>
{{if .Stopped}}<p class="bad">Stopped: {{.Stopped}}</p>{{end}}
<h2>Verification</h2>
<p class="{{if .Passed}}ok{{else if .Known}}bad{{end}}">{{.Verdict}}</p>
{{if .VerificationJSON}}<pre>{{.VerificationJSON}}</pre>{{end}}
<h2>Summary</h2>
<table>
<tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range $i, $c := .}}{{if $i}}<td class="n">{{$c}}</td>{{else}}<th>{{$c}}</th>{{end}}{{end}}</tr>
{{end}}</table>
<h2>Over time</h2>
{{range .Charts}}<img src="{{.Src}}" alt="{{.Alt}}" width="960" height="384">
{{end}}
<h2>Run</h2>
<table>
{{range .Run}}<tr><th>{{index . 0}}</th><td>{{index . 1}}</td></tr>
{{end}}</table>
{{if .Config}}<h2>Configuration</h2>
<table>
{{range .Config}}<tr><th>{{index . 0}}</th><td>{{index . 1}}</td></tr>
{{end}}</table>{{end}}
</body>
</html>
`))

// savePNG draws p into a PNG file, its legend in a column on the right so
// that it never hides a line.
func savePNG(p *plot.Plot, path string) error {
	c := vgimg.NewWith(vgimg.UseWH(chartW, chartH), vgimg.UseDPI(chartDPI))
	dc := draw.New(c)
	legend := p.Legend
	p.Legend = plot.NewLegend() // drawn apart below
	p.Draw(draw.Crop(dc, 0, -legendW, 0, 0))
	legend.Top, legend.Left = true, true
	legend.Draw(draw.Crop(dc, dc.Max.X-legendW+vg.Points(8), 0, 0, -vg.Points(28)))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// legendW is the width of the charts' legend column.
const legendW = 1.6 * vg.Inch

// chartLine is one line of a chart.
type chartLine struct {
	name   string
	xys    plotter.XYs
	color  color.Color
	dashed bool
}

// addLines adds the series that have points to p, with a legend.
func addLines(p *plot.Plot, ss []chartLine) int {
	n := 0
	for _, s := range ss {
		if len(s.xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xys)
		if err != nil { // NaN or Inf: the series is skipped rather than the report
			continue
		}
		l.Color = s.color
		l.Width = vg.Points(1.5)
		if s.dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(s.name, l)
		n++
	}
	return n
}

// newPlot returns an empty chart of r over time, in a sans-serif font, its
// time axis from 0 to the end of the run.
func newPlot(r *Result, title, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since start"
	p.Y.Label.Text = ylabel
	for _, f := range []*font.Font{&p.Title.TextStyle.Font, &p.X.Label.TextStyle.Font, &p.Y.Label.TextStyle.Font,
		&p.X.Tick.Label.Font, &p.Y.Tick.Label.Font, &p.Legend.TextStyle.Font} {
		f.Variant = "Sans"
	}
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.X.Min, p.X.Max = 0, max(r.Duration, float64(len(r.Series)), 1)
	p.X.Tick.Marker = secondsTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// secondsTicks marks a time axis every 1, 2 or 5 × 10ⁿ seconds, about ten
// times, with a minor tick halfway.
type secondsTicks struct{}

// Ticks implements plot.Ticker.
func (secondsTicks) Ticks(lo, hi float64) []plot.Tick {
	raw := (hi - lo) / 10
	if !(raw > 0) {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'f', -1, 64)}}
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ts []plot.Tick
	for i := math.Ceil(lo / step); i*step <= hi; i++ {
		v := i * step
		ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
		if half := v + step/2; half <= hi {
			ts = append(ts, plot.Tick{Value: half})
		}
	}
	return ts
}

// ratesChart: hold attempts, holds OK and confirms OK per second; seat-map
// reads instead when there was no hold (browsing).
func ratesChart(r *Result) *plot.Plot {
	p := newPlot(r, "Calls per second", "calls / s")
	pick := []struct {
		name   string
		op     string
		ok     bool
		color  int
		dashed bool
	}{
		{"hold attempts", OpHold.String(), false, opColor[OpHold], true},
		{"holds ok", OpHold.String(), true, opColor[OpHold], false},
		{"confirms ok", OpConfirm.String(), true, opColor[OpConfirm], false},
		{"seat-map reads", OpSeatMap.String(), false, opColor[OpSeatMap], true},
	}
	_, holds := r.Op(OpHold.String())
	var ss []chartLine
	for _, k := range pick {
		if _, called := r.Op(k.op); !called {
			continue
		}
		if k.op == OpSeatMap.String() && holds {
			continue // as many as hold attempts, it would hide them
		}
		s := chartLine{name: k.name, color: chartColor(k.color), dashed: k.dashed}
		for _, sec := range r.Series {
			o := sec.Ops[k.op]
			v := o.Count
			if k.ok {
				v = o.OK
			}
			s.xys = append(s.xys, plotter.XY{X: float64(sec.T) + 0.5, Y: float64(v)})
		}
		ss = append(ss, s)
	}
	addLines(p, ss)
	p.Y.Min, p.Y.Max = 0, p.Y.Max*1.05 // lines along the top stay visible
	return p
}

// chartColor is the i-th line colour: plotutil's dark set, which reads
// better on white than its default soft one.
func chartColor(i int) color.Color { return plotutil.DarkColors[i%len(plotutil.DarkColors)] }

// opColor is each op's colour in the charts.
var opColor = [numOps]int{OpHold: 0, OpConfirm: 1, OpSeatMap: 2}

// minLatencyMS is the floor of the latency chart's log axis.
const minLatencyMS = 0.001

// latencyChart: p50 (dashed) and p99 (solid) per second of holds, seat-map
// reads and confirms, on a log axis.
func latencyChart(r *Result) *plot.Plot {
	p := newPlot(r, "Latency per second (p99 solid, p50 dashed)", "ms")
	var ss []chartLine
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, op := range []Op{OpHold, OpSeatMap, OpConfirm} {
		name, i := op.String(), opColor[op]
		if _, called := r.Op(name); !called {
			continue
		}
		p99 := chartLine{name: name + " p99", color: chartColor(i)}
		p50 := chartLine{name: name + " p50", color: chartColor(i), dashed: true}
		for _, sec := range r.Series {
			o, ok := sec.Ops[name]
			if !ok || o.Count == 0 {
				continue // no call ended in this second: the line skips it
			}
			x := float64(sec.T) + 0.5
			y50, y99 := max(o.P50, minLatencyMS), max(o.P99, minLatencyMS)
			p50.xys = append(p50.xys, plotter.XY{X: x, Y: y50})
			p99.xys = append(p99.xys, plotter.XY{X: x, Y: y99})
			lo, hi = min(lo, y50), max(hi, y99)
		}
		ss = append(ss, p99, p50)
	}
	if addLines(p, ss) > 0 {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo)))
		p.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi)))
		if p.Y.Max <= p.Y.Min {
			p.Y.Max = p.Y.Min * 10
		}
	}
	return p
}

// seatsChart: seats held and booked at each second's last sample, and the
// capacity.
func seatsChart(r *Result) *plot.Plot {
	p := newPlot(r, "Seats held and booked", "seats")
	held := chartLine{name: "held", color: chartColor(0)}
	booked := chartLine{name: "booked", color: chartColor(1)}
	if len(r.Series) > 0 {
		held.xys = plotter.XYs{{X: 0, Y: 0}}
		booked.xys = plotter.XYs{{X: 0, Y: 0}}
	}
	for _, sec := range r.Series {
		x := float64(sec.T + 1)
		if end := r.Duration; end > float64(sec.T) && end < x {
			x = end
		}
		held.xys = append(held.xys, plotter.XY{X: x, Y: float64(sec.Held)})
		booked.xys = append(booked.xys, plotter.XY{X: x, Y: float64(sec.Booked)})
	}
	ss := []chartLine{held, booked}
	if r.Capacity > 0 && len(r.Series) > 0 {
		last := held.xys[len(held.xys)-1].X
		ss = append(ss, chartLine{name: "capacity", color: color.Gray{Y: 128}, dashed: true,
			xys: plotter.XYs{{X: 0, Y: float64(r.Capacity)}, {X: last, Y: float64(r.Capacity)}}})
	}
	addLines(p, ss)
	p.Y.Min, p.Y.Max = 0, p.Y.Max*1.05 // lines along the top stay visible
	return p
}

// Comparison is what `bench compare` ran: each target's results, one per
// round, rounds in the same order for every target (round i of each target
// ran in the same alternation).
type Comparison struct {
	Targets []string             // display order; Targets[0] is the reference of the ratios
	Results map[string][]*Result // by target
}

// CompareRow is one target's figures over the rounds: medians, and ratios to
// the reference target.
type CompareRow struct {
	Target            string
	Rounds            int
	AttemptsPerSecond float64 // hold calls per second
	HoldsPerSecond    float64 // OK holds per second
	P50, P99          float64 // of holds, ms
	AllHeldAfter      float64 // seconds until every seat was held, over the rounds that got there
	AllHeld           int     // rounds in which every seat was held
	SoldOutAfter      float64 // seconds, over the rounds that sold out; 0: none did
	SoldOut           int     // rounds that sold out
	Verified          int     // rounds that verified
	VerifyKnown       int     // rounds whose verification outcome is known
	// CPUPerAttempt is, by process, the median over the rounds of its CPU
	// microseconds per hold attempt (see Result.CPUPerAttempt); nil when
	// no round measured CPU.
	CPUPerAttempt map[string]float64
	// Ratios compare this target with the reference, per metric name
	// (see CompareMetrics), round by round. Each ratio says how many times
	// better the reference did: reference ÷ target for rates, target ÷
	// reference for latencies and the times until all held and sold out.
	Ratios map[string]Ratio
}

// Ratio is the median and the spread of per-round ratios.
type Ratio struct {
	Median, Min, Max float64
	N                int // rounds compared
}

// compareMetric is one figure a comparison sets side by side.
type compareMetric struct {
	name   string // in the text report and CompareRow.Ratios
	key    string // in compare.json
	higher bool   // a higher value is better (a rate), else lower is (a time)
	// value reads the figure of a run; ok is false when the run has none
	// (no hold called, never all held, never sold out).
	value func(r *Result) (v float64, ok bool)
}

// compareMetrics are the metrics of a comparison, in display order.
var compareMetrics = []compareMetric{
	{"attempts/s", "hold_attempts_per_s", true, func(r *Result) (float64, bool) {
		_, called := r.Op(OpHold.String())
		att, _ := r.HoldRates()
		return att, called
	}},
	{"ok holds/s", "holds_granted_per_s", true, func(r *Result) (float64, bool) {
		_, called := r.Op(OpHold.String())
		_, ok := r.HoldRates()
		return ok, called
	}},
	{"p50", "hold_p50_ms", false, func(r *Result) (float64, bool) {
		hold, called := r.Op(OpHold.String())
		return hold.P50, called
	}},
	{"p99", "hold_p99_ms", false, func(r *Result) (float64, bool) {
		hold, called := r.Op(OpHold.String())
		return hold.P99, called
	}},
	{"all held", "all_held_s", false, func(r *Result) (float64, bool) { return r.AllHeldAfter, r.AllHeldAfter > 0 }},
	{"sold out", "sold_out_s", false, func(r *Result) (float64, bool) { return r.SoldOutAfter, r.SoldOutAfter > 0 }},
}

// CompareMetrics returns the names of the metrics of CompareRow.Ratios, in
// display order.
func CompareMetrics() []string {
	names := make([]string, len(compareMetrics))
	for i, m := range compareMetrics {
		names[i] = m.name
	}
	return names
}

// values returns the metric of each run that has it, non-finite values
// left out.
func (m compareMetric) values(rs []*Result) []float64 {
	var vs []float64
	for _, r := range rs {
		if v, ok := m.value(r); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			vs = append(vs, v)
		}
	}
	return vs
}

// ratios compares target's runs with the reference's round by round (run
// i of each: the same round, the same conditions): reference ÷ target for
// a rate, target ÷ reference for a time, so that above 1 means the
// reference did better. Rounds where either lacks the figure, or has it
// at zero, are left out.
func (m compareMetric) ratios(ref, target []*Result) []float64 {
	var qs []float64
	for i := range min(len(ref), len(target)) {
		rv, ok1 := m.value(ref[i])
		tv, ok2 := m.value(target[i])
		if !ok1 || !ok2 || !(rv > 0) || !(tv > 0) || math.IsInf(rv, 0) || math.IsInf(tv, 0) {
			continue
		}
		if m.higher {
			qs = append(qs, rv/tv)
		} else {
			qs = append(qs, tv/rv)
		}
	}
	return qs
}

// Rows computes each target's medians and ratios, in c.Targets order.
func (c Comparison) Rows() []CompareRow {
	var ref []*Result
	if len(c.Targets) > 0 {
		ref = c.Results[c.Targets[0]]
	}
	rows := make([]CompareRow, 0, len(c.Targets))
	for _, t := range c.Targets {
		rs := c.Results[t]
		row := CompareRow{Target: t, Rounds: len(rs), Ratios: map[string]Ratio{}}
		for _, r := range rs {
			if _, passed, known := verdictOf(r.Verification); known {
				row.VerifyKnown++
				if passed {
					row.Verified++
				}
			}
		}
		median := make(map[string]float64, len(compareMetrics))
		for _, m := range compareMetrics {
			vs := m.values(rs)
			median[m.name] = medianOf(vs)
			switch m.name {
			case "all held":
				row.AllHeld = len(vs)
			case "sold out":
				row.SoldOut = len(vs)
			}
			if qs := m.ratios(ref, rs); len(qs) > 0 {
				row.Ratios[m.name] = Ratio{Median: medianOf(qs), Min: slices.Min(qs), Max: slices.Max(qs), N: len(qs)}
			}
		}
		row.AttemptsPerSecond, row.HoldsPerSecond = median["attempts/s"], median["ok holds/s"]
		row.P50, row.P99 = median["p50"], median["p99"]
		row.AllHeldAfter, row.SoldOutAfter = median["all held"], median["sold out"]
		row.CPUPerAttempt = medianCPU(rs)
		rows = append(rows, row)
	}
	return rows
}

// medianCPU returns the median over rs of each process's CPU per hold
// attempt (see Result.CPUPerAttempt), over the runs that measured it; nil
// if none did.
func medianCPU(rs []*Result) map[string]float64 {
	per := map[string][]float64{}
	for _, r := range rs {
		for name, us := range r.CPUPerAttempt() {
			per[name] = append(per[name], us)
		}
	}
	if len(per) == 0 {
		return nil
	}
	m := make(map[string]float64, len(per))
	for name, vs := range per {
		m[name] = medianOf(vs)
	}
	return m
}

// CompareSummary is what `bench compare` writes to compare.json: per
// target, the medians over the rounds and the per-round verdicts, and per
// target other than the reference its ratios to the reference. Figures
// a target never had (every seat never held, never sold out, no hold
// called) are null, never 0 or NaN.
type CompareSummary struct {
	// Reference is the first target, which the ratios compare with.
	Reference string `json:"reference"`
	// Medians holds, by target and metric key (hold_attempts_per_s,
	// holds_granted_per_s, hold_p50_ms, hold_p99_ms, all_held_s,
	// sold_out_s), the median over the rounds that had the figure.
	Medians map[string]map[string]*float64 `json:"medians"`
	// Ratios holds, by target (the reference left out) and metric key,
	// the median, min and max of the per-round ratios: reference ÷ target
	// for rates, target ÷ reference for times, so above 1 means the
	// reference did better.
	Ratios map[string]map[string]CompareRatio `json:"ratios"`
	// Verified holds, by target, each round's verification: true
	// (verified), false (violations), null (unknown).
	Verified map[string][]*bool `json:"verified"`
}

// CompareRatio is the spread of one metric's per-round ratios; all null
// when no round had the figure for both targets.
type CompareRatio struct {
	Median *float64 `json:"median"`
	Min    *float64 `json:"min"`
	Max    *float64 `json:"max"`
}

// Summary computes the comparison's compare.json.
func (c Comparison) Summary() CompareSummary {
	s := CompareSummary{
		Medians:  map[string]map[string]*float64{},
		Ratios:   map[string]map[string]CompareRatio{},
		Verified: map[string][]*bool{},
	}
	if len(c.Targets) == 0 {
		return s
	}
	s.Reference = c.Targets[0]
	ref := c.Results[s.Reference]
	num := func(v float64) *float64 { return &v }
	for i, t := range c.Targets {
		rs := c.Results[t]
		med := map[string]*float64{}
		for _, m := range compareMetrics {
			med[m.key] = nil
			if vs := m.values(rs); len(vs) > 0 {
				med[m.key] = num(medianOf(vs))
			}
		}
		s.Medians[t] = med
		verified := make([]*bool, len(rs))
		for j, r := range rs {
			if _, passed, known := verdictOf(r.Verification); known {
				verified[j] = &passed
			}
		}
		s.Verified[t] = verified
		if i == 0 {
			continue
		}
		ratios := map[string]CompareRatio{}
		for _, m := range compareMetrics {
			var q CompareRatio
			if qs := m.ratios(ref, rs); len(qs) > 0 {
				q = CompareRatio{Median: num(medianOf(qs)), Min: num(slices.Min(qs)), Max: num(slices.Max(qs))}
			}
			ratios[m.key] = q
		}
		s.Ratios[t] = ratios
	}
	return s
}

// WriteCompareJSON writes c's Summary to path as indented JSON.
func WriteCompareJSON(path string, c Comparison) error {
	b, err := json.MarshalIndent(c.Summary(), "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encoding the comparison: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// medianOf returns the median of vs, 0 for none.
func medianOf(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// WriteCompareText writes the comparison: per target the medians over the
// rounds of hold attempts/s, OK holds/s, hold p50/p99, the times until all
// held and sold out and the verifications; the CPU per hold attempt of the
// processes measured; then each target's ratios to the first target with
// their spread over the rounds.
func WriteCompareText(w io.Writer, c Comparison) error {
	rows := c.Rows()
	var b bytes.Buffer
	fmt.Fprintln(&b, "medians over rounds (holds; attempts/s and ok holds/s over the on-sale, until every seat was held, or over the whole run of a hold-storm):")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trounds\tattempts/s\tok holds/s\tp50 ms\tp99 ms\tall held after\tsold out after\tverification\t")
	for _, r := range rows {
		sold := fmtSeconds(r.SoldOutAfter)
		if r.SoldOut > 0 && r.SoldOut < r.Rounds {
			sold += fmt.Sprintf(" (%d/%d rounds)", r.SoldOut, r.Rounds)
		}
		held := fmtSeconds(r.AllHeldAfter)
		if r.AllHeld > 0 && r.AllHeld < r.Rounds {
			held += fmt.Sprintf(" (%d/%d rounds)", r.AllHeld, r.Rounds)
		}
		ver := "unknown"
		switch violated := r.VerifyKnown - r.Verified; {
		case violated > 0:
			ver = fmt.Sprintf("VIOLATED %d/%d", violated, r.Rounds)
		case r.Verified > 0:
			ver = fmt.Sprintf("VERIFIED %d/%d", r.Verified, r.Rounds)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Target, r.Rounds,
			fmtRate(r.AttemptsPerSecond), fmtRate(r.HoldsPerSecond), fmtMS(r.P50), fmtMS(r.P99), held, sold, ver)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if slices.ContainsFunc(rows, func(r CompareRow) bool { return r.CPUPerAttempt != nil }) {
		fmt.Fprintln(&b, "\nCPU per hold attempt, median over rounds (processor time during the load ÷ hold attempts):")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, r := range rows {
			cpu := fmtCPUPerAttempt(r.CPUPerAttempt)
			if cpu == "" {
				cpu = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\n", r.Target, cpu)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rows) > 1 {
		refName := rows[0].Target
		fmt.Fprintf(&b, "\nhow many times better %s did, median over rounds (min–max):\n", refName)
		fmt.Fprintf(&b, "(rates: %s ÷ target; latencies and the times until all held and sold out: target ÷ %s)\n", refName, refName)
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "target\t"+strings.Join(CompareMetrics(), "\t")+"\t")
		for _, r := range rows[1:] {
			cells := []string{r.Target}
			for _, m := range CompareMetrics() {
				q, ok := r.Ratios[m]
				if !ok {
					cells = append(cells, "-")
					continue
				}
				cells = append(cells, fmt.Sprintf("%.2fx (%.2f–%.2f)", q.Median, q.Min, q.Max))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// IsTerminal reports whether f is a terminal, for NewProgressPrinter.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// ProgressPrinter shows a run's progress from the runner's snapshots: on a
// terminal one status line, rewritten in place, with a bar of the seats
// booked and held; otherwise a plain line every interval. It is safe for
// concurrent use.
type ProgressPrinter struct {
	w        io.Writer
	terminal bool
	every    time.Duration

	mu      sync.Mutex // guards the fields below
	prev    Snapshot   // the snapshot of the last line printed
	last    Snapshot   // the latest snapshot
	have    bool       // last is set
	printed bool       // a line was printed
	pending bool       // last was not printed
	width   int        // length of the status line on the terminal
}

// NewProgressPrinter returns a printer writing to w, at most one line per
// every of the run's time (every ≤ 0 means 1 s).
func NewProgressPrinter(w io.Writer, isTerminal bool, every time.Duration) *ProgressPrinter {
	if every <= 0 {
		every = time.Second
	}
	return &ProgressPrinter{w: w, terminal: isTerminal, every: every}
}

// Update takes a snapshot; it prints when every has passed since the last
// line. Its signature fits RunConfig.Progress.
func (p *ProgressPrinter) Update(s Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last, p.have, p.pending = s, true, true
	if p.printed && s.Elapsed-p.prev.Elapsed < p.every {
		return
	}
	p.printLocked()
}

// Done prints the latest snapshot if it was not printed, and ends the status
// line on a terminal, so that what follows starts on a new line.
func (p *ProgressPrinter) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending {
		p.printLocked()
	}
	if p.terminal && p.printed {
		io.WriteString(p.w, "\n")
	}
	p.printed = false
}

// printLocked prints p.last.
func (p *ProgressPrinter) printLocked() {
	s := p.last
	var attempts float64 // per second since the last line
	if dt := (s.Elapsed - p.prev.Elapsed).Seconds(); p.printed && dt > 0 {
		attempts = float64(s.HoldAttempts-p.prev.HoldAttempts) / dt
	} else if secs := s.Elapsed.Seconds(); secs > 0 {
		attempts = float64(s.HoldAttempts) / secs
	}
	if p.terminal {
		line := fmt.Sprintf("%6.1fs %s sold %d/%d held %d | %s holds/s | ok %d | errors %d | users %d/%d",
			s.Elapsed.Seconds(), progressBar(s.Booked, s.Held, s.Capacity, 30), s.Booked, s.Capacity, s.Held,
			fmtRate(attempts), s.HoldsOK, s.Errors, s.UsersDone, s.Users)
		pad := max(p.width-len(line), 0) // clear what a longer line left
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
		p.width = len(line)
	} else {
		fmt.Fprintf(p.w, "t=%.1fs sold=%d/%d held=%d holds/s=%s holds_ok=%d confirms_ok=%d errors=%d users=%d/%d\n",
			s.Elapsed.Seconds(), s.Booked, s.Capacity, s.Held, fmtRate(attempts), s.HoldsOK, s.ConfirmsOK,
			s.Errors, s.UsersDone, s.Users)
	}
	p.prev, p.printed, p.pending = s, true, false
}

// progressBar draws booked seats as '#', held ones as '+' and the rest as '.'.
func progressBar(booked, held, capacity, width int) string {
	if capacity <= 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	cells := func(n int) int { return min(max(n*width/capacity, 0), width) }
	b, h := cells(booked), cells(booked+held)
	return "[" + strings.Repeat("#", b) + strings.Repeat("+", h-b) + strings.Repeat(".", width-h) + "]"
}
