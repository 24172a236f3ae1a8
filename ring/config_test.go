package ring

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Name = "a"
	c.GRPCAddr = "127.0.0.1:7070"
	return c
}

func TestValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"partition count not prime", func(c *Config) { c.PartitionCount = 270 }},
		{"partition count zero", func(c *Config) { c.PartitionCount = 0 }},
		{"partition count prime below minimum", func(c *Config) { c.PartitionCount = 5 }},
		{"partition count above maximum", func(c *Config) { c.PartitionCount = 65537 }},
		{"load 1", func(c *Config) { c.Load = 1 }},
		{"load below 1", func(c *Config) { c.Load = 0.5 }},
		{"load NaN", func(c *Config) { c.Load = math.NaN() }},
		{"load infinite", func(c *Config) { c.Load = math.Inf(1) }},
		{"replication factor 0", func(c *Config) { c.ReplicationFactor = 0 }},
		{"replication factor negative", func(c *Config) { c.ReplicationFactor = -1 }},
		{"replication factor too large", func(c *Config) { c.ReplicationFactor = MaxReplicationFactor + 1 }},
		{"empty name", func(c *Config) { c.Name = "" }},
		{"name too long", func(c *Config) { c.Name = strings.Repeat("n", MaxNameLen+1) }},
		{"name not UTF-8", func(c *Config) { c.Name = "\xff" }},
		{"metadata too long", func(c *Config) { c.GRPCAddr = strings.Repeat("h", 500) + ":7070" }},
		{"gRPC address missing", func(c *Config) { c.GRPCAddr = "" }},
		{"gRPC address without port", func(c *Config) { c.GRPCAddr = "127.0.0.1" }},
		{"gRPC address without host", func(c *Config) { c.GRPCAddr = ":7070" }},
		{"gRPC port 0", func(c *Config) { c.GRPCAddr = "127.0.0.1:0" }},
		{"key of 10 bytes", func(c *Config) { c.SecretKey = []byte("0123456789") }},
		{"empty key", func(c *Config) { c.SecretKey = []byte{} }},
		{"bind address a host name", func(c *Config) { c.BindAddr = "localhost" }},
		{"bind port out of range", func(c *Config) { c.BindPort = 70000 }},
		{"join entry without port", func(c *Config) { c.Join = []string{"127.0.0.1"} }},
		{"negative probe interval", func(c *Config) { c.ProbeInterval = -time.Second }},
		{"zero gossip interval", func(c *Config) { c.GossipInterval = 0 }},
		{"probe timeout above interval", func(c *Config) { c.ProbeTimeout = 2 * c.ProbeInterval }},
		{"zero join timeout", func(c *Config) { c.JoinTimeout = 0 }},
		{"negative reconnect timeout", func(c *Config) { c.ReconnectTimeout = -1 }},
		{"suspicion mult 0", func(c *Config) { c.SuspicionMult = 0 }},
		{"suspicion max timeout mult 0", func(c *Config) { c.SuspicionMaxTimeoutMult = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
			if r, err := New(c); err == nil {
				_ = r.Shutdown()
				if c.WithDefaults().Validate() != nil {
					t.Error("New accepted a config that Validate refuses after defaults")
				}
			}
		})
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"smallest partition count", func(c *Config) { c.PartitionCount = MinPartitionCount }},
		{"largest partition count", func(c *Config) { c.PartitionCount = MaxPartitionCount }},
		{"load just above 1", func(c *Config) { c.Load = math.Nextafter(1, 2) }},
		{"replication factor 1", func(c *Config) { c.ReplicationFactor = 1 }},
		{"24-byte key", func(c *Config) { c.SecretKey = make([]byte, 24) }},
		{"IPv6 bind address", func(c *Config) { c.BindAddr = "::1" }},
		{"host-name gRPC address", func(c *Config) { c.GRPCAddr = "node-1.internal:7070" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewFillsDefaults(t *testing.T) {
	// Zero tunables mean defaults in New, though Validate alone refuses them.
	cfg := Config{Name: "solo", GRPCAddr: "127.0.0.1:7070"}
	if cfg.Validate() == nil {
		t.Error("Validate accepted zero tunables")
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown()
	if r.cfg.ReplicationFactor != DefaultReplicationFactor || r.cfg.PartitionCount != DefaultPartitionCount || r.cfg.Load != DefaultLoad {
		t.Errorf("defaults not applied: %+v", r.cfg)
	}
	if !strings.HasPrefix(r.GossipAddr(), "127.0.0.1:") || strings.HasSuffix(r.GossipAddr(), ":0") {
		t.Errorf("GossipAddr %q", r.GossipAddr())
	}
	if !r.Joined() {
		t.Error("alone by configuration, but Joined() = false")
	}
	if m := r.Members(); len(m) != 1 || m[0] != r.Self() || r.Self().GRPCAddr != "127.0.0.1:7070" {
		t.Errorf("Members %+v, Self %+v", m, r.Self())
	}
	if o := r.Owner("show-1"); o.Name != "solo" {
		t.Errorf("alone, owner is %+v", o)
	}
	if got := r.Partitions()["solo"]; got != DefaultPartitionCount {
		t.Errorf("alone, owns %d partitions", got)
	}
}
