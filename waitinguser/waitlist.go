package waitinguser

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/boxoffice/boxoffice/internal/ordmap"
)

// DefaultOfferWindow is how long a turn's offer lasts when a show sets no
// window.
const DefaultOfferWindow = 2 * time.Minute

// Reason is how a waitlist entry, or a waiting room's entry or admission,
// ended.
type Reason uint8

// Reasons an entry ends.
const (
	// Done: the user held seats of their turn's offer.
	Done Reason = iota + 1
	// Lapsed: the turn's offer ended without a hold.
	Lapsed
	// Left: the user left.
	Left
	// SoldOut: the show can no longer free as many seats as the user wants.
	SoldOut
	// TimedOut: the user waited the show's longest wait without a turn.
	TimedOut
	// Closed: the waiting room was closed while the user was queued (they
	// need no admission any more).
	Closed
)

var reasonNames = [...]string{Done: "DONE", Lapsed: "LAPSED", Left: "LEFT", SoldOut: "SOLD_OUT", TimedOut: "TIMED_OUT", Closed: "CLOSED"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "Reason(" + strconv.Itoa(int(r)) + ")"
}

// Turn is a user's turn: seats offered to that user alone until Deadline.
type Turn struct {
	Entry
	Seats     []string
	OfferedAt time.Time
	// Deadline is OfferedAt plus the offer window, or the deadline of the
	// turn given before if that is later (the clock went back), so turns
	// lapse in the order they were given.
	Deadline time.Time
}

// Ended is an entry that left the waitlist, and why. Seats are its turn's
// offered seats, if it had a turn.
type Ended struct {
	Entry
	Reason Reason
	Seats  []string
	At     time.Time
}

// Outcome is what a change of the waitlist did, for the caller to apply to
// the show's seats and to persist:
//   - each turn's seats are now offered to its user;
//   - when AsideChanged, Waitlist.Aside lists the seats set aside for the
//     head, held back from everyone (it may be empty);
//   - Returned seats go back to everyone.
//
// A seat is in at most one of these places.
type Outcome struct {
	Turns        []Turn
	Ended        []Ended
	Returned     []string
	AsideChanged bool
}

// Empty reports whether the change did nothing.
func (o *Outcome) Empty() bool {
	return len(o.Turns) == 0 && len(o.Ended) == 0 && len(o.Returned) == 0 && !o.AsideChanged
}

// Seats describes a show's seats for a join's checks.
type Seats struct {
	// Available, Held and Offered count the show's seats in each status
	// (offered includes those set aside).
	Available, Held, Offered int
	// User is the joining user's seats of the show, held plus booked.
	User int
}

// WaitlistConfig describes a waitlist to NewWaitlist.
type WaitlistConfig struct {
	// MaxWait is how long a user may wait for a turn. Zero means
	// DefaultMaxWait.
	MaxWait time.Duration
	// OfferWindow is how long a turn's offer lasts. Zero means
	// DefaultOfferWindow.
	OfferWindow time.Duration
}

// Waitlist is the waitlist of one show: users waiting for held seats to come
// free, served strictly in join order. Seats that come free (Free) are set
// aside for the user at the head until there are as many as it wants; then
// that user gets a turn — the seats are offered to it alone for the offer
// window — and the seats left over go on to the next user. A turn ends when
// the user holds seats of it (Take), leaves, or lets the window pass
// (Lapse); the seats it did not take go on the same way. When nobody waits,
// seats go back to everyone. Seats are opaque IDs; the caller keeps the
// seats' states (see Outcome) and serializes calls.
type Waitlist struct {
	q      *Queue // users waiting for a turn
	window time.Duration
	aside  []string                  // seats set aside for q's head, fewer than it wants
	turns  *ordmap.Map[UserID, Turn] // in the order given, so in deadline order
	seats  map[string]UserID         // every seat in aside ("") or a turn: to whom
}

