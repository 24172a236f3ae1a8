package persistence

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Defaults of a show's waitlist timings (Show.OfferWindow, Show.MaxWait).
const (
	DefaultOfferWindow = 2 * time.Minute
	DefaultMaxWait     = time.Hour
)

// WaitEntry is one waiting user's row: waiting, or holding a turn
// (OfferSeats not empty). The database refuses, as ErrConflict, an entry
// whose SeatsWanted is not 1-10, that offers more than 10 seats, or whose
// OfferSeats, OfferedAt and OfferDeadline are not all empty/zero or all set.
type WaitEntry struct {
	UserID string
	// Seq is the join order within the show: unique per show and
	// increasing, as the caller keeps it (the database does not check).
	Seq         int64
	SeatsWanted int
	JoinedAt    time.Time
	// Deadline is when the entry times out.
	Deadline time.Time
	// OfferSeats are the turn's offered seats; empty (nil from LoadShow)
	// while waiting. Seat IDs never contain a comma.
	OfferSeats []string
	// OfferedAt and OfferDeadline are zero while waiting.
	OfferedAt     time.Time
	OfferDeadline time.Time
}

// WaitEvent is an audit event of the waitlist or the waiting room, written
// to reservation_events with the mutation's show, epoch and this node.
type WaitEvent struct {
	UserID string
	// Kind is stored as given, e.g. "WAIT_JOINED", "WAIT_TURN",
	// "WAIT_TAKEN", "WAIT_LAPSED", "WAIT_LEFT", "WAIT_SOLD_OUT",
	// "WAIT_TIMED_OUT".
	Kind string
	// SeatIDs may be empty.
	SeatIDs []string
	// ReservationID is the hold that took a turn, or "".
	ReservationID string
	At            time.Time
}

// WaitlistChange is what a mutation does to its show's waitlist, in the
// same transaction as the rest of the mutation. Where several mutations
// committed in one transaction name the same user or the show's aside, the
// last in queue order wins.
type WaitlistChange struct {
	// Put rows are written as given: inserted, or replacing the user's row.
	Put []WaitEntry
	// Delete names users whose rows are deleted; missing rows are fine. A
	// user is not both in Put and in Delete of one change.
	Delete []string
	// SetAside makes Aside replace the show's set-aside seats (the seats
	// held back for the head of the queue); Aside may be empty.
	SetAside bool
	Aside    []string
	Events   []WaitEvent
}

// showUser is the key of a waitlist row.
type showUser struct{ show, user string }

// waitlistRows gathers the waitlist changes of a transaction's mutations,
// coalesced so that each row is touched once: for each (show, user) the
// last Put or Delete in queue order, for each show the last SetAside. A
// single statement may not touch a row twice (ON CONFLICT DO UPDATE
// refuses to).
type waitlistRows struct {
	lastOps[WaitEntry]
	shows map[string]int // index into aside
	aside []asideOp
}

// lastOps keeps the last operation on each (show, user) row, in order of
// first mention.
type lastOps[T any] struct {
	rows map[showUser]int // index into ops
	ops  []rowOp[T]
}

// rowOp is the last operation on a row: a Put, or a Delete when put is nil.
type rowOp[T any] struct {
	key showUser
	put *T
}

// set makes put (nil: a Delete) the last operation on row k.
func (o *lastOps[T]) set(k showUser, put *T) {
	if i, ok := o.rows[k]; ok {
		o.ops[i].put = put
		return
	}
	if o.rows == nil {
		o.rows = make(map[showUser]int)
	}
	o.rows[k] = len(o.ops)
	o.ops = append(o.ops, rowOp[T]{key: k, put: put})
}

type asideOp struct {
	show  string
	seats []string
}

// addWaitlist adds m's waitlist change, whose events join the batch's
// audit events.
func (st *statements) addWaitlist(m *Mutation) {
	c, w := m.Waitlist, &st.wait
	for i := range c.Put {
		w.set(showUser{m.ShowID, c.Put[i].UserID}, &c.Put[i])
	}
	for _, u := range c.Delete {
		w.set(showUser{m.ShowID, u}, nil)
	}
	if c.SetAside {
		if i, ok := w.shows[m.ShowID]; ok {
			w.aside[i].seats = c.Aside
		} else {
			if w.shows == nil {
				w.shows = make(map[string]int)
			}
			w.shows[m.ShowID] = len(w.aside)
			w.aside = append(w.aside, asideOp{m.ShowID, c.Aside})
		}
	}
	st.addEvents(m, c.Events)
}

// addEvents adds the audit events of m's waitlist or room change.
func (st *statements) addEvents(m *Mutation, events []WaitEvent) {
	for _, e := range events {
		st.vShow = append(st.vShow, m.ShowID)
		st.vID = append(st.vID, e.ReservationID)
		st.vUser = append(st.vUser, e.UserID)
		st.vKind = append(st.vKind, e.Kind)
		st.vSeats = append(st.vSeats, strings.Join(e.SeatIDs, ","))
		st.vRef = append(st.vRef, "")
		st.vEpoch = append(st.vEpoch, m.Epoch)
		st.vAt = append(st.vAt, e.At)
	}
}

