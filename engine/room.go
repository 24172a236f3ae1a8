package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/internal/ordmap"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// ErrNoRoom refuses a waiting room call for a show without one, or on a
// node without an admission key (which cannot sign the room's tokens).
var ErrNoRoom = errors.New("the show has no waiting room")

// maxRoomQueue bounds the users queued in one show's waiting room; a join
// beyond it is refused with ErrWaitlistFull.
const maxRoomQueue = 1_000_000

// RoomState is where a user is in a show's waiting room.
type RoomState uint8

// Waiting room states.
const (
	RoomQueued RoomState = iota + 1
	RoomAdmitted
	RoomLeft
	RoomLapsed
	RoomSoldOut
	RoomDone
	RoomClosed
)

// Ended reports whether s is an end state.
func (s RoomState) Ended() bool { return s >= RoomLeft }

// RoomView is a user's entry in a show's waiting room as the user sees it.
type RoomView struct {
	Show     ar.ShowID
	User     wu.UserID
	State    RoomState
	Seq      int64
	JoinedAt time.Time
	// Position and EstimatedWait, while queued.
	Position      int
	EstimatedWait time.Duration
	// Token and Deadline, once admitted.
	Token    string
	Deadline time.Time
	// Version changes when the entry's state does (or the user joins
	// again); a position that moves does not change it.
	Version uint64
}

// entryVersion is the version of an entry with join sequence seq in state
// st: it changes exactly when the state changes or a new join starts a new
// entry, and it is the same on every node that replays the entry.
// (The waitlist's entries use it too, with their WaitState.)
func entryVersion[S RoomState | WaitState](seq int64, st S) uint64 {
	return uint64(seq)<<3 | uint64(st)
}

// room is a show's waiting room beside its rules, guarded by show.mu.
type room struct {
	rules *wu.Room
	// waiters are the long polls and watches waiting on an entry's next
	// change of state.
	waiters entryWaiters
	// admitting holds the admissions whose write is in flight: they show
	// as queued, at the head, until it commits, so no token is handed out
	// for an admission that may not be durable.
	admitting map[wu.UserID]bool
	// ended keeps the entries that ended recently, oldest first (memory
	// only, as the waitlist's).
	ended *ordmap.Map[wu.UserID, endedRoomView]
	// writes counts room writes in flight; a show with any is not evicted.
	writes int
	// joining marks the users whose join is being written.
	joining joinsInFlight
}

type endedRoomView struct {
	RoomView
	at time.Time
}

// newRoom rebuilds a show's waiting room from its snapshot, or returns nil
// for a show without one: admissions first (they joined before anyone
// still queued), then the queue, both in join order, and the rate resumed
// from now.
func newRoom(snap persistence.Snapshot, now time.Time) (*room, error) {
	cfg := snap.Show.Room
	if cfg == nil {
		return nil, nil
	}
	rules, err := wu.NewRoom(wu.RoomConfig{OpensAt: cfg.OpensAt, AdmitPerSecond: cfg.AdmitPerSecond, MaxActive: cfg.MaxActive, ShoppingWindow: cfg.ShoppingWindow})
	if err != nil {
		return nil, err
	}
	for _, e := range snap.Room {
		if !e.AdmittedAt.IsZero() {
			if err := rules.RestoreAdmission(wu.Admission{User: wu.UserID(e.UserID), Seq: e.Seq, JoinedAt: e.JoinedAt, AdmittedAt: e.AdmittedAt, Deadline: e.Deadline}); err != nil {
				return nil, err
			}
		}
	}
	for _, e := range snap.Room {
		if e.AdmittedAt.IsZero() {
			if err := rules.RestoreEntry(wu.Entry{User: wu.UserID(e.UserID), Seq: e.Seq, SeatsWanted: 1, JoinedAt: e.JoinedAt, Deadline: e.JoinedAt.Add(7 * 24 * time.Hour)}); err != nil {
				return nil, err
			}
		}
	}
	rules.RestoreEnded(snap.RoomEnded == persistence.RoomSoldOut, snap.RoomEnded == persistence.RoomClosed)
	rules.Resume(now)
	return &room{
		rules:     rules,
		admitting: make(map[wu.UserID]bool),
		ended:     ordmap.New[wu.UserID, endedRoomView](0),
	}, nil
}