// NewWaitlist returns an empty waitlist.
func NewWaitlist(cfg WaitlistConfig) *Waitlist {
	if cfg.OfferWindow <= 0 {
		cfg.OfferWindow = DefaultOfferWindow
	}
	return &Waitlist{
		q:      New(Config{MaxWait: cfg.MaxWait}),
		window: cfg.OfferWindow,
		turns:  ordmap.New[UserID, Turn](0),
		seats:  make(map[string]UserID),
	}
}

// OfferWindow returns how long a turn's offer lasts.
func (w *Waitlist) OfferWindow() time.Duration { return w.window }

// MaxWait returns how long a user may wait for a turn.
func (w *Waitlist) MaxWait() time.Duration { return w.q.MaxWait() }

// Len returns the number of users on the waitlist: waiting or holding a
// turn.
func (w *Waitlist) Len() int { return w.q.Len() + w.turns.Len() }

// Waiting returns the number of users waiting for a turn.
func (w *Waitlist) Waiting() int { return w.q.Len() }

// Aside returns the seats set aside for the head of the queue. The slice
// is the caller's.
func (w *Waitlist) Aside() []string { return slices.Clone(w.aside) }

// Join puts user at the tail of the queue, wanting wanted seats, after the
// checks, in order: ErrSeatsWanted (not 1 to MaxSeatsWanted), ErrUserLimit
// (wanted plus the user's seats pass MaxSeatsWanted), ErrSeatsAvailable (as
// many seats are available now: hold them instead), ErrSoldOut (available,
// held and offered seats together are fewer than wanted: they can never
// come free). A user already on the waitlist, waiting or holding a turn,
// gets that entry with existed true, whatever wanted is.
func (w *Waitlist) Join(user UserID, wanted int, now time.Time, s Seats) (e Entry, existed bool, err error) {
	if e, ok := w.Get(user); ok {
		return e, true, nil
	}
	switch {
	case wanted < 1 || wanted > MaxSeatsWanted:
		return Entry{}, false, fmt.Errorf("%w: %d", ErrSeatsWanted, wanted)
	case s.User+wanted > MaxSeatsWanted:
		return Entry{}, false, fmt.Errorf("%w: %d seats already, %d wanted", ErrUserLimit, s.User, wanted)
	case s.Available >= wanted:
		return Entry{}, false, fmt.Errorf("%w: %d available, %d wanted", ErrSeatsAvailable, s.Available, wanted)
	case s.Available+s.Held+s.Offered < wanted:
		return Entry{}, false, fmt.Errorf("%w: %d seats could come free, %d wanted", ErrSoldOut, s.Available+s.Held+s.Offered, wanted)
	}
	e, _, err = w.q.Join(user, wanted, now)
	return e, false, err
}

// Get returns user's entry, waiting or holding a turn.
func (w *Waitlist) Get(user UserID) (Entry, bool) {
	if e, ok := w.q.Get(user); ok {
		return e, true
	}
	t, ok := w.turns.Get(user)
	return t.Entry, ok
}

// Turn returns user's turn, if it has one.
func (w *Waitlist) Turn(user UserID) (Turn, bool) {
	t, ok := w.turns.Get(user)
	if ok {
		t.Seats = slices.Clone(t.Seats)
	}
	return t, ok
}

// Holder returns whom the waitlist holds seat for: the user whose turn
// offers it, or "" when it is set aside for the head; false if the seat is
// not the waitlist's.
func (w *Waitlist) Holder(seat string) (UserID, bool) {
	u, ok := w.seats[seat]
	return u, ok
}

// Position returns how many users wait ahead of user, in O(log n); false
// if user is not waiting (a user holding a turn is not).
func (w *Waitlist) Position(user UserID) (int, bool) { return w.q.Position(user) }

// EstimatedWait estimates how long a user with position users ahead will
// wait for a turn, from the rate of the recent turns; false while there is
// no rate yet.
func (w *Waitlist) EstimatedWait(position int) (time.Duration, bool) {
	return w.q.EstimatedWait(position)
}

// Entries returns the waiting users' entries in join order, head first.
func (w *Waitlist) Entries() func(yield func(Entry) bool) { return w.q.All() }

