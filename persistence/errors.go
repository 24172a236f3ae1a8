package persistence

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Errors from this package wrap one of them where it
// applies; callers test with errors.Is.
var (
	// ErrOverloaded: the writer's queue is full. Nothing was written; retry
	// later.
	ErrOverloaded = errors.New("write queue full")
	// ErrUnavailable: the database could not be reached, did not answer in
	// time, or refused for a passing reason (serialization failure, deadlock,
	// shutting down). A write that fails with it was not committed: it never
	// reached COMMIT, or the server answered that it rolled back. Retrying is
	// safe.
	ErrUnavailable = errors.New("database unavailable")
	// ErrOutcomeUnknown: the connection failed or timed out while COMMIT was
	// in flight, or the database answered with an error this package does
	// not know. The write may or may not be committed; only reading the
	// database tells which.
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrNotOwner: the show's ownership epoch in the database is not the one
	// the write carried: another node took the show. Nothing was written.
	ErrNotOwner = errors.New("not the show's owner")
	// ErrConflict: the database refused the write because it contradicts
	// the data (a seat already claimed, a reservation not in the expected
	// state, a constraint). Nothing was written.
	ErrConflict = errors.New("write conflicts with the database")
	// ErrLeased: AcquireShow found the show leased to another node; a
	// *LeasedError says which and for how long. Nothing was changed.
	ErrLeased = errors.New("show leased to another node")
	// ErrNotFound: no such show or reservation.
	ErrNotFound = errors.New("not found")
	// ErrExists: a show with that ID exists.
	ErrExists = errors.New("already exists")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
)

// LeasedError is AcquireShow's refusal of a show whose lease another node
// holds. It matches ErrLeased with errors.Is. The fields are read from the
// database just after the refused take, so by the time the caller sees them
// the lease may have been renewed, released or taken over. (When the row
// changed between each of AcquireShow's takes and reads, the last read is
// reported as it was: Remaining is then zero and Owner may be empty or this
// node. Retrying is right in every case.)
type LeasedError struct {
	// Owner is the node holding the lease.
	Owner string
	// Epoch is the show's epoch in the owner's hands.
	Epoch int64
	// Remaining is how long the lease had still to run, by the database's
	// clock; zero if it ran out between the take and the read.
	Remaining time.Duration
}

func (e *LeasedError) Error() string {
	return fmt.Sprintf("%v: %s at epoch %d, for %v more", ErrLeased, e.Owner, e.Epoch, e.Remaining)
}

// Unwrap makes errors.Is(err, ErrLeased) hold.
func (e *LeasedError) Unwrap() error { return ErrLeased }

// failure is what a database error means for the statement or transaction
// that got it.
type failure uint8

const (
	// unlisted: an error this package does not know; a write treats it as
	// an unknown outcome.
	unlisted failure = iota
	// transient: not applied, and retrying may succeed.
	transient
	// refused: not applied, because the statement contradicts the data.
	refused
)

// sqlstates is the one table of PostgreSQL error codes this package knows,
// by full code or by class (the first two characters). A full code wins
// over its class; a code in neither is unlisted.
var sqlstates = map[string]failure{
	"08":    transient, // connection exception
	"40":    transient, // transaction rollback: serialization failure, deadlock
	"53":    transient, // insufficient resources: too many connections, disk full, out of memory
	"57P01": transient, // admin shutdown
	"57P02": transient, // crash shutdown
	"57P03": transient, // cannot connect now (starting up, shutting down)
	"57014": transient, // query canceled (a deadline of ours)
	"23":    refused,   // integrity constraint violation: unique, check, foreign key, not null
	"22":    refused,   // data exception: a value the column cannot take
}

// failureOf classifies an error of a statement or transaction that did not
// reach COMMIT. Errors that are not the server's — refused connections,
// timeouts, a connection lost mid-statement, a cancelled context — are
// transient: a statement the server never finished is not committed.
func failureOf(err error) failure {
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, errRowCount):
		return refused
	case errors.As(err, &pgErr):
		if f, ok := sqlstates[pgErr.Code]; ok {
			return f
		}
		if len(pgErr.Code) >= 2 {
			if f, ok := sqlstates[pgErr.Code[:2]]; ok {
				return f
			}
		}
		return unlisted
	}
	return transient
}

// commitFailureOf classifies an error returned by COMMIT. Only an ERROR the
// server sent in answer to COMMIT says the transaction did not commit; a
// lost connection, a timeout or a FATAL while COMMIT was in flight leaves
// the outcome unknown. (pgx may report a connection cut after COMMIT was
// sent as "conn closed", an error it calls safe to retry: it is not
// trusted here.)
func commitFailureOf(err error) failure {
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrTxCommitRollback):
		return transient // the server rolled back a failed transaction
	case errors.As(err, &pgErr) && severity(pgErr) == "ERROR":
		return failureOf(err)
	}
	return unlisted
}

// severity is the error's severity in English, whatever the server's
// lc_messages (SeverityUnlocalized is empty from servers before 9.6).
func severity(e *pgconn.PgError) string {
	if e.SeverityUnlocalized != "" {
		return e.SeverityUnlocalized
	}
	return e.Severity
}

// writeError is the sentinel error a writer's transaction reports for a
// failure.
func writeError(f failure, err error) error {
	switch f {
	case transient:
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case refused:
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
}

// classify translates an error of a read or of a one-statement change into
// this package's sentinels: ErrNotFound for no rows, ErrConflict and
// ErrUnavailable by the sqlstates table; an unlisted server error passes
// through unchanged.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	switch failureOf(err) {
	case transient:
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case refused:
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return fmt.Errorf("%w: %s (%s)", ErrConflict, pgErr.Message, pgErr.ConstraintName)
		}
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}
