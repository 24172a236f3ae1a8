package engine

import (
	"context"
	"time"

	"github.com/boxoffice/boxoffice/persistence"
)

// Store is what a node needs of the database. *persistence.Store is the
// implementation; its errors (persistence.ErrUnavailable, ErrNotOwner, ...)
// are the contract.
type Store interface {
	CreateShow(ctx context.Context, sh persistence.Show) (persistence.Show, error)
	GetShow(ctx context.Context, id string) (persistence.Show, error)
	AcquireShow(ctx context.Context, showID string) (epoch int64, err error)
	LoadShow(ctx context.Context, showID string) (persistence.Snapshot, error)
	// ReleaseShows gives up this node's ownership of shows it no longer
	// serves.
	ReleaseShows(ctx context.Context, shows []persistence.Ownership) error
	// RenewLeases renews the leases of shows this node owns, and returns
	// those it no longer owns.
	RenewLeases(ctx context.Context, shows []persistence.Ownership) (lost []persistence.Ownership, err error)
	// LeaseDuration is how long a take or a renewal keeps a lease, at
	// least, from when it was asked for.
	LeaseDuration() time.Duration
	// Enqueue queues a mutation without blocking; Pending.Wait gives its
	// outcome — committed, not committed, or unknown — within the store's
	// CommitTimeout.
	Enqueue(m persistence.Mutation) (*persistence.Pending, error)
	GetReservation(ctx context.Context, showID, id string) (persistence.Reservation, error)
	ListUserReservations(ctx context.Context, userID, showID string, after *persistence.ReservationCursor, limit int) ([]persistence.Reservation, error)
	ListEvents(ctx context.Context, f persistence.EventFilter) ([]persistence.Event, error)
	ListOwnerships(ctx context.Context, node string) ([]persistence.OwnerInfo, error)
	Ping(ctx context.Context) error
}

var _ Store = (*persistence.Store)(nil)
