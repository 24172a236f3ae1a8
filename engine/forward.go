package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/internal/wirecodec"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
)

// forwardedKey marks a call one node forwarded to another. A forwarded call
// is served where it lands or answered SHOW_MOVED: never forwarded again,
// so rings that disagree cannot bounce a call around.
const forwardedKey = "x-boxoffice-forwarded-by"

// MovedError is ErrMoved naming the show's owner as this node sees it, so
// the caller can go there (the answer's ErrorInfo carries it as metadata
// "owner" and "owner_addr").
type MovedError struct {
	Show  ar.ShowID
	Owner ring.Member
	Why   string
}

func (e *MovedError) Error() string {
	return fmt.Sprintf("%v: show %s is owned by %s at %s: %s", ErrMoved, e.Show, e.Owner.Name, e.Owner.GRPCAddr, e.Why)
}

// Unwrap makes errors.Is(err, ErrMoved) hold.
func (e *MovedError) Unwrap() error { return ErrMoved }

// routed are the services whose calls name a show (or a hold, which names
// its show) and are served by the show's owner. The catalog and admin
// services read and write the database and are served where they land.
var routed = []string{"/boxoffice.v1.ReservationService/", "/boxoffice.v1.WaitlistService/", "/boxoffice.v1.WaitingRoomService/"}

// forwarder sends calls for shows owned elsewhere to their owner, over one
// client connection per owner address.
type forwarder struct {
	ring Ring
	mu   sync.Mutex
	// conns are the connections to other nodes by gRPC address. A
	// connection to an address no member of the ring has any more (its
	// node left or was declared dead) is closed at the next forwarded call
	// after the ring changed, so nodes that come and go (new addresses on
	// every restart) leave nothing behind.
	conns map[string]*grpc.ClientConn
	// pruned is the ring version at which conns were last pruned, and
	// live the members' addresses then.
	pruned uint64
	live   map[string]bool
	open   prometheus.Gauge // len(conns)
	// types caches the message types of methods.
	types sync.Map // [method, input] → protoreflect.MessageType
}

func newForwarder(r Ring, open prometheus.Gauge) *forwarder {
	return &forwarder{ring: r, conns: make(map[string]*grpc.ClientConn), open: open}
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.conns {
		c.Close()
		delete(f.conns, addr)
	}
	f.open.Set(0)
}

// memberRing is the part of *ring.Ring that tells which connections are to
// departed nodes.
type memberRing interface {
	Version() uint64
	Members() []ring.Member
}

// conn returns the connection to the node at addr, opening it if needed.
func (f *forwarder) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pruneLocked()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	if f.live != nil && !f.live[addr] {
		// The caller's ring view is older than the one pruned by: the
		// node left since. Opening a connection would keep it.
		return nil, fmt.Errorf("%s is no longer a member's address", addr)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(wirecodec.Codec{})),
		// A connection to an owner that went silent (a partition, a
		// frozen process) is found dead by its pings, not by TCP's
		// minutes; the pings respect the servers' DefaultKeepaliveMinTime.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 15 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// A dial to an owner that does not answer gives up after a second
		// (the caller is told SHOW_MOVED), instead of gRPC's 20 s.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: time.Second}),
	)
	if err != nil {
		return nil, err
	}
	f.conns[addr] = c
	f.open.Set(float64(len(f.conns)))
	return c, nil
}

// pruneLocked closes the connections to addresses that no member of the
// ring has, once per ring version. A call in flight on one fails Canceled;
// routeUnary and routeStream answer that as the owner being unreachable.
func (f *forwarder) pruneLocked() {
	r, ok := f.ring.(memberRing)
	if !ok {
		return
	}
	v := r.Version()
	if f.live != nil && v == f.pruned {
		return
	}
	f.pruned = v
	f.live = make(map[string]bool)
	for _, m := range r.Members() {
		f.live[m.GRPCAddr] = true
	}
	for addr, c := range f.conns {
		if !f.live[addr] {
			c.Close()
			delete(f.conns, addr)
		}
	}
	f.open.Set(float64(len(f.conns)))
}

