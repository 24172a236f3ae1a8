package engine

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ar "github.com/boxoffice/boxoffice/activereservation"
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
// for taken seats, its metadata "seats" lists them, comma-separated.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, reason := codes.Internal, "INTERNAL"
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			code, reason = e.code, e.reason
			break
		}
	}
	info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}
	var moved *MovedError
	if errors.As(err, &moved) && moved.Owner.GRPCAddr != "" {
		info.Metadata = map[string]string{"owner": moved.Owner.Name, "owner_addr": moved.Owner.GRPCAddr}
	}
	var taken *ar.SeatsTakenError
	if errors.As(err, &taken) {
		ids := make([]string, len(taken.Seats))
		for i, s := range taken.Seats {
			ids[i] = string(s)
		}
		info.Metadata = map[string]string{"seats": strings.Join(ids, ",")}
	}
	st, derr := status.New(code, reason+": "+err.Error()).WithDetails(info)
	if derr != nil {
		return status.Error(code, reason+": "+err.Error())
	}
	return st.Err()
}
