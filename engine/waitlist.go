package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/internal/ordmap"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// WaitState is where a user stands on a show's waitlist.
type WaitState uint8

// Waitlist states: waiting, holding a turn, or one of the ends.
const (
	WaitWaiting WaitState = iota + 1
	WaitTurn
	WaitDone
	WaitLapsed
	WaitLeft
	WaitSoldOut
	WaitTimedOut
)

// endStates maps a reason an entry ended to its state.
var endStates = [...]WaitState{wu.Done: WaitDone, wu.Lapsed: WaitLapsed, wu.Left: WaitLeft, wu.SoldOut: WaitSoldOut, wu.TimedOut: WaitTimedOut}

// Ended reports whether s is an end state.
func (s WaitState) Ended() bool { return s >= WaitDone }

// WaitView is a user's entry on a show's waitlist as the user sees it.
type WaitView struct {
	Show  ar.ShowID
	Entry wu.Entry
	State WaitState
	// Position is the number of users waiting ahead (WaitWaiting only).
	Position int
	// EstimatedWait is from the recent rate of turns; HasEstimate is false
	// while there is none.
	EstimatedWait time.Duration
	HasEstimate   bool
	// Turn is the offer, in WaitTurn (and, as it was, in the end states
	// that follow a turn).
	Turn *wu.Turn
	// Version is the entry's version (see entryVersion): it changes
	// exactly when the entry's state changes (a turn shows as TURN once its
	// seats can be held) or the user joins anew, and is the same on every
	// node that replays the entry. A position moving does not change it.
	Version uint64
}

// endedRetention is how long a user's ended entry is still answered (see
// waitlist.ended), and maxEnded the most ended entries a show keeps.
const (
	endedRetention = 5 * time.Minute
	maxEnded       = 100_000
)

// waitlist is a show's waitlist state beside its rules, guarded by show.mu.
type waitlist struct {
	rules *wu.Waitlist
	// waiters are the long polls and watches waiting on an entry's next
	// change of state.
	waiters entryWaiters
	// ended keeps the entries that ended recently, oldest first, so that a
	// user polling after the end learns how it ended. It is memory only: a
	// reload forgets it (the audit log has every end).
	ended *ordmap.Map[wu.UserID, endedView]
	// writes counts waitlist writes in flight; a show with any is not
	// evicted.
	writes int
	// joining marks the users whose join is being written.
	joining joinsInFlight
	// turning maps each user given a turn by a write still in flight to
	// that write: the turn shows (and its user is woken) once it commits.
	// A write that fails leaves its users here, their turns unshown, until
	// the show, then stale, is reloaded.
	turning map[wu.UserID]*persistence.Pending
}

// joinsInFlight has a channel for each user whose join of a waitlist or a
// waiting room is being written, closed once the write's outcome is known:
// another join of that user waits for it rather than answer from memory a
// join that may not be durable. The show's mutex guards it.
type joinsInFlight map[wu.UserID]chan struct{}

// begin marks user's join in flight and returns the function, to be called
// under the show's mutex, that ends the mark.
func (j *joinsInFlight) begin(user wu.UserID) (end func()) {
	if *j == nil {
		*j = make(joinsInFlight)
	}
	ch := make(chan struct{})
	(*j)[user] = ch
	return func() {
		delete(*j, user)
		close(ch)
	}
}

// entryWaiters holds, for each user whose entry of a waitlist or a waiting
// room someone waits on (a long poll, a watch), the channel closed at the
// entry's next change of state. A change wakes that user's waiters alone,
// so 200,000 pollers cost the engine one answer each per change of their
// own state, not one each per change of the show's queue; a user's channel
// is dropped when its last waiter leaves. The show's mutex guards it.
type entryWaiters map[wu.UserID]*entryWaiter

// entryWaiter is the channel the waiters of one user's entry share, and
// how many they are.
type entryWaiter struct {
	ch chan struct{}
	n  int
}