// roomViewLocked returns user's view of sh's room; false if user is
// neither in it nor ended recently, unless the room sold out or was closed:
// then such a user gets that end, without a sequence.
func (n *Node) roomViewLocked(sh *show, user wu.UserID, now time.Time) (RoomView, bool) {
	r := sh.room
	v := RoomView{Show: sh.id, User: user}
	p := r.rules.Get(user)
	switch {
	case p.State == wu.Admitted && r.admitting[user]:
		v.State, v.Seq, v.JoinedAt = RoomQueued, p.Admission.Seq, p.Admission.JoinedAt
	case p.State == wu.Admitted:
		v.State, v.Seq, v.JoinedAt, v.Deadline = RoomAdmitted, p.Admission.Seq, p.Admission.JoinedAt, p.Admission.Deadline
		v.Token = n.cfg.AdmissionKey.Sign(string(sh.id), user, p.Admission.Deadline)
	case p.State == wu.Queued:
		v.State, v.Seq, v.JoinedAt = RoomQueued, p.Entry.Seq, p.Entry.JoinedAt
		v.Position = p.Position + len(r.admitting)
		v.EstimatedWait = r.rules.EstimatedWait(v.Position, now)
	default:
		e, ok := r.ended.Get(user)
		switch {
		case ok:
			v = e.RoomView
		case r.rules.IsSoldOut():
			// More users may have been queued than the recent ends keep:
			// whoever asks after a sell-out learns it.
			v.State = RoomSoldOut
		case r.rules.IsClosed():
			v.State = RoomClosed
		default:
			return RoomView{}, false
		}
	}
	v.Version = entryVersion(v.Seq, v.State)
	return v, true
}

// rememberRoomEndLocked keeps an ended entry for endedRetention, at most
// maxEnded of them.
func rememberRoomEndLocked(r *room, v RoomView, now time.Time) {
	rememberEnd(r.ended, v.User, endedRoomView{RoomView: v, at: now}, now, func(e endedRoomView) time.Time { return e.at })
}

// enqueueRoomLocked queues a write of sh's room alone.
func (n *Node) enqueueRoomLocked(sh *show, change *persistence.RoomChange, now time.Time) (*persistence.Pending, error) {
	p, err := n.store.Enqueue(persistence.Mutation{Kind: persistence.Room, Epoch: sh.epoch, ShowID: string(sh.id), At: now, Room: change})
	if err != nil {
		return nil, err
	}
	sh.room.writes++
	return p, nil
}

// settleRoom waits for a room write queued by enqueueRoomLocked (see
// settle).
func (n *Node) settleRoom(sh *show, p *persistence.Pending) error {
	return n.settle(sh, p, func(error) { sh.room.writes-- })
}

// lockRoom loads the show for a change of its room and locks it: ErrNoRoom
// for a show without one. The caller leaves the gate and unlocks.
func (n *Node) lockRoom(ctx context.Context, id ar.ShowID, user ar.UserID) (*show, error) {
	if err := validateUser(user); err != nil {
		return nil, err
	}
	if err := validateShowID(id); err != nil {
		return nil, err
	}
	sh, err := n.lockForChange(ctx, id)
	if err != nil {
		return nil, err
	}
	if sh.room == nil || n.cfg.AdmissionKey == nil {
		sh.mu.Unlock()
		n.gate.leave()
		return nil, roomMissing(n, id)
	}
	return sh, nil
}

// roomMissing is ErrNoRoom for show id, saying why.
func roomMissing(n *Node, id ar.ShowID) error {
	if n.cfg.AdmissionKey == nil {
		return fmt.Errorf("show %s: %w on this node: it has no admission key", id, ErrNoRoom)
	}
	return fmt.Errorf("show %s: %w", id, ErrNoRoom)
}

