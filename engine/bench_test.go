package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// End-to-end benchmarks: real gRPC on loopback, a real PostgreSQL (fsync and
// synchronous_commit on), client and server in this process, on a fresh
// database per run. The shows are 15,000 seats: 100 rows of 150.
//
// Run them with make bench (medians of -count runs) or, for a CPU profile
// of the hold path, make bench-profile.

const (
	benchRows        = 100
	benchSeatsPerRow = 150
	benchCapacity    = benchRows * benchSeatsPerRow
	// benchCallers is the number of concurrent callers of the hold and
	// confirm benchmarks: many in-flight RPCs, as a web tier in a flash sale
	// has, and what the group-commit writer needs to fill its batches.
	benchCallers = 256
	// benchConns is the number of client connections the callers share,
	// round-robin, as several web-tier instances would. One
	// grpc.ClientConn multiplexes all its calls over one HTTP/2 connection
	// with one reader and one writer goroutine at either end; on 2 cores
	// that is not the limit, and one connection is the fastest: its writer
	// goroutines coalesce more frames per write (HoldSeats, medians of 5:
	// 15,400 attempts/s over 1 connection, 10,400 over 4).
	benchConns = 1
	// benchRetireHeld is the share of a show's seats held (in percent) at
	// which the hold benchmark moves on to a fresh show: past it, random
	// 1-4 seat attempts are mostly refusals and the figure would measure a
	// sold-out show instead of a sale.
	benchRetireHeld = 90
)

// benchSeatIDs returns the seat IDs of a benchmark show: [row][k] is the ID
// of seat k+1 of row row. The benchmarks make them before the timer, so the
// callers do not format IDs in the timed loop.
func benchSeatIDs() [][]string {
	ids := make([][]string, benchRows)
	for r := range ids {
		ids[r] = make([]string, benchSeatsPerRow)
		for k := range ids[r] {
			ids[r][k] = tc.SeatID(r, k+1)
		}
	}
	return ids
}

// benchNode starts a node on a fresh, migrated database, and conns client
// connections to it (the node's own first).
func benchNode(b *testing.B, conns int) (*tc.Node, []pb.ReservationServiceClient, string) {
	b.Helper()
	url := pgclustertest.Shared(b)
	tc.Migrate(b, url)
	n := tc.StartNode(b, url, tc.Options{Quiet: true})
	clients := []pb.ReservationServiceClient{n.Reservations}
	for len(clients) < conns {
		conn, err := tc.Dial(n.Server.GRPCAddr())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		clients = append(clients, pb.NewReservationServiceClient(conn))
	}
	return n, clients, url
}

// benchShows creates count shows of 15,000 seats named prefix0, prefix1, ...
// and loads each into the node (the first request for a show loads it and
// takes its ownership), so that no timed call pays for a load.
func benchShows(b *testing.B, n *tc.Node, prefix string, count int) []string {
	b.Helper()
	ids := make([]string, count)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
		n.CreateShow(b, ids[i], benchRows, benchSeatsPerRow, 0)
		getSeatMap(b, n, ids[i])
	}
	return ids
}

// callStats is what drive measured.
type callStats struct {
	elapsed time.Duration
	ok      int
	all     []time.Duration // every call's latency, sorted
	oks     []time.Duration // the successful calls' latencies, sorted
}

// drive makes b.N calls from callers goroutines, each taking the next call
// number when it is free, and times each call. call returns nil for a
// success, an error it expects (a refusal) with refusal true, or any other
// error, which fails the benchmark. Only the calls are timed.
func drive(b *testing.B, callers int, call func(caller, i int) (refusal bool, err error)) callStats {
	b.Helper()
	type result struct {
		all, oks []time.Duration
		failed   error
	}
	results := make([]result, callers)
	var next atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	b.ResetTimer()
	for c := range callers {
		r := &results[c]
		r.all = make([]time.Duration, 0, b.N/callers+1)
		r.oks = make([]time.Duration, 0, b.N/callers+1)
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				start := time.Now()
				refusal, err := call(c, i)
				d := time.Since(start)
				r.all = append(r.all, d)
				if err == nil {
					r.oks = append(r.oks, d)
				} else if !refusal {
					r.failed = fmt.Errorf("call %d: %w", i, err)
					stop.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	st := callStats{elapsed: b.Elapsed()}
	for _, r := range results {
		if r.failed != nil {
			b.Fatal(r.failed)
		}
		st.all = append(st.all, r.all...)
		st.oks = append(st.oks, r.oks...)
	}
	st.ok = len(st.oks)
	slices.Sort(st.all)
	slices.Sort(st.oks)
	return st
}

// percentile returns the q-quantile (0 < q <= 1, nearest rank) of sorted
// latencies, in microseconds.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

// report reports a driven benchmark's rate and latencies: what/s for all
// calls, and p50 and p99 of all calls and of the successful ones.
func (st callStats) report(b *testing.B, what string) {
	secs := st.elapsed.Seconds()
	b.ReportMetric(float64(len(st.all))/secs, what+"/s")
	b.ReportMetric(percentile(st.all, 0.50), "p50-µs")
	b.ReportMetric(percentile(st.all, 0.99), "p99-µs")
	if st.ok != len(st.all) {
		b.ReportMetric(percentile(st.oks, 0.50), "ok-p50-µs")
		b.ReportMetric(percentile(st.oks, 0.99), "ok-p99-µs")
	}
}

// BenchmarkHoldSeatsGRPC measures HoldSeats end to end: 256 concurrent
// callers (a flash sale; the machine is saturated and latency is mostly
// queueing) or 16 (a busy hour: latency with CPU to spare), the
// sub-benchmarks, each attempt 1-4 adjacent seats at a random place of a 15,000-seat show for a user of its own (so the per-user
// limit never refuses), every success committed to PostgreSQL before it is
// answered. An op is one attempt, won or lost.
//
// A sale's shows fill up, and on a full show every attempt is a cheap
// refusal: to keep measuring a sale, the callers move to a fresh show (all
// created and loaded before the timer) once 90% of the current one's seats
// are held; calls in flight at that moment still finish on the old show.
// So the figure is the average over a show going from empty to 90% held.
//
// Metrics: attempts/s; holds/s and seats/s (successes, and the seats they
// hold: 15,000 divided by seats/s is the time to hold a show's seats);
// win% (the share of attempts that got their seats); p50 and p99 latency
// of all attempts, and of the successful ones (ok-), which wait for a
// commit.
func BenchmarkHoldSeatsGRPC(b *testing.B) {
	for _, callers := range []int{benchCallers, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) { benchHoldSeats(b, callers) })
	}
}