// waitLocked returns a channel closed at the next change of user's entry,
// and the function the waiter calls (without sh's mutex) when it stops
// waiting. On a dropped show (its waiters were woken, or are about to be)
// the channel is closed already: the waiter looks for the show anew.
func (ws *entryWaiters) waitLocked(sh *show, user wu.UserID) (<-chan struct{}, func()) {
	if sh.dropped {
		ch := make(chan struct{})
		close(ch)
		return ch, func() {}
	}
	if *ws == nil {
		*ws = make(entryWaiters)
	}
	w := (*ws)[user]
	if w == nil {
		w = &entryWaiter{ch: make(chan struct{})}
		(*ws)[user] = w
	}
	w.n++
	return w.ch, func() {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if w.n--; w.n == 0 && (*ws)[user] == w {
			delete(*ws, user)
		}
	}
}

// wakeLocked wakes the waiters of user's entry.
func (ws entryWaiters) wakeLocked(user wu.UserID) {
	if w := ws[user]; w != nil {
		close(w.ch)
		delete(ws, user)
	}
}

// wakeAllLocked wakes every waiter: the queue ended for everyone in it, or
// the show is unloaded (its waiters look for it anew).
func (ws entryWaiters) wakeAllLocked() {
	for u, w := range ws {
		close(w.ch)
		delete(ws, u)
	}
}

// endedView is an ended entry's view and when it ended.
type endedView struct {
	WaitView
	at time.Time
}

func newWaitlist(cfg wu.WaitlistConfig) waitlist {
	return waitlist{
		rules: wu.NewWaitlist(cfg),
		ended: ordmap.New[wu.UserID, endedView](0),
	}
}

// viewLocked returns user's view; false if user is neither on the
// waitlist nor ended recently.
func (sh *show) viewLocked(user wu.UserID) (WaitView, bool) {
	w := &sh.wait
	v := WaitView{Show: sh.id}
	if t, ok := w.rules.Turn(user); ok {
		v.Entry, v.State, v.Turn = t.Entry, WaitTurn, &t
		if _, committing := w.turning[user]; committing || !sh.offeredLocked(t) {
			// The write that gives the turn, or the release or expiry that
			// frees its seats, is still committing: the turn shows once it
			// is durable and its seats can be held.
			v.State, v.Turn = WaitWaiting, nil
		}
	} else if e, ok := w.rules.Get(user); ok {
		v.Entry, v.State = e, WaitWaiting
		v.Position, _ = w.rules.Position(user)
		v.EstimatedWait, v.HasEstimate = w.rules.EstimatedWait(v.Position)
	} else if ended, ok := w.ended.Get(user); ok {
		v = ended.WaitView
	} else {
		return WaitView{}, false
	}
	v.Version = entryVersion(v.Entry.Seq, v.State)
	return v, true
}

// offeredLocked reports whether every seat of turn t is offered to its user.
func (sh *show) offeredLocked(t wu.Turn) bool {
	for _, s := range t.Seats {
		if to, ok := sh.rules.OfferedTo(ar.SeatID(s)); !ok || to != ar.UserID(t.User) {
			return false
		}
	}
	return true
}

// turnCommittingLocked returns the in-flight write's channel (see
// show.busy) of a release or expiry that frees a seat of user's turn which
// seats asks for, or nil: the turn was given as the write was queued, and
// the seat is offered once it commits.
func (sh *show) turnCommittingLocked(user ar.UserID, seats []ar.SeatID) <-chan struct{} {
	if sh.wait.rules.Len() == 0 {
		return nil
	}
	t, ok := sh.wait.rules.Turn(wu.UserID(user))
	if !ok {
		return nil
	}
	for _, s := range seats {
		if st, _ := sh.rules.SeatStatus(s); st != ar.SeatHeld || !slices.Contains(t.Seats, string(s)) {
			continue
		}
		for id, ch := range sh.busy {
			if r, ok := sh.rules.Reservation(id); ok && slices.Contains(r.Seats, s) {
				return ch
			}
		}
	}
	return nil
}

