package persistence

import (
	"context"
	"fmt"
)

// Ownership names a show and the epoch at which this node owns it.
type Ownership struct {
	ShowID string
	Epoch  int64
}

// ReleaseShows gives up this node's ownership of shows, in one statement:
// each row still naming this node at the given epoch is marked released (no
// owner). Rows another node has taken since are left alone. The next owner
// takes a show by raising its epoch, as from any other state.
func (s *Store) ReleaseShows(ctx context.Context, shows []Ownership) error {
	if len(shows) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	ids := make([]string, len(shows))
	epochs := make([]int64, len(shows))
	for i, o := range shows {
		ids[i], epochs[i] = o.ShowID, o.Epoch
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE show_owners o SET owner_node = '', updated_at = now()
		FROM unnest($1::text[], $2::bigint[]) AS u(show_id, epoch)
		WHERE o.show_id = u.show_id AND o.epoch = u.epoch AND o.owner_node = $3`, ids, epochs, s.cfg.NodeID)
	if err != nil {
		return fmt.Errorf("release %d shows: %w", len(shows), classify(err))
	}
	return nil
}
