package engine

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/persistence"
)

// reservationServer is the wire side of ReservationService: it decodes,
// calls the node, and maps errors. Its streams (Pipeline) end when life
// does (at Shutdown, after the node drained), so that they never hold a
// graceful stop.
type reservationServer struct {
	pb.UnimplementedReservationServiceServer
	n    *Node
	life context.Context
	// pipelineMax is the most calls in flight on one Pipeline stream
	// (ServerConfig.PipelineMaxInFlight); 0 means
	// DefaultPipelineMaxInFlight.
	pipelineMax int
	// watch serves WatchSeatMap: its watchers and their publishers (watch.go).
	watch *seatMapHub
}

func (s *reservationServer) GetSeatMap(ctx context.Context, req *pb.GetSeatMapRequest) (*pb.GetSeatMapResponse, error) {
	sm, err := s.n.SeatMap(ctx, ar.ShowID(req.GetShowId()))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.GetSeatMapResponse{
		ShowId:    req.GetShowId(),
		Version:   sm.Version,
		Available: int32(sm.Available),
		Held:      int32(sm.Held),
		Booked:    int32(sm.Booked),
		Offered:   int32(sm.Offered),
		Waiting:   int32(sm.Waiting),
		Statuses:  sm.Statuses,
	}
	if req.GetIncludeLayout() {
		out.Rows = make([]*pb.Row, len(sm.Rows))
		for i, r := range sm.Rows {
			out.Rows[i] = &pb.Row{Label: r.Label, SeatCount: int32(r.SeatCount), Category: r.Category}
		}
	}
	return out, nil
}

// HoldSeats, ConfirmHold and ReleaseHold, unary or pipelined, go through
// holdSeats, confirmHold and releaseHold: one decoding and one engine call
// behind both. They return the engine's error as it is; the unary RPC maps
// it to a gRPC status (toStatus), a pipeline call to the CallError that
// status would carry (pipelineError), without building the status.

func (s *reservationServer) HoldSeats(ctx context.Context, req *pb.HoldSeatsRequest) (*pb.HoldSeatsResponse, error) {
	r, err := holdSeats(ctx, s.n, req)
	return r, toStatus(err)
}

func (s *reservationServer) ConfirmHold(ctx context.Context, req *pb.ConfirmHoldRequest) (*pb.ConfirmHoldResponse, error) {
	r, err := confirmHold(ctx, s.n, req)
	return r, toStatus(err)
}

func (s *reservationServer) ReleaseHold(ctx context.Context, req *pb.ReleaseHoldRequest) (*pb.ReleaseHoldResponse, error) {
	r, err := releaseHold(ctx, s.n, req)
	return r, toStatus(err)
}

func holdSeats(ctx context.Context, n *Node, req *pb.HoldSeatsRequest) (*pb.HoldSeatsResponse, error) {
	hr := holdRequest(req)
	if err := validateShowID(hr.Show); err != nil {
		return nil, err
	}
	r, err := n.Hold(ctx, hr)
	if err != nil {
		return nil, err
	}
	return holdResponse(r), nil
}

// holdRequest is req as Node.Hold takes it.
func holdRequest(req *pb.HoldSeatsRequest) HoldRequest {
	seats := make([]ar.SeatID, len(req.GetSeatIds()))
	for i, id := range req.GetSeatIds() {
		seats[i] = ar.SeatID(id)
	}
	return HoldRequest{
		Show:           ar.ShowID(req.GetShowId()),
		User:           ar.UserID(req.GetUserId()),
		Seats:          seats,
		IdempotencyKey: req.GetIdempotencyKey(),
		AdmissionToken: req.GetAdmissionToken(),
	}
}

// holdResponse is the answer to a hold that took r.
func holdResponse(r ar.Reservation) *pb.HoldSeatsResponse {
	return &pb.HoldSeatsResponse{
		HoldId:    string(r.ID),
		SeatIds:   seatStrings(r.Seats),
		ExpiresAt: timestamppb.New(r.ExpiresAt),
		ShowId:    string(r.Show),
		UserId:    string(r.User),
		Status:    pb.ReservationStatus(r.Status),
	}
}

