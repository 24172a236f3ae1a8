package persistence

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Ownership of a show is its show_owners row: the owner node, the epoch and
// the lease's end, by the database's clock (migrations/005_leases.sql).
//
// What is guaranteed, and by what:
//   - Fencing. AcquireShow locks the show's row FOR UPDATE and raises the
//     epoch, and every transaction of the writer locks the rows of its
//     shows FOR KEY SHARE and commits only the mutations carrying the
//     current epoch. A take waits for the writer transactions that hold
//     the lock, and a writer transaction that locks the row after the take
//     reads the new epoch. So once AcquireShow has returned epoch e, no
//     write carrying an older epoch commits: this holds whatever the
//     leases, the clocks or the network do. Renewals and releases change
//     neither the epoch nor a key: they lock the rows FOR NO KEY UPDATE,
//     which the writer's lock does not conflict with, so neither waits for
//     the other (a renewal of many shows would otherwise hold the rows it
//     locked first while it waited for a busy show's transaction, and stall
//     the writes of those shows meanwhile).
//   - Leases. A show moves to another node only when its lease has run out
//     or it was released. A lease is not what makes writes safe — the epoch
//     is — it keeps a show from moving back and forth between nodes that
//     disagree about who should own it: the one that can reach the database
//     and renews keeps it.
//
// Every time of a lease is the database's: clock_timestamp() when a row is
// decided, so a statement that waited for a row lock (behind a writer's
// transaction) neither judges a lease by, nor starts one from, the moment it
// was sent.

// maxTakes bounds AcquireShow's attempts when the row changes between its
// take and the read that explains a refusal.
const maxTakes = 3

// ListOwnershipsLimit is the most rows ListOwnerships returns.
const ListOwnershipsLimit = 10000

// Ownership names a show and the epoch at which this node owns it.
type Ownership struct {
	ShowID string
	Epoch  int64
}

// OwnerInfo is a show's ownership row as read.
type OwnerInfo struct {
	ShowID string
	// Node is the owner; empty if the show was released.
	Node  string
	Epoch int64
	// LeaseRemaining is how long the lease had still to run when it was
	// read, by the database's clock; zero if it has run out or the show was
	// released.
	LeaseRemaining time.Duration
}

// LeaseDuration returns Config.LeaseDuration (its default if zero), for a
// caller that schedules renewals.
func (s *Store) LeaseDuration() time.Duration { return s.cfg.LeaseDuration }

// lockSQL locks a show's ownership row, if it has one, against the writer's
// transactions (FOR KEY SHARE), which an epoch raised by ON CONFLICT DO
// UPDATE alone would not wait for: it changes no key.
const lockSQL = `SELECT 1 FROM show_owners WHERE show_id = $1 FOR UPDATE`

// takeSQL is AcquireShow's statement, after lockSQL in the same
// transaction. ON CONFLICT DO UPDATE locks the existing row before it
// evaluates the WHERE on its newest version, so two takes of the same show
// are serialized: the second sees the first's fresh lease and returns no
// row. A first take of a show with no row inserts at
// epoch 1; a concurrent first take waits for that insert and then meets its
// lease the same way. No row is returned either when the show does not
// exist. EXCLUDED.lease_until is not reused in the update: it was computed
// before the wait for the lock.
const takeSQL = `
	INSERT INTO show_owners AS o (show_id, owner_node, epoch, lease_until)
	SELECT show_id, $2, 1, clock_timestamp() + $3::interval FROM shows WHERE show_id = $1
	ON CONFLICT (show_id) DO UPDATE
	SET owner_node = EXCLUDED.owner_node, epoch = o.epoch + 1,
		lease_until = clock_timestamp() + $3::interval, updated_at = now()
	WHERE o.owner_node = '' OR o.owner_node = EXCLUDED.owner_node OR o.lease_until <= clock_timestamp()
	RETURNING o.epoch`

// AcquireShow makes this node the show's owner and returns the new epoch. It
// takes the show — raising the epoch, naming this node, and leasing it for
// Config.LeaseDuration from the database's clock — only if no node owned it
// yet (epoch 1), it was released, its lease has run out, or the row already
// names this node: a reload by the same node raises the epoch too, fencing
// its own older writes. From the take's commit on, writes carrying an older
// epoch fail with ErrNotOwner.
//
// When another node's lease is running it fails with a *LeasedError
// (ErrLeased) and changes nothing. ErrNotFound if there is no such show;
// ErrUnavailable if the database could not be reached — the take may then
// have committed: an epoch this node never learned only fences it.
func (s *Store) AcquireShow(ctx context.Context, showID string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		var epoch int64
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, lockSQL, showID); err != nil {
				return err
			}
			return tx.QueryRow(ctx, takeSQL, showID, s.cfg.NodeID, s.cfg.LeaseDuration).Scan(&epoch)
		})
		if err == nil {
			return epoch, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("acquire show %s: %w", showID, classify(err))
		}
		// A second statement, because the take's own snapshot predates the
		// lock it may have waited for: it could not see the row that
		// refused it.
		info, err := s.owner(ctx, showID)
		if err != nil {
			return 0, fmt.Errorf("acquire show %s: %w", showID, err) // ErrNotFound: rows need a show
		}
		held := info.Node != "" && info.Node != s.cfg.NodeID && info.LeaseRemaining > 0
		if held || attempt == maxTakes {
			return 0, fmt.Errorf("acquire show %s: %w", showID,
				&LeasedError{Owner: info.Node, Epoch: info.Epoch, Remaining: info.LeaseRemaining})
		}
		// The lease ran out, or the show was released, since the take.
	}
}

