package waitinguser

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"
)

// Admission tokens. A token is base64url (unpadded) of the admission's
// deadline (Unix milliseconds, 8 bytes big-endian) followed by the first
// 16 bytes of HMAC-SHA256, under a key the cluster's nodes share, of
// "boxoffice-admission-v1", the show ID, the user ID and the deadline,
// NUL-separated. Any node checks a token without a lookup; a token is
// valid until its deadline, whatever the room does meanwhile.
const (
	tokenLabel = "boxoffice-admission-v1"
	tokenMAC   = 16
	tokenBytes = 8 + tokenMAC
	// MinTokenKey is the shortest key Sign and Check accept.
	MinTokenKey = 16
)

// TokenKey is the secret that signs and checks admission tokens.
type TokenKey []byte

// NewTokenKey returns key as a TokenKey: ErrRoomConfig if it is shorter
// than MinTokenKey bytes.
func NewTokenKey(key []byte) (TokenKey, error) {
	if len(key) < MinTokenKey {
		return nil, fmt.Errorf("%w: an admission token key needs at least %d bytes, not %d", ErrRoomConfig, MinTokenKey, len(key))
	}
	return TokenKey(key), nil
}

// Sign returns the admission token of user for show until deadline.
func (k TokenKey) Sign(show string, user UserID, deadline time.Time) string {
	var b [tokenBytes]byte
	binary.BigEndian.PutUint64(b[:8], uint64(deadline.UnixMilli()))
	copy(b[8:], k.mac(show, user, b[:8]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Check verifies token for show and user at now and returns its deadline:
// ErrNotAdmitted if the token is empty, malformed, signed with another key
// or for another show or user, or past its deadline.
func (k TokenKey) Check(token, show string, user UserID, now time.Time) (time.Time, error) {
	if token == "" {
		return time.Time{}, fmt.Errorf("%w: no admission token", ErrNotAdmitted)
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != tokenBytes {
		return time.Time{}, fmt.Errorf("%w: malformed admission token", ErrNotAdmitted)
	}
	if !hmac.Equal(b[8:], k.mac(show, user, b[:8])) {
		return time.Time{}, fmt.Errorf("%w: the admission token is not this user's for this show", ErrNotAdmitted)
	}
	deadline := time.UnixMilli(int64(binary.BigEndian.Uint64(b[:8])))
	if !now.Before(deadline) {
		return time.Time{}, fmt.Errorf("%w: the admission ended at %s", ErrNotAdmitted, deadline.UTC().Format(time.RFC3339))
	}
	return deadline, nil
}

func (k TokenKey) mac(show string, user UserID, deadline []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(tokenLabel))
	m.Write([]byte{0})
	m.Write([]byte(show))
	m.Write([]byte{0})
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write(deadline)
	return m.Sum(nil)[:tokenMAC]
}
