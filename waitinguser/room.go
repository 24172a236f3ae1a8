package waitinguser

import (
	"fmt"
	"math"
	"time"

	"github.com/boxoffice/boxoffice/internal/ordmap"
)

// Limits of a waiting room.
const (
	// DefaultShoppingWindow is how long an admission lasts when a room sets
	// no window.
	DefaultShoppingWindow = 10 * time.Minute
	// MaxAdmitPerSecond is the fastest admission rate a room takes.
	MaxAdmitPerSecond = 100_000
	// roomMaxWait is the MaxWait of a room's queue, which sets its entries'
	// deadlines. Nothing times a queued user out of a room by it: the
	// queue ends with the sale (sold out, closed), and the engine bounds
	// its length.
	roomMaxWait = 7 * 24 * time.Hour
)

// RoomConfig describes a show's waiting room to NewRoom.
type RoomConfig struct {
	// OpensAt is when admissions begin; users may join before.
	OpensAt time.Time
	// AdmitPerSecond is how many queued users are admitted per second, in
	// join order: 1 to MaxAdmitPerSecond, fractions allowed (0.5: one every
	// two seconds).
	AdmitPerSecond float64
	// MaxActive caps the admitted users still shopping (0: no cap). A
	// shopper stops counting when they finish (held and paid), leave, or
	// their shopping window ends.
	MaxActive int
	// ShoppingWindow is how long an admission lasts. Zero means
	// DefaultShoppingWindow.
	ShoppingWindow time.Duration
}

// Check validates cfg: a rate of at least one admission an hour and at most
// MaxAdmitPerSecond, a cap and a window not negative. ErrRoomConfig
// otherwise.
func (cfg RoomConfig) Check() error {
	switch {
	case !(cfg.AdmitPerSecond >= 1.0/3600 && cfg.AdmitPerSecond <= MaxAdmitPerSecond):
		return fmt.Errorf("%w: admit_per_second %v must be 1/3600 to %d", ErrRoomConfig, cfg.AdmitPerSecond, MaxAdmitPerSecond)
	case cfg.MaxActive < 0:
		return fmt.Errorf("%w: max_active_shoppers %d must not be negative", ErrRoomConfig, cfg.MaxActive)
	case cfg.ShoppingWindow < 0:
		return fmt.Errorf("%w: shopping_window %v must not be negative", ErrRoomConfig, cfg.ShoppingWindow)
	}
	return nil
}

// Admission is a queued user let in to shop until Deadline.
type Admission struct {
	User UserID
	// Seq is the user's place in join order (their Entry's).
	Seq        int64
	JoinedAt   time.Time
	AdmittedAt time.Time
	// Deadline is AdmittedAt plus the shopping window, in whole
	// milliseconds (as its token carries it), or the deadline of the
	// admission before it if that is later (the clock went back), so
	// admissions end in the order they were given.
	Deadline time.Time
}

// RoomState is where a user is in a room.
type RoomState uint8

// Room states.
const (
	// Absent: neither queued nor admitted.
	Absent RoomState = iota
	// Queued: waiting for admission.
	Queued
	// Admitted: admitted and still counted as shopping.
	Admitted
)

// Place is a user's place in a room: queued with a position, or admitted.
type Place struct {
	State RoomState
	Entry Entry // when Queued
	// Position is the number of users queued ahead (0: next), when Queued.
	Position  int
	Admission Admission // when Admitted
}

// RoomEnd is a room's entry or admission that ended, and why: a queued
// user's Left, SoldOut or Closed, an admission's Done, Lapsed or Left.
type RoomEnd struct {
	User     UserID
	Seq      int64
	Reason   Reason
	Admitted bool // the user was admitted (an admission ended)
	At       time.Time
}

