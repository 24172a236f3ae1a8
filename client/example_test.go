package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/client"
)

// A web tier's request handlers share one Client: it routes each call to
// its show's owner, coalesces concurrent holds onto pipeline streams, and
// answers seat maps from a live replica. Run it against a node started with
// `make demo` (its service token is demo-token; it serves the show demo-arena).
func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{
		Addrs: []string{"127.0.0.1:7070"}, // any node: the others are learned from its ring
		Token: "demo-token",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// The seat map, from local memory after the first call.
	m, err := c.SeatMap(ctx, "demo-arena")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("version %d: %d available, replica %v behind\n", m.Version, m.Available, m.Lag())

	// A hold, answered once it is durable. The client gives it an
	// idempotency key, so it may retry it safely after a lost answer.
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h, err := c.HoldSeats(callCtx, &pb.HoldSeatsRequest{ShowId: "demo-arena", UserId: "alice", SeatIds: []string{"A-1", "A-2"}})
	switch client.Reason(err) {
	case "":
		if err != nil {
			log.Fatal(err)
		}
	case "SEATS_TAKEN":
		fmt.Println("taken:", client.Metadata(err, "seats")) // refresh the map, pick others
		return
	default:
		log.Fatal(err)
	}
	if _, err := c.ConfirmHold(callCtx, &pb.ConfirmHoldRequest{HoldId: h.GetHoldId(), UserId: "alice", PaymentRef: "pay-123"}); err != nil {
		log.Fatal(err)
	}
	fmt.Println("booked", h.GetSeatIds())
}
