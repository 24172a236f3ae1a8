package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// defaultGCPercent is serve's garbage collector target. A node's live heap
// is small (~8 MB in the hold storm) and it allocates per call, so at Go's
// 100 it collects ~15 times a second under load; at 400 the heap may grow
// to five times the live one, a few tens of MB, and GC runs a quarter as
// often. (Hold storm, 3 pairs: engine CPU per attempt 9.2 -> 7.2 us, 1.18x
// attempts/s.) GOMEMLIMIT, as for any Go program, caps the heap.
const defaultGCPercent = 400

// serveConfig is everything `serve` needs, from flags and environment.
// Zero limits and intervals mean the engine's defaults.
type serveConfig struct {
	DatabaseURL string
	Migrate     bool
	GRPCAddr    string
	HTTPAddr    string
	PprofAddr   string
	NodeID      string
	Token       string
	AdminToken  string
	Insecure    bool
	LogFormat   string
	DrainTime   time.Duration
	// GCPercent is the garbage collector's target (Go's GOGC); 0 leaves
	// the runtime's (the GOGC variable's).
	GCPercent int

	GRPCMaxStreams       uint32
	GRPCMaxRecvBytes     int
	GRPCMaxConns         int
	GRPCKeepaliveMinTime time.Duration
	GRPCKeepaliveTime    time.Duration
	GRPCKeepaliveTimeout time.Duration
	HealthInterval       time.Duration

	IdempotencyRetention time.Duration
	IdleEvict            time.Duration
	NotFoundTTL          time.Duration
	MaxConcurrentLoads   int
	MaxWaitlist          int

	// GossipAddr, if set, makes the node a cluster member gossiping on this
	// address (host:port, an IP); Join are members to join; GossipKey the
	// gossip encryption key (raw bytes).
	GossipAddr string
	Join       []string
	GossipKey  []byte

	// AdmissionKey signs and checks waiting rooms' admission tokens (raw
	// bytes); nil: none.
	AdmissionKey []byte
}