// JoinWaitlist puts user on the show's waitlist for wanted seats, and
// answers after the join is durable. A user already on it gets that entry,
// existed true. Refusals: wu.ErrSeatsWanted, wu.ErrUserLimit,
// wu.ErrSeatsAvailable, wu.ErrSoldOut, ErrWaitlistFull when
// Config.MaxWaitlist users are on it, and wu.ErrNotAdmitted while the show
// has a waiting room and token is not the user's valid admission token (a
// user already on the waitlist is answered without one). If the write was not committed and
// the user still waits, the join is undone in memory; whatever the failure,
// the show is reloaded from the database before its next change.
func (n *Node) JoinWaitlist(ctx context.Context, id ar.ShowID, user ar.UserID, wanted int, token string) (v WaitView, existed bool, err error) {
	if err := validateUser(user); err != nil {
		return WaitView{}, false, err
	}
	if err := validateShowID(id); err != nil {
		return WaitView{}, false, err
	}
	if wanted < 1 || wanted > wu.MaxSeatsWanted {
		return WaitView{}, false, fmt.Errorf("%w: %d", wu.ErrSeatsWanted, wanted)
	}
	sh, err := n.lockForChange(ctx, id)
	if err != nil {
		return WaitView{}, false, err
	}
	defer n.gate.leave()
	u := wu.UserID(user)
	var (
		e      wu.Entry
		p      *persistence.Pending
		joined func() // ends the join's mark in flight
		jerr   error  // the join's refusal
	)
	// A user whose join is still being written is not answered from memory
	// (existed) before that write is durable: the join waits for it, and
	// decides again on what memory then holds (reloaded if it failed).
	sh, err = n.untilDecided(ctx, sh, func(sh *show) <-chan struct{} {
		if ch := sh.wait.joining[u]; ch != nil {
			return ch
		}
		e, p, existed, v, jerr = n.joinLocked(sh, u, wanted, token)
		if p != nil {
			joined = sh.wait.joining.begin(u)
		}
		return nil
	})
	if err == nil {
		err = jerr
	}
	if err != nil || p == nil {
		n.metrics.waitJoins(err)
		return v, existed, err
	}

	err = n.settleWait(sh, p)
	n.metrics.waitJoins(err)
	if err != nil && !unknownOutcome(err) {
		n.undoJoin(sh, u, e.Seq)
	}
	sh.mu.Lock()
	joined()
	if err == nil {
		v, _ = sh.viewLocked(u)
	}
	sh.mu.Unlock()
	if err != nil {
		return WaitView{}, false, err
	}
	return v, false, nil
}

// joinLocked decides user's join on sh, locked: the entry and the write it
// queued (nil when the user was on the waitlist already, existed, or the
// join was refused, err), and the user's view when no write was queued.
func (n *Node) joinLocked(sh *show, user wu.UserID, wanted int, token string) (e wu.Entry, p *persistence.Pending, existed bool, v WaitView, err error) {
	now := n.now()
	if _, waiting := sh.wait.rules.Get(user); !waiting {
		if err := n.admitted(sh, ar.UserID(user), token); err != nil {
			return wu.Entry{}, nil, false, WaitView{}, err
		}
	}
	available, held, _, offered := sh.rules.Counts()
	seats := wu.Seats{Available: available, Held: held, Offered: offered, User: sh.rules.UserSeats(ar.UserID(user))}
	e, existed, err = sh.wait.rules.Join(user, wanted, now, seats)
	if err == nil && !existed && sh.wait.rules.Len() > n.cfg.MaxWaitlist {
		sh.wait.rules.Leave(user, now) //nolint:errcheck // just joined, at the tail: nothing else moves
		err = fmt.Errorf("%w: %d users", ErrWaitlistFull, n.cfg.MaxWaitlist)
	}
	if err != nil || existed {
		v, _ = sh.viewLocked(user)
		return e, nil, existed, v, err
	}
	change := &persistence.WaitlistChange{
		Put:    []persistence.WaitEntry{entryRow(e, nil)},
		Events: []persistence.WaitEvent{{UserID: string(user), Kind: "WAIT_JOINED", At: now}},
	}
	p, err = n.enqueueWaitLocked(sh, change, now)
	if err != nil {
		sh.wait.rules.Leave(user, now) //nolint:errcheck // just joined, at the tail: nothing else moves
		return wu.Entry{}, nil, false, WaitView{}, err
	}
	sh.wait.ended.Delete(user)
	sh.wait.waiters.wakeLocked(user)
	return e, p, false, WaitView{}, nil
}

