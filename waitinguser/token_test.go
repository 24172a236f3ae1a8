package waitinguser

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAdmissionTokens(t *testing.T) {
	key, err := NewTokenKey([]byte("0123456789abcdef-cluster-key"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewTokenKey([]byte("another key of the same length"))
	deadline := t0.Add(10 * time.Minute).Truncate(time.Millisecond)
	tok := key.Sign("show-1", "alice", deadline)

	got, err := key.Check(tok, "show-1", "alice", t0)
	if err != nil || !got.Equal(deadline) {
		t.Fatalf("own valid token: %v, deadline %v; want %v", err, got, deadline)
	}
	// Any node with the key checks it: a key made from the same bytes.
	again, _ := NewTokenKey([]byte("0123456789abcdef-cluster-key"))
	if _, err := again.Check(tok, "show-1", "alice", t0); err != nil {
		t.Fatalf("another node's key: %v", err)
	}

	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, c := range []struct {
		name, token, show string
		user              UserID
		key               TokenKey
		at                time.Time
	}{
		{"no token", "", "show-1", "alice", key, t0},
		{"another user's", tok, "show-1", "bob", key, t0},
		{"another show's", tok, "show-2", "alice", key, t0},
		{"expired", tok, "show-1", "alice", key, deadline},
		{"long expired", tok, "show-1", "alice", key, deadline.Add(time.Hour)},
		{"deadline moved", flip(7), "show-1", "alice", key, t0},
		{"signature tampered", flip(12), "show-1", "alice", key, t0},
		{"signed with another key", tok, "show-1", "alice", other, t0},
		{"not base64", "!!" + tok[2:], "show-1", "alice", key, t0},
		{"truncated", tok[:len(tok)-2], "show-1", "alice", key, t0},
		{"too long", tok + "AA", "show-1", "alice", key, t0},
		{"user and show run together", key.Sign("show-1a", "lice", deadline), "show-1", "alice", key, t0},
	} {
		if _, err := c.key.Check(c.token, c.show, c.user, c.at); !errors.Is(err, ErrNotAdmitted) {
			t.Errorf("%s: %v, want ErrNotAdmitted", c.name, err)
		}
	}
	if _, err := key.Check(tok, "show-1", "alice", deadline); err == nil || !strings.Contains(err.Error(), "ended") {
		t.Errorf("an expired token's error %v does not say it ended", err)
	}
	if _, err := NewTokenKey([]byte("short")); !errors.Is(err, ErrRoomConfig) {
		t.Errorf("a 5-byte key: %v, want ErrRoomConfig", err)
	}
}
