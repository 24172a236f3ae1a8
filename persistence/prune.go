package persistence

import (
	"context"
	"fmt"
	"time"
)

// pruneSQL deletes up to $2 idempotency records older than the retention $1.
// Each statement is short, so it holds its row locks briefly. The outer
// condition is not redundant: a key the writer reused after the subquery's
// scan has a new row version, and the condition, rechecked on that version,
// keeps it.
const pruneSQL = `DELETE FROM idempotency_keys
	WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys WHERE created_at <= now() - $1::interval LIMIT $2))
	  AND created_at <= now() - $1::interval`

// PruneIdempotency deletes every idempotency record older than
// Config.IdempotencyRetention by the database's clock (those LoadShow no
// longer returns), in statements of at most Config.PruneBatch rows, each
// bounded by Config.QueryTimeout and committed on its own, until one deletes
// fewer. It returns the number of rows deleted, also when it fails part way
// (ctx done, the database unavailable); rows deleted stay deleted.
func (s *Store) PruneIdempotency(ctx context.Context) (int64, error) {
	start := time.Now()
	var total int64
	for batches := 1; ; batches++ {
		n, err := s.pruneBatch(ctx)
		total += n
		if err != nil {
			return total, fmt.Errorf("prune idempotency keys: %w", classify(err))
		}
		if n < int64(s.cfg.PruneBatch) {
			if total > 0 {
				s.cfg.Logger.Debug("pruned idempotency keys", "rows", total, "batches", batches, "duration", time.Since(start))
			}
			return total, nil
		}
	}
}

func (s *Store) pruneBatch(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, pruneSQL, s.cfg.IdempotencyRetention, s.cfg.PruneBatch)
	return tag.RowsAffected(), err
}

// pruner runs PruneIdempotency every PruneInterval on a goroutine of its
// own, from one interval after its start until stop. The interval is counted
// from the end of a round, so a round that fails (the database down) is
// followed by a pause, not by another attempt at once.
type pruner struct {
	cancel context.CancelFunc // cancels the goroutine and its prune in progress
	done   chan struct{}      // closed when the goroutine exits
}

func startPruner(s *Store) *pruner {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pruner{cancel: cancel, done: make(chan struct{})}
	go p.run(ctx, s)
	return p
}

func (p *pruner) run(ctx context.Context, s *Store) {
	defer close(p.done)
	t := time.NewTimer(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.PruneIdempotency(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.cfg.Logger.Warn("pruning idempotency keys failed; retrying next interval", "rows", n, "err", err)
		}
		t.Reset(s.cfg.PruneInterval)
	}
}

// stop cancels the pruner, a prune in progress included, and waits for its
// goroutine to exit, within ctx. It is idempotent.
func (p *pruner) stop(ctx context.Context) error {
	p.cancel()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pruner stop: %w", ctx.Err())
	}
}
