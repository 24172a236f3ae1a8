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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// ServerConfig configures the network side of a node.
type ServerConfig struct {
	// GRPCAddr and HTTPAddr are listen addresses; port 0 picks a free port.
	GRPCAddr, HTTPAddr string
	// Token is the bearer token of the web tier; AdminToken also allows
	// CreateShow and AdminService. Both are required unless Insecure.
	Token, AdminToken string
	// Insecure serves without authentication. For local experiments only.
	Insecure bool
	// Gatherer serves /metrics. Nil serves no metrics.
	Gatherer prometheus.Gatherer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Server serves a node over gRPC (the API, reflection and health) and
// HTTP (/metrics, /healthz, /readyz).
type Server struct {
	cfg    ServerConfig
	node   *Node
	grpc   *grpc.Server
	health *health.Server
	http   *http.Server

	grpcLis, httpLis net.Listener
	stopOnce         sync.Once
	wg               sync.WaitGroup
}

// NewServer returns a server for n; Start listens.
func NewServer(n *Node, cfg ServerConfig) (*Server, error) {
	if !cfg.Insecure && (cfg.Token == "" || cfg.AdminToken == "") {
		return nil, errors.New("server: a token and an admin token are required (or Insecure)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, node: n, health: health.NewServer()}
	s.grpc = grpc.NewServer(grpc.ChainUnaryInterceptor(s.observe, s.authUnary), grpc.StreamInterceptor(s.authStream))
	pb.RegisterCatalogServiceServer(s.grpc, catalogServer{n: n})
	pb.RegisterReservationServiceServer(s.grpc, &reservationServer{n: n})
	pb.RegisterAdminServiceServer(s.grpc, adminServer{n: n})
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
		if err := n.store.Ping(ctx); err != nil {
			http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	// Profiles, for finding where the time goes under load (`go tool pprof
	// http://<http-addr>/debug/pprof/profile?seconds=10`). The HTTP address
	// is loopback by default; expose it no wider than /metrics.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Start listens on both addresses and serves in the background.
func (s *Server) Start() error {
	var err error
	if s.grpcLis, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	if s.httpLis, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		s.grpcLis.Close()
		return fmt.Errorf("http listen: %w", err)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(s.grpcLis); err != nil {
			s.cfg.Logger.Error("grpc server", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("http server", "err", err)
		}
	}()
	return nil
}

// GRPCAddr returns the address gRPC listens on.
func (s *Server) GRPCAddr() string { return s.grpcLis.Addr().String() }

// HTTPAddr returns the address HTTP listens on.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Shutdown stops taking requests and lets in-flight ones finish within ctx;
// after that it cuts them off. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.health.Shutdown()
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
			err = fmt.Errorf("grpc drain: %w", ctx.Err())
		}
		if herr := s.http.Shutdown(ctx); herr != nil && err == nil {
			err = herr
		}
		s.wg.Wait()
	})
	return err
}

// adminMethod reports RPCs that need the admin token.
func adminMethod(full string) bool {
	return full == pb.CatalogService_CreateShow_FullMethodName || strings.HasPrefix(full, "/boxoffice.v1.AdminService/")
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
