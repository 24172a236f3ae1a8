package wirecodec

import (
	"testing"
	"time"

	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// TestCodecSpeaksProtobuf checks that the codec's bytes are protobuf's: what
// it encodes protobuf-go decodes, and the other way round, for generated
// messages (with a oneof, a map, nested and well-known types) and for a
// message without generated code.
func TestCodecSpeaksProtobuf(t *testing.T) {
	big := make([]byte, 64<<10) // beyond gRPC's pooling threshold
	for i := range big {
		big[i] = byte(i)
	}
	msgs := []proto.Message{
		&pb.PipelineRequest{Calls: []*pb.PipelineCall{
			{CallId: 1, Timeout: durationpb.New(3 * time.Second), Call: &pb.PipelineCall_Hold{Hold: &pb.HoldSeatsRequest{ShowId: "s", UserId: "u", SeatIds: []string{"A-1", "A-2"}, IdempotencyKey: "k"}}},
			{CallId: 2, Call: &pb.PipelineCall_Confirm{Confirm: &pb.ConfirmHoldRequest{HoldId: "s:h", UserId: "u", PaymentRef: "p"}}},
			{CallId: 3, Call: &pb.PipelineCall_Release{Release: &pb.ReleaseHoldRequest{HoldId: "s:h", UserId: "u"}}},
		}},
		&pb.PipelineResponse{Results: []*pb.PipelineResult{
			{CallId: 1, Result: &pb.PipelineResult_Hold{Hold: &pb.HoldSeatsResponse{HoldId: "s:h", SeatIds: []string{"A-1"}, ExpiresAt: timestamppb.New(time.Unix(1e9, 5)), Status: pb.ReservationStatus_RESERVATION_STATUS_HELD}}},
			{CallId: 2, Result: &pb.PipelineResult_Error{Error: &pb.CallError{Code: 6, Reason: "SEATS_TAKEN", Message: "m", Metadata: map[string]string{"seats": "A-1,A-2", "x": "y"}}}},
		}},
		&pb.GetSeatMapResponse{ShowId: "s", Version: 7, Available: 3, Statuses: big},
		&grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING},
	}
	c := Codec{}
	for _, m := range msgs {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("%T: Marshal: %v", m, err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatalf("%T: protobuf-go cannot decode the codec's bytes: %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("%T: protobuf-go decoded %v, want %v", m, got, m)
		}
		data.Free()

		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got = m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
			t.Fatalf("%T: the codec cannot decode protobuf-go's bytes: %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("%T: the codec decoded %v, want %v", m, got, m)
		}
	}
}

func TestCodecRefusesOtherValues(t *testing.T) {
	c := Codec{}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Fatal("Marshal of a string: no error")
	}
	var s string
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, &s); err == nil {
		t.Fatal("Unmarshal into a string: no error")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05, 'a'})}, &pb.HoldSeatsRequest{}); err == nil {
		t.Fatal("Unmarshal of a truncated message: no error")
	}
}