// JoinQueue puts user at the end of the show's waiting room queue and
// answers once the join is durable. A user already queued or admitted gets
// that entry, existed true. Refusals: ErrNoRoom, wu.ErrSoldOut,
// wu.ErrRoomClosed, ErrWaitlistFull beyond maxRoomQueue users. If the
// write was not committed the join is undone in memory; whatever the
// failure, the show is reloaded before its next change.
func (n *Node) JoinQueue(ctx context.Context, id ar.ShowID, user ar.UserID) (RoomView, bool, error) {
	sh, err := n.lockRoom(ctx, id, user)
	if err != nil {
		return RoomView{}, false, err
	}
	defer n.gate.leave()
	u := wu.UserID(user)
	var (
		v       RoomView
		existed bool
		e       wu.Entry
		p       *persistence.Pending
		joined  func() // ends the join's mark in flight
		jerr    error  // the join's refusal
	)
	// A user whose join is still being written is not answered from memory
	// (existed) before that write is durable: the join waits for it, and
	// decides again on what memory then holds (reloaded if it failed).
	sh, err = n.untilDecided(ctx, sh, func(sh *show) <-chan struct{} {
		if sh.room == nil {
			jerr = roomMissing(n, id)
			return nil
		}
		if ch := sh.room.joining[u]; ch != nil {
			return ch
		}
		v, existed, e, p, jerr = n.joinQueueLocked(sh, u)
		if p != nil {
			joined = sh.room.joining.begin(u)
		}
		return nil
	})
	if err == nil {
		err = jerr
	}
	if err != nil || p == nil {
		return v, existed, err
	}

	err = n.settleRoom(sh, p)
	sh.mu.Lock()
	if err != nil && !unknownOutcome(err) {
		if p := sh.room.rules.Get(u); p.State == wu.Queued && p.Entry.Seq == e.Seq {
			sh.room.rules.Leave(u, n.now()) //nolint:errcheck // it is queued
			sh.room.waiters.wakeLocked(u)
		}
	}
	joined()
	if err == nil {
		v, _ = n.roomViewLocked(sh, u, n.now())
	}
	sh.mu.Unlock()
	if err != nil {
		return RoomView{}, false, err
	}
	n.metrics.room("joined", 1)
	return v, false, nil
}

// joinQueueLocked decides user's join of sh's room, sh locked: the user's
// view unless a write was queued, whether the user was queued or admitted
// already (existed), and the entry and the write queued for a new join.
func (n *Node) joinQueueLocked(sh *show, u wu.UserID) (v RoomView, existed bool, e wu.Entry, p *persistence.Pending, err error) {
	now := n.now()
	place, existed, err := sh.room.rules.Join(u, now)
	if err == nil && !existed && sh.room.rules.Queued() > maxRoomQueue {
		sh.room.rules.Leave(u, now) //nolint:errcheck // just joined, at the tail
		err = fmt.Errorf("%w: %d users in the waiting room", ErrWaitlistFull, maxRoomQueue)
	}
	if err != nil || existed {
		v, _ = n.roomViewLocked(sh, u, now)
		return v, existed, wu.Entry{}, nil, err
	}
	e = place.Entry
	change := &persistence.RoomChange{
		Put:    []persistence.RoomEntry{{UserID: string(u), Seq: e.Seq, JoinedAt: e.JoinedAt}},
		Events: []persistence.WaitEvent{{UserID: string(u), Kind: "ROOM_JOINED", At: now}},
	}
	p, err = n.enqueueRoomLocked(sh, change, now)
	if err != nil {
		sh.room.rules.Leave(u, now) //nolint:errcheck // just joined, at the tail
		return RoomView{}, false, wu.Entry{}, nil, err
	}
	sh.room.ended.Delete(u)
	return RoomView{}, false, e, p, nil
}

