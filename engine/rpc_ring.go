package engine

import (
	"context"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/ring"
)

// viewer is a Ring that publishes whole views (ring.Ring does): GetRing
// answers with one view, so members and partitions agree.
type viewer interface{ View() *ring.View }

// GetRing answers the node's current view of the ring: its members with
// their gRPC addresses and the owner of every partition. A node without a
// ring, or with a Ring that publishes no views, answers only its name: it
// serves every show itself.
func (s *reservationServer) GetRing(ctx context.Context, _ *pb.GetRingRequest) (*pb.GetRingResponse, error) {
	r, ok := s.n.cfg.Ring.(viewer)
	if !ok {
		return &pb.GetRingResponse{Self: s.n.cfg.NodeID}, nil
	}
	v := r.View()
	resp := &pb.GetRingResponse{Self: v.Self().Name, Version: v.Version()}
	for _, m := range v.Members() {
		resp.Members = append(resp.Members, &pb.RingMember{Name: m.Name, GrpcAddr: m.GRPCAddr})
	}
	owners := v.PartitionOwners()
	resp.PartitionOwners = make([]uint32, len(owners))
	for p, i := range owners {
		resp.PartitionOwners[p] = uint32(i)
	}
	return resp, nil
}
