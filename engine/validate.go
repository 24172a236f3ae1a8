package engine

import (
	"fmt"
	"strings"
	"unicode/utf8"

	ar "github.com/boxoffice/boxoffice/activereservation"
)

// Limits on identifiers the engine stores.
const (
	maxIDLen  = 64
	maxKeyLen = 128
)

// validateShowID accepts 1-64 characters of [A-Za-z0-9_.-] starting with a
// letter or digit, so that "<show>:<random>" hold IDs parse unambiguously.
func validateShowID(id ar.ShowID) error {
	if len(id) == 0 || len(id) > maxIDLen {
		return fmt.Errorf("%w: show_id must have 1-%d characters", ErrInvalid, maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("%w: show_id %q: only letters, digits, '_', '.', '-', starting with a letter or digit", ErrInvalid, id)
		}
	}
	return nil
}

// validateRowLabel accepts 1-8 letters or digits, so seat IDs
// "<label>-<n>" never contain a comma or collide.
func validateRowLabel(label string) error {
	if len(label) == 0 || len(label) > 8 {
		return fmt.Errorf("%w: row label %q must have 1-8 characters", ErrInvalid, label)
	}
	for i := 0; i < len(label); i++ {
		c := label[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("%w: row label %q: only letters and digits", ErrInvalid, label)
		}
	}
	return nil
}

func validateUser(u ar.UserID) error {
	if len(u) == 0 || len(u) > maxIDLen*2 || unstorable(string(u)) {
		return fmt.Errorf("%w: user_id must have 1-%d characters, UTF-8 without NUL", ErrInvalid, maxIDLen*2)
	}
	return nil
}

func validateKey(k string) error {
	if len(k) > maxKeyLen || unstorable(k) {
		return fmt.Errorf("%w: idempotency_key longer than %d, with a NUL or not UTF-8", ErrInvalid, maxKeyLen)
	}
	return nil
}

// unstorable reports text that PostgreSQL cannot store: a NUL, or bytes that
// are not UTF-8 (the engine's codec decodes strings without checking them).
// Such text must be refused up front: a write of it would fail only after the
// decision was taken in memory, and the failed write would drop the show.
func unstorable(s string) bool { return strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) }
