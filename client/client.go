// Package client is the web tier's Go client of a boxoffice cluster.
//
// A Client is safe for concurrent use by any number of goroutines, and one
// is enough for a whole web tier process. It
//
//   - sends each call to its show's owner, from the ring it learns from any
//     node (GetRing) and refreshes when a node answers SHOW_MOVED, when a
//     node cannot be reached, and every Config.RingRefresh;
//   - carries holds, confirms, releases and waiting room joins on Pipeline
//     streams, a few per node, with natural batching: the calls queued
//     while a stream is busy sending go in its next message, and an idle
//     stream sends a call at once, so batching adds no latency;
//   - retries the answers that say a call was not done or may be done again
//     safely (Unavailable: SHOW_MOVED, SHUTTING_DOWN, OUTCOME_UNKNOWN, a lost
//     stream...; ResourceExhausted OVERLOADED), with backoff, up to
//     Config.MaxAttempts, with the same idempotency key: HoldSeats gets a
//     fresh key when the request has none, a confirm is idempotent for its
//     payment reference, a release for its user, a join for its user (a
//     leave is not: see LeaveWaitlist);
//   - keeps live replicas of the seat maps it is asked for (SeatMap), fed by
//     WatchSeatMap, so seat-map reads are answered from local memory;
//   - makes the other calls (the reads, the waitlist's, and the waiting
//     room's PollQueue and LeaveQueue) as unary RPCs to the owner, with
//     the same retries; a long poll without a deadline gets its wait plus
//     Config.CallTimeout. A show behind a waiting room needs the user's
//     admission token in HoldSeatsRequest.admission_token.
//
// A call reads its request until it returns, and must not change while it
// runs. A pipelined call whose context ends is not sent if it was still
// queued; one its stream's sender had taken is sent all the same (its
// request may be read for moments after the call returned, while it is
// encoded), and the engine decides it. A hold abandoned that way that was
// granted expires with its time to live; a retry with the same idempotency
// key answers it.
//
// Errors are gRPC statuses, as the unary RPCs answer them: status.FromError
// gives the code, and the google.rpc.ErrorInfo detail the reason and the
// metadata (for example the "seats" a SEATS_TAKEN refusal names). Reason
// returns the reason without decoding the details, and TakenSeats the
// seats a SEATS_TAKEN refusal names.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/wirecodec"
)

