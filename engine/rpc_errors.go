package engine

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo attached to every
// error the API returns.
const ErrorDomain = "boxoffice.v1"

// errorTable maps the engine's, the rules' and the store's errors to a gRPC
// code and a stable reason. Order matters: the first match wins.
var errorTable = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{ErrSoldOut, codes.ResourceExhausted, "SOLD_OUT"},
	{wu.ErrSoldOut, codes.ResourceExhausted, "SOLD_OUT"},
	{wu.ErrSeatsWanted, codes.InvalidArgument, "INVALID_SEATS_WANTED"},
	{wu.ErrUserLimit, codes.ResourceExhausted, "USER_SEAT_LIMIT"},
	{wu.ErrSeatsAvailable, codes.FailedPrecondition, "SEATS_AVAILABLE"},
	{wu.ErrNotAdmitted, codes.FailedPrecondition, "NOT_ADMITTED"},
	{ErrNoRoom, codes.FailedPrecondition, "NO_WAITING_ROOM"},
	{wu.ErrRoomClosed, codes.FailedPrecondition, "ROOM_CLOSED"},
	{wu.ErrNotWaiting, codes.NotFound, "NOT_WAITING"},
	{ErrWaitlistFull, codes.ResourceExhausted, "WAITLIST_FULL"},
	{ar.ErrSeatTaken, codes.AlreadyExists, "SEATS_TAKEN"},
	{ar.ErrSeatCount, codes.InvalidArgument, "INVALID_SEAT_COUNT"},
	{ar.ErrDuplicateSeat, codes.InvalidArgument, "DUPLICATE_SEAT"},
	{ar.ErrUnknownSeat, codes.NotFound, "SEAT_NOT_FOUND"},
	{ar.ErrUserLimit, codes.ResourceExhausted, "USER_SEAT_LIMIT"},
	{ar.ErrHoldNotFound, codes.NotFound, "HOLD_NOT_FOUND"},
	{ar.ErrNotHolder, codes.PermissionDenied, "NOT_HOLDER"},
	{ar.ErrHoldExpired, codes.FailedPrecondition, "HOLD_EXPIRED"},
	{ar.ErrHoldEnded, codes.FailedPrecondition, "HOLD_ENDED"},
	{ErrInvalid, codes.InvalidArgument, "INVALID_ARGUMENT"},
	{ar.ErrInvalidLayout, codes.InvalidArgument, "INVALID_ARGUMENT"},
	{ErrIdempotencyMismatch, codes.InvalidArgument, "IDEMPOTENCY_KEY_REUSED"},
	{ErrShowNotFound, codes.NotFound, "SHOW_NOT_FOUND"},
	{ErrShowExists, codes.AlreadyExists, "SHOW_EXISTS"},
	{persistence.ErrOverloaded, codes.ResourceExhausted, "OVERLOADED"},
	{ErrOverloaded, codes.ResourceExhausted, "OVERLOADED"},
	{ErrMoved, codes.Unavailable, "SHOW_MOVED"},
	{persistence.ErrNotOwner, codes.Unavailable, "SHOW_MOVED"},
	{persistence.ErrOutcomeUnknown, codes.Unavailable, "OUTCOME_UNKNOWN"},
	{persistence.ErrUnavailable, codes.Unavailable, "DATABASE_UNAVAILABLE"},
	{persistence.ErrConflict, codes.Unavailable, "STATE_RELOADING"},
	{persistence.ErrClosed, codes.Unavailable, "SHUTTING_DOWN"},
	{ErrShuttingDown, codes.Unavailable, "SHUTTING_DOWN"},
	{context.DeadlineExceeded, codes.DeadlineExceeded, "DEADLINE_EXCEEDED"},
	{context.Canceled, codes.Canceled, "CANCELED"},
}

// toStatus converts an error to a gRPC status whose message starts with the
// reason ("SEATS_TAKEN: ...") and which carries an ErrorInfo with the reason;
// for taken seats, its metadata "seats" lists them, comma-separated. A
// gRPC status is returned as it is.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	e := toCallError(err)
	st, derr := status.New(codes.Code(e.Code), e.Message).WithDetails(&errdetails.ErrorInfo{Reason: e.Reason, Domain: ErrorDomain, Metadata: e.Metadata})
	if derr != nil {
		return status.Error(codes.Code(e.Code), e.Message)
	}
	return st.Err()
}

// toCallError is err as a pipeline answer carries it: the code, reason,
// message and ErrorInfo metadata toStatus gives it, without building the
// status. A gRPC status keeps its code and message, and the reason and
// metadata of its ErrorInfo of the engine's domain.
func toCallError(err error) *pb.CallError {
	if taken, ok := err.(*ar.SeatsTakenError); ok {
		// The refusal of most holds in a sale: answered without walking
		// the table or the error chain. Its message is toStatus's.
		msg := taken.Error()
		return &pb.CallError{
			Code: int32(codes.AlreadyExists), Reason: "SEATS_TAKEN",
			Message:  "SEATS_TAKEN: " + msg,
			Metadata: map[string]string{"seats": msg[len(ar.ErrSeatTaken.Error())+2:]},
		}
	}
	if st, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		st := st.GRPCStatus()
		e := &pb.CallError{Code: int32(st.Code()), Message: st.Message()}
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
				e.Reason, e.Metadata = info.GetReason(), info.GetMetadata()
				break
			}
		}
		return e
	}
	code, reason := codes.Internal, "INTERNAL"
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			code, reason = e.code, e.reason
			break
		}
	}
	// A message may quote the caller's text, which need not be UTF-8; a
	// status must be.
	e := &pb.CallError{Code: int32(code), Reason: reason, Message: strings.ToValidUTF8(reason+": "+err.Error(), "\uFFFD")}
	var moved *MovedError
	if errors.As(err, &moved) && moved.Owner.GRPCAddr != "" {
		e.Metadata = map[string]string{"owner": moved.Owner.Name, "owner_addr": moved.Owner.GRPCAddr}
	}
	var taken *ar.SeatsTakenError
	if errors.As(err, &taken) {
		ids := make([]string, len(taken.Seats))
		for i, s := range taken.Seats {
			ids[i] = string(s)
		}
		e.Metadata = map[string]string{"seats": strings.Join(ids, ",")}
	}
	return e
}