// Room is one show's waiting room: users queued in join order, admitted at
// the room's rate from the head, never more shoppers than its cap. Join,
// Leave, positions and admissions are O(log n) per user, and a queued user
// costs one queue entry (see Queue); the admitted ones are kept in
// admission order, which is deadline order, so lapses are found at the
// head. A Room does no I/O and reads no clock; it is not safe for
// concurrent use.
//
// Admissions accrue as credit at AdmitPerSecond from OpensAt, the first at
// OpensAt itself, up to one second's worth (at least one) while nobody can
// be admitted, so a room whose cap was full, or that was empty, admits at
// most a second's worth at once when room is made.
type Room struct {
	cfg      RoomConfig
	queue    *Queue
	admitted *ordmap.Map[UserID, Admission] // admission order = deadline order
	credit   float64                        // admissions earned and not used
	accrued  time.Time                      // when credit was last brought up to date
	soldOut  bool
	closed   bool
}

// NewRoom returns an empty room; cfg must pass Check.
func NewRoom(cfg RoomConfig) (*Room, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.ShoppingWindow == 0 {
		cfg.ShoppingWindow = DefaultShoppingWindow
	}
	return &Room{
		cfg:      cfg,
		queue:    New(Config{MaxWait: roomMaxWait}),
		admitted: ordmap.New[UserID, Admission](0),
		credit:   1, // the first admission at the opening
		accrued:  cfg.OpensAt,
	}, nil
}

// Config returns the room's configuration as it is now (SetRate and
// SetMaxActive change it).
func (r *Room) Config() RoomConfig { return r.cfg }

// Queued returns the number of users waiting for admission.
func (r *Room) Queued() int { return r.queue.Len() }

// Active returns the number of admitted users still counted as shopping.
func (r *Room) Active() int { return r.admitted.Len() }

// IsSoldOut reports whether the room stopped for a sold-out show.
func (r *Room) IsSoldOut() bool { return r.soldOut }

// IsClosed reports whether the operator closed the room.
func (r *Room) IsClosed() bool { return r.closed }

// Join queues user at now, before or after the room opens. A user already
// queued keeps their place, and an admitted one their admission: Join
// answers it with existed true. A user whose admission ended may join again,
// at the tail. ErrSoldOut once the show sold out, ErrRoomClosed once the
// room is closed (nobody needs admission then).
func (r *Room) Join(user UserID, now time.Time) (p Place, existed bool, err error) {
	if p := r.Get(user); p.State != Absent {
		return p, true, nil
	}
	switch {
	case r.soldOut:
		return Place{}, false, ErrSoldOut
	case r.closed:
		return Place{}, false, ErrRoomClosed
	}
	e, _, err := r.queue.Join(user, 1, now)
	if err != nil {
		return Place{}, false, err
	}
	pos, _ := r.queue.Position(user)
	return Place{State: Queued, Entry: e, Position: pos}, false, nil
}

// Get returns user's place.
func (r *Room) Get(user UserID) Place {
	if a, ok := r.admitted.Get(user); ok {
		return Place{State: Admitted, Admission: a}
	}
	if e, ok := r.queue.Get(user); ok {
		pos, _ := r.queue.Position(user)
		return Place{State: Queued, Entry: e, Position: pos}
	}
	return Place{}
}

// Leave takes user out of the room at now: out of the queue, or, admitted,
// out of the shoppers counted (Get then answers Absent: the engine admits
// no more holds with the admission's token, though it has not run out).
// ErrNotWaiting if user is neither.
func (r *Room) Leave(user UserID, now time.Time) (RoomEnd, error) {
	if a, ok := r.admitted.Get(user); ok {
		r.admitted.Delete(user)
		return RoomEnd{User: user, Seq: a.Seq, Reason: Left, Admitted: true, At: now}, nil
	}
	e, err := r.queue.Leave(user)
	if err != nil {
		return RoomEnd{}, err
	}
	return RoomEnd{User: user, Seq: e.Seq, Reason: Left, At: now}, nil
}

// Finish ends user's admission at now because they held and paid: they no
// longer count under the cap. It reports false if user is not admitted.
func (r *Room) Finish(user UserID, now time.Time) (RoomEnd, bool) {
	a, ok := r.admitted.Get(user)
	if !ok {
		return RoomEnd{}, false
	}
	r.admitted.Delete(user)
	return RoomEnd{User: user, Seq: a.Seq, Reason: Done, Admitted: true, At: now}, true
}