// Config configures a Client.
type Config struct {
	// Addrs are the gRPC addresses of one or more nodes of the cluster
	// (required). The client learns the other members from their ring, and
	// goes back to these addresses only when no member it knows answers.
	Addrs []string
	// Token is the service token, sent as a bearer token with every call.
	Token string
	// DialOptions are added to every connection's options. Without
	// transport credentials among them the connections are plaintext
	// (insecure.NewCredentials), as on a private network.
	DialOptions []grpc.DialOption
	// ConnsPerNode is the number of connections to each node, and
	// StreamsPerConn the number of Pipeline streams on each. Defaults 2
	// and 1: one HTTP/2 connection serializes its frames through one
	// writer on each side.
	ConnsPerNode   int
	StreamsPerConn int
	// MaxAttempts bounds the tries of one call, the first included
	// (default 10). Backoff is the wait after the first retryable answer
	// (default 5 ms); it doubles with every further one up to MaxBackoff
	// (default 1 s), with jitter, so the default tries span about 4 s: a
	// crashed owner's shows move within about 2 s. A call also ends with
	// its context.
	MaxAttempts int
	Backoff     time.Duration
	MaxBackoff  time.Duration
	// CallTimeout bounds a call whose context has no deadline (default
	// 10 s); a long poll's, its wait plus CallTimeout.
	CallTimeout time.Duration
	// RingRefresh is how often the ring is asked for again when nothing
	// prompted it (default 5 s).
	RingRefresh time.Duration
	// MaxReplicas bounds the seat maps kept live (default 1,000); asking
	// for one more stops the replica read longest ago. A replica not read
	// for ReplicaIdle (default 1 min) is stopped.
	MaxReplicas int
	ReplicaIdle time.Duration
	// ReplicaLag, if set, is called for every message a replica applies
	// with the time from the engine publishing it to its arrival here (the
	// two clocks' difference included).
	ReplicaLag func(showID string, lag time.Duration)
	// Logger receives the client's warnings (default: discarded).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ConnsPerNode <= 0 {
		c.ConnsPerNode = 2
	}
	if c.StreamsPerConn <= 0 {
		c.StreamsPerConn = 1
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 10
	}
	if c.Backoff <= 0 {
		c.Backoff = 5 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Second
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 10 * time.Second
	}
	if c.RingRefresh <= 0 {
		c.RingRefresh = 5 * time.Second
	}
	if c.MaxReplicas <= 0 {
		c.MaxReplicas = 1000
	}
	if c.ReplicaIdle <= 0 {
		c.ReplicaIdle = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Client is a connection to a boxoffice cluster. Create it with New and
// end it with Close.
type Client struct {
	cfg  Config
	life context.Context // ends at Close: every stream and replica ends
	stop context.CancelFunc
	bg   sync.WaitGroup

	routes  atomic.Pointer[routes]
	refresh chan struct{} // a ring refresh is wanted (capacity 1)

	mu     sync.Mutex       // guards nodes and closed
	nodes  map[string]*node // by gRPC address
	closed bool

	replicas *replicas
}

// routes is one ring as a node answered it: the owner of every partition.
type routes struct {
	owners []*node // by partition; empty: every show to single
	single *node
}

// New connects to the cluster: it asks the nodes of cfg.Addrs for the ring,
// in turn, until one answers, or fails with the last error when none does
// before ctx ends.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("client: no node address")
	}
	cfg = cfg.withDefaults()
	life, stop := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, life: life, stop: stop, nodes: map[string]*node{}, refresh: make(chan struct{}, 1)}
	c.replicas = newReplicas(c)
	var err error
	for {
		if err = c.refreshRing(ctx); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("client: no node answered: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.bg.Go(c.ringLoop)
	c.bg.Go(c.replicas.idleLoop)
	return c, nil
}

// Close ends every stream, replica and connection. Calls in progress end
// Canceled; calls after Close fail.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	nodes := c.nodes
	c.nodes = nil
	c.mu.Unlock()
	c.stop()
	c.bg.Wait()
	c.replicas.close()
	var err error
	for _, n := range nodes {
		err = errors.Join(err, n.close())
	}
	return err
}

// errClosed answers calls after Close.
var errClosed = status.Error(codes.Canceled, "client: closed")

// node returns the node at addr, connecting to it on first use.
func (c *Client) node(addr string) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	if n, ok := c.nodes[addr]; ok {
		return n, nil
	}
	n, err := newNode(c, addr)
	if err != nil {
		return nil, err
	}
	c.nodes[addr] = n
	return n, nil
}

// dialOptions are the options of every connection.
func (c *Client) dialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(c.cfg.Token)),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wirecodec.Codec{})),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}),
		// A dial to a node that does not answer gives up after a second,
		// instead of gRPC's 20 s, so opening a pipeline to it (which waits
		// for the connection) fails fast and the call is retried, and a
		// node that comes back is dialled again within a second.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
	}
	return append(opts, c.cfg.DialOptions...)
}

// bearer sends the service token with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// owner returns the node that owns showID by the last ring.
func (c *Client) owner(showID string) *node {
	r := c.routes.Load()
	if len(r.owners) == 0 {
		return r.single
	}
	return r.owners[xxhash.Sum64String(showID)%uint64(len(r.owners))]
}

// refreshSoon asks the ring loop for a refresh, without waiting.
func (c *Client) refreshSoon() {
	select {
	case c.refresh <- struct{}{}:
	default:
	}
}

// ringLoop refreshes the ring every RingRefresh, and when asked, at most
// every minRefresh.
func (c *Client) ringLoop() {
	const minRefresh = 50 * time.Millisecond
	t := time.NewTicker(c.cfg.RingRefresh)
	defer t.Stop()
	for {
		select {
		case <-c.life.Done():
			return
		case <-t.C:
		case <-c.refresh:
		}
		ctx, cancel := context.WithTimeout(c.life, 2*time.Second)
		if err := c.refreshRing(ctx); err != nil && c.life.Err() == nil {
			c.cfg.Logger.Warn("client: ring refresh failed", "err", err)
		}
		cancel()
		select {
		case <-c.life.Done():
			return
		case <-time.After(minRefresh):
		}
	}
}