// Turns returns the turns in the order they were given.
func (w *Waitlist) Turns() func(yield func(Turn) bool) {
	return func(yield func(Turn) bool) {
		for _, t := range w.turns.All() {
			t.Seats = slices.Clone(t.Seats)
			if !yield(t) {
				return
			}
		}
	}
}

// Free gives seats that came free (a hold expired or was released) to the
// waitlist at now. With nobody waiting they are Returned at once.
func (w *Waitlist) Free(seats []string, now time.Time) Outcome {
	var out Outcome
	w.passOn(seats, now, &out)
	return out
}

// Leave takes user off the waitlist at now. A user holding a turn gives up
// its seats, which go on to the next user. ErrNotWaiting if user is not on
// the waitlist.
func (w *Waitlist) Leave(user UserID, now time.Time) (Outcome, error) {
	var out Outcome
	if t, ok := w.turns.Get(user); ok {
		w.endTurn(t, Left, now, &out)
		w.passOn(t.Seats, now, &out)
		return out, nil
	}
	e, err := w.q.Leave(user)
	if err != nil {
		return Outcome{}, err
	}
	out.Ended = append(out.Ended, Ended{Entry: e, Reason: Left, At: now})
	w.advance(now, &out)
	return out, nil
}

// Take ends user's turn as Done: the user held the seats held (some of the
// offer's, perhaps others too) at now. The offer's seats not held go on to
// the next user. It reports false, changing nothing, if user has no turn or
// held has none of its seats.
func (w *Waitlist) Take(user UserID, held []string, now time.Time) (Outcome, bool) {
	t, ok := w.turns.Get(user)
	if !ok {
		return Outcome{}, false
	}
	var rest []string
	for _, s := range t.Seats {
		if !slices.Contains(held, s) {
			rest = append(rest, s)
		}
	}
	if len(rest) == len(t.Seats) {
		return Outcome{}, false
	}
	var out Outcome
	w.endTurn(t, Done, now, &out)
	for _, s := range t.Seats {
		if !slices.Contains(rest, s) {
			delete(w.seats, s)
		}
	}
	w.passOn(rest, now, &out)
	return out, true
}

// Lapse ends, at now, the turns whose deadline is not after now (their
// seats go on to the next user) and the waiting entries whose deadline is
// not after now (TimedOut).
func (w *Waitlist) Lapse(now time.Time) Outcome {
	var out Outcome
	var freed []string
	for {
		_, t, ok := w.turns.Front()
		if !ok || t.Deadline.After(now) {
			break
		}
		w.endTurn(t, Lapsed, now, &out)
		freed = append(freed, t.Seats...)
	}
	for _, e := range w.q.TimeOut(now) {
		out.Ended = append(out.Ended, Ended{Entry: e, Reason: TimedOut, At: now})
	}
	w.passOn(freed, now, &out)
	w.advance(now, &out)
	return out
}

// SoldOut ends, at now, the waiting entries that want more seats than
// could still come free: left is the show's available, held and offered
// seats together. Only entries wanting more than left are touched, so the
// O(n) sweep is skipped while left is at least MaxSeatsWanted.
func (w *Waitlist) SoldOut(left int, now time.Time) Outcome {
	var out Outcome
	if left >= MaxSeatsWanted || w.q.Len() == 0 {
		return out
	}
	for _, e := range w.q.RemoveIf(func(e Entry) bool { return e.SeatsWanted > left }) {
		out.Ended = append(out.Ended, Ended{Entry: e, Reason: SoldOut, At: now})
	}
	w.advance(now, &out)
	return out
}

// RestoreEntry puts back a persisted waiting entry; RestoreTurn a turn.
// Both must come in join order (increasing Seq), and before RestoreAside.
// They enforce one entry per user and that no seat is in two places;
// ErrCorrupt otherwise.
func (w *Waitlist) RestoreEntry(e Entry) error {
	if _, ok := w.turns.Get(e.User); ok {
		return fmt.Errorf("%w: %s waits and holds a turn", ErrCorrupt, e.User)
	}
	return w.q.Restore(e)
}

