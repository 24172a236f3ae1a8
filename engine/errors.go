package engine

import "errors"

// Sentinel errors of the engine. Errors of activereservation (the rules) and
// persistence (the database) pass through wrapped; rpc_errors.go maps them
// all to gRPC codes.
var (
	// ErrInvalid: a malformed request. Wrapped with what is wrong.
	ErrInvalid = errors.New("invalid request")
	// ErrShowNotFound: no show with that ID.
	ErrShowNotFound = errors.New("show not found")
	// ErrShowExists: CreateShow with a taken show ID.
	ErrShowExists = errors.New("show already exists")
	// ErrIdempotencyMismatch: an idempotency key reused for another request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused for a different request")
	// ErrMoved: this node is no longer the show's owner; the caller retries
	// and reaches the new owner.
	ErrMoved = errors.New("show moved to another node")
	// ErrSoldOut: every seat of the show is booked.
	ErrSoldOut = errors.New("sold out")
	// ErrShuttingDown: the node is draining before it stops; it takes no
	// new changes.
	ErrShuttingDown = errors.New("node shutting down")
	// ErrWaitlistFull: the show's waitlist has Config.MaxWaitlist users.
	ErrWaitlistFull = errors.New("waitlist full")
	// ErrOverloaded: too many shows are waiting to be loaded; retry later.
	ErrOverloaded = errors.New("overloaded")
)