// refreshRing asks the members of the current ring, then the configured
// addresses, for the ring, and installs the first answer. Nodes no longer
// in the ring are closed.
func (c *Client) refreshRing(ctx context.Context) error {
	var tried []string
	if r := c.routes.Load(); r != nil {
		seen := map[*node]bool{}
		for _, n := range append(r.owners, r.single) {
			if n != nil && !seen[n] {
				seen[n] = true
				tried = append(tried, n.addr)
			}
		}
	}
	rand.Shuffle(len(tried), func(i, j int) { tried[i], tried[j] = tried[j], tried[i] })
	tried = append(tried, c.cfg.Addrs...)
	var err error
	for _, addr := range tried {
		var n *node
		if n, err = c.node(addr); err != nil {
			return err
		}
		var resp *pb.GetRingResponse
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err = n.reserve().GetRing(callCtx, &pb.GetRingRequest{})
		cancel()
		if err == nil {
			err = c.install(n, resp)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

// install makes resp, as node from answered it, the client's routes.
func (c *Client) install(from *node, resp *pb.GetRingResponse) error {
	r := &routes{single: from}
	if len(resp.GetPartitionOwners()) > 0 {
		members := make([]*node, len(resp.GetMembers()))
		for i, m := range resp.GetMembers() {
			n, err := c.node(m.GetGrpcAddr())
			if err != nil {
				return err
			}
			members[i] = n
		}
		r.owners = make([]*node, len(resp.GetPartitionOwners()))
		for p, i := range resp.GetPartitionOwners() {
			if int(i) >= len(members) {
				return fmt.Errorf("client: ring from %s names member %d of %d", from.addr, i, len(members))
			}
			r.owners[p] = members[i]
		}
		r.single = nil
	}
	c.routes.Store(r)
	c.closeUnused(r)
	return nil
}

// closeUnused closes the connections to nodes that r does not name and no
// configured address names (they left the cluster).
func (c *Client) closeUnused(r *routes) {
	keep := map[string]bool{}
	for _, a := range c.cfg.Addrs {
		keep[a] = true
	}
	for _, n := range append(r.owners, r.single) {
		if n != nil {
			keep[n.addr] = true
		}
	}
	var gone []*node
	c.mu.Lock()
	for addr, n := range c.nodes {
		if !keep[addr] {
			gone = append(gone, n)
			delete(c.nodes, addr)
		}
	}
	c.mu.Unlock()
	for _, n := range gone {
		n.close()
	}
}

// callContext returns ctx with the client's CallTimeout when it has no
// deadline.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.CallTimeout)
}

// pollContext returns ctx, or, when it has no deadline, ctx with one after
// a long poll's wait and CallTimeout: a poll is not cut short by the
// deadline of an ordinary call.
func (c *Client) pollContext(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, max(wait, 0)+c.cfg.CallTimeout)
}

// retry runs try on the show's owner until it succeeds, fails for good,
// runs out of attempts or ctx ends. After SHOW_MOVED naming the owner's
// address, the next try goes there (and the ring is refreshed); after any
// other retryable error the ring is refreshed and the next try goes to the
// owner it names then.
func (c *Client) retry(ctx context.Context, showID string, try func(ctx context.Context, n *node) error) error {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	var next *node
	wait := c.cfg.Backoff
	for attempt := 1; ; attempt++ {
		n := next
		if n == nil {
			n = c.owner(showID)
		}
		next = nil
		err := try(ctx, n)
		if Code(err) == codes.Canceled && ctx.Err() == nil && c.life.Err() == nil {
			// A connection closed under the call (its node left the
			// ring), not the caller giving up.
			err = status.Errorf(codes.Unavailable, "client: %v", err)
		}
		if err == nil || !retryable(err) || attempt >= c.cfg.MaxAttempts || ctx.Err() != nil {
			return err
		}
		if c.life.Err() != nil {
			return errClosed
		}
		if addr := movedTo(err); addr != "" && addr != n.addr {
			next, _ = c.node(addr)
		}
		c.refreshSoon()
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, c.cfg.MaxBackoff)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return err
		case <-c.life.Done():
			return errClosed
		}
	}
}

// HoldSeats holds seats for a user, all or nothing, through the pipeline
// of the show's owner. A request without an idempotency key is given a
// fresh one, so that a retry after a lost answer gets that attempt's
// answer instead of a second hold. The request is not modified.
func (c *Client) HoldSeats(ctx context.Context, req *pb.HoldSeatsRequest) (*pb.HoldSeatsResponse, error) {
	if req.GetIdempotencyKey() == "" {
		req = proto.Clone(req).(*pb.HoldSeatsRequest)
		req.IdempotencyKey = newKey()
	}
	call := &pb.PipelineCall{Call: &pb.PipelineCall_Hold{Hold: req}}
	res, err := c.pipelined(ctx, req.GetShowId(), call)
	if err != nil {
		return nil, err
	}
	return res.GetHold(), nil
}

