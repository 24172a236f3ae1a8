package engine

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
)

// TestCallErrorIsStatus: a pipeline answer's error (toCallError, with its
// shortcuts) carries what the unary RPC's status (toStatus) carries: code,
// message, reason and metadata, for errors as they come, wrapped or not,
// and for statuses.
func TestCallErrorIsStatus(t *testing.T) {
	taken := &ar.SeatsTakenError{Seats: []ar.SeatID{"A-1", "B-12"}}
	for _, err := range []error{
		taken,
		&ar.SeatsTakenError{Seats: []ar.SeatID{"A-1"}},
		fmt.Errorf("%w: %w", ErrSoldOut, taken),
		fmt.Errorf("hold: %w", taken),
		&MovedError{Show: "s", Owner: ring.Member{Name: "n2", GRPCAddr: "127.0.0.1:1"}, Why: "the ring names another node"},
		persistence.ErrOverloaded,
		ar.ErrSeatCount,
		errors.New("something else"),
		toStatus(taken),
	} {
		want := &pb.CallError{}
		st := status.Convert(toStatus(err))
		want.Code, want.Message = int32(st.Code()), st.Message()
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				want.Reason, want.Metadata = info.GetReason(), info.GetMetadata()
			}
		}
		if got := toCallError(err); !proto.Equal(got, want) {
			t.Errorf("%v: call error %v, status %v", err, got, want)
		}
		// A hold's answer in a pipeline, compact or not, expands to the
		// same, whatever other seats the hold asked for.
		call := &pb.PipelineCall{Call: &pb.PipelineCall_Hold{Hold: &pb.HoldSeatsRequest{SeatIds: []string{"A-1", "A-2", "B-12", "C-1"}}}}
		if got := pipelineError(call, err).Expanded(call.GetHold().GetSeatIds()); !proto.Equal(got, want) {
			t.Errorf("%v: pipeline answer %v expands to %v, want %v", err, pipelineError(call, err), got, want)
		}
	}
	compact := pipelineError(&pb.PipelineCall{Call: &pb.PipelineCall_Hold{Hold: &pb.HoldSeatsRequest{SeatIds: []string{"A-1", "A-2", "B-12"}}}}, taken)
	if compact.GetTakenSeats() != 0b101 || compact.GetMessage() != "" || compact.GetMetadata() != nil {
		t.Errorf("the refusal of a hold of A-1, A-2, B-12 for A-1 and B-12 taken is %v, want taken_seats 0b101 and no message or metadata", compact)
	}
}
