package ring

import "encoding/json"

// Member states reported in Member.State.
//
// memberlist v0.7.0 does not expose suspicion through any public API (no
// event fires, and Node.State is never filled in), so a suspect member is
// reported as StateAlive; like memberlist, the ring keeps it until it is
// declared dead.
const (
	StateAlive = "alive"
	StateDead  = "dead" // declared dead by failure detection: a crash or a partition
	StateLeft  = "left" // left gracefully (Ring.Leave)
)

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name       string // unique node name (Config.Name)
	GRPCAddr   string // its gRPC address, from its gossip metadata
	GossipAddr string // its gossip address, host:port
	State      string // StateAlive, StateDead or StateLeft
}

// nodeMeta is what a node gossips about itself in memberlist's metadata
// (at most memberlist.MetaMaxSize bytes; Config.Validate checks it).
type nodeMeta struct {
	GRPC string `json:"grpc"`
	// Leaving is set by Leave just before memberlist's own leave, so that
	// peers can tell a graceful leave from a crash: memberlist's NotifyLeave
	// looks the same for both.
	Leaving bool `json:"leaving,omitempty"`
}

func encodeMeta(grpcAddr string, leaving bool) []byte {
	b, err := json.Marshal(nodeMeta{GRPC: grpcAddr, Leaving: leaving})
	if err != nil { // a struct of a string and a bool always marshals
		panic(err)
	}
	return b
}

// decodeMeta returns the zero nodeMeta for metadata it cannot read (a node of
// some other software on the same gossip port); such a node gets no shows.
func decodeMeta(b []byte) nodeMeta {
	var m nodeMeta
	if json.Unmarshal(b, &m) != nil || checkHostPort(m.GRPC) != nil {
		return nodeMeta{}
	}
	return m
}