// ConfirmHold books a hold through the pipeline of its show's owner. A
// repeat with the same payment reference answers the booking, so retries
// are safe.
func (c *Client) ConfirmHold(ctx context.Context, req *pb.ConfirmHoldRequest) (*pb.ConfirmHoldResponse, error) {
	show := showOfHold(req.GetHoldId())
	res, err := c.pipelined(ctx, show, &pb.PipelineCall{Call: &pb.PipelineCall_Confirm{Confirm: req}})
	if err != nil {
		return nil, err
	}
	return res.GetConfirm(), nil
}

// ReleaseHold gives a hold's seats back through the pipeline of its show's
// owner. Releasing a hold its user already released answers it again, so
// retries are safe.
func (c *Client) ReleaseHold(ctx context.Context, req *pb.ReleaseHoldRequest) (*pb.ReleaseHoldResponse, error) {
	show := showOfHold(req.GetHoldId())
	res, err := c.pipelined(ctx, show, &pb.PipelineCall{Call: &pb.PipelineCall_Release{Release: req}})
	if err != nil {
		return nil, err
	}
	return res.GetRelease(), nil
}

// pipelined runs call on the pipeline of the show's owner, with retries.
// The call's timeout is the context's remaining time at each try.
func (c *Client) pipelined(ctx context.Context, showID string, call *pb.PipelineCall) (*pb.PipelineResult, error) {
	var res *pb.PipelineResult
	err := c.retry(ctx, showID, func(ctx context.Context, n *node) error {
		try := call
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			if left <= 0 { // the context's timer has not fired yet
				return ctxError(context.DeadlineExceeded)
			}
			try = &pb.PipelineCall{Call: call.Call, Timeout: durationpb.New(left)}
		}
		var err error
		res, err = n.pipeline(ctx, try)
		return err
	})
	return res, err
}

