// Package waitinguser keeps the waiting users of one show in the order their
// joins were decided, for the two queues of that shape: the waitlist (users
// waiting for held seats to come free) and the waiting room (users queued
// for admission to an on-sale). It answers a user's position and an
// estimated wait in O(log n), without walking the queue, and ends entries
// that wait too long. It does no I/O and reads no clock: the caller passes
// the time in, persists what changed, and serializes calls (a Queue is not
// safe for concurrent use).
package waitinguser

import (
	"fmt"
	"time"

	"github.com/boxoffice/boxoffice/internal/ordmap"
)

// UserID names an end user as the web tier authenticated them.
type UserID string

// Limits of the rules.
const (
	// MaxSeatsWanted is the most seats one waiting user may ask for.
	MaxSeatsWanted = 10
	// DefaultMaxWait is how long a user may wait when a show sets no limit.
	DefaultMaxWait = time.Hour
)

// Entry is a waiting user. Values handed out by a Queue are copies.
type Entry struct {
	User UserID
	// Seq is the entry's place in join order: it increases with every join
	// of the queue, and persists with the entry.
	Seq         int64
	SeatsWanted int
	JoinedAt    time.Time
	// Deadline is when the entry times out: JoinedAt plus the queue's
	// MaxWait, or the deadline of the entry before it if that is later
	// (JoinedAt went back), so deadlines never decrease from head to tail.
	Deadline time.Time
}

// Config describes a queue to New.
type Config struct {
	// MaxWait is how long a user may wait. Zero means DefaultMaxWait.
	MaxWait time.Duration
}

// Queue is one show's waiting users, the longest-waiting at the head.
// Join, Leave and Position are O(log n) amortized; memory is O(n) with no
// per-user state once a user has left.
//
// Positions come from a Fenwick tree over slots given out in join order: a
// user's position is the number of live slots before theirs. Slots of users
// who left stay empty until the tree is rebuilt, which happens when it is
// full, so each rebuild (O(n)) pays for itself over the joins since the last.
type Queue struct {
	maxWait time.Duration
	entries *ordmap.Map[UserID, entry] // join order
	ranks   fenwick                    // 1 per live slot
	next    int                        // the next slot to give out
	seq     int64                      // the Seq of the newest entry ever
	turns   turnRate
}

// entry is an Entry with its slot in the Fenwick tree.
type entry struct {
	Entry
	slot int
}

// New returns an empty queue.
func New(cfg Config) *Queue {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	return &Queue{
		maxWait: cfg.MaxWait,
		entries: ordmap.New[UserID, entry](0),
		ranks:   newFenwick(64),
	}
}

// Len returns the number of waiting users.
func (q *Queue) Len() int { return q.entries.Len() }

// MaxWait returns how long a user may wait.
func (q *Queue) MaxWait() time.Duration { return q.maxWait }

// Join puts user at the tail, wanting seats seats, at now. A user already
// waiting keeps their place and entry: Join answers it with existed true,
// whatever seats asks (the caller decides whether a different count is an
// error). ErrSeatsWanted if seats is not 1 to MaxSeatsWanted.
func (q *Queue) Join(user UserID, seats int, now time.Time) (e Entry, existed bool, err error) {
	if seats < 1 || seats > MaxSeatsWanted {
		return Entry{}, false, fmt.Errorf("%w: %d", ErrSeatsWanted, seats)
	}
	if old, ok := q.entries.Get(user); ok {
		return old.Entry, true, nil
	}
	q.seq++
	e = Entry{User: user, Seq: q.seq, SeatsWanted: seats, JoinedAt: now, Deadline: now.Add(q.maxWait)}
	if _, last, ok := q.entries.Back(); ok && last.Deadline.After(e.Deadline) {
		e.Deadline = last.Deadline
	}
	q.put(e)
	return e, false, nil
}

