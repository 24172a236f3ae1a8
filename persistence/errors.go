package persistence

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Errors from this package wrap one of them where it
// applies; callers test with errors.Is.
var (
	// ErrOverloaded: the writer's queue is full. Nothing was written; retry
	// later.
	ErrOverloaded = errors.New("write queue full")
	// ErrUnavailable: the database could not be reached or did not answer in
	// time. A write that fails with it was not committed.
	ErrUnavailable = errors.New("database unavailable")
	// ErrNotOwner: the show's ownership epoch in the database is not the one
	// the write carried: another node took the show. Nothing was written.
	ErrNotOwner = errors.New("not the show's owner")
	// ErrConflict: the write contradicts the database (a seat already
	// claimed, a reservation not in the expected state). Nothing was written.
	ErrConflict = errors.New("write conflicts with the database")
	// ErrNotFound: no such show or reservation.
	ErrNotFound = errors.New("not found")
	// ErrExists: a show with that ID exists.
	ErrExists = errors.New("already exists")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
)

// PostgreSQL error codes this package translates.
const (
	pgUniqueViolation = "23505"
	pgFKViolation     = "23503"
	pgCheckViolation  = "23514"
)

// classify translates an error from pgx into this package's sentinels: SQL
// errors raised by the server are conflicts (the statement was wrong for the
// data), everything else — refused connections, timeouts, a server going
// away, a cancelled context — is the database being unavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, errRowCount):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	case errors.As(err, &pgErr):
		switch pgErr.Code {
		case pgUniqueViolation, pgFKViolation, pgCheckViolation:
			return fmt.Errorf("%w: %s (%s)", ErrConflict, pgErr.Message, pgErr.ConstraintName)
		}
		if pgErr.Code[:2] == "08" || pgErr.Code[:2] == "57" || pgErr.Code[:2] == "53" {
			// connection exceptions, operator intervention (shutdown), insufficient resources
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return err
	case errors.Is(err, pgx.ErrNoRows):
		return ErrNotFound
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// isServerError reports whether err is an SQL error the server raised for
// a statement, as opposed to a failure to talk to the server.
func isServerError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, errRowCount) || errors.As(err, &pgErr) && !errors.Is(classify(err), ErrUnavailable)
}