func benchHoldSeats(b *testing.B, callers int) {
	n, clients, url := benchNode(b, benchConns)
	db := openDB(b, url)
	seatIDs := benchSeatIDs()
	retire := int64(benchCapacity * benchRetireHeld / 100)
	// Enough shows even if every attempt won 4 seats.
	shows := benchShows(b, n, "hold", int(4*int64(b.N)/retire)+1)
	held := make([]atomic.Int64, len(shows))
	var cur atomic.Int64 // index in shows of the show being sold

	rngs := make([]*rand.Rand, callers)
	for c := range rngs {
		rngs[c] = rand.New(rand.NewPCG(uint64(c), 7))
	}
	ctx := tc.Ctx(b.Context())
	st := drive(b, callers, func(c, i int) (bool, error) {
		rng := rngs[c]
		row, k := rng.IntN(benchRows), 1+rng.IntN(4)
		first := rng.IntN(benchSeatsPerRow - k + 1)
		s := int(cur.Load())
		_, err := clients[c%len(clients)].HoldSeats(ctx, &pb.HoldSeatsRequest{
			ShowId:  shows[s],
			UserId:  "u" + strconv.Itoa(i),
			SeatIds: seatIDs[row][first : first+k],
		})
		if err != nil {
			return status.Code(err) == codes.AlreadyExists, err
		}
		if held[s].Add(int64(k)) >= retire && s+1 < len(shows) {
			cur.CompareAndSwap(int64(s), int64(s+1))
		}
		return false, nil
	})

	var seats int64
	for s := range held {
		seats += held[s].Load()
	}
	secs := st.elapsed.Seconds()
	st.report(b, "attempts")
	b.ReportMetric(float64(st.ok)/secs, "holds/s")
	b.ReportMetric(float64(seats)/secs, "seats/s")
	b.ReportMetric(100*float64(st.ok)/float64(len(st.all)), "win%")

	// Every acknowledged hold is in PostgreSQL, and no seat is held twice.
	var rows int64
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM reservations WHERE status = 'HELD'`).Scan(&rows); err != nil {
		b.Fatal(err)
	}
	if rows != int64(st.ok) {
		b.Fatalf("%d holds acknowledged, %d in the database", st.ok, rows)
	}
	for _, show := range shows[:cur.Load()+1] {
		checkDBInvariants(b, db, show)
	}
	reportWriter(b, n, writerStats{})
}

// writerStats are the sums of a node's writer metrics: batches committed,
// their mutations, and their commit time in seconds.
type writerStats struct{ batches, mutations, seconds float64 }

// readWriterStats reads the node's writer metrics from its /metrics.
func readWriterStats(b *testing.B, n *tc.Node) writerStats {
	b.Helper()
	m := scrape(b, n)
	return writerStats{
		batches:   m["boxoffice_writer_batch_mutations_count"],
		mutations: m["boxoffice_writer_batch_mutations_sum"],
		seconds:   m["boxoffice_writer_commit_seconds_sum"],
	}
}

// reportWriter reports the writer's batches since before: the mean
// mutations per commit and the mean commit time.
func reportWriter(b *testing.B, n *tc.Node, before writerStats) {
	b.Helper()
	now := readWriterStats(b, n)
	batches := now.batches - before.batches
	if batches == 0 {
		b.Fatal("no writer batches in the node's metrics")
	}
	b.ReportMetric((now.mutations-before.mutations)/batches, "mutations/commit")
	b.ReportMetric(1000*(now.seconds-before.seconds)/batches, "ms/commit")
}

// BenchmarkGetSeatMapGRPC measures GetSeatMap of a 15,000-seat show with
// about a third of its seats held, from 32 concurrent callers over one
// connection. The answer carries one status byte per seat; bytes/map is
// the protobuf size of one answer.
//
// Readers share one copy of the statuses until a seat changes, so the
// sub-benchmarks read a show that does not change (still) and one where a
// caller holds and releases a seat back to back meanwhile (changing: every
// change is a commit, and the next read copies the statuses); changes/s is
// that caller's rate.
func BenchmarkGetSeatMapGRPC(b *testing.B) {
	b.Run("still", func(b *testing.B) { benchSeatMap(b, false) })
	b.Run("changing", func(b *testing.B) { benchSeatMap(b, true) })
}

func benchSeatMap(b *testing.B, changing bool) {
	const callers = 32
	n, clients, _ := benchNode(b, benchConns)
	show := benchShows(b, n, "map", 1)[0]
	seatIDs := benchSeatIDs()
	// Hold seats 1-48 of every row in fours: 4,800 seats, 1,200 holds.
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	ctx := tc.Ctx(b.Context())
	for row := range benchRows {
		wg.Go(func() {
			for first := 0; first < 48; first += 4 {
				_, err := n.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{
					ShowId:  show,
					UserId:  fmt.Sprintf("u%d-%d", row, first),
					SeatIds: seatIDs[row][first : first+4],
				})
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	var changes atomic.Int64
	churnCtx, stopChurn := context.WithCancel(ctx)
	var churn sync.WaitGroup
	if changing {
		churn.Go(func() {
			for i := 0; churnCtx.Err() == nil; i++ {
				row := i % benchRows
				h, err := n.Reservations.HoldSeats(churnCtx, &pb.HoldSeatsRequest{
					ShowId: show, UserId: "churn", SeatIds: seatIDs[row][100:101],
				})
				if err == nil {
					_, err = n.Reservations.ReleaseHold(churnCtx, &pb.ReleaseHoldRequest{HoldId: h.GetHoldId(), UserId: "churn"})
				}
				if err != nil {
					if churnCtx.Err() == nil {
						failed.CompareAndSwap(nil, &err)
					}
					return
				}
				changes.Add(2)
			}
		})
	}
	sizes := make([]int, callers)
	st := drive(b, callers, func(c, _ int) (bool, error) {
		sm, err := clients[c%len(clients)].GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show})
		if err != nil {
			return false, err
		}
		if held := sm.GetHeld(); len(sm.GetStatuses()) != benchCapacity || held < 4800 || held > 4801 {
			return false, fmt.Errorf("seat map of %d seats, %d held; want %d, 4800", len(sm.GetStatuses()), held, benchCapacity)
		}
		if sizes[c] == 0 {
			sizes[c] = proto.Size(sm)
		}
		return false, nil
	})
	stopChurn()
	churn.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	st.report(b, "maps")
	b.ReportMetric(float64(slices.Max(sizes)), "bytes/map")
	if changing {
		b.ReportMetric(float64(changes.Load())/st.elapsed.Seconds(), "changes/s")
	}
}

// BenchmarkConfirmGRPC measures ConfirmHold end to end: 256 concurrent
// callers over one connection confirm holds of 2 seats made before the
// timer. Every confirm is a commit, so this is the writer's rate as seen
// through the RPC.
func BenchmarkConfirmGRPC(b *testing.B) {
	n, clients, _ := benchNode(b, benchConns)
	const perShow = benchCapacity / 2
	shows := benchShows(b, n, "confirm", b.N/perShow+1)
	holds := make([]string, b.N)
	seatIDs := benchSeatIDs()
	ctx := tc.Ctx(b.Context())
	// The holds, untimed: hold i takes seats 2j+1 and 2j+2 of show i/perShow,
	// for user i.
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for c := range benchCallers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N || failed.Load() != nil {
					return
				}
				j := 2 * (i % perShow)
				row, k := j/benchSeatsPerRow, j%benchSeatsPerRow
				r, err := clients[c%len(clients)].HoldSeats(ctx, &pb.HoldSeatsRequest{
					ShowId:  shows[i/perShow],
					UserId:  "u" + strconv.Itoa(i),
					SeatIds: seatIDs[row][k : k+2],
				})
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				holds[i] = r.GetHoldId()
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	before := readWriterStats(b, n)
	st := drive(b, benchCallers, func(c, i int) (bool, error) {
		_, err := clients[c%len(clients)].ConfirmHold(ctx, &pb.ConfirmHoldRequest{
			HoldId:     holds[i],
			UserId:     "u" + strconv.Itoa(i),
			PaymentRef: "pay-" + strconv.Itoa(i),
		})
		return false, err
	})
	st.report(b, "confirms")
	reportWriter(b, n, before)
}
