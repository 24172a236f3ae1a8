package engine

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/internal/wirecodec"
)

// Defaults of ServerConfig, used where a field is zero.
const (
	DefaultMaxConcurrentStreams = 1024
	DefaultMaxRecvMsgSize       = 4 << 20 // 4 MiB
	DefaultMaxConns             = 4096
	DefaultKeepaliveMinTime     = 10 * time.Second
	DefaultKeepaliveTime        = 2 * time.Minute
	DefaultKeepaliveTimeout     = 20 * time.Second
	DefaultHealthInterval       = time.Second
	DefaultPipelineMaxInFlight  = 4096
)

// healthPingTimeout bounds one ping of the store by the health checker,
// as /readyz's ping is bounded.
const healthPingTimeout = 2 * time.Second

// ServerConfig configures the network side of a node.
type ServerConfig struct {
	// GRPCAddr and HTTPAddr are listen addresses; port 0 picks a free port.
	GRPCAddr, HTTPAddr string
	// GRPCListener, if set, is the gRPC listener instead of one on
	// GRPCAddr: a cluster node binds it first, to put its address in the
	// ring before the server starts. Start takes it over (Shutdown closes
	// it).
	GRPCListener net.Listener
	// PprofAddr, if not empty, serves net/http/pprof under /debug/pprof/
	// there, on its own HTTP server; empty serves no profiles. Its host
	// must be a loopback IP (127.0.0.0/8, ::1) or "localhost": NewServer
	// refuses any other, and Start refuses to serve on a listener whose
	// address is not loopback.
	PprofAddr string
	// Token is the bearer token of the web tier; AdminToken also allows
	// CreateShow and AdminService. Both are required unless Insecure.
	Token, AdminToken string
	// Insecure serves without authentication. For local experiments only.
	Insecure bool
	// Gatherer serves /metrics. Nil serves no metrics.
	Gatherer prometheus.Gatherer
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	// MaxConcurrentStreams is the most streams (calls) one client
	// connection may have open at once; 0 means DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize is the largest request message in bytes; a larger one
	// is refused with ResourceExhausted. 0 means DefaultMaxRecvMsgSize.
	MaxRecvMsgSize int
	// MaxConns is the most gRPC connections open at once. A connection
	// beyond it is refused, not queued: it is closed as soon as it is
	// accepted, before the server sends anything. 0 means DefaultMaxConns.
	MaxConns int
	// KeepaliveMinTime is the shortest interval at which clients may send
	// keepalive pings, with or without calls in flight; a client that keeps
	// pinging more often is disconnected (GOAWAY "too_many_pings"). 0 means
	// DefaultKeepaliveMinTime.
	KeepaliveMinTime time.Duration
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client, and KeepaliveTimeout how long it then waits for the
	// answer before closing the connection. 0 means DefaultKeepaliveTime
	// and DefaultKeepaliveTimeout.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// HealthInterval is how often the gRPC health service's status is
	// refreshed from a ping of the database; 0 means DefaultHealthInterval.
	HealthInterval time.Duration
	// PipelineMaxInFlight is the most calls one Pipeline stream may have
	// in flight (taken and not yet answered); a call beyond it is answered
	// ResourceExhausted OVERLOADED at once. 0 means
	// DefaultPipelineMaxInFlight.
	PipelineMaxInFlight int
}

// withDefaults returns c with zero fields set to their defaults, or an
// error if a field is out of range.
func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if !c.Insecure && (c.Token == "" || c.AdminToken == "") {
		return c, errors.New("server: a token and an admin token are required (or Insecure)")
	}
	if c.PprofAddr != "" {
		if err := checkLoopback(c.PprofAddr); err != nil {
			return c, fmt.Errorf("server: pprof address: %w", err)
		}
	}
	if c.MaxRecvMsgSize < 0 || c.MaxConns < 0 || c.KeepaliveMinTime < 0 || c.KeepaliveTime < 0 ||
		c.KeepaliveTimeout < 0 || c.HealthInterval < 0 || c.PipelineMaxInFlight < 0 {
		return c, errors.New("server: negative limit, size or interval")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	setDefault(&c.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	setDefault(&c.MaxRecvMsgSize, DefaultMaxRecvMsgSize)
	setDefault(&c.MaxConns, DefaultMaxConns)
	setDefault(&c.KeepaliveMinTime, DefaultKeepaliveMinTime)
	setDefault(&c.KeepaliveTime, DefaultKeepaliveTime)
	setDefault(&c.KeepaliveTimeout, DefaultKeepaliveTimeout)
	setDefault(&c.HealthInterval, DefaultHealthInterval)
	setDefault(&c.PipelineMaxInFlight, DefaultPipelineMaxInFlight)
	return c, nil
}

// checkLoopback returns an error unless addr is host:port with host a
// loopback IP or "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1 or localhost)", addr)
	}
	return nil
}

