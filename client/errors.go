package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// errorDomain is the ErrorInfo domain of the engine's errors.
const errorDomain = "boxoffice.v1"

// Reasons the client acts on.
const (
	reasonMoved      = "SHOW_MOVED"
	reasonOverloaded = "OVERLOADED"
)

// callError is a pipeline call's error answer. It is a gRPC status to
// status.FromError and status.Code (GRPCStatus), built only when asked:
// most refusals are only looked at for their code and reason. A compact
// SEATS_TAKEN answer is expanded, from the seats the hold asked for, only
// when its message or metadata is asked for.
type callError struct {
	e     *pb.CallError
	seats []string // the seat IDs of the call, a hold
}

// full is the answer with its message and metadata.
func (e *callError) full() *pb.CallError { return e.e.Expanded(e.seats) }

func (e *callError) Error() string {
	return fmt.Sprintf("rpc error: code = %s desc = %s", codes.Code(e.e.GetCode()), e.full().GetMessage())
}

// GRPCStatus returns the status the unary RPC would have answered: the
// code, the message and the ErrorInfo.
func (e *callError) GRPCStatus() *status.Status {
	full := e.full()
	st := status.New(codes.Code(full.GetCode()), full.GetMessage())
	if full.GetReason() == "" {
		return st
	}
	with, err := st.WithDetails(&errdetails.ErrorInfo{Reason: full.GetReason(), Domain: errorDomain, Metadata: full.GetMetadata()})
	if err != nil {
		return st
	}
	return with
}

// Code returns the gRPC code of an error the client returned, as
// status.Code does, without building the status of a pipeline answer.
func Code(err error) codes.Code {
	if ce, ok := asCallError(err); ok {
		return codes.Code(ce.e.GetCode())
	}
	return status.Code(err)
}

// asCallError returns the pipeline answer err is or wraps. The client
// returns them unwrapped, so a type assertion answers without walking a
// chain.
func asCallError(err error) (*callError, bool) {
	if ce, ok := err.(*callError); ok {
		return ce, true
	}
	var ce *callError
	ok := errors.As(err, &ce)
	return ce, ok
}

// Reason returns the reason of an error the engine answered (its
// google.rpc.ErrorInfo reason, such as "SEATS_TAKEN" or "SOLD_OUT"), or ""
// for an error without one.
func Reason(err error) string {
	if ce, ok := asCallError(err); ok {
		return ce.e.GetReason()
	}
	reason, _ := info(err)
	return reason
}

// Metadata returns the value of key in the ErrorInfo metadata of an error
// the engine answered, e.g. "seats" for SEATS_TAKEN.
func Metadata(err error, key string) string {
	_, md := info(err)
	return md[key]
}

// TakenSeats returns the seats a SEATS_TAKEN refusal names, in the order
// of the hold's seat IDs: those of Metadata(err, "seats"), without building
// that list.
func TakenSeats(err error) []string {
	if ce, ok := asCallError(err); ok {
		if ce.e.GetReason() != "SEATS_TAKEN" {
			return nil
		}
		return ce.e.SeatsTaken(ce.seats)
	}
	if Reason(err) != "SEATS_TAKEN" {
		return nil
	}
	if s := Metadata(err, "seats"); s != "" {
		return strings.Split(s, ",")
	}
	return nil
}

// info returns the reason and metadata of err's ErrorInfo.
func info(err error) (string, map[string]string) {
	if ce, ok := asCallError(err); ok {
		full := ce.full()
		return full.GetReason(), full.GetMetadata()
	}
	st, ok := status.FromError(err)
	if !ok {
		return "", nil
	}
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i.GetReason(), i.GetMetadata()
		}
	}
	return "", nil
}

// retryable reports whether err says the call was not done, or may be
// tried again safely: Unavailable (a move, a shutdown, an unknown outcome,
// a lost connection) and OVERLOADED.
func retryable(err error) bool {
	switch Code(err) {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		return Reason(err) == reasonOverloaded
	}
	return false
}

// movedTo returns the owner's address a SHOW_MOVED answer names, or "".
func movedTo(err error) string {
	if Code(err) != codes.Unavailable || Reason(err) != reasonMoved {
		return ""
	}
	return Metadata(err, "owner_addr")
}

// ctxError is a context's end as a gRPC status.
func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Canceled, err.Error())
}

// showOfHold returns the show of a hold ID ("<show>:<random>"), or the ID
// itself when it names none: the node it is routed to answers it
// HOLD_NOT_FOUND, as the engine answers bad hold IDs.
func showOfHold(id string) string {
	if i := strings.LastIndexByte(id, ':'); i > 0 {
		return id[:i]
	}
	return id
}

// newKey returns a fresh idempotency key (26 characters of base32, 128
// bits).
func newKey() string { return rand.Text() }