// accrue brings the credit up to date at now, at the current rate. While
// nobody could be admitted (an empty queue, a full cap) or before the room
// opens, credit stays at most one second's worth (at least one).
func (r *Room) accrue(now time.Time) {
	if !now.After(r.accrued) {
		return
	}
	r.credit += r.cfg.AdmitPerSecond * now.Sub(r.accrued).Seconds()
	r.accrued = now
	if burst := max(1, r.cfg.AdmitPerSecond); r.credit > burst {
		r.credit = burst
	}
}

// Admit admits, at now, as many users from the head of the queue as the
// credit earned at the rate allows and the cap leaves room for, in join
// order, each until now plus the shopping window; it returns them in that
// order. Nobody is admitted before OpensAt, after a sell-out or once the
// room is closed.
func (r *Room) Admit(now time.Time) []Admission {
	if r.soldOut || r.closed || now.Before(r.cfg.OpensAt) {
		return nil
	}
	r.accrue(now)
	n := min(int(math.Floor(r.credit)), r.queue.Len())
	if r.cfg.MaxActive > 0 {
		n = min(n, r.cfg.MaxActive-r.admitted.Len())
	}
	if n <= 0 {
		return nil
	}
	out := make([]Admission, 0, n)
	for range n {
		e, _ := r.queue.Head()
		_, _ = r.queue.Leave(e.User)
		// Whole milliseconds: the deadline a token carries.
		a := Admission{User: e.User, Seq: e.Seq, JoinedAt: e.JoinedAt, AdmittedAt: now, Deadline: now.Add(r.cfg.ShoppingWindow).Truncate(time.Millisecond)}
		if _, last, ok := r.admitted.Back(); ok && last.Deadline.After(a.Deadline) {
			a.Deadline = last.Deadline
		}
		r.admitted.Put(a.User, a)
		r.queue.RecordTurn(now)
		out = append(out, a)
	}
	r.credit -= float64(n)
	return out
}

// Lapse ends, at now, the admissions whose deadline is not after now, head
// first: those shoppers no longer count under the cap.
func (r *Room) Lapse(now time.Time) []RoomEnd {
	var out []RoomEnd
	for {
		_, a, ok := r.admitted.Front()
		if !ok || a.Deadline.After(now) {
			return out
		}
		r.admitted.Delete(a.User)
		out = append(out, RoomEnd{User: a.User, Seq: a.Seq, Reason: Lapsed, Admitted: true, At: now})
	}
}

// NextEvent returns when Admit or Lapse may next have something to do,
// given the state at now: the room's opening, the next admission's credit,
// or the earliest admission deadline; false when nothing is pending.
func (r *Room) NextEvent(now time.Time) (time.Time, bool) {
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if _, a, ok := r.admitted.Front(); ok {
		consider(a.Deadline)
	}
	capFull := r.cfg.MaxActive > 0 && r.admitted.Len() >= r.cfg.MaxActive
	if !r.soldOut && !r.closed && r.queue.Len() > 0 && !capFull {
		switch {
		case now.Before(r.cfg.OpensAt):
			consider(r.cfg.OpensAt)
		default:
			r.accrue(now)
			need := max(0, 1-r.credit)
			consider(now.Add(time.Duration(need / r.cfg.AdmitPerSecond * float64(time.Second))))
		}
	}
	return next, !next.IsZero()
}

// EstimatedWait estimates, at now, how long a user with position users
// ahead will wait for admission: before the opening, until it plus
// position admissions (the first is at the opening); after, position+1
// admissions. Admissions come at the room's rate, or at the rate they were
// actually given lately when that is slower (a full cap admits only as
// shoppers leave).
func (r *Room) EstimatedWait(position int, now time.Time) time.Duration {
	per := time.Duration(float64(time.Second) / r.cfg.AdmitPerSecond)
	if seen, ok := r.queue.turns.interval(); ok && seen > per && r.cfg.MaxActive > 0 {
		per = seen
	}
	if now.Before(r.cfg.OpensAt) {
		return r.cfg.OpensAt.Sub(now) + time.Duration(position)*per
	}
	return time.Duration(position+1) * per
}

