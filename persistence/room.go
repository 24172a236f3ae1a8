package persistence

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// RoomEntry is one user's row in a show's waiting room: queued while
// AdmittedAt and Deadline are zero, else admitted until Deadline. The
// database refuses, as ErrConflict, one of the two without the other.
type RoomEntry struct {
	UserID string
	// Seq is the join order within the show, as the caller keeps it.
	Seq        int64
	JoinedAt   time.Time
	AdmittedAt time.Time
	Deadline   time.Time
}

// Ends of a waiting room (RoomChange.End, Snapshot.RoomEnded).
const (
	RoomSoldOut = "SOLD_OUT"
	RoomClosed  = "CLOSED"
)

// RoomChange is what a mutation does to its show's waiting room, in the
// same transaction as the rest of the mutation. Where several mutations of
// one transaction name the same user, the last in queue order wins.
type RoomChange struct {
	// Put rows are written as given: inserted, or replacing the user's row.
	Put []RoomEntry
	// Delete names users whose rows are deleted; missing rows are fine. A
	// user is not both in Put and in Delete of one change.
	Delete []string
	// End, if set (RoomSoldOut or RoomClosed), records that the room
	// stopped.
	End string
	// Rate, if set, replaces the room's admission rate and cap (the
	// operator's brake); its OpensAt and ShoppingWindow are not written.
	Rate   *WaitingRoom
	Events []WaitEvent
}

// roomRows gathers the room changes of a transaction's mutations,
// coalesced as waitlistRows are: the last Put or Delete of each (show,
// user), the last End of each show.
type roomRows struct {
	lastOps[RoomEntry]
	ends  map[string]string
	rates map[string]*WaitingRoom
}

// addRoom adds m's room change, whose events join the batch's audit events.
func (st *statements) addRoom(m *Mutation) {
	c, r := m.Room, &st.room
	for i := range c.Put {
		r.set(showUser{m.ShowID, c.Put[i].UserID}, &c.Put[i])
	}
	for _, u := range c.Delete {
		r.set(showUser{m.ShowID, u}, nil)
	}
	if c.Rate != nil {
		if r.rates == nil {
			r.rates = make(map[string]*WaitingRoom)
		}
		r.rates[m.ShowID] = c.Rate
	}
	if c.End != "" {
		if r.ends == nil {
			r.ends = make(map[string]string)
		}
		r.ends[m.ShowID] = c.End
	}
	st.addEvents(m, c.Events)
}

// queue queues the statements of the coalesced changes, none if there are
// none: a DELETE of the rows whose last operation is a Delete, an upsert of
// the Puts, and UPDATEs of the shows whose room's rate changed or ended.
func (r *roomRows) queue(b *pgx.Batch, checks []rowCheck) []rowCheck {
	var dShow, dUser, pShow, pUser []string
	var pSeq []int64
	var pJoined []time.Time
	var pAdmitted, pDeadline []*time.Time
	for _, op := range r.ops {
		if op.put == nil {
			dShow = append(dShow, op.key.show)
			dUser = append(dUser, op.key.user)
			continue
		}
		e := op.put
		pShow = append(pShow, op.key.show)
		pUser = append(pUser, op.key.user)
		pSeq = append(pSeq, e.Seq)
		pJoined = append(pJoined, e.JoinedAt)
		pAdmitted = append(pAdmitted, nullTime(e.AdmittedAt))
		pDeadline = append(pDeadline, nullTime(e.Deadline))
	}
	if len(dShow) > 0 {
		b.Queue(`DELETE FROM room_entries r USING unnest($1::text[], $2::text[]) AS u(show_id, user_id)
			WHERE r.show_id = u.show_id AND r.user_id = u.user_id`, dShow, dUser)
		checks = append(checks, rowCheck{-1, "room deletes"})
	}
	if len(pShow) > 0 {
		b.Queue(`INSERT INTO room_entries (show_id, user_id, seq, joined_at, admitted_at, deadline)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[])
			ON CONFLICT (show_id, user_id) DO UPDATE SET seq = EXCLUDED.seq, joined_at = EXCLUDED.joined_at,
				admitted_at = EXCLUDED.admitted_at, deadline = EXCLUDED.deadline`,
			pShow, pUser, pSeq, pJoined, pAdmitted, pDeadline)
		checks = append(checks, rowCheck{int64(len(pShow)), "room puts"})
	}
	if len(r.rates) > 0 {
		var show []string
		var rate []float64
		var maxActive []int64
		for s, w := range r.rates {
			show, rate, maxActive = append(show, s), append(rate, w.AdmitPerSecond), append(maxActive, int64(w.MaxActive))
		}
		b.Queue(`UPDATE shows s SET room_admit_per_second = u.rate, room_max_active = u.max_active
			FROM unnest($1::text[], $2::float8[], $3::bigint[]) AS u(show_id, rate, max_active)
			WHERE s.show_id = u.show_id AND s.room_opens_at IS NOT NULL`, show, rate, maxActive)
		checks = append(checks, rowCheck{int64(len(show)), "room rates"})
	}
	if len(r.ends) > 0 {
		var show, end []string
		for s, e := range r.ends {
			show, end = append(show, s), append(end, e)
		}
		b.Queue(`UPDATE shows s SET room_ended = u.ended FROM unnest($1::text[], $2::text[]) AS u(show_id, ended)
			WHERE s.show_id = u.show_id`, show, end)
		checks = append(checks, rowCheck{int64(len(show)), "room ends"})
	}
	return checks
}

// loadRoom reads a show's waiting room in LoadShow's transaction.
func loadRoom(ctx context.Context, tx pgx.Tx, showID string, snap *Snapshot) error {
	if err := tx.QueryRow(ctx, `SELECT coalesce(room_ended, '') FROM shows WHERE show_id = $1`, showID).Scan(&snap.RoomEnded); err != nil {
		return err
	}
	rows, _ := tx.Query(ctx, `SELECT user_id, seq, joined_at, admitted_at, deadline
		FROM room_entries WHERE show_id = $1 ORDER BY seq`, showID)
	var err error
	snap.Room, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (RoomEntry, error) {
		var e RoomEntry
		var admitted, deadline *time.Time
		err := r.Scan(&e.UserID, &e.Seq, &e.JoinedAt, &admitted, &deadline)
		if admitted != nil {
			e.AdmittedAt = *admitted
		}
		if deadline != nil {
			e.Deadline = *deadline
		}
		return e, err
	})
	return err
}
