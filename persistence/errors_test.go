package persistence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestWriteErrorTable checks the one table that says what a database error
// means for a write, before COMMIT and at COMMIT, and for reads.
func TestWriteErrorTable(t *testing.T) {
	pg := func(code, severity string) error {
		return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, Severity: severity, Message: "m"})
	}
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: io.ErrUnexpectedEOF}
	cases := []struct {
		name           string
		err            error
		before, commit error // the sentinel of a write failing with err before / at COMMIT
		read           error // classify's sentinel; nil: passed through unchanged
	}{
		{"unique violation", pg("23505", "ERROR"), ErrConflict, ErrConflict, ErrConflict},
		{"check violation", pg("23514", "ERROR"), ErrConflict, ErrConflict, ErrConflict},
		{"foreign key violation", pg("23503", "ERROR"), ErrConflict, ErrConflict, ErrConflict},
		{"not null violation", pg("23502", "ERROR"), ErrConflict, ErrConflict, ErrConflict},
		{"data exception", pg("22021", "ERROR"), ErrConflict, ErrConflict, ErrConflict},
		{"row count", &rowCountError{what: "x", want: 2, got: 1}, ErrConflict, ErrOutcomeUnknown /* never an answer to COMMIT */, ErrConflict},
		{"serialization failure", pg("40001", "ERROR"), ErrUnavailable, ErrUnavailable, ErrUnavailable},
		{"deadlock", pg("40P01", "ERROR"), ErrUnavailable, ErrUnavailable, ErrUnavailable},
		{"admin shutdown", pg("57P01", "FATAL"), ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"crash shutdown", pg("57P02", "FATAL"), ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"cannot connect now", pg("57P03", "FATAL"), ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"query canceled", pg("57014", "ERROR"), ErrUnavailable, ErrUnavailable, ErrUnavailable},
		{"connection exception", pg("08006", "FATAL"), ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"too many connections", pg("53300", "FATAL"), ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"disk full", pg("53100", "ERROR"), ErrUnavailable, ErrUnavailable, ErrUnavailable},
		{"unlisted: undefined table", pg("42P01", "ERROR"), ErrOutcomeUnknown, ErrOutcomeUnknown, nil},
		{"unlisted: internal error", pg("XX000", "ERROR"), ErrOutcomeUnknown, ErrOutcomeUnknown, nil},
		{"unlisted: panic", pg("XX000", "PANIC"), ErrOutcomeUnknown, ErrOutcomeUnknown, nil},
		{"connection lost", netErr, ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"deadline", context.DeadlineExceeded, ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"conn closed", pgconn.ErrConnClosed, ErrUnavailable, ErrOutcomeUnknown, ErrUnavailable},
		{"commit of a failed transaction", pgx.ErrTxCommitRollback, ErrUnavailable, ErrUnavailable, ErrUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := writeError(failureOf(c.err), c.err); !errors.Is(got, c.before) {
				t.Errorf("before COMMIT: %v, want %v", got, c.before)
			}
			if got := writeError(commitFailureOf(c.err), c.err); !errors.Is(got, c.commit) {
				t.Errorf("at COMMIT: %v, want %v", got, c.commit)
			}
			got := classify(c.err)
			if c.read == nil {
				if got != c.err {
					t.Errorf("read: %v, want the error unchanged", got)
				}
			} else if !errors.Is(got, c.read) {
				t.Errorf("read: %v, want %v", got, c.read)
			}
		})
	}
	if !errors.Is(classify(pgx.ErrNoRows), ErrNotFound) {
		t.Error("no rows is not ErrNotFound")
	}
}
