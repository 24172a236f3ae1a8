package ring

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Limits checked by Validate.
const (
	// MaxNameLen bounds Config.Name. memberlist gossips the name in every
	// alive message, and a message must fit one UDP packet (1400 bytes)
	// together with the metadata.
	MaxNameLen = 128

	// MinPartitionCount and MaxPartitionCount bound Config.PartitionCount.
	MinPartitionCount = 7
	MaxPartitionCount = 65521 // the largest prime below 2^16

	// MaxReplicationFactor bounds Config.ReplicationFactor: every rebuild
	// hashes and sorts members × ReplicationFactor points.
	MaxReplicationFactor = 1000
)

// Defaults used by DefaultConfig and, for zero fields, by New.
const (
	DefaultBindAddr          = "127.0.0.1"
	DefaultPartitionCount    = 271
	DefaultReplicationFactor = 100
	DefaultLoad              = 1.25

	DefaultProbeInterval           = 200 * time.Millisecond
	DefaultProbeTimeout            = 100 * time.Millisecond
	DefaultGossipInterval          = 50 * time.Millisecond
	DefaultSuspicionMult           = 2
	DefaultSuspicionMaxTimeoutMult = 2

	DefaultJoinTimeout       = 10 * time.Second
	DefaultReconnectInterval = time.Second
	DefaultReconnectTimeout  = 5 * time.Minute
)

// Config configures a Ring. Start from DefaultConfig, or leave a field zero:
// New replaces every zero field (except BindPort, Join, SecretKey, Logger and
// Transport, whose zero values mean what their comments say) with its
// default before it validates.
type Config struct {
	// Name is this node's name, unique in the cluster (the engine's NodeID).
	// Required; at most MaxNameLen bytes of UTF-8. Every node must use the
	// same name across restarts: ownership hashes names, not addresses.
	Name string

	// BindAddr is the IP address gossip listens on (UDP and TCP). It must be
	// an IP literal, not a host name: memberlist would otherwise listen on
	// every interface. If blank, it defaults to "127.0.0.1". Ignored when
	// Transport is set.
	BindAddr string

	// BindPort is the gossip port; 0 picks a free one (see Ring.GossipAddr).
	// Ignored when Transport is set.
	BindPort int

	// GRPCAddr is this node's gRPC address (host:port), carried to the other
	// members in this node's memberlist metadata. Required.
	GRPCAddr string

	// Join lists gossip addresses (host:port) of members to join. New
	// returns only once one of them answered. Entries equal to this node's
	// own gossip address are skipped, so every node of a cluster may be given
	// the same list. Empty: this node is alone by configuration (the first
	// node of a cluster).
	Join []string

	// SecretKey, if set, encrypts and authenticates gossip (AES-GCM with
	// memberlist's Keyring): 16, 24 or 32 bytes. Nodes with a different key,
	// or none, cannot join.
	SecretKey []byte

	// PartitionCount is the number of partitions show IDs are hashed into;
	// a prime between MinPartitionCount and MaxPartitionCount. If zero, it
	// defaults to 271. Every node of a cluster must use the same value.
	PartitionCount int

	// ReplicationFactor is the number of points each member has on the
	// hash ring, 1 to MaxReplicationFactor. If zero, it defaults to 100.
	// Every node of a cluster must use the same value.
	ReplicationFactor int

	// Load bounds a member's partitions to Load × the average; it must be
	// finite and greater than 1. If zero, it defaults to 1.25. Every node of
	// a cluster must use the same value.
	Load float64

	// Failure detection (memberlist's settings of the same names). If zero:
	// ProbeInterval 200ms, ProbeTimeout 100ms, GossipInterval 50ms,
	// SuspicionMult 2, SuspicionMaxTimeoutMult 2, with which a crashed node
	// was dropped by its peers in ~0.75–1.14 s on this project's machines
	// (memberlist's LAN defaults: ~5 s). ProbeTimeout must not exceed
	// ProbeInterval.
	ProbeInterval, ProbeTimeout, GossipInterval time.Duration
	SuspicionMult, SuspicionMaxTimeoutMult      int

	// JoinTimeout bounds New's attempts to join (it retries with backoff
	// while none of Join answers). If zero, it defaults to 10 s.
	JoinTimeout time.Duration

	// ReconnectInterval is how often the node tries to reach members it
	// believes dead (a healed partition is otherwise never merged by
	// memberlist) and, while it has no live peer, the Join addresses. If
	// zero, it defaults to 1 s.
	ReconnectInterval time.Duration

	// ReconnectTimeout is how long a dead member is retried and a dead or
	// left member is listed by Status before it is forgotten. If zero, it
	// defaults to 5 minutes.
	ReconnectTimeout time.Duration

	// Logger receives the ring's membership changes at info level and
	// memberlist's own log (noisy) at debug level. If nil, nothing is logged.
	Logger *slog.Logger

	// Transport, if set, replaces memberlist's network transport; BindAddr
	// and BindPort are then ignored. Tests wrap one to drop packets (see
	// PartitionableTransport). The Ring shuts it down.
	Transport memberlist.Transport
}