// unary runs a unary call on the show's owner, with retries.
func unary[Req, Resp any](c *Client, ctx context.Context, showID string, req Req,
	call func(*node) func(context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, error) {
	var resp Resp
	err := c.retry(ctx, showID, func(ctx context.Context, n *node) error {
		var err error
		resp, err = call(n)(ctx, req)
		return err
	})
	return resp, err
}

// GetSeatMap reads a show's seat map from its owner (one RPC). SeatMap
// answers from a live replica instead.
func (c *Client) GetSeatMap(ctx context.Context, req *pb.GetSeatMapRequest) (*pb.GetSeatMapResponse, error) {
	return unary(c, ctx, req.GetShowId(), req, func(n *node) func(context.Context, *pb.GetSeatMapRequest, ...grpc.CallOption) (*pb.GetSeatMapResponse, error) {
		return n.reserve().GetSeatMap
	})
}

// GetReservation reads one reservation from its show's owner.
func (c *Client) GetReservation(ctx context.Context, req *pb.GetReservationRequest) (*pb.GetReservationResponse, error) {
	show := showOfHold(req.GetHoldId())
	return unary(c, ctx, show, req, func(n *node) func(context.Context, *pb.GetReservationRequest, ...grpc.CallOption) (*pb.GetReservationResponse, error) {
		return n.reserve().GetReservation
	})
}

// ListUserReservations lists a user's reservations of every show, newest
// first, paged. Any node answers it; the client asks the owner of the
// user's ID as if it were a show's, to spread the reads.
func (c *Client) ListUserReservations(ctx context.Context, req *pb.ListUserReservationsRequest) (*pb.ListUserReservationsResponse, error) {
	return unary(c, ctx, req.GetUserId(), req, func(n *node) func(context.Context, *pb.ListUserReservationsRequest, ...grpc.CallOption) (*pb.ListUserReservationsResponse, error) {
		return n.reserve().ListUserReservations
	})
}

// JoinWaitlist puts a user on a show's waitlist (see WaitlistService).
func (c *Client) JoinWaitlist(ctx context.Context, req *pb.JoinWaitlistRequest) (*pb.JoinWaitlistResponse, error) {
	return unary(c, ctx, req.GetShowId(), req, func(n *node) func(context.Context, *pb.JoinWaitlistRequest, ...grpc.CallOption) (*pb.JoinWaitlistResponse, error) {
		return n.waitlist().JoinWaitlist
	})
}

// LeaveWaitlist takes a user off a show's waitlist. It is retried like the
// other calls, and a leave is done once: if the answer to a try that left
// was lost (OUTCOME_UNKNOWN, a lost connection), the retry is answered
// NotFound NOT_WAITING, as for a user who was not waiting. Either way the
// user is not waiting after it.
func (c *Client) LeaveWaitlist(ctx context.Context, req *pb.LeaveWaitlistRequest) (*pb.LeaveWaitlistResponse, error) {
	return unary(c, ctx, req.GetShowId(), req, func(n *node) func(context.Context, *pb.LeaveWaitlistRequest, ...grpc.CallOption) (*pb.LeaveWaitlistResponse, error) {
		return n.waitlist().LeaveWaitlist
	})
}

// PollWaitlist answers a user's waitlist entry, waiting for a change as
// the request asks (a long poll). A context without a deadline gets the
// request's wait plus CallTimeout.
func (c *Client) PollWaitlist(ctx context.Context, req *pb.PollWaitlistRequest) (*pb.PollWaitlistResponse, error) {
	ctx, cancel := c.pollContext(ctx, req.GetWait().AsDuration())
	defer cancel()
	return unary(c, ctx, req.GetShowId(), req, func(n *node) func(context.Context, *pb.PollWaitlistRequest, ...grpc.CallOption) (*pb.PollWaitlistResponse, error) {
		return n.waitlist().PollWaitlist
	})
}

// WatchWaitlist opens a stream of a user's waitlist entry on the show's
// owner (any node would relay it). It is not retried: a caller whose
// stream ends calls again, or polls.
func (c *Client) WatchWaitlist(ctx context.Context, req *pb.WatchWaitlistRequest) (pb.WaitlistService_WatchWaitlistClient, error) {
	return c.owner(req.GetShowId()).waitlist().WatchWaitlist(ctx, req)
}

// JoinQueue puts a user in a show's waiting room queue (see
// WaitingRoomService), through the pipeline of the show's owner, as an
// on-sale's crowd joins at thousands a second; joining again answers the
// same entry, so retries are safe. Once admitted, the entry's
// admission_token goes in the user's HoldSeats requests.
func (c *Client) JoinQueue(ctx context.Context, req *pb.JoinQueueRequest) (*pb.JoinQueueResponse, error) {
	res, err := c.pipelined(ctx, req.GetShowId(), &pb.PipelineCall{Call: &pb.PipelineCall_Join{Join: req}})
	if err != nil {
		return nil, err
	}
	return res.GetJoin(), nil
}

// LeaveQueue takes a user out of a show's waiting room. As for
// LeaveWaitlist, a retry after the answer to a try that left was lost is
// answered NotFound NOT_WAITING: the user is out of the room either way.
func (c *Client) LeaveQueue(ctx context.Context, req *pb.LeaveQueueRequest) (*pb.LeaveQueueResponse, error) {
	return unary(c, ctx, req.GetShowId(), req, func(n *node) func(context.Context, *pb.LeaveQueueRequest, ...grpc.CallOption) (*pb.LeaveQueueResponse, error) {
		return n.room().LeaveQueue
	})
}

// PollQueue answers a user's waiting room entry, waiting for a change as
// the request asks (a long poll). A context without a deadline gets the
// request's wait plus CallTimeout.
func (c *Client) PollQueue(ctx context.Context, req *pb.PollQueueRequest) (*pb.PollQueueResponse, error) {
	ctx, cancel := c.pollContext(ctx, req.GetWait().AsDuration())
	defer cancel()
	return unary(c, ctx, req.GetShowId(), req, func(n *node) func(context.Context, *pb.PollQueueRequest, ...grpc.CallOption) (*pb.PollQueueResponse, error) {
		return n.room().PollQueue
	})
}

// WatchQueue opens a stream of a user's waiting room entry on the show's
// owner. It is not retried: a caller whose stream ends calls again, or
// polls.
func (c *Client) WatchQueue(ctx context.Context, req *pb.WatchQueueRequest) (pb.WaitingRoomService_WatchQueueClient, error) {
	return c.owner(req.GetShowId()).room().WatchQueue(ctx, req)
}
