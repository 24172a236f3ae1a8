package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/boxoffice/boxoffice/engine"
	"github.com/boxoffice/boxoffice/persistence"
)

// serveConfig is everything `serve` needs, from flags and environment.
type serveConfig struct {
	DatabaseURL string
	Migrate     bool
	GRPCAddr    string
	HTTPAddr    string
	NodeID      string
	Token       string
	AdminToken  string
	Insecure    bool
	LogFormat   string
	DrainTime   time.Duration
}

// parseServe reads flags, each defaulting to its BOXOFFICE_* environment
// variable (a flag given on the command line wins).
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
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.DatabaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL URL (required) [BOXOFFICE_DATABASE_URL]")
	fs.BoolVar(&c.Migrate, "migrate", envBool("MIGRATE"), "apply migrations at start-up [BOXOFFICE_MIGRATE=1]")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", env("GRPC_ADDR", "127.0.0.1:7070"), "gRPC listen address [BOXOFFICE_GRPC_ADDR]")
	fs.StringVar(&c.HTTPAddr, "http-addr", env("HTTP_ADDR", "127.0.0.1:7071"), "metrics and health listen address [BOXOFFICE_HTTP_ADDR]")
	fs.StringVar(&c.NodeID, "node-id", env("NODE_ID", host), "unique node name [BOXOFFICE_NODE_ID]")
	fs.StringVar(&c.Token, "token", env("TOKEN", ""), "bearer token of the web tier [BOXOFFICE_TOKEN]")
	fs.StringVar(&c.AdminToken, "admin-token", env("ADMIN_TOKEN", ""), "bearer token for admin RPCs [BOXOFFICE_ADMIN_TOKEN]")
	fs.BoolVar(&c.Insecure, "insecure", envBool("INSECURE"), "serve without tokens (local experiments only) [BOXOFFICE_INSECURE=1]")
	fs.StringVar(&c.LogFormat, "log-format", env("LOG_FORMAT", "text"), "text or json [BOXOFFICE_LOG_FORMAT]")
	fs.DurationVar(&c.DrainTime, "drain-timeout", 20*time.Second, "on SIGTERM, how long in-flight requests may take")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.DatabaseURL == "":
		return c, errors.New("serve: --database-url or BOXOFFICE_DATABASE_URL is required")
	case c.NodeID == "":
		return c, errors.New("serve: --node-id is required")
	case !c.Insecure && (c.Token == "" || c.AdminToken == ""):
		return c, errors.New("serve: --token and --admin-token are required (or --insecure)")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return c, fmt.Errorf("serve: --log-format %q: want text or json", c.LogFormat)
	}
	return c, nil
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
	log := newLogger(cfg.LogFormat)
	nd, err := startNode(ctx, cfg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("signal received; draining")
	return nd.shutdown(cfg.DrainTime)
}

// node is a running node: store, engine and servers.
type node struct {
	store  *persistence.Store
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
		URL:    cfg.DatabaseURL,
		NodeID: cfg.NodeID,
		Logger: log,
		Observer: func(b persistence.BatchStats) {
			if eng != nil {
				eng.ObserveBatch(b)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	eng, err = engine.New(engine.Config{NodeID: cfg.NodeID, Logger: log, Registerer: reg}, store)
	if err != nil {
		store.Close(context.Background())
		return nil, err
	}
	eng.Start()
	srv, err := engine.NewServer(eng, engine.ServerConfig{
		GRPCAddr: cfg.GRPCAddr, HTTPAddr: cfg.HTTPAddr,
		Token: cfg.Token, AdminToken: cfg.AdminToken, Insecure: cfg.Insecure,
		Gatherer: reg, Logger: log,
	})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		eng.Shutdown(context.Background())
		store.Close(context.Background())
		return nil, err
	}
	log.Info("serving", "node", cfg.NodeID, "grpc", srv.GRPCAddr(), "http", srv.HTTPAddr())
	return &node{store: store, engine: eng, server: srv, log: log}, nil
}

// shutdown stops taking requests, lets in-flight ones finish, stops the
// engine, and flushes the writer: what was acknowledged is committed.
func (nd *node) shutdown(drain time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	var errs []error
	errs = append(errs, nd.server.Shutdown(ctx))
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