// SetRate changes the admission rate from now on (the operator's brake):
// the credit earned until now at the old rate is kept up to one second's
// worth at the new one, so a lower rate takes effect at once.
// ErrRoomConfig for a rate Check refuses.
func (r *Room) SetRate(perSecond float64, now time.Time) error {
	cfg := r.cfg
	cfg.AdmitPerSecond = perSecond
	if err := cfg.Check(); err != nil {
		return err
	}
	r.accrue(now)
	r.cfg.AdmitPerSecond = perSecond
	r.credit = min(r.credit, max(1, perSecond))
	return nil
}

// SetMaxActive changes the cap on shoppers (0: none). Lowering it admits
// nobody until the shoppers are fewer; it ends no admission. ErrRoomConfig
// for a negative cap.
func (r *Room) SetMaxActive(n int) error {
	if n < 0 {
		return fmt.Errorf("%w: max_active_shoppers %d must not be negative", ErrRoomConfig, n)
	}
	r.cfg.MaxActive = n
	return nil
}

// SellOut stops the room for a sold-out show at now: every queued user is
// taken out, with reason SoldOut, in join order, and nobody is admitted any
// more. Admissions keep running to their deadlines (a shopper may still
// take seats that come free). It is idempotent.
func (r *Room) SellOut(now time.Time) []RoomEnd {
	r.soldOut = true
	return r.drain(SoldOut, now)
}

// Close closes the room at now (the operator's decision: the show no
// longer needs one): every queued user is taken out, with reason Closed,
// in join order, nobody is admitted any more, and Join answers
// ErrRoomClosed. It is idempotent.
func (r *Room) Close(now time.Time) []RoomEnd {
	r.closed = true
	return r.drain(Closed, now)
}

func (r *Room) drain(reason Reason, now time.Time) []RoomEnd {
	var out []RoomEnd
	for e := range r.queue.All() {
		out = append(out, RoomEnd{User: e.User, Seq: e.Seq, Reason: reason, At: now})
	}
	for _, l := range out {
		_, _ = r.queue.Leave(l.User)
	}
	return out
}

// Entries returns the queued users in join order, head first.
func (r *Room) Entries() func(yield func(Entry) bool) { return r.queue.All() }

// Admissions returns the admissions still counted, in admission order.
func (r *Room) Admissions() func(yield func(Admission) bool) {
	return func(yield func(Admission) bool) {
		for _, a := range r.admitted.All() {
			if !yield(a) {
				return
			}
		}
	}
}

// RestoreEntry puts back a persisted queued user, when a show is rebuilt
// from its rows: entries in join order (increasing Seq), after the
// admissions. ErrCorrupt for a user twice or out of order.
func (r *Room) RestoreEntry(e Entry) error {
	if _, ok := r.admitted.Get(e.User); ok {
		return fmt.Errorf("%w: %s queued and admitted", ErrCorrupt, e.User)
	}
	return r.queue.Restore(e)
}

// RestoreAdmission puts back a persisted admission, in admission order.
// The room's join order continues after it, so a user admitted and then
// queued again joined later. ErrCorrupt for a user twice.
func (r *Room) RestoreAdmission(a Admission) error {
	if _, ok := r.admitted.Get(a.User); ok {
		return fmt.Errorf("%w: %s admitted twice", ErrCorrupt, a.User)
	}
	if _, ok := r.queue.Get(a.User); ok {
		return fmt.Errorf("%w: %s queued and admitted", ErrCorrupt, a.User)
	}
	if _, last, ok := r.admitted.Back(); ok && last.Deadline.After(a.Deadline) {
		a.Deadline = last.Deadline
	}
	r.admitted.Put(a.User, a)
	if a.Seq > r.queue.seq {
		r.queue.seq = a.Seq
	}
	return nil
}

// RestoreEnded restores the room's end: sold out, or closed.
func (r *Room) RestoreEnded(soldOut, closed bool) {
	r.soldOut, r.closed = r.soldOut || soldOut, r.closed || closed
}

// Resume sets the credit's clock at now after a restore: once the room
// has opened, admissions accrue from now (the first a full interval
// later), not from OpensAt, so a restarted room does not admit the time it
// was down at once; before the opening nothing changes.
func (r *Room) Resume(now time.Time) {
	if !now.After(r.cfg.OpensAt) {
		return
	}
	r.accrued = now
	r.credit = 0
}