// showOf returns the show a routed request names: its show_id, or the show
// of its hold_id. False for requests that name neither (a user's
// reservations), which are served where they land.
func showOf(req any) (ar.ShowID, bool) {
	if r, ok := req.(interface{ GetShowId() string }); ok && r.GetShowId() != "" {
		return ar.ShowID(r.GetShowId()), true
	}
	if r, ok := req.(interface{ GetHoldId() string }); ok {
		if id, err := showOfHold(ar.HoldID(r.GetHoldId())); err == nil {
			return id, true
		}
	}
	return "", false
}

func isRouted(method string) bool {
	for _, p := range routed {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// owner returns the owner of show when it is another node; false when this
// node serves it (it owns it, or there is no ring).
func (f *forwarder) owner(show ar.ShowID) (ring.Member, bool) {
	if f == nil || f.ring == nil {
		return ring.Member{}, false
	}
	o := f.ring.Owner(string(show))
	return o, o.Name != f.ring.Self().Name
}

// outgoing returns ctx with the caller's metadata (its token among it) for
// the owner, marked as forwarded. The deadline goes with ctx.
func (f *forwarder) outgoing(ctx context.Context) context.Context {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "content-type" || k == "user-agent" || k == "te" {
			continue
		}
		out[k] = v
	}
	out.Set(forwardedKey, f.ring.Self().Name)
	return metadata.NewOutgoingContext(ctx, out)
}

func forwardedCall(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

// reply returns a new, empty reply message of a method, and request a new
// request message.
func (f *forwarder) reply(method string) (proto.Message, error)   { return f.message(method, false) }
func (f *forwarder) request(method string) (proto.Message, error) { return f.message(method, true) }

func (f *forwarder) message(method string, input bool) (proto.Message, error) {
	key := [2]any{method, input}
	if mt, ok := f.types.Load(key); ok {
		return mt.(protoreflect.MessageType).New().Interface(), nil
	}
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, err
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok || sd.Methods().ByName(protoreflect.Name(name)) == nil {
		return nil, fmt.Errorf("method %q not found", method)
	}
	md := sd.Methods().ByName(protoreflect.Name(name))
	msg := md.Output()
	if input {
		msg = md.Input()
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(msg.FullName())
	if err != nil {
		return nil, err
	}
	f.types.Store(key, mt)
	return mt.New().Interface(), nil
}

// unreachable turns a failure to reach the owner into SHOW_MOVED naming it:
// an answer without the engine's ErrorInfo came from the transport, not
// from the owner. The owner's own answers pass through as they are. A call
// that changes something (see changes) whose request reached a connection
// to the owner (sent) may have been done there before the connection
// failed: it is answered OUTCOME_UNKNOWN instead, so the caller does not
// take it for not done (a retry tells: with the idempotency key for a hold
// or a confirm, as things then stand for the others).
func unreachable(err error, show ar.ShowID, owner ring.Member, sent bool) error {
	st, ok := status.FromError(err)
	if ok && (st.Code() != codes.Unavailable || fromEngine(st)) {
		return err
	}
	if sent {
		return toStatus(fmt.Errorf("%w: forwarded to the owner %s at %s, whose connection failed: %s",
			persistence.ErrOutcomeUnknown, owner.Name, owner.GRPCAddr, st.Message()))
	}
	return toStatus(&MovedError{Show: show, Owner: owner, Why: "owner unreachable: " + st.Message()})
}

// closedByPrune turns the Canceled of a call whose connection pruneLocked
// closed (the caller's ctx is still live, and the answer is not the
// engine's) into the transport's Unavailable.
func closedByPrune(ctx context.Context, err error) error {
	if st, _ := status.FromError(err); st.Code() == codes.Canceled && ctx.Err() == nil && !fromEngine(st) {
		return status.Error(codes.Unavailable, "the connection to a node that left the ring was closed: "+err.Error())
	}
	return err
}

// fromEngine reports whether st carries the engine's ErrorInfo: an answer
// of the owner, not of the transport.
func fromEngine(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

// changes reports whether a routed method may change something: all but
// the reads, whose names start with Get, List, Poll or Watch.
func changes(method string) bool {
	name := method[strings.LastIndexByte(method, '/')+1:]
	for _, read := range []string{"Get", "List", "Poll", "Watch"} {
		if strings.HasPrefix(name, read) {
			return false
		}
	}
	return true
}

// routeUnary serves a call for a show owned elsewhere by forwarding it to
// the owner, one hop, with the caller's deadline and metadata.
func (s *Server) routeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !isRouted(info.FullMethod) {
		return h(ctx, req)
	}
	show, ok := showOf(req)
	if !ok {
		return h(ctx, req)
	}
	owner, elsewhere := s.fwd.owner(show)
	if !elsewhere {
		return h(ctx, req)
	}
	if forwardedCall(ctx) {
		return nil, toStatus(&MovedError{Show: show, Owner: owner, Why: "forwarded here, but this node does not own it (the ring is changing)"})
	}
	conn, err := s.fwd.conn(owner.GRPCAddr)
	if err != nil {
		return nil, toStatus(&MovedError{Show: show, Owner: owner, Why: err.Error()})
	}
	out, err := s.fwd.reply(info.FullMethod)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.node.metrics.forwarded.Inc()
	var to peer.Peer // set once the call has a stream on a connection to the owner
	if err := conn.Invoke(s.fwd.outgoing(ctx), info.FullMethod, req, out, grpc.Peer(&to)); err != nil {
		return nil, unreachable(closedByPrune(ctx, err), show, owner, to.Addr != nil && changes(info.FullMethod))
	}
	return out, nil
}

// routeStream serves a server-streaming call (WatchWaitlist) for a show
// owned elsewhere by relaying the owner's stream: it reads the request to
// learn the show, then either serves it here or opens the same call on the
// owner and copies its messages back until it ends.
func (s *Server) routeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !isRouted(info.FullMethod) || !info.IsServerStream || info.IsClientStream || s.fwd == nil || s.fwd.ring == nil {
		return h(srv, ss)
	}
	req, err := s.fwd.request(info.FullMethod)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if err := ss.RecvMsg(req); err != nil {
		return err
	}
	local := &readStream{ServerStream: ss, first: req}
	show, ok := showOf(req)
	if !ok {
		return h(srv, local)
	}
	owner, elsewhere := s.fwd.owner(show)
	if !elsewhere {
		return h(srv, local)
	}
	ctx := ss.Context()
	if forwardedCall(ctx) {
		return toStatus(&MovedError{Show: show, Owner: owner, Why: "forwarded here, but this node does not own it (the ring is changing)"})
	}
	conn, err := s.fwd.conn(owner.GRPCAddr)
	if err != nil {
		return toStatus(&MovedError{Show: show, Owner: owner, Why: err.Error()})
	}
	s.node.metrics.forwarded.Inc()
	// The relay ends when this node shuts down, as a stream served here
	// does, so that it never holds up the graceful stop.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	cs, err := conn.NewStream(s.fwd.outgoing(ctx), &grpc.StreamDesc{ServerStreams: true}, info.FullMethod)
	if err != nil {
		return unreachable(closedByPrune(ctx, err), show, owner, false)
	}
	if err := cs.SendMsg(req); err != nil {
		return unreachable(closedByPrune(ctx, err), show, owner, false)
	}
	if err := cs.CloseSend(); err != nil {
		return unreachable(closedByPrune(ctx, err), show, owner, false)
	}
	for {
		msg, err := s.fwd.reply(info.FullMethod)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := cs.RecvMsg(msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			if s.life.Err() != nil {
				return toStatus(fmt.Errorf("relay: %w", ErrShuttingDown))
			}
			return unreachable(closedByPrune(ctx, err), show, owner, false)
		}
		if err := ss.SendMsg(msg); err != nil {
			return err
		}
	}
}

// readStream is a server stream whose first request was already read.
type readStream struct {
	grpc.ServerStream
	first proto.Message
}

func (r *readStream) RecvMsg(m any) error {
	if r.first == nil {
		return r.ServerStream.RecvMsg(m)
	}
	dst, ok := m.(proto.Message)
	if !ok {
		return status.Error(codes.Internal, "not a protobuf message")
	}
	proto.Merge(dst, r.first)
	r.first = nil
	return nil
}
