package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

const (
	// watchConns is how many gRPC connections WatchSeatMaps spreads its
	// streams over (one per stream below that), as a few web-tier
	// processes would hold them; more when that would put more than
	// watchStreamsPerConn streams on one (the engine serves 1,024 per
	// connection by default).
	watchConns          = 8
	watchStreamsPerConn = 500
	// watchOpenTimeout bounds the wait for every stream's first message.
	watchOpenTimeout = time.Minute
	// watchRetry is how long a reader waits before opening a failed stream
	// again.
	watchRetry = 100 * time.Millisecond
)

var _ SeatMapWatcher = (*Boxoffice)(nil)

// WatchSeatMaps opens n WatchSeatMap streams of the show, with the service
// token, on the node at the target's BoxofficeConfig.Addr, over
// connections of their own (8; fewer for fewer streams, more beyond
// 4,000): neither the client's nor the unary calls', so the users' calls
// do not queue behind the watchers' frames, and closing them leaves the
// target as it was. Each stream asks for a snapshot
// (since_version 0) and is read by its own goroutine, which decodes every
// message and counts it (see SeatMapWatcher and WatchStats); one that
// fails after its first message is opened again after 100 ms from the
// version it had reached. It fails if a stream fails before its first
// message, or if some have none within a minute.
func (b *Boxoffice) WatchSeatMaps(ctx context.Context, show ShowSpec, n int) (stop func() WatchStats, err error) {
	if n <= 0 {
		return nil, fmt.Errorf("bench: boxoffice: %d seat-map watchers", n)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, b.md))
	var conns []*grpc.ClientConn
	closeConns := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range max(min(n, watchConns), (n+watchStreamsPerConn-1)/watchStreamsPerConn) {
		conn, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			cancel()
			closeConns()
			return nil, fmt.Errorf("bench: boxoffice: seat-map watchers: %w", err)
		}
		conns = append(conns, conn)
	}

	readers := make([]watchReader, n)
	first := make(chan error, n) // one value per reader: nil at its first message, or why it had none
	var wg sync.WaitGroup
	for i := range readers {
		rd := &readers[i]
		cl := pb.NewReservationServiceClient(conns[i%len(conns)])
		wg.Go(func() { rd.run(ctx, cl, show.ID, first) })
	}
	var (
		once  sync.Once
		stats WatchStats
	)
	stop = func() WatchStats {
		once.Do(func() {
			cancel()
			wg.Wait()
			closeConns()
			stats = WatchStats{Streams: n}
			for _, rd := range readers {
				stats.Messages += rd.messages
				stats.Bytes += rd.bytes
				stats.Resnapshots += rd.resnapshots
				stats.Errors += rd.errors
			}
		})
		return stats
	}

	timer := time.NewTimer(watchOpenTimeout)
	defer timer.Stop()
	for got := 0; got < n; {
		select {
		case e := <-first:
			got++
			if e != nil && err == nil {
				err = e
				cancel() // the others end at once, and report
			}
		case <-timer.C:
			if err == nil {
				err = fmt.Errorf("%d of %d streams had no message after %v", n-got, n, watchOpenTimeout)
				cancel()
			}
		}
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("bench: boxoffice: opening %d seat-map watchers of show %s: %w", n, show.ID, err)
	}
	return stop, nil
}

// watchReader is one stream's reader. Its counts are written by its
// goroutine only, and read after that goroutine ended.
type watchReader struct {
	messages, bytes, resnapshots, errors int64
}

// run follows the show's seat map until ctx ends, opening the stream
// again after it fails. It sends one value on first: nil at the first
// message, or the error that ended the first stream before it had any.
func (rd *watchReader) run(ctx context.Context, cl pb.ReservationServiceClient, show string, first chan<- error) {
	var since uint64 // the version the watcher's map is at; 0: none
	started := false // a message was received
	for {
		err := rd.follow(ctx, cl, show, &since, &started, first)
		if !started {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			first <- err
			return
		}
		if ctx.Err() != nil {
			return
		}
		rd.errors++
		t := time.NewTimer(watchRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// follow reads one stream from version *since until it fails, and
// returns why. The first message of the reader is its snapshot; every
// later snapshot is a resnapshot.
func (rd *watchReader) follow(ctx context.Context, cl pb.ReservationServiceClient, show string, since *uint64, started *bool, first chan<- error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cl.WatchSeatMap(ctx, &pb.WatchSeatMapRequest{ShowId: show, SinceVersion: *since})
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		rd.messages++
		rd.bytes += int64(proto.Size(m))
		if len(m.GetSnapshot()) > 0 && *started {
			rd.resnapshots++
		}
		if m.GetShowId() != show {
			return errors.New("a message of show " + m.GetShowId())
		}
		*since = m.GetVersion()
		if !*started {
			*started = true
			first <- nil
		}
	}
}