// RestoreTurn puts back a persisted turn; see RestoreEntry.
func (w *Waitlist) RestoreTurn(t Turn) error {
	if _, ok := w.Get(t.User); ok {
		return fmt.Errorf("%w: %s on the waitlist twice", ErrCorrupt, t.User)
	}
	if len(t.Seats) == 0 || len(t.Seats) > MaxSeatsWanted {
		return fmt.Errorf("%w: %s's turn offers %d seats", ErrCorrupt, t.User, len(t.Seats))
	}
	if t.Seq <= w.q.seq {
		return fmt.Errorf("%w: %s joined as %d, after %d", ErrCorrupt, t.User, t.Seq, w.q.seq)
	}
	if err := w.claim(t.Seats, t.User); err != nil {
		return err
	}
	w.q.seq = t.Seq
	if _, last, ok := w.turns.Back(); ok && last.Deadline.After(t.Deadline) {
		t.Deadline = last.Deadline
	}
	t.Seats = slices.Clone(t.Seats)
	w.turns.Put(t.User, t)
	return nil
}

// RestoreAside puts back the persisted set-aside seats, after the entries
// and turns. The caller then calls Lapse, which also gives the head its
// turn should the seats suffice.
func (w *Waitlist) RestoreAside(seats []string) error {
	if err := w.claim(seats, ""); err != nil {
		return err
	}
	w.aside = append(w.aside, seats...)
	return nil
}

func (w *Waitlist) claim(seats []string, to UserID) error {
	for i, s := range seats {
		if _, dup := w.seats[s]; dup || slices.Contains(seats[:i], s) {
			return fmt.Errorf("%w: seat %s in two places", ErrCorrupt, s)
		}
	}
	for _, s := range seats {
		w.seats[s] = to
	}
	return nil
}

// endTurn removes turn t as ended for reason; its seats leave w.seats only
// when the caller passes them on or drops them.
func (w *Waitlist) endTurn(t Turn, reason Reason, now time.Time, out *Outcome) {
	w.turns.Delete(t.User)
	out.Ended = append(out.Ended, Ended{Entry: t.Entry, Reason: reason, Seats: slices.Clone(t.Seats), At: now})
}

// passOn sets seats aside for the head and gives turns while they suffice;
// with nobody waiting, they are returned.
func (w *Waitlist) passOn(seats []string, now time.Time, out *Outcome) {
	if len(seats) == 0 {
		return
	}
	for _, s := range seats {
		w.seats[s] = ""
	}
	w.aside = append(w.aside, seats...)
	out.AsideChanged = true
	w.advance(now, out)
}

// advance gives the head of the queue its turn while the set-aside seats
// suffice, and returns the seats set aside when nobody is left waiting.
func (w *Waitlist) advance(now time.Time, out *Outcome) {
	for len(w.aside) > 0 {
		head, ok := w.q.Head()
		if !ok {
			for _, s := range w.aside {
				delete(w.seats, s)
			}
			out.Returned = append(out.Returned, w.aside...)
			w.aside = nil
			out.AsideChanged = true
			return
		}
		if len(w.aside) < head.SeatsWanted {
			return
		}
		w.q.Leave(head.User) //nolint:errcheck // the head waits
		t := Turn{
			Entry:     head,
			Seats:     slices.Clone(w.aside[:head.SeatsWanted]),
			OfferedAt: now,
			Deadline:  now.Add(w.window),
		}
		if _, last, ok := w.turns.Back(); ok && last.Deadline.After(t.Deadline) {
			t.Deadline = last.Deadline
		}
		w.aside = slices.Clone(w.aside[head.SeatsWanted:])
		for _, s := range t.Seats {
			w.seats[s] = t.User
		}
		w.turns.Put(t.User, t)
		w.q.RecordTurn(now)
		out.Turns = append(out.Turns, t)
		out.AsideChanged = true
	}
}
