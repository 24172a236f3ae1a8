package engine_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/pgcluster/pgclustertest"
	tc "github.com/boxoffice/boxoffice/internal/testcluster"
)

// benchCluster starts n quiet nodes "b0", "b1", ... on one fresh database,
// the others joining the first, and waits until every ring has them all.
func benchCluster(b *testing.B, n int) []*tc.Node {
	b.Helper()
	url := pgclustertest.Shared(b)
	tc.Migrate(b, url)
	nodes := []*tc.Node{tc.StartNode(b, url, tc.Options{NodeID: "b0", Quiet: true, Cluster: &tc.ClusterOptions{}})}
	for i := 1; i < n; i++ {
		nodes = append(nodes, tc.StartNode(b, url, tc.Options{
			NodeID: "b" + strconv.Itoa(i), Quiet: true, Cluster: &tc.ClusterOptions{Join: []string{nodes[0].Ring.GossipAddr()}},
		}))
	}
	pollUntil(b, 10*time.Second, "every ring to have all members", func() bool {
		for _, nd := range nodes {
			if len(nd.Ring.Members()) != n {
				return false
			}
		}
		return true
	})
	return nodes
}

// BenchmarkClusterHoldSeats measures HoldSeats with 256 callers over 12
// shows of 15,000 seats, on one node and on a three-node cluster in this
// one process — the same two cores either way, so the figures show the
// cluster's overhead, not a speed-up. "direct": each call goes to the show's
// owner (as the web tier's client will route); "any": to a node at random,
// so two calls in three are forwarded. An op is one attempt of 1-4 seats.
func BenchmarkClusterHoldSeats(b *testing.B) {
	for _, sub := range []struct {
		name  string
		nodes int
		any   bool
	}{{"nodes=1", 1, false}, {"nodes=3/direct", 3, false}, {"nodes=3/any", 3, true}} {
		b.Run(sub.name, func(b *testing.B) {
			nodes := benchCluster(b, sub.nodes)
			const shows = 12
			ids := make([]string, shows)
			owner := make([]*tc.Node, shows)
			for s := range ids {
				ids[s] = fmt.Sprintf("ch%d", s)
				nodes[0].CreateShow(b, ids[s], benchRows, benchSeatsPerRow, 0)
				owner[s] = nodes[0]
				for _, nd := range nodes {
					if nd.Ring.Owner(ids[s]).Name == nd.Ring.Self().Name {
						owner[s] = nd
					}
				}
				getSeatMap(b, owner[s], ids[s]) // loaded before the timer
			}
			seatIDs := benchSeatIDs()
			rngs := make([]*rand.Rand, benchCallers)
			for i := range rngs {
				rngs[i] = rand.New(rand.NewPCG(uint64(i), 11))
			}
			ctx := tc.Ctx(b.Context())
			st := drive(b, benchCallers, func(c, i int) (bool, error) {
				rng := rngs[c]
				s, row, k := rng.IntN(shows), rng.IntN(benchRows), 1+rng.IntN(4)
				first := rng.IntN(benchSeatsPerRow - k + 1)
				nd := owner[s]
				if sub.any {
					nd = nodes[rng.IntN(len(nodes))]
				}
				_, err := nd.Reservations.HoldSeats(ctx, &pb.HoldSeatsRequest{
					ShowId: ids[s], UserId: "u" + strconv.Itoa(i), SeatIds: seatIDs[row][first : first+k],
				})
				return status.Code(err) == codes.AlreadyExists, err
			})
			st.report(b, "attempts")
			b.ReportMetric(float64(st.ok)/st.elapsed.Seconds(), "holds/s")
		})
	}
}

// BenchmarkForwardedCall measures the cost of a forwarded call: GetSeatMap
// of a 10-seat show on a two-node cluster, 16 callers, through its owner
// ("direct") and through the other node ("forwarded": one more gRPC hop
// over loopback).
func BenchmarkForwardedCall(b *testing.B) {
	nodes := benchCluster(b, 2)
	var show string
	for i := 0; show == ""; i++ {
		if id := "fw" + strconv.Itoa(i); nodes[0].Ring.Owner(id).Name == "b0" {
			show = id
		}
	}
	nodes[0].CreateShow(b, show, 1, 10, 0)
	getSeatMap(b, nodes[0], show)
	for _, c := range []struct {
		name string
		via  *tc.Node
	}{{"direct", nodes[0]}, {"forwarded", nodes[1]}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := tc.Ctx(b.Context())
			st := drive(b, 16, func(int, int) (bool, error) {
				_, err := c.via.Reservations.GetSeatMap(ctx, &pb.GetSeatMapRequest{ShowId: show})
				return false, err
			})
			st.report(b, "calls")
		})
	}
}