// DefaultConfig returns a Config with every default filled in; Name and
// GRPCAddr still have to be set.
func DefaultConfig() Config {
	return Config{}.WithDefaults()
}

// WithDefaults returns c with every zero field that has a default replaced by
// it. New validates c.WithDefaults().
func (c Config) WithDefaults() Config {
	if c.BindAddr == "" {
		c.BindAddr = DefaultBindAddr
	}
	if c.PartitionCount == 0 {
		c.PartitionCount = DefaultPartitionCount
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.Load == 0 {
		c.Load = DefaultLoad
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = DefaultGossipInterval
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = DefaultSuspicionMult
	}
	if c.SuspicionMaxTimeoutMult == 0 {
		c.SuspicionMaxTimeoutMult = DefaultSuspicionMaxTimeoutMult
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = DefaultReconnectInterval
	}
	if c.ReconnectTimeout == 0 {
		c.ReconnectTimeout = DefaultReconnectTimeout
	}
	return c
}

// Validate checks c exactly as given (zero fields are not replaced by
// defaults here; see WithDefaults). A Config that passes cannot make
// memberlist or consistent panic on any membership change: consistent panics
// when partitions cannot be placed (Load ≤ 1) and memberlist when the
// metadata exceeds 512 bytes. Every error wraps ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Name == "":
		return bad("Name is required")
	case len(c.Name) > MaxNameLen:
		return bad("Name is %d bytes, more than %d", len(c.Name), MaxNameLen)
	case !utf8.ValidString(c.Name):
		return bad("Name %q is not valid UTF-8", c.Name)
	}
	if err := checkHostPort(c.GRPCAddr); err != nil {
		return bad("GRPCAddr %q: %v", c.GRPCAddr, err)
	}
	if n := len(encodeMeta(c.GRPCAddr, true)); n > memberlist.MetaMaxSize {
		return bad("metadata for GRPCAddr is %d bytes, more than memberlist's %d", n, memberlist.MetaMaxSize)
	}
	if c.Transport == nil {
		if net.ParseIP(c.BindAddr) == nil {
			return bad("BindAddr %q is not an IP address", c.BindAddr)
		}
		if c.BindPort < 0 || c.BindPort > 65535 {
			return bad("BindPort %d is out of range", c.BindPort)
		}
	}
	for _, j := range c.Join {
		if err := checkHostPort(j); err != nil {
			return bad("Join entry %q: %v", j, err)
		}
	}
	if c.SecretKey != nil {
		if err := memberlist.ValidateKey(c.SecretKey); err != nil {
			return bad("SecretKey: %v", err)
		}
	}
	if c.PartitionCount < MinPartitionCount || c.PartitionCount > MaxPartitionCount || !isPrime(c.PartitionCount) {
		return bad("PartitionCount %d is not a prime between %d and %d", c.PartitionCount, MinPartitionCount, MaxPartitionCount)
	}
	if c.ReplicationFactor < 1 || c.ReplicationFactor > MaxReplicationFactor {
		return bad("ReplicationFactor %d is not between 1 and %d", c.ReplicationFactor, MaxReplicationFactor)
	}
	if !(c.Load > 1) || math.IsInf(c.Load, 0) {
		return bad("Load %v must be finite and greater than 1", c.Load)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ProbeInterval", c.ProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout},
		{"GossipInterval", c.GossipInterval},
		{"JoinTimeout", c.JoinTimeout},
		{"ReconnectInterval", c.ReconnectInterval},
		{"ReconnectTimeout", c.ReconnectTimeout},
	} {
		if d.v <= 0 {
			return bad("%s %v must be positive", d.name, d.v)
		}
	}
	if c.ProbeTimeout > c.ProbeInterval {
		return bad("ProbeTimeout %v exceeds ProbeInterval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.SuspicionMult < 1 {
		return bad("SuspicionMult %d must be at least 1", c.SuspicionMult)
	}
	if c.SuspicionMaxTimeoutMult < 1 {
		return bad("SuspicionMaxTimeoutMult %d must be at least 1", c.SuspicionMaxTimeoutMult)
	}
	return nil
}

// checkHostPort accepts "host:port" with a non-empty host and a port in 1–65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("missing host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q is not in 1-65535", port)
	}
	return nil
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