func confirmHold(ctx context.Context, n *Node, req *pb.ConfirmHoldRequest) (*pb.ConfirmHoldResponse, error) {
	r, err := n.Confirm(ctx, confirmRequest(req))
	if err != nil {
		return nil, err
	}
	return &pb.ConfirmHoldResponse{Reservation: reservationToPB(r)}, nil
}

// confirmRequest is req as Node.Confirm takes it.
func confirmRequest(req *pb.ConfirmHoldRequest) ConfirmRequest {
	return ConfirmRequest{
		Hold:           ar.HoldID(req.GetHoldId()),
		User:           ar.UserID(req.GetUserId()),
		PaymentRef:     req.GetPaymentRef(),
		IdempotencyKey: req.GetIdempotencyKey(),
	}
}

func releaseHold(ctx context.Context, n *Node, req *pb.ReleaseHoldRequest) (*pb.ReleaseHoldResponse, error) {
	r, err := n.Release(ctx, ar.HoldID(req.GetHoldId()), ar.UserID(req.GetUserId()))
	if err != nil {
		return nil, err
	}
	return &pb.ReleaseHoldResponse{Reservation: reservationToPB(r)}, nil
}

func (s *reservationServer) GetReservation(ctx context.Context, req *pb.GetReservationRequest) (*pb.GetReservationResponse, error) {
	r, err := s.n.Reservation(ctx, ar.HoldID(req.GetHoldId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetReservationResponse{Reservation: reservationToPB(r)}, nil
}

func (s *reservationServer) ListUserReservations(ctx context.Context, req *pb.ListUserReservationsRequest) (*pb.ListUserReservationsResponse, error) {
	limit, err := pageSize(req.GetPageSize(), 50, 500)
	if err != nil {
		return nil, toStatus(err)
	}
	var after *persistence.ReservationCursor
	if req.GetPageToken() != "" {
		after = new(persistence.ReservationCursor)
		if err := decodeToken(req.GetPageToken(), after); err != nil {
			return nil, toStatus(err)
		}
	}
	list, err := s.n.ListUserReservations(ctx, ar.UserID(req.GetUserId()), ar.ShowID(req.GetShowId()), after, limit+1)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListUserReservationsResponse{}
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		out.NextPageToken = encodeToken(persistence.ReservationCursor{CreatedAt: last.CreatedAt, ID: string(last.ID)})
	}
	for _, r := range list {
		out.Reservations = append(out.Reservations, reservationToPB(r))
	}
	return out, nil
}

func reservationToPB(r ar.Reservation) *pb.Reservation {
	out := &pb.Reservation{
		HoldId:     string(r.ID),
		ShowId:     string(r.Show),
		UserId:     string(r.User),
		SeatIds:    seatStrings(r.Seats),
		Status:     pb.ReservationStatus(r.Status),
		CreatedAt:  timestamppb.New(r.CreatedAt),
		ExpiresAt:  timestamppb.New(r.ExpiresAt),
		PaymentRef: r.PaymentRef,
	}
	if !r.BookedAt.IsZero() {
		out.BookedAt = timestamppb.New(r.BookedAt)
	}
	if !r.EndedAt.IsZero() {
		out.EndedAt = timestamppb.New(r.EndedAt)
	}
	return out
}

func pageSize(n, def, max int32) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("%w: negative page_size", ErrInvalid)
	case n == 0:
		return int(def), nil
	case n > max:
		return int(max), nil
	}
	return int(n), nil
}

// Page tokens are opaque to clients: base64 of a small JSON cursor.
func encodeToken(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(tok string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil || bytes.Contains(b, []byte(`\u0000`)) { // NUL: not a token of ours, and PostgreSQL cannot take it
		return fmt.Errorf("%w: bad page_token", ErrInvalid)
	}
	return nil
}