// Restore puts back a persisted entry at the tail, when a show is rebuilt
// from its rows; entries must be restored in join order (increasing Seq).
// It enforces one entry per user, the seat count and the order; ErrCorrupt
// otherwise.
func (q *Queue) Restore(e Entry) error {
	if e.SeatsWanted < 1 || e.SeatsWanted > MaxSeatsWanted {
		return fmt.Errorf("%w: %s wants %d seats", ErrCorrupt, e.User, e.SeatsWanted)
	}
	if _, ok := q.entries.Get(e.User); ok {
		return fmt.Errorf("%w: %s waits twice", ErrCorrupt, e.User)
	}
	if e.Seq <= q.seq {
		return fmt.Errorf("%w: %s joined as %d, after %d", ErrCorrupt, e.User, e.Seq, q.seq)
	}
	q.seq = e.Seq
	if _, last, ok := q.entries.Back(); ok && last.Deadline.After(e.Deadline) {
		e.Deadline = last.Deadline
	}
	q.put(e)
	return nil
}

func (q *Queue) put(e Entry) {
	if q.next == q.ranks.size() {
		q.rebuild()
	}
	q.entries.Put(e.User, entry{Entry: e, slot: q.next})
	q.ranks.add(q.next, 1)
	q.next++
}

// rebuild gives the live entries slots 0..n-1 in order, in a tree with room
// for as many again.
func (q *Queue) rebuild() {
	n := q.entries.Len()
	q.ranks = newFenwick(max(64, 2*n))
	i := 0
	for user, e := range q.entries.All() {
		e.slot = i
		q.entries.Put(user, e)
		q.ranks.add(i, 1)
		i++
	}
	q.next = i
}

// Leave removes user's entry and returns it. ErrNotWaiting if user does not
// wait.
func (q *Queue) Leave(user UserID) (Entry, error) {
	e, ok := q.entries.Get(user)
	if !ok {
		return Entry{}, fmt.Errorf("%w: %s", ErrNotWaiting, user)
	}
	q.remove(e)
	return e.Entry, nil
}

func (q *Queue) remove(e entry) {
	q.entries.Delete(e.User)
	q.ranks.add(e.slot, -1)
}

// Get returns user's entry.
func (q *Queue) Get(user UserID) (Entry, bool) {
	e, ok := q.entries.Get(user)
	return e.Entry, ok
}

// Position returns how many users wait ahead of user (0 for the head), in
// O(log n).
func (q *Queue) Position(user UserID) (int, bool) {
	e, ok := q.entries.Get(user)
	if !ok {
		return 0, false
	}
	return q.ranks.prefix(e.slot), true
}

// Head returns the longest-waiting user's entry.
func (q *Queue) Head() (Entry, bool) {
	_, e, ok := q.entries.Front()
	return e.Entry, ok
}

// All returns the entries in join order, head first.
func (q *Queue) All() func(yield func(Entry) bool) {
	return func(yield func(Entry) bool) {
		for _, e := range q.entries.All() {
			if !yield(e.Entry) {
				return
			}
		}
	}
}

// TimeOut removes and returns, head first, the entries whose Deadline is
// not after now. Deadlines never decrease from head to tail, so it stops at
// the first entry still in time.
func (q *Queue) TimeOut(now time.Time) []Entry {
	var out []Entry
	for {
		_, e, ok := q.entries.Front()
		if !ok || e.Deadline.After(now) {
			return out
		}
		q.remove(e)
		out = append(out, e.Entry)
	}
}

// RemoveIf removes and returns, head first, the entries for which drop
// returns true. It is O(n): for sweeps that are rare, such as the users
// whose wish can no longer be met once a show is nearly sold out.
func (q *Queue) RemoveIf(drop func(Entry) bool) []Entry {
	var out []Entry
	for _, e := range q.entries.All() {
		if drop(e.Entry) {
			q.remove(e)
			out = append(out, e.Entry)
		}
	}
	return out
}

// RecordTurn notes that a user got their turn (was offered seats or
// admitted) at now, for EstimatedWait.
func (q *Queue) RecordTurn(now time.Time) { q.turns.record(now) }

// EstimatedWait estimates how long a user with position users ahead will
// wait for their turn, from the rate of the last turns: position+1 turns at
// that rate. It reports false while too few turns have been seen to tell a
// rate.
func (q *Queue) EstimatedWait(position int) (time.Duration, bool) {
	per, ok := q.turns.interval()
	if !ok {
		return 0, false
	}
	return time.Duration(position+1) * per, true
}