// LeaveQueue takes user out of the show's waiting room, durably: out of the
// queue, or, admitted, out of the shoppers counted under the cap (their
// token then admits no more holds). wu.ErrNotWaiting if user is neither.
func (n *Node) LeaveQueue(ctx context.Context, id ar.ShowID, user ar.UserID) (RoomView, error) {
	sh, err := n.lockRoom(ctx, id, user)
	if err != nil {
		return RoomView{}, err
	}
	defer n.gate.leave()
	now := n.now()
	u := wu.UserID(user)
	before, _ := n.roomViewLocked(sh, u, now)
	if _, err := sh.room.rules.Leave(u, now); err != nil {
		sh.mu.Unlock()
		return RoomView{}, fmt.Errorf("%w: %s on show %s", err, user, id)
	}
	delete(sh.room.admitting, u)
	v := before
	v.State, v.Position, v.EstimatedWait = RoomLeft, 0, 0
	rememberRoomEndLocked(sh.room, v, now)
	change := &persistence.RoomChange{Delete: []string{string(u)}, Events: []persistence.WaitEvent{{UserID: string(u), Kind: "ROOM_LEFT", At: now}}}
	p, err := n.enqueueRoomLocked(sh, change, now)
	if err != nil {
		sh.stale = true // memory is ahead: reload before the next change
		sh.mu.Unlock()
		return RoomView{}, err
	}
	sh.room.waiters.wakeLocked(u)
	sh.mu.Unlock()
	if err := n.settleRoom(sh, p); err != nil {
		return RoomView{}, err
	}
	n.metrics.room("left", 1)
	v.Version = entryVersion(v.Seq, v.State)
	return v, nil
}

// RoomEntry returns user's entry in the show's waiting room, from memory,
// without walking the queue. wu.ErrNotWaiting if the user is neither in
// it nor ended recently and the room is neither sold out nor closed (see
// roomViewLocked).
func (n *Node) RoomEntry(ctx context.Context, id ar.ShowID, user ar.UserID) (RoomView, error) {
	v, _, _, err := n.roomEntry(ctx, id, user, false)
	return v, err
}

// WaitRoomEntry is RoomEntry and a channel closed at the entry's next
// change of state (an admission, an end, the show unloaded); a position
// that moves does not close it. The caller calls stop when it no longer
// waits.
func (n *Node) WaitRoomEntry(ctx context.Context, id ar.ShowID, user ar.UserID) (v RoomView, changed <-chan struct{}, stop func(), err error) {
	return n.roomEntry(ctx, id, user, true)
}