// RenewLeases extends the lease of every given show that this node still
// owns at the given epoch to Config.LeaseDuration from the database's clock
// — also when the lease had run out, if no other node took the show since —
// in one statement. It changes no epoch and no owner. A renewed lease runs
// at least until LeaseDuration after RenewLeases was called, on a clock
// that keeps the database's pace.
//
// lost are the shows not renewed, in the order given: another node took
// them, they were released, their epoch is not the given one, or they have
// no ownership row. This node no longer owns them — its writes for them
// fail with ErrNotOwner — and should drop them at once. Empty input sends no
// query.
//
// On an error (ErrUnavailable: the database could not be reached or did not
// answer within Config.QueryTimeout) lost is nil: which leases were renewed
// is unknown. Writes stay safe without renewals, since they are fenced by
// epoch, not by lease. What a node that cannot renew no longer knows is
// whether it still owns its shows once their leases may have run out —
// LeaseDuration after its last successful renewal was called — so answers
// it gives from memory alone may be stale from then on. A caller that must
// bound that stops answering for the shows at that point.
func (s *Store) RenewLeases(ctx context.Context, shows []Ownership) (lost []Ownership, err error) {
	if len(shows) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	ids, epochs := ownershipColumns(shows)
	// The rows are locked in show ID order, as ReleaseShows locks them, so
	// a renewal and a release of overlapping shows cannot deadlock.
	rows, _ := s.pool.Query(ctx, mineInOrder+`
		UPDATE show_owners o SET lease_until = clock_timestamp() + $4::interval
		FROM mine WHERE o.show_id = mine.show_id
		RETURNING o.show_id, o.epoch`, ids, epochs, s.cfg.NodeID, s.cfg.LeaseDuration)
	renewed := make(map[Ownership]bool, len(shows))
	var o Ownership
	if _, err := pgx.ForEachRow(rows, []any{&o.ShowID, &o.Epoch}, func() error {
		renewed[o] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(shows), classify(err))
	}
	for _, o := range shows {
		if !renewed[o] {
			lost = append(lost, o)
		}
	}
	return lost, nil
}

// mineInOrder selects, as "mine", the ownership rows of the shows and
// epochs $1, $2 that still name the node $3, locked in show ID order:
// renewals and releases lock them alike (and the writer in the same order),
// so none of them can deadlock with another.
const mineInOrder = `
		WITH mine AS (
			SELECT o.show_id FROM show_owners o
			JOIN unnest($1::text[], $2::bigint[]) AS u(show_id, epoch) ON o.show_id = u.show_id AND o.epoch = u.epoch
			WHERE o.owner_node = $3
			ORDER BY o.show_id
			FOR NO KEY UPDATE OF o
		)`

// ReleaseShows gives up this node's ownership of shows, in one statement:
// each row still naming this node at the given epoch is marked released (no
// owner, the lease ended), so the next AcquireShow of any node takes it at
// once, raising its epoch. Rows another node has taken since are left alone.
func (s *Store) ReleaseShows(ctx context.Context, shows []Ownership) error {
	if len(shows) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	ids, epochs := ownershipColumns(shows)
	_, err := s.pool.Exec(ctx, mineInOrder+`
		UPDATE show_owners o SET owner_node = '', lease_until = '-infinity', updated_at = now()
		FROM mine WHERE o.show_id = mine.show_id`, ids, epochs, s.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("release %d shows: %w", len(shows), classify(err))
	}
	return nil
}

func ownershipColumns(shows []Ownership) (ids []string, epochs []int64) {
	ids = make([]string, len(shows))
	epochs = make([]int64, len(shows))
	for i, o := range shows {
		ids[i], epochs[i] = o.ShowID, o.Epoch
	}
	return ids, epochs
}

// ownerColumns reads an OwnerInfo; the lease's remainder in microseconds,
// zero once it has run out (PostgreSQL before 17 cannot subtract
// '-infinity').
const ownerColumns = `show_id, owner_node, epoch,
	CASE WHEN lease_until > now() THEN (extract(epoch FROM lease_until - now()) * 1000000)::bigint ELSE 0 END`

func scanOwner(row pgx.Row) (OwnerInfo, error) {
	var info OwnerInfo
	var us int64
	err := row.Scan(&info.ShowID, &info.Node, &info.Epoch, &us)
	info.LeaseRemaining = time.Duration(us) * time.Microsecond
	return info, err
}

// Owner returns the show's ownership row. ErrNotFound if no node ever
// acquired it (or there is no such show).
func (s *Store) Owner(ctx context.Context, showID string) (OwnerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	info, err := s.owner(ctx, showID)
	if err != nil {
		return OwnerInfo{}, fmt.Errorf("owner of %s: %w", showID, err)
	}
	return info, nil
}

// owner is Owner under the caller's deadline, with a classified error.
func (s *Store) owner(ctx context.Context, showID string) (OwnerInfo, error) {
	info, err := scanOwner(s.pool.QueryRow(ctx, `SELECT `+ownerColumns+` FROM show_owners WHERE show_id = $1`, showID))
	if err != nil {
		return OwnerInfo{}, classify(err)
	}
	return info, nil
}

// ListOwnerships returns, for an operator, the ownership rows naming node —
// the shows it owns or owned until its lease ran out — or every row,
// released ones included, when node is empty; by show ID, at most
// ListOwnershipsLimit of them.
func (s *Store) ListOwnerships(ctx context.Context, node string) ([]OwnerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT `+ownerColumns+` FROM show_owners
		WHERE $1 = '' OR owner_node = $1
		ORDER BY show_id
		LIMIT $2`, node, ListOwnershipsLimit)
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OwnerInfo, error) { return scanOwner(r) })
	if err != nil {
		return nil, fmt.Errorf("list ownerships: %w", classify(err))
	}
	return list, nil
}
