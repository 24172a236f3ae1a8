package testcluster

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy is a fault-injecting TCP proxy (toxiproxy, in process) between a
// node and PostgreSQL: it can cut every connection, refuse new ones, and
// black-hole traffic while keeping connections open.
type Proxy struct {
	t     testing.TB
	p     *toxiproxy.Proxy
	url   string
	mu    sync.Mutex // guards holed
	holed bool
}

// NewDBProxy starts a proxy in front of the database at dbURL; URL returns
// dbURL through the proxy. It stops at t.Cleanup.
func NewDBProxy(t testing.TB, dbURL string) *Proxy {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := NewProxy(t, u.Host)
	u.Host = p.Addr()
	p.url = u.String()
	return p
}

// NewProxy starts a proxy in front of the TCP address addr (a node's gRPC
// address, say); Addr is its own address. It stops at t.Cleanup.
func NewProxy(t testing.TB, addr string) *Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "tcp", "127.0.0.1:0", addr)
	if err := p.Start(); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return &Proxy{t: t, p: p}
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.p.Listen }

// URL is the database URL through the proxy (NewDBProxy).
func (p *Proxy) URL() string { return p.url }

// Cut closes every connection through the proxy and refuses new ones until
// Reconnect.
func (p *Proxy) Cut() { p.p.Stop() }

// Reconnect accepts connections again after Cut, on the same address.
func (p *Proxy) Reconnect() {
	p.t.Helper()
	if err := p.p.Start(); err != nil {
		p.t.Fatalf("proxy: restart: %v", err)
	}
}

// BlackHole stops every byte from the node to the database, on open and new
// connections alike, without closing any: the database never hears the
// node's requests, and the node waits for answers that never come. Lift
// ends it.
func (p *Proxy) BlackHole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holed {
		return
	}
	p.holed = true
	_, err := p.p.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`))
	if err != nil {
		p.t.Fatalf("proxy: black hole: %v", err)
	}
}

// Lift ends a BlackHole; the connections it held are closed.
func (p *Proxy) Lift() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.holed {
		return
	}
	p.holed = false
	if err := p.p.Toxics.RemoveToxic(context.Background(), "blackhole"); err != nil {
		p.t.Fatalf("proxy: lift: %v", err)
	}
}