// Server serves a node over gRPC (the API, reflection and health), HTTP
// (/metrics, /healthz, /readyz) and, if configured, profiles on a separate
// loopback HTTP server. While it runs, a goroutine started by Start pings
// the node's store every HealthInterval and sets the gRPC health status of
// "" and of every API service to SERVING or NOT_SERVING from the answer.
type Server struct {
	cfg    ServerConfig
	node   *Node
	grpc   *grpc.Server
	health *health.Server
	http   *http.Server
	pprof  *http.Server // nil unless cfg.PprofAddr is set
	fwd    *forwarder   // sends calls for shows owned elsewhere to their owner

	grpcLis, httpLis, pprofLis net.Listener
	services                   []string        // health service names: "" and the API's services; set by Start
	life                       context.Context // ends at Shutdown, cutting off a health ping
	endLife                    context.CancelFunc
	stopOnce                   sync.Once
	wg                         sync.WaitGroup // the serving goroutines and the health checker
}

// NewServer returns a server for n; Start listens. It returns an error if
// cfg lacks the tokens (and is not Insecure), if cfg.PprofAddr is set and
// not loopback, or if a limit is negative.
func NewServer(n *Node, cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, node: n, health: health.NewServer(), fwd: newForwarder(n.cfg.Ring, n.metrics.forwardConns)}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.grpc = grpc.NewServer(
		grpc.ChainUnaryInterceptor(s.observe, s.authUnary, s.routeUnary), grpc.ChainStreamInterceptor(s.authStream, s.routeStream),
		// The wire format is protobuf's, decoded and encoded by generated
		// code rather than by reflection.
		grpc.ForceServerCodecV2(wirecodec.Codec{}),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
	)
	pb.RegisterCatalogServiceServer(s.grpc, catalogServer{n: n})
	pb.RegisterReservationServiceServer(s.grpc, &reservationServer{n: n, life: s.life, pipelineMax: cfg.PipelineMaxInFlight, watch: newSeatMapHub(n, s.life)})
	pb.RegisterAdminServiceServer(s.grpc, adminServer{n: n})
	wheel := newPollWheel(s.life)
	pb.RegisterWaitlistServiceServer(s.grpc, waitlistServer{n: n, life: s.life, wheel: wheel})
	pb.RegisterWaitingRoomServiceServer(s.grpc, roomServer{n: n, life: s.life, wheel: wheel})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)

	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if j, ok := n.cfg.Ring.(interface{ Joined() bool }); ok && !j.Joined() {
			http.Error(w, "not joined to the cluster yet", http.StatusServiceUnavailable)
			return
		}
		if err := n.store.Ping(ctx); err != nil {
			http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	if cfg.PprofAddr != "" {
		// Profiles, for finding where the time goes under load (`go tool
		// pprof http://<pprof-addr>/debug/pprof/profile?seconds=10`). Not
		// /debug/pprof/cmdline: the command line may hold secrets, and
		// profiling does not need it.
		pm := http.NewServeMux()
		pm.HandleFunc("/debug/pprof/", pprof.Index)
		pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.pprof = &http.Server{Handler: pm, ReadHeaderTimeout: 5 * time.Second}
	}
	return s, nil
}

// Start listens on the configured addresses, pings the store once to set
// the health status, and serves in the background. On an error it closes
// what it opened.
func (s *Server) Start() (err error) {
	defer func() {
		if err != nil {
			for _, l := range []net.Listener{s.grpcLis, s.httpLis, s.pprofLis} {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	lis := s.cfg.GRPCListener
	if lis == nil {
		if lis, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
			return fmt.Errorf("grpc listen: %w", err)
		}
	}
	s.grpcLis = &limitListener{Listener: lis, slots: make(chan struct{}, s.cfg.MaxConns)}
	if s.httpLis, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	if s.pprof != nil {
		if s.pprofLis, err = net.Listen("tcp", s.cfg.PprofAddr); err != nil {
			return fmt.Errorf("pprof listen: %w", err)
		}
		if a, ok := s.pprofLis.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			return fmt.Errorf("pprof listen: %s is not a loopback address", s.pprofLis.Addr())
		}
	}

	s.services = []string{""}
	for name := range s.grpc.GetServiceInfo() {
		if strings.HasPrefix(name, "boxoffice.") {
			s.services = append(s.services, name)
		}
	}
	s.checkHealth()

	serve := func(name string, f func() error) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.cfg.Logger.Error(name+" server", "err", err)
			}
		}()
	}
	serve("grpc", func() error { return s.grpc.Serve(s.grpcLis) })
	serve("http", func() error { return s.http.Serve(s.httpLis) })
	if s.pprof != nil {
		serve("pprof", func() error { return s.pprof.Serve(s.pprofLis) })
	}
	s.wg.Add(1)
	go s.watchHealth()
	return nil
}