func (n *Node) roomEntry(ctx context.Context, id ar.ShowID, user ar.UserID, wait bool) (RoomView, <-chan struct{}, func(), error) {
	if err := validateUser(user); err != nil {
		return RoomView{}, nil, nil, err
	}
	if err := validateShowID(id); err != nil {
		return RoomView{}, nil, nil, err
	}
	sh, err := n.show(ctx, id, false)
	if err != nil {
		return RoomView{}, nil, nil, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.room == nil || n.cfg.AdmissionKey == nil {
		return RoomView{}, nil, nil, roomMissing(n, id)
	}
	u := wu.UserID(user)
	v, ok := n.roomViewLocked(sh, u, n.now())
	if !ok {
		return RoomView{}, nil, nil, fmt.Errorf("%w: %s in the waiting room of show %s", wu.ErrNotWaiting, user, id)
	}
	if !wait {
		return v, nil, nil, nil
	}
	changed, stop := sh.room.waiters.waitLocked(sh, u)
	return v, changed, stop, nil
}

// admitRooms lapses the due admissions and admits the next users of every
// loaded show's waiting room, at now: each show's changes are written in
// one mutation, and the admissions show only once it commits. A node
// without an admission key admits nobody. It returns the number of users
// admitted. The expiry loop calls it every
// ExpiryInterval; tests call it through ExpireDue.
func (n *Node) admitRooms(shows []*show, now time.Time) int {
	type written struct {
		sh    *show
		p     *persistence.Pending
		users []wu.UserID
	}
	var writes []written
	admitted, queued, shoppers := 0, 0, 0
	for _, sh := range shows {
		sh.mu.Lock()
		if sh.room != nil {
			queued += sh.room.rules.Queued()
			shoppers += sh.room.rules.Active()
		}
		if sh.room == nil || sh.dropped || sh.stale || n.cfg.AdmissionKey == nil {
			sh.mu.Unlock()
			continue
		}
		var ending []RoomView // the admissions that lapse, as they were
		for a := range sh.room.rules.Admissions() {
			if a.Deadline.After(now) {
				break
			}
			if v, ok := n.roomViewLocked(sh, a.User, now); ok {
				ending = append(ending, v)
			}
		}
		lapsed := sh.room.rules.Lapse(now)
		change := &persistence.RoomChange{}
		if available, held, _, offered := sh.rules.Counts(); available+held+offered == 0 && !sh.room.rules.IsSoldOut() {
			// Every seat is booked: everyone queued is told, and nobody
			// more is admitted.
			var ended []RoomView
			for e := range sh.room.rules.Entries() {
				if v, ok := n.roomViewLocked(sh, e.User, now); ok {
					ended = append(ended, v)
				}
			}
			for _, l := range sh.room.rules.SellOut(now) {
				change.Delete = append(change.Delete, string(l.User))
				change.Events = append(change.Events, persistence.WaitEvent{UserID: string(l.User), Kind: "ROOM_SOLD_OUT", At: now})
			}
			for _, v := range ended {
				v.State, v.Position, v.EstimatedWait = RoomSoldOut, 0, 0
				rememberRoomEndLocked(sh.room, v, now)
			}
			sh.room.waiters.wakeAllLocked()
			change.End = persistence.RoomSoldOut
			n.metrics.room("sold_out", len(ended))
		}
		adm := sh.room.rules.Admit(now)
		if len(lapsed) == 0 && len(adm) == 0 && change.End == "" {
			sh.mu.Unlock()
			continue
		}
		n.metrics.room("lapsed", len(lapsed))
		for _, l := range lapsed {
			change.Delete = append(change.Delete, string(l.User))
			change.Events = append(change.Events, persistence.WaitEvent{UserID: string(l.User), Kind: "ROOM_LAPSED", At: now})
			delete(sh.room.admitting, l.User)
			sh.room.waiters.wakeLocked(l.User)
		}
		for _, v := range ending {
			v.State, v.Token = RoomLapsed, ""
			rememberRoomEndLocked(sh.room, v, now)
		}
		users := make([]wu.UserID, len(adm))
		for i, a := range adm {
			users[i] = a.User
			n.metrics.roomWait.Observe(a.AdmittedAt.Sub(a.JoinedAt).Seconds())
			sh.room.admitting[a.User] = true
			change.Put = append(change.Put, persistence.RoomEntry{UserID: string(a.User), Seq: a.Seq, JoinedAt: a.JoinedAt, AdmittedAt: a.AdmittedAt, Deadline: a.Deadline})
			change.Events = append(change.Events, persistence.WaitEvent{UserID: string(a.User), Kind: "ROOM_ADMITTED", At: now})
		}
		p, err := n.enqueueRoomLocked(sh, change, now)
		if err != nil {
			sh.stale = true // memory is ahead: reload before the next change
			sh.mu.Unlock()
			n.cfg.Logger.Warn("waiting room admissions not written; show reloads", "show", sh.id, "err", err)
			continue
		}
		sh.mu.Unlock()
		writes = append(writes, written{sh, p, users})
		admitted += len(adm)
	}
	for _, w := range writes {
		if err := n.settleRoom(w.sh, w.p); err != nil {
			n.cfg.Logger.Warn("waiting room admissions not written; show reloads", "show", w.sh.id, "err", err)
			continue
		}
		w.sh.mu.Lock()
		for _, u := range w.users {
			delete(w.sh.room.admitting, u)
			w.sh.room.waiters.wakeLocked(u)
		}
		w.sh.mu.Unlock()
		n.metrics.room("admitted", len(w.users))
	}
	n.metrics.roomQueued.Set(float64(queued))
	n.metrics.roomShoppers.Set(float64(shoppers))
	return admitted
}

// finishShopperLocked ends user's admission in sh's room after a booking:
// the user no longer counts under the cap, and their token admits no more
// holds (see admitted). It returns the room write it queued, or nil when user is not
// an admitted shopper (or the write could not be queued: the show is then
// stale and reloads before its next change).
func (n *Node) finishShopperLocked(sh *show, user ar.UserID, now time.Time) *persistence.Pending {
	if sh.room == nil {
		return nil
	}
	u := wu.UserID(user)
	v, ok := n.roomViewLocked(sh, u, now)
	if !ok || v.State != RoomAdmitted {
		return nil
	}
	sh.room.rules.Finish(u, now)
	v.State, v.Token = RoomDone, ""
	rememberRoomEndLocked(sh.room, v, now)
	change := &persistence.RoomChange{Delete: []string{string(u)}, Events: []persistence.WaitEvent{{UserID: string(u), Kind: "ROOM_DONE", At: now}}}
	p, err := n.enqueueRoomLocked(sh, change, now)
	if err != nil {
		sh.stale = true
		return nil
	}
	sh.room.waiters.wakeLocked(u)
	n.metrics.room("done", 1)
	return p
}

// RoomStatus is a waiting room's settings and counts, as SetWaitingRoom
// answers them.
type RoomStatus struct {
	Config           wu.RoomConfig
	Closed           bool
	Queued, Shoppers int
}

// SetWaitingRoom is the operator's brake on a show's waiting room: a new
// rate (if rate is not nil) and cap (if maxActive is not nil) from now on,
// or the room closed (everyone queued ends RoomClosed; the show's holds
// need no token any more). It answers once the change is durable. ErrNoRoom,
// ErrInvalid for a rate or cap out of range (nothing changes then).
func (n *Node) SetWaitingRoom(ctx context.Context, id ar.ShowID, rate *float64, maxActive *int, closeRoom bool) (RoomStatus, error) {
	if err := validateShowID(id); err != nil {
		return RoomStatus{}, err
	}
	sh, err := n.lockForChange(ctx, id)
	if err != nil {
		return RoomStatus{}, err
	}
	defer n.gate.leave()
	if sh.room == nil {
		sh.mu.Unlock()
		return RoomStatus{}, roomMissing(n, id)
	}
	now := n.now()
	rules := sh.room.rules
	cfg := rules.Config()
	if rate != nil {
		cfg.AdmitPerSecond = *rate
	}
	if maxActive != nil {
		cfg.MaxActive = *maxActive
	}
	if err := cfg.Check(); err != nil {
		sh.mu.Unlock()
		return RoomStatus{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	rules.SetRate(cfg.AdmitPerSecond, now) //nolint:errcheck // checked above
	rules.SetMaxActive(cfg.MaxActive)      //nolint:errcheck // checked above
	change := &persistence.RoomChange{Rate: &persistence.WaitingRoom{AdmitPerSecond: cfg.AdmitPerSecond, MaxActive: cfg.MaxActive}}
	if closeRoom && !rules.IsClosed() {
		var ended []RoomView
		for e := range rules.Entries() {
			if v, ok := n.roomViewLocked(sh, e.User, now); ok {
				ended = append(ended, v)
			}
		}
		for _, l := range rules.Close(now) {
			change.Delete = append(change.Delete, string(l.User))
			change.Events = append(change.Events, persistence.WaitEvent{UserID: string(l.User), Kind: "ROOM_CLOSED", At: now})
		}
		for _, v := range ended {
			v.State, v.Position, v.EstimatedWait = RoomClosed, 0, 0
			rememberRoomEndLocked(sh.room, v, now)
		}
		sh.room.waiters.wakeAllLocked()
		change.End = persistence.RoomClosed
	}
	p, err := n.enqueueRoomLocked(sh, change, now)
	if err != nil {
		sh.stale = true // memory is ahead: reload before the next change
		sh.mu.Unlock()
		return RoomStatus{}, err
	}
	sh.mu.Unlock()
	if err := n.settleRoom(sh, p); err != nil {
		return RoomStatus{}, err
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return RoomStatus{Config: sh.room.rules.Config(), Closed: sh.room.rules.IsClosed(), Queued: sh.room.rules.Queued(), Shoppers: sh.room.rules.Active()}, nil
}