// undoJoin takes back, in memory, a join whose write was not committed, so
// that reads do not show it while the show waits for its reload: if the user
// still waits for the same entry and taking it off moves nothing else (it
// has no turn, no seats were set aside for it).
func (n *Node) undoJoin(sh *show, user wu.UserID, seq int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if pos, waiting := sh.wait.rules.Position(user); !waiting || (pos == 0 && len(sh.wait.rules.Aside()) > 0) {
		return
	}
	if e, _ := sh.wait.rules.Get(user); e.Seq != seq {
		return
	}
	sh.wait.rules.Leave(user, n.now()) //nolint:errcheck // it waits
	sh.wait.waiters.wakeLocked(user)
}

// LeaveWaitlist takes user off the show's waitlist, durably; a turn's seats
// go on to the next user. wu.ErrNotWaiting if user is not on it.
func (n *Node) LeaveWaitlist(ctx context.Context, id ar.ShowID, user ar.UserID) (WaitView, error) {
	if err := validateUser(user); err != nil {
		return WaitView{}, err
	}
	if err := validateShowID(id); err != nil {
		return WaitView{}, err
	}
	sh, err := n.lockForChange(ctx, id)
	if err != nil {
		return WaitView{}, err
	}
	defer n.gate.leave()
	now := n.now()
	out, err := sh.wait.rules.Leave(wu.UserID(user), now)
	if err != nil {
		sh.mu.Unlock()
		return WaitView{}, err
	}
	p, err := n.applyWaitLocked(sh, out, now, "")
	v, _ := sh.viewLocked(wu.UserID(user))
	sh.mu.Unlock()
	if err == nil && p != nil {
		err = n.settleWait(sh, p)
	}
	if err != nil {
		return WaitView{}, err
	}
	return v, nil
}

// WaitlistEntry returns user's view of the show's waitlist.
// wu.ErrNotWaiting if user is neither on the waitlist nor ended within the
// last few minutes.
func (n *Node) WaitlistEntry(ctx context.Context, id ar.ShowID, user ar.UserID) (WaitView, error) {
	v, _, _, err := n.waitlistEntry(ctx, id, user, false)
	return v, err
}

// WaitWaitlistEntry is WaitlistEntry with a channel closed at the entry's
// next change of version (or when the show leaves this node's memory), and
// the function to call once done waiting on it. Other users' joins, turns
// and ends do not close it, even when they move the user's position.
func (n *Node) WaitWaitlistEntry(ctx context.Context, id ar.ShowID, user ar.UserID) (v WaitView, changed <-chan struct{}, stop func(), err error) {
	return n.waitlistEntry(ctx, id, user, true)
}