// queue queues the statements of the coalesced changes, none if there are
// none: a DELETE of the rows whose last operation is a Delete, an upsert of
// the Puts and an upsert of the asides.
func (w *waitlistRows) queue(b *pgx.Batch, checks []rowCheck) []rowCheck {
	var dShow, dUser []string
	var pShow, pUser, pOffer []string
	var pSeq, pWanted []int64 // bigint, so the database judges any value
	var pJoined, pDeadline []time.Time
	var pOffered, pOfferDeadline []*time.Time
	for _, op := range w.ops {
		if op.put == nil {
			dShow = append(dShow, op.key.show)
			dUser = append(dUser, op.key.user)
			continue
		}
		e := op.put
		pShow = append(pShow, op.key.show)
		pUser = append(pUser, op.key.user)
		pSeq = append(pSeq, e.Seq)
		pWanted = append(pWanted, int64(e.SeatsWanted))
		pJoined = append(pJoined, e.JoinedAt)
		pDeadline = append(pDeadline, e.Deadline)
		pOffer = append(pOffer, strings.Join(e.OfferSeats, ","))
		pOffered = append(pOffered, nullTime(e.OfferedAt))
		pOfferDeadline = append(pOfferDeadline, nullTime(e.OfferDeadline))
	}
	if len(dShow) > 0 {
		b.Queue(`DELETE FROM waitlist_entries w USING unnest($1::text[], $2::text[]) AS u(show_id, user_id)
			WHERE w.show_id = u.show_id AND w.user_id = u.user_id`, dShow, dUser)
		checks = append(checks, rowCheck{-1, "waitlist deletes"})
	}
	if len(pShow) > 0 {
		b.Queue(`INSERT INTO waitlist_entries (show_id, user_id, seq, seats_wanted, joined_at, deadline,
				offer_seats, offered_at, offer_deadline)
			SELECT show_id, user_id, seq, wanted, joined, deadline, string_to_array(offer, ','), offered, offer_deadline
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[],
					$7::text[], $8::timestamptz[], $9::timestamptz[])
				AS u(show_id, user_id, seq, wanted, joined, deadline, offer, offered, offer_deadline)
			ON CONFLICT (show_id, user_id) DO UPDATE SET seq = EXCLUDED.seq, seats_wanted = EXCLUDED.seats_wanted,
				joined_at = EXCLUDED.joined_at, deadline = EXCLUDED.deadline, offer_seats = EXCLUDED.offer_seats,
				offered_at = EXCLUDED.offered_at, offer_deadline = EXCLUDED.offer_deadline`,
			pShow, pUser, pSeq, pWanted, pJoined, pDeadline, pOffer, pOffered, pOfferDeadline)
		checks = append(checks, rowCheck{int64(len(pShow)), "waitlist puts"})
	}
	if len(w.aside) > 0 {
		show, seats := make([]string, len(w.aside)), make([]string, len(w.aside))
		for i, a := range w.aside {
			show[i], seats[i] = a.show, strings.Join(a.seats, ",")
		}
		b.Queue(`INSERT INTO waitlist_aside (show_id, seat_ids)
			SELECT show_id, string_to_array(seats, ',') FROM unnest($1::text[], $2::text[]) AS u(show_id, seats)
			ON CONFLICT (show_id) DO UPDATE SET seat_ids = EXCLUDED.seat_ids`, show, seats)
		checks = append(checks, rowCheck{int64(len(show)), "waitlist aside"})
	}
	return checks
}

// nullTime is nil for the zero time, for a nullable column.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// loadWaitlist reads a show's waitlist in LoadShow's transaction.
func loadWaitlist(ctx context.Context, tx pgx.Tx, showID string, snap *Snapshot) error {
	rows, _ := tx.Query(ctx, `SELECT user_id, seq, seats_wanted, joined_at, deadline, offer_seats, offered_at, offer_deadline
		FROM waitlist_entries WHERE show_id = $1 ORDER BY seq`, showID)
	var err error
	snap.Waiting, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (WaitEntry, error) {
		var e WaitEntry
		var offered, deadline *time.Time
		err := r.Scan(&e.UserID, &e.Seq, &e.SeatsWanted, &e.JoinedAt, &e.Deadline, &e.OfferSeats, &offered, &deadline)
		if len(e.OfferSeats) == 0 {
			e.OfferSeats = nil
		}
		if offered != nil {
			e.OfferedAt = *offered
		}
		if deadline != nil {
			e.OfferDeadline = *deadline
		}
		return e, err
	})
	if err != nil {
		return err
	}
	err = tx.QueryRow(ctx, `SELECT seat_ids FROM waitlist_aside WHERE show_id = $1`, showID).Scan(&snap.Aside)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if len(snap.Aside) == 0 {
		snap.Aside = nil
	}
	return err
}