// watchHealth refreshes the health status every HealthInterval until
// Shutdown.
func (s *Server) watchHealth() {
	defer s.wg.Done()
	tick := time.NewTicker(s.cfg.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.life.Done():
			return
		case <-tick.C:
			s.checkHealth()
		}
	}
}

// checkHealth pings the store and sets every health service's status from
// the answer. A ping cut off by Shutdown changes nothing that matters: the
// health server ignores updates once shut down.
func (s *Server) checkHealth() {
	ctx, cancel := context.WithTimeout(s.life, healthPingTimeout)
	defer cancel()
	st := healthpb.HealthCheckResponse_SERVING
	if err := s.node.store.Ping(ctx); err != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, name := range s.services {
		s.health.SetServingStatus(name, st)
	}
}

// GRPCAddr returns the address gRPC listens on.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr returns the address HTTP listens on.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// PprofAddr returns the address profiles are served on, or "" if none.
func (s *Server) PprofAddr() string {
	if s.pprofLis == nil {
		return ""
	}
	return s.pprofLis.Addr().String()
}

// Shutdown sets the health status to NOT_SERVING, drains the node
// (Node.Drain: new changes are answered Unavailable SHUTTING_DOWN while the
// changes in flight finish, within ctx), stops the health checker, stops
// taking requests and lets in-flight ones finish within ctx;
// after that it cuts them off. It returns once every goroutine Start
// started has ended. It is idempotent: later calls return nil at once.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		err = s.node.Drain(ctx)
		s.endLife()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
			if err == nil {
				err = fmt.Errorf("grpc drain: %w", ctx.Err())
			}
		}
		if herr := s.http.Shutdown(ctx); herr != nil && err == nil {
			err = herr
		}
		if s.pprof != nil {
			// A profile may run for minutes; it is cut off, not drained.
			if perr := s.pprof.Close(); perr != nil && err == nil {
				err = perr
			}
		}
		s.wg.Wait()
		s.fwd.close()
	})
	return err
}

// Kill stops serving at once, as a crash would: open calls and connections
// are cut, nothing is drained. For tests of failures; Shutdown is the
// graceful stop.
func (s *Server) Kill() {
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		s.endLife()
		s.grpc.Stop()
		s.http.Close()
		if s.pprof != nil {
			s.pprof.Close()
		}
		s.wg.Wait()
		s.fwd.close()
	})
}

// limitListener accepts at most cap(slots) open connections. A connection
// accepted beyond that is closed at once (the client sees it closed before
// the server's HTTP/2 preface, and gRPC clients retry with backoff) rather
// than left waiting in the kernel's backlog. Closing a connection frees
// its slot.
type limitListener struct {
	net.Listener
	slots chan struct{} // one element per open connection
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

// limitConn frees its listener slot on its first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// adminMethod reports RPCs that need the admin token.
func adminMethod(full string) bool {
	return full == pb.CatalogService_CreateShow_FullMethodName || full == pb.WaitingRoomService_SetWaitingRoom_FullMethodName ||
		strings.HasPrefix(full, "/boxoffice.v1.AdminService/")
}

// openMethod reports RPCs that need no token: health checks and reflection.
func openMethod(full string) bool {
	return strings.HasPrefix(full, "/grpc.health.v1.") || strings.HasPrefix(full, "/grpc.reflection.")
}

func (s *Server) authorize(ctx context.Context, method string) error {
	if s.cfg.Insecure || openMethod(method) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if v := md.Get("authorization"); len(v) == 1 {
		// The scheme is case-insensitive (RFC 9110 section 11.1).
		if scheme, rest, ok := strings.Cut(v[0], " "); ok && strings.EqualFold(scheme, "Bearer") {
			tok = rest
		}
	}
	if tok == "" {
		return authError(codes.Unauthenticated, "UNAUTHENTICATED", "missing 'authorization: Bearer <token>' metadata")
	}
	admin := subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.AdminToken)) == 1
	if admin {
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
		return authError(codes.Unauthenticated, "UNAUTHENTICATED", "invalid token")
	}
	if adminMethod(method) {
		return authError(codes.PermissionDenied, "ADMIN_ONLY", "this RPC needs the admin token")
	}
	return nil
}

// authError is a refusal by authorize, shaped like every other error of the
// API (see toStatus): the reason prefixes the message and is in an ErrorInfo.
func authError(code codes.Code, reason, msg string) error {
	st, err := status.New(code, reason+": "+msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain})
	if err != nil {
		return status.Error(code, reason+": "+msg)
	}
	return st.Err()
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// observe records every unary RPC's code and latency.
func (s *Server) observe(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	s.node.metrics.rpc(method, status.Code(err).String(), time.Since(start))
	return resp, err
}