func (n *Node) waitlistEntry(ctx context.Context, id ar.ShowID, user ar.UserID, wait bool) (WaitView, <-chan struct{}, func(), error) {
	if err := validateUser(user); err != nil {
		return WaitView{}, nil, nil, err
	}
	if err := validateShowID(id); err != nil {
		return WaitView{}, nil, nil, err
	}
	sh, err := n.show(ctx, id, false)
	if err != nil {
		return WaitView{}, nil, nil, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := wu.UserID(user)
	v, ok := sh.viewLocked(u)
	if !ok {
		return WaitView{}, nil, nil, fmt.Errorf("%w: %s on show %s", wu.ErrNotWaiting, user, id)
	}
	if !wait {
		return v, nil, nil, nil
	}
	changed, stop := sh.wait.waiters.waitLocked(sh, u)
	return v, changed, stop, nil
}

// applyWaitLocked applies a waitlist outcome to the show's seats, records
// its ends, wakes the watchers, and queues its write. took is the hold that
// took a turn, if any (its write carries the change instead: see Hold). It
// returns nil when there is nothing to write. On an error the show is
// stale: memory went ahead of the database, so the next change reloads it.
func (n *Node) applyWaitLocked(sh *show, out wu.Outcome, now time.Time, took ar.HoldID) (*persistence.Pending, error) {
	if out.Empty() {
		return nil, nil
	}
	change := n.waitChangeLocked(sh, out, now, took)
	p, err := n.enqueueWaitLocked(sh, change, now)
	if err != nil {
		sh.stale = true
		return nil, err
	}
	sh.turningLocked(out.Turns, p)
	return p, nil
}

// turningLocked marks the turns that p, queued, gives: they show once it
// commits (see shownLocked).
func (sh *show) turningLocked(turns []wu.Turn, p *persistence.Pending) {
	if len(turns) == 0 {
		return
	}
	if sh.wait.turning == nil {
		sh.wait.turning = make(map[wu.UserID]*persistence.Pending)
	}
	for _, t := range turns {
		sh.wait.turning[t.User] = p
	}
}

// shownLocked shows the turns that p gave, now that it committed (err
// nil), and wakes their users; after a failure they stay unshown.
func (sh *show) shownLocked(p *persistence.Pending, err error) {
	if err != nil {
		return
	}
	for u, q := range sh.wait.turning {
		if q == p {
			delete(sh.wait.turning, u)
			sh.wait.waiters.wakeLocked(u)
		}
	}
}

// waitChangeLocked applies out to sh's seats (see syncSeatsLocked) and
// views, and returns the rows and events that make it durable. It wakes the
// waiters of the entries that ended. Those given a turn are woken once the
// turn shows: after the write that carries the change commits (its caller
// marks the turns, see turningLocked), or, for a hand-over of seats whose
// release or expiry is still committing, once that applies
// (handedOverLocked).
func (n *Node) waitChangeLocked(sh *show, out wu.Outcome, now time.Time, took ar.HoldID) *persistence.WaitlistChange {
	change := &persistence.WaitlistChange{}
	for _, e := range out.Ended {
		change.Delete = append(change.Delete, string(e.User))
		ev := persistence.WaitEvent{UserID: string(e.User), Kind: "WAIT_" + e.Reason.String(), SeatIDs: e.Seats, At: now}
		if e.Reason == wu.Done {
			ev.Kind, ev.ReservationID = "WAIT_TAKEN", string(took)
		}
		change.Events = append(change.Events, ev)
		v := WaitView{Show: sh.id, Entry: e.Entry, State: endStates[e.Reason]}
		if len(e.Seats) > 0 {
			v.Turn = &wu.Turn{Entry: e.Entry, Seats: e.Seats}
		}
		n.rememberEndedLocked(sh, v, now)
		sh.wait.waiters.wakeLocked(e.User)
		n.metrics.waitEnded(e.Reason)
	}
	var touched []string
	for _, t := range out.Turns {
		change.Put = append(change.Put, entryRow(t.Entry, &t))
		change.Events = append(change.Events, persistence.WaitEvent{UserID: string(t.User), Kind: "WAIT_TURN", SeatIDs: t.Seats, At: now})
		n.metrics.waitTurn(t.OfferedAt.Sub(t.JoinedAt))
		touched = append(touched, t.Seats...)
	}
	if out.AsideChanged {
		aside := sh.wait.rules.Aside()
		change.SetAside, change.Aside = true, aside
		touched = append(touched, aside...)
	}
	touched = append(touched, out.Returned...)
	sh.syncSeatsLocked(touched)
	return change
}

// syncSeatsLocked sets each of seats that is available or offered to what
// the waitlist says: offered to the user whose turn has it, set aside, or
// available to everyone. Held and booked seats are left alone: seats handed
// to the waitlist while their release or expiry commits are synced when it
// applies.
func (sh *show) syncSeatsLocked(seats []string) {
	for _, s := range seats {
		id := ar.SeatID(s)
		st, ok := sh.rules.SeatStatus(id)
		if !ok || (st != ar.SeatAvailable && st != ar.SeatOffered) {
			continue
		}
		if to, mine := sh.wait.rules.Holder(s); mine {
			sh.rules.Offer([]ar.SeatID{id}, ar.UserID(to)) //nolint:errcheck // available or offered
		} else if st == ar.SeatOffered {
			sh.rules.Unoffer([]ar.SeatID{id})
		}
	}
}

func (n *Node) enqueueWaitLocked(sh *show, change *persistence.WaitlistChange, now time.Time) (*persistence.Pending, error) {
	p, err := n.store.Enqueue(persistence.Mutation{
		Kind:     persistence.Waitlist,
		Epoch:    sh.epoch,
		ShowID:   string(sh.id),
		At:       now,
		Waitlist: change,
	})
	if err != nil {
		return nil, err
	}
	sh.wait.writes++
	return p, nil
}

// settleWait waits for a waitlist write queued by enqueueWaitLocked (see
// settle).
func (n *Node) settleWait(sh *show, p *persistence.Pending) error {
	return n.settle(sh, p, func(err error) {
		sh.wait.writes--
		sh.shownLocked(p, err)
	})
}

// settle waits for a write of the show's waitlist or waiting room; done,
// called under sh.mu with the write's outcome, counts it off. A write that failed leaves memory ahead
// of the database: the show is marked stale (or dropped, if it moved), and
// reloaded before its next change.
func (n *Node) settle(sh *show, p *persistence.Pending, done func(error)) error {
	werr := p.Wait()
	sh.mu.Lock()
	done(werr)
	unload := false
	if werr != nil {
		werr, unload = failedLocked(sh, werr)
		sh.stale = sh.stale || !sh.dropped
	}
	sh.mu.Unlock()
	if unload {
		n.unload(sh, werr.Error())
	}
	return werr
}

// rememberEndedLocked keeps an ended entry for endedRetention, at most
// maxEnded of them.
func (n *Node) rememberEndedLocked(sh *show, v WaitView, now time.Time) {
	rememberEnd(sh.wait.ended, v.Entry.User, endedView{WaitView: v, at: now}, now, func(e endedView) time.Time { return e.at })
}

// rememberEnd puts user's ended entry e at the back of ended, and forgets
// from the front those older than endedRetention (at tells when one ended)
// and any beyond maxEnded.
func rememberEnd[V any](ended *ordmap.Map[wu.UserID, V], user wu.UserID, e V, now time.Time, at func(V) time.Time) {
	ended.Delete(user)
	ended.Put(user, e)
	for {
		_, old, ok := ended.Front()
		if !ok || (ended.Len() <= maxEnded && now.Sub(at(old)) < endedRetention) {
			return
		}
		ended.PopFront()
	}
}

// handOverLocked gives the seats of a hold being released or expired to
// the waitlist, and returns the change for the release's or expiry's own
// write, so that both commit together (nil when nobody waits). Memory's
// seats stay held until that write commits; then appliedLocked offers them.
// If the write fails, the waitlist is ahead of the database and the show is
// marked stale.
func (n *Node) handOverLocked(sh *show, seats []ar.SeatID, now time.Time) *persistence.WaitlistChange {
	if sh.wait.rules.Waiting() == 0 {
		return nil // they will be available to everyone
	}
	out := sh.wait.rules.Free(seatStrings(seats), now)
	if out.Empty() {
		return nil
	}
	return n.waitChangeLocked(sh, out, now, "")
}

// handedOverLocked applies, once a release or expiry that carried a
// hand-over committed and freed seats in memory, the waitlist's claim on
// them, and wakes the users whose turns they now show.
func (sh *show) handedOverLocked(seats []ar.SeatID) {
	sh.syncSeatsLocked(seatStrings(seats))
	for _, s := range seats {
		if to, ok := sh.rules.OfferedTo(s); ok {
			sh.wait.waiters.wakeLocked(wu.UserID(to))
		}
	}
}

// waitSoldOutLocked ends the waiting entries the show can no longer serve,
// after a booking; see applyWaitLocked.
func (n *Node) waitSoldOutLocked(sh *show, now time.Time) (*persistence.Pending, error) {
	available, held, _, offered := sh.rules.Counts()
	return n.applyWaitLocked(sh, sh.wait.rules.SoldOut(available+held+offered, now), now, "")
}

// restoreWaitlist rebuilds a show's waitlist from its rows, after its
// reservations: offered and set-aside seats that are not available (a
// later hold took them) are left out, with a warning.
func (n *Node) restoreWaitlist(sh *show, snap persistence.Snapshot) error {
	w := sh.wait.rules
	keep := func(seats []string) []string {
		var out []string
		for _, s := range seats {
			if st, ok := sh.rules.SeatStatus(ar.SeatID(s)); ok && st == ar.SeatAvailable {
				out = append(out, s)
			} else {
				n.cfg.Logger.Warn("waitlist seat not available on replay; left out", "show", sh.id, "seat", s)
			}
		}
		return out
	}
	for _, row := range snap.Waiting {
		e := wu.Entry{User: wu.UserID(row.UserID), Seq: row.Seq, SeatsWanted: row.SeatsWanted, JoinedAt: row.JoinedAt.UTC(), Deadline: row.Deadline.UTC()}
		if len(row.OfferSeats) == 0 {
			if err := w.RestoreEntry(e); err != nil {
				return err
			}
			continue
		}
		t := wu.Turn{Entry: e, Seats: keep(row.OfferSeats), OfferedAt: row.OfferedAt.UTC(), Deadline: row.OfferDeadline.UTC()}
		if len(t.Seats) == 0 {
			continue // a hold took them all: the turn was taken
		}
		if err := w.RestoreTurn(t); err != nil {
			return err
		}
		if err := sh.rules.Offer(seatIDs(t.Seats), ar.UserID(t.User)); err != nil {
			return err
		}
	}
	aside := keep(snap.Aside)
	if err := w.RestoreAside(aside); err != nil {
		return err
	}
	if err := sh.rules.Offer(seatIDs(aside), ""); err != nil {
		return err
	}
	return nil
}

// lapseWaitlists ends the turns and waits that are due, on every show
// given, waits for their writes, and updates the waitlist gauges. The
// expiry loop calls it.
func (n *Node) lapseWaitlists(shows []*show, now time.Time) {
	type pending struct {
		sh *show
		p  *persistence.Pending
	}
	var ps []pending
	longest, total := 0, 0
	for _, sh := range shows {
		sh.mu.Lock()
		if sh.dropped || sh.wait.rules.Len() == 0 {
			sh.mu.Unlock()
			continue
		}
		longest, total = max(longest, sh.wait.rules.Len()), total+sh.wait.rules.Len()
		if sh.stale {
			sh.mu.Unlock()
			continue
		}
		out := sh.wait.rules.Lapse(now)
		// Also the sold-out sweep, for a booking whose own sweep was lost
		// (a crash after it committed); it costs nothing while 10 or more
		// seats could come free.
		available, held, _, offered := sh.rules.Counts()
		merge(&out, sh.wait.rules.SoldOut(available+held+offered, now))
		p, err := n.applyWaitLocked(sh, out, now, "")
		sh.mu.Unlock()
		if err != nil {
			n.cfg.Logger.Warn("waitlist lapse not written; show reloads", "show", sh.id, "err", err)
		}
		if p != nil {
			ps = append(ps, pending{sh, p})
		}
	}
	n.metrics.waiting.Set(float64(total))
	n.metrics.longestWaitlist.Set(float64(longest))
	for _, p := range ps {
		if err := n.settleWait(p.sh, p.p); err != nil {
			n.cfg.Logger.Warn("waitlist write failed; show reloads", "show", p.sh.id, "err", err)
		}
	}
}

// merge appends outcome b, which came after a, to a.
func merge(a *wu.Outcome, b wu.Outcome) {
	a.Turns = append(a.Turns, b.Turns...)
	a.Ended = append(a.Ended, b.Ended...)
	a.Returned = append(a.Returned, b.Returned...)
	a.AsideChanged = a.AsideChanged || b.AsideChanged
}

// entryRow is the persisted row of a waiting entry, or of a turn.
func entryRow(e wu.Entry, t *wu.Turn) persistence.WaitEntry {
	row := persistence.WaitEntry{
		UserID:      string(e.User),
		Seq:         e.Seq,
		SeatsWanted: e.SeatsWanted,
		JoinedAt:    e.JoinedAt,
		Deadline:    e.Deadline,
	}
	if t != nil {
		row.OfferSeats, row.OfferedAt, row.OfferDeadline = t.Seats, t.OfferedAt, t.Deadline
	}
	return row
}

func seatIDs(seats []string) []ar.SeatID {
	out := make([]ar.SeatID, len(seats))
	for i, s := range seats {
		out[i] = ar.SeatID(s)
	}
	return out
}