// parseServe reads flags, each defaulting to its BOXOFFICE_* environment
// variable (a flag given on the command line wins). Each secret may
// instead be read from a file (--token-file, ...); see secretFromFile.
func parseServe(args []string) (serveConfig, error) {
	env := func(name, def string) string {
		if v, ok := os.LookupEnv("BOXOFFICE_" + name); ok {
			return v
		}
		return def
	}
	envBool := func(name string) bool {
		v, _ := strconv.ParseBool(env(name, "false"))
		return v
	}
	host, _ := os.Hostname()
	var c serveConfig
	var tokenFile, adminTokenFile, databaseURLFile, join, gossipKey, gossipKeyFile, admissionKey, admissionKeyFile string
	var maxStreams uint64
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	// envErrs holds, by flag name, environment values that do not parse;
	// they are errors unless the flag is given on the command line.
	envErrs := map[string]error{}
	envInt := func(flagName, name string, def int) int {
		return envParse(envErrs, flagName, name, def, strconv.Atoi)
	}
	envDuration := func(flagName, name string, def time.Duration) time.Duration {
		return envParse(envErrs, flagName, name, def, time.ParseDuration)
	}
	fs.StringVar(&c.DatabaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL URL (required) [BOXOFFICE_DATABASE_URL]")
	fs.StringVar(&databaseURLFile, "database-url-file", env("DATABASE_URL_FILE", ""), "file holding the PostgreSQL URL, instead of --database-url [BOXOFFICE_DATABASE_URL_FILE]")
	fs.BoolVar(&c.Migrate, "migrate", envBool("MIGRATE"), "apply migrations at start-up [BOXOFFICE_MIGRATE=1]")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", env("GRPC_ADDR", "127.0.0.1:7070"), "gRPC listen address [BOXOFFICE_GRPC_ADDR]")
	fs.StringVar(&c.HTTPAddr, "http-addr", env("HTTP_ADDR", "127.0.0.1:7071"), "metrics and health listen address [BOXOFFICE_HTTP_ADDR]")
	fs.StringVar(&c.PprofAddr, "pprof-addr", env("PPROF_ADDR", ""), "serve /debug/pprof/ on this loopback address; empty: no profiling [BOXOFFICE_PPROF_ADDR]")
	fs.StringVar(&c.NodeID, "node-id", env("NODE_ID", host), "unique node name [BOXOFFICE_NODE_ID]")
	fs.StringVar(&c.Token, "token", env("TOKEN", ""), "bearer token of the web tier [BOXOFFICE_TOKEN]")
	fs.StringVar(&tokenFile, "token-file", env("TOKEN_FILE", ""), "file holding the token, instead of --token [BOXOFFICE_TOKEN_FILE]")
	fs.StringVar(&c.AdminToken, "admin-token", env("ADMIN_TOKEN", ""), "bearer token for admin RPCs [BOXOFFICE_ADMIN_TOKEN]")
	fs.StringVar(&adminTokenFile, "admin-token-file", env("ADMIN_TOKEN_FILE", ""), "file holding the admin token, instead of --admin-token [BOXOFFICE_ADMIN_TOKEN_FILE]")
	fs.BoolVar(&c.Insecure, "insecure", envBool("INSECURE"), "serve without tokens (local experiments only) [BOXOFFICE_INSECURE=1]")
	fs.StringVar(&c.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json [BOXOFFICE_LOG_FORMAT]")
	fs.DurationVar(&c.DrainTime, "drain-timeout", 20*time.Second, "on SIGTERM, how long in-flight requests may take")
	fs.IntVar(&c.GCPercent, "gogc", envInt("gogc", "GOGC", defaultGCPercent),
		"the garbage collector's target percent (Go's GOGC); without this flag or its variable, a GOGC variable is kept [BOXOFFICE_GOGC]")
	fs.Uint64Var(&maxStreams, "grpc-max-streams", uint64(envInt("grpc-max-streams", "GRPC_MAX_STREAMS", engine.DefaultMaxConcurrentStreams)),
		"most concurrent calls per gRPC connection [BOXOFFICE_GRPC_MAX_STREAMS]")
	fs.IntVar(&c.GRPCMaxRecvBytes, "grpc-max-recv-bytes", envInt("grpc-max-recv-bytes", "GRPC_MAX_RECV_BYTES", engine.DefaultMaxRecvMsgSize),
		"largest gRPC request message in bytes [BOXOFFICE_GRPC_MAX_RECV_BYTES]")
	fs.IntVar(&c.GRPCMaxConns, "grpc-max-conns", envInt("grpc-max-conns", "GRPC_MAX_CONNS", engine.DefaultMaxConns),
		"most open gRPC connections; more are closed at once [BOXOFFICE_GRPC_MAX_CONNS]")
	fs.DurationVar(&c.GRPCKeepaliveMinTime, "grpc-keepalive-min-time", envDuration("grpc-keepalive-min-time", "GRPC_KEEPALIVE_MIN_TIME", engine.DefaultKeepaliveMinTime),
		"clients pinging more often are disconnected [BOXOFFICE_GRPC_KEEPALIVE_MIN_TIME]")
	fs.DurationVar(&c.GRPCKeepaliveTime, "grpc-keepalive-time", envDuration("grpc-keepalive-time", "GRPC_KEEPALIVE_TIME", engine.DefaultKeepaliveTime),
		"ping a client after its connection is idle this long [BOXOFFICE_GRPC_KEEPALIVE_TIME]")
	fs.DurationVar(&c.GRPCKeepaliveTimeout, "grpc-keepalive-timeout", envDuration("grpc-keepalive-timeout", "GRPC_KEEPALIVE_TIMEOUT", engine.DefaultKeepaliveTimeout),
		"close a connection whose ping is unanswered this long [BOXOFFICE_GRPC_KEEPALIVE_TIMEOUT]")
	fs.DurationVar(&c.HealthInterval, "health-interval", envDuration("health-interval", "HEALTH_INTERVAL", engine.DefaultHealthInterval),
		"how often gRPC health pings the database [BOXOFFICE_HEALTH_INTERVAL]")
	ed := engine.DefaultConfig()
	fs.DurationVar(&c.IdempotencyRetention, "idempotency-retention", envDuration("idempotency-retention", "IDEMPOTENCY_RETENTION", ed.IdempotencyRetention),
		"how long an idempotency key replays its answer; older keys are pruned from the database [BOXOFFICE_IDEMPOTENCY_RETENTION]")
	fs.DurationVar(&c.IdleEvict, "idle-evict", envDuration("idle-evict", "IDLE_EVICT", ed.IdleEvictAfter),
		"a show with no live holds unused this long leaves memory and its ownership is released [BOXOFFICE_IDLE_EVICT]")
	fs.DurationVar(&c.NotFoundTTL, "not-found-ttl", envDuration("not-found-ttl", "NOT_FOUND_TTL", ed.NotFoundTTL),
		"how long an unknown show ID is answered NotFound from memory [BOXOFFICE_NOT_FOUND_TTL]")
	fs.IntVar(&c.MaxConcurrentLoads, "max-concurrent-loads", envInt("max-concurrent-loads", "MAX_CONCURRENT_LOADS", ed.MaxConcurrentLoads),
		"most shows loading from the database at once [BOXOFFICE_MAX_CONCURRENT_LOADS]")
	fs.IntVar(&c.MaxWaitlist, "max-waitlist", envInt("max-waitlist", "MAX_WAITLIST", ed.MaxWaitlist),
		"most users on one show's waitlist; more are refused WAITLIST_FULL [BOXOFFICE_MAX_WAITLIST]")
	fs.StringVar(&c.GossipAddr, "gossip-addr", env("GOSSIP_ADDR", ""),
		"join a cluster: gossip on this IP:port (e.g. 127.0.0.1:7946); empty: the node is alone and owns every show [BOXOFFICE_GOSSIP_ADDR]")
	fs.StringVar(&join, "join", env("JOIN", ""), "comma-separated gossip addresses of cluster members to join; empty: start a cluster [BOXOFFICE_JOIN]")
	fs.StringVar(&gossipKey, "gossip-key", env("GOSSIP_KEY", ""), "base64 key (16, 24 or 32 bytes) that encrypts gossip; every member needs the same [BOXOFFICE_GOSSIP_KEY]")
	fs.StringVar(&gossipKeyFile, "gossip-key-file", env("GOSSIP_KEY_FILE", ""), "file holding the gossip key, instead of --gossip-key [BOXOFFICE_GOSSIP_KEY_FILE]")
	fs.StringVar(&admissionKey, "admission-key", env("ADMISSION_KEY", ""),
		"base64 key (at least 16 bytes) that signs and checks waiting rooms' admission tokens; every node needs the same; without it the node serves no show with a waiting room [BOXOFFICE_ADMISSION_KEY]")
	fs.StringVar(&admissionKeyFile, "admission-key-file", env("ADMISSION_KEY_FILE", ""), "file holding the admission key, instead of --admission-key [BOXOFFICE_ADMISSION_KEY_FILE]")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	gogcGiven := false
	fs.Visit(func(f *flag.Flag) {
		delete(envErrs, f.Name)
		gogcGiven = gogcGiven || f.Name == "gogc"
	})
	if _, ok := os.LookupEnv("BOXOFFICE_GOGC"); ok || gogcGiven {
		if c.GCPercent < 1 {
			return c, fmt.Errorf("serve: --gogc (or BOXOFFICE_GOGC) %d: want ≥ 1", c.GCPercent)
		}
	} else if os.Getenv("GOGC") != "" {
		c.GCPercent = 0
	}
	if len(envErrs) > 0 {
		var errs []error
		for _, name := range slices.Sorted(maps.Keys(envErrs)) {
			errs = append(errs, envErrs[name])
		}
		return c, errors.Join(errs...)
	}
	var err error
	if c.Token, err = secretFromFile("token", c.Token, tokenFile); err != nil {
		return c, fmt.Errorf("serve: %w", err)
	}
	if c.AdminToken, err = secretFromFile("admin-token", c.AdminToken, adminTokenFile); err != nil {
		return c, fmt.Errorf("serve: %w", err)
	}
	if c.DatabaseURL, err = secretFromFile("database-url", c.DatabaseURL, databaseURLFile); err != nil {
		return c, fmt.Errorf("serve: %w", err)
	}
	if gossipKey, err = secretFromFile("gossip-key", gossipKey, gossipKeyFile); err != nil {
		return c, fmt.Errorf("serve: %w", err)
	}
	if admissionKey, err = secretFromFile("admission-key", admissionKey, admissionKeyFile); err != nil {
		return c, fmt.Errorf("serve: %w", err)
	}
	if admissionKey != "" {
		if c.AdmissionKey, err = base64.StdEncoding.DecodeString(admissionKey); err != nil {
			return c, fmt.Errorf("serve: --admission-key: %w", err)
		}
		if _, err := wu.NewTokenKey(c.AdmissionKey); err != nil {
			return c, fmt.Errorf("serve: --admission-key: %w", err)
		}
	}
	if gossipKey != "" {
		if c.GossipKey, err = base64.StdEncoding.DecodeString(gossipKey); err != nil {
			return c, fmt.Errorf("serve: --gossip-key: %w", err)
		}
	}
	for _, a := range strings.Split(join, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.Join = append(c.Join, a)
		}
	}
	switch {
	case c.GossipAddr == "" && (len(c.Join) > 0 || c.GossipKey != nil):
		return c, errors.New("serve: --join and --gossip-key need --gossip-addr")
	case c.DatabaseURL == "":
		return c, errors.New("serve: --database-url, --database-url-file or BOXOFFICE_DATABASE_URL(_FILE) is required")
	case c.NodeID == "":
		return c, errors.New("serve: --node-id is required")
	case !c.Insecure && (c.Token == "" || c.AdminToken == ""):
		return c, errors.New("serve: --token and --admin-token (or their -file forms) are required (or --insecure)")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return c, fmt.Errorf("serve: --log-format %q: want text or json", c.LogFormat)
	case maxStreams < 1 || maxStreams > math.MaxUint32:
		return c, fmt.Errorf("serve: --grpc-max-streams %d: want 1 to %d", maxStreams, uint64(math.MaxUint32))
	case c.GRPCMaxRecvBytes < 1 || c.GRPCMaxConns < 1:
		return c, errors.New("serve: --grpc-max-recv-bytes and --grpc-max-conns must be positive")
	case c.GRPCKeepaliveMinTime <= 0 || c.GRPCKeepaliveTime <= 0 || c.GRPCKeepaliveTimeout <= 0 || c.HealthInterval <= 0:
		return c, errors.New("serve: --grpc-keepalive-min-time, --grpc-keepalive-time, --grpc-keepalive-timeout and --health-interval must be positive")
	case c.IdempotencyRetention <= 0 || c.IdleEvict <= 0 || c.NotFoundTTL <= 0 || c.MaxConcurrentLoads < 1 || c.MaxWaitlist < 1:
		return c, errors.New("serve: --idempotency-retention, --idle-evict, --not-found-ttl, --max-concurrent-loads and --max-waitlist must be positive")
	}
	c.GRPCMaxStreams = uint32(maxStreams)
	return c, nil
}

// envParse returns the variable BOXOFFICE_<name> parsed, or def when it is
// not set; a value that does not parse is recorded in errs under flagName
// (it is an error unless the flag is given) and def returned.
func envParse[T any](errs map[string]error, flagName, name string, def T, parse func(string) (T, error)) T {
	v, ok := os.LookupEnv("BOXOFFICE_" + name)
	if !ok {
		return def
	}
	x, err := parse(v)
	if err != nil {
		errs[flagName] = fmt.Errorf("serve: BOXOFFICE_%s: %w", name, err)
		return def
	}
	return x
}

// secretFromFile returns the secret named name (a flag name such as
// "token"): value if file is empty, else the contents of file with
// surrounding white space (such as the trailing newline of `echo`)
// trimmed. Both a value and a file, a file that cannot be read, or one
// that holds only white space is an error.
func secretFromFile(name, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	if value != "" {
		v := "BOXOFFICE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		return "", fmt.Errorf("both --%[1]s (or %[2]s) and --%[1]s-file (or %[2]s_FILE) are given; give one", name, v)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--%s-file: %w", name, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("--%s-file %s is empty", name, file)
	}
	return v, nil
}

func newLogger(format string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

func runServe(ctx context.Context, args []string) error {
	cfg, err := parseServe(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	log := newLogger(cfg.LogFormat)
	nd, err := startNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("signal received; draining")
	return nd.shutdown(cfg.DrainTime)
}

// node is a running node: store, ring (nil when alone), engine and servers.
type node struct {
	store  *persistence.Store
	ring   *ring.Ring
	engine *engine.Node
	server *engine.Server
	log    *slog.Logger
}

// startNode opens the store (migrating first if asked), starts the engine
// and its servers. Serve and demo share it.
func startNode(ctx context.Context, cfg serveConfig, log *slog.Logger) (*node, error) {
	if cfg.Migrate {
		if err := persistence.Migrate(ctx, cfg.DatabaseURL); err != nil {
			return nil, err
		}
		log.Info("migrations applied")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var eng *engine.Node
	store, err := persistence.Open(ctx, persistence.Config{
		URL:                  cfg.DatabaseURL,
		NodeID:               cfg.NodeID,
		IdempotencyRetention: cfg.IdempotencyRetention,
		Logger:               log,
		Observer: func(b persistence.BatchStats) {
			if eng != nil {
				eng.ObserveBatch(b)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	ecfg := engine.Config{
		NodeID: cfg.NodeID, Logger: log, Registerer: reg,
		IdempotencyRetention: cfg.IdempotencyRetention, IdleEvictAfter: cfg.IdleEvict,
		NotFoundTTL: cfg.NotFoundTTL, MaxConcurrentLoads: cfg.MaxConcurrentLoads, MaxWaitlist: cfg.MaxWaitlist,
		LeaseRenewInterval: store.LeaseDuration() / 3,
	}
	if cfg.AdmissionKey != nil {
		ecfg.AdmissionKey = wu.TokenKey(cfg.AdmissionKey)
	}
	// A cluster member binds its gRPC port first, to put the address in the
	// ring before it serves.
	var lis net.Listener
	var rg *ring.Ring
	if cfg.GossipAddr != "" {
		host, port, err := net.SplitHostPort(cfg.GossipAddr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			store.Close(context.Background())
			return nil, fmt.Errorf("--gossip-addr %q: want IP:port", cfg.GossipAddr)
		}
		if lis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
			store.Close(context.Background())
			return nil, fmt.Errorf("grpc listen: %w", err)
		}
		rg, err = ring.New(ring.Config{
			Name: cfg.NodeID, BindAddr: host, BindPort: p, GRPCAddr: lis.Addr().String(),
			Join: cfg.Join, SecretKey: cfg.GossipKey, Logger: log,
		})
		if err != nil {
			lis.Close()
			store.Close(context.Background())
			return nil, err
		}
		ecfg.Ring = rg
		log.Info("cluster member", "gossip", rg.GossipAddr(), "members", len(rg.Members()))
	}
	eng, err = engine.New(ecfg, store)
	if err != nil {
		if rg != nil {
			rg.Shutdown()
			lis.Close()
		}
		store.Close(context.Background())
		return nil, err
	}
	eng.Start()
	srv, err := engine.NewServer(eng, engine.ServerConfig{
		GRPCAddr: cfg.GRPCAddr, GRPCListener: lis, HTTPAddr: cfg.HTTPAddr, PprofAddr: cfg.PprofAddr,
		Token: cfg.Token, AdminToken: cfg.AdminToken, Insecure: cfg.Insecure,
		Gatherer: reg, Logger: log,
		MaxConcurrentStreams: cfg.GRPCMaxStreams, MaxRecvMsgSize: cfg.GRPCMaxRecvBytes, MaxConns: cfg.GRPCMaxConns,
		KeepaliveMinTime: cfg.GRPCKeepaliveMinTime, KeepaliveTime: cfg.GRPCKeepaliveTime,
		KeepaliveTimeout: cfg.GRPCKeepaliveTimeout, HealthInterval: cfg.HealthInterval,
	})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		if rg != nil {
			rg.Shutdown()
		}
		eng.Shutdown(context.Background())
		store.Close(context.Background())
		return nil, err
	}
	if srv.PprofAddr() != "" {
		log.Info("serving profiles", "pprof", srv.PprofAddr())
	}
	log.Info("serving", "node", cfg.NodeID, "grpc", srv.GRPCAddr(), "http", srv.HTTPAddr(), "gomaxprocs", runtime.GOMAXPROCS(0))
	return &node{store: store, ring: rg, engine: eng, server: srv, log: log}, nil
}

// shutdown leaves the cluster (the other members take over this node's
// shows, waiting for their leases), drains the node (new changes are
// answered SHUTTING_DOWN while those in flight finish), stops taking
// requests, lets in-flight ones finish, releases the shows' leases so the
// new owners take them at once, stops the engine, and flushes the writer:
// what was acknowledged is committed.
func (nd *node) shutdown(drain time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	var errs []error
	if nd.ring != nil {
		errs = append(errs, nd.ring.Leave(2*time.Second))
	}
	errs = append(errs, nd.server.Shutdown(ctx))
	nd.engine.ReleaseAll(ctx)
	errs = append(errs, nd.engine.Shutdown(ctx))
	errs = append(errs, nd.store.Close(ctx))
	err := errors.Join(errs...)
	if err != nil {
		nd.log.Error("shutdown", "err", err)
	} else {
		nd.log.Info("stopped")
	}
	return err
}
