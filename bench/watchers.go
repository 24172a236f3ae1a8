package bench

import (
	"context"
	"fmt"
)

// SeatMapWatcher is implemented by targets that serve live seat-map
// streams (the engine's WatchSeatMap). With RunConfig.Watchers, the runner
// uses it to load the target with the fan-out of many watchers of one
// show beside the users, so that the target's CPU can be compared with and
// without them.
type SeatMapWatcher interface {
	// WatchSeatMaps opens n streams of the show's seat map and returns once
	// every one has its first message (the snapshot), or an error, with
	// nothing left open. Until stop is called or ctx ends, every stream is
	// read and each message decoded, as a watcher that keeps a replica
	// would receive it; a stream that fails is counted and opened again.
	// stop ends the streams, waits for their readers, closes what
	// WatchSeatMaps opened and returns what the streams received. It must
	// be called, also after ctx ended; later calls return the same stats.
	WatchSeatMaps(ctx context.Context, show ShowSpec, n int) (stop func() WatchStats, err error)
}

// WatchStats is what a run's extra seat-map watchers received, from their
// opening to their end (their first snapshots included, and the moments
// before and after the load).
type WatchStats struct {
	Streams  int   `json:"streams"`  // streams kept open
	Messages int64 `json:"messages"` // messages received, all streams
	Bytes    int64 `json:"bytes"`    // their encoded size (the gRPC payloads, without framing)
	// Resnapshots counts snapshots after a stream's first message: the
	// engine sends one instead of the batches a watcher fell too far
	// behind on (it read too slowly), or when the show was reloaded.
	Resnapshots int64 `json:"resnapshots"`
	// Errors counts streams that ended with an error before their stop
	// (each was opened again, from the version it had reached).
	Errors int64 `json:"errors"`
}

// Summary is the stats in one line, with the message rate over a load of
// seconds: "1000 streams, 1200000 messages (200000/s), 96.0 MB, 0
// resnapshots", with ", N errors" when there were any.
func (w WatchStats) Summary(seconds float64) string {
	rate := 0.0
	if seconds > 0 {
		rate = float64(w.Messages) / seconds
	}
	s := fmt.Sprintf("%d streams, %d messages (%s/s), %.1f MB, %d resnapshots",
		w.Streams, w.Messages, fmtRate(rate), float64(w.Bytes)/1e6, w.Resnapshots)
	if w.Errors > 0 {
		s += fmt.Sprintf(", %d errors", w.Errors)
	}
	return s
}
