package persistence_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/boxoffice/boxoffice/persistence"
)

// BenchmarkRenewLeases measures a node's lease renewal: one statement that
// renews the leases of all the shows it owns (here 1,000, a busy node), as
// the engine sends it every third of a lease (every 0.5 s). An op is one
// renewal of all of them.
func BenchmarkRenewLeases(b *testing.B) {
	s := openStore(b, newDB(b), nil)
	owned := make([]persistence.Ownership, 1000)
	for i := range owned {
		id := "lease-" + strconv.Itoa(i)
		owned[i] = persistence.Ownership{ShowID: id, Epoch: ownShow(b, s, id)}
	}
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		lost, err := s.RenewLeases(ctx, owned)
		if err != nil || len(lost) != 0 {
			b.Fatalf("renewal: %d lost, %v", len(lost), err)
		}
	}
	b.ReportMetric(float64(len(owned)), "shows/renewal")
}
