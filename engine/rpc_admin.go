package engine

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/persistence"
	"github.com/boxoffice/boxoffice/ring"
)

// adminServer is the wire side of AdminService.
type adminServer struct {
	pb.UnimplementedAdminServiceServer
	n *Node
}

func (s adminServer) ListReservationEvents(ctx context.Context, req *pb.ListReservationEventsRequest) (*pb.ListReservationEventsResponse, error) {
	limit, err := pageSize(req.GetPageSize(), 100, 1000)
	if err != nil {
		return nil, toStatus(err)
	}
	f := persistence.EventFilter{ShowID: req.GetShowId(), ReservationID: req.GetHoldId(), UserID: req.GetUserId(), Limit: limit + 1}
	if req.GetPageToken() != "" {
		if err := decodeToken(req.GetPageToken(), &f.BeforeID); err != nil {
			return nil, toStatus(err)
		}
	}
	list, err := s.n.ListEvents(ctx, f)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ListReservationEventsResponse{}
	if len(list) > limit {
		list = list[:limit]
		out.NextPageToken = encodeToken(list[limit-1].ID)
	}
	for _, e := range list {
		out.Events = append(out.Events, &pb.ReservationEvent{
			EventId:    e.ID,
			ShowId:     e.ShowID,
			HoldId:     e.ReservationID,
			UserId:     e.UserID,
			Kind:       e.Kind,
			SeatIds:    e.SeatIDs,
			PaymentRef: e.PaymentRef,
			NodeId:     e.NodeID,
			Epoch:      e.Epoch,
			At:         timestamppb.New(e.At),
		})
	}
	return out, nil
}

// ClusterStatus answers the cluster as this node sees it (Node.ClusterStatus).
// A call marked forwarded by another node is answered local only, whatever
// its request says, so a status call never fans out twice.
func (s adminServer) ClusterStatus(ctx context.Context, req *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	var addr string
	if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
		addr = p.LocalAddr.String()
	}
	st := s.n.ClusterStatus(ctx, StatusRequest{
		LocalOnly: req.GetLocalOnly() || forwardedCall(ctx),
		Addr:      addr,
		Ask:       askStatus(ctx, s.n.cfg.NodeID),
	})
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	out := &pb.ClusterStatusResponse{Self: st.Self, RingVersion: st.RingVersion, PartitionCount: int32(st.PartitionCount)}
	for _, m := range st.Members {
		out.Members = append(out.Members, &pb.ClusterMember{
			Name: m.Name, GrpcAddr: m.GRPCAddr, GossipAddr: m.GossipAddr,
			State: memberStates[m.State], Partitions: int32(m.Partitions),
		})
	}
	for _, ns := range st.Nodes {
		out.Nodes = append(out.Nodes, nodeStatusToPB(ns))
	}
	return out, nil
}

// memberStates maps ring.Member.State to the API's; a state missing here is
// answered MEMBER_STATE_UNSPECIFIED.
var memberStates = map[string]pb.MemberState{
	ring.StateAlive: pb.MemberState_MEMBER_STATE_ALIVE,
	ring.StateDead:  pb.MemberState_MEMBER_STATE_DEAD,
	ring.StateLeft:  pb.MemberState_MEMBER_STATE_LEFT,
}

func nodeStatusToPB(s NodeStatus) *pb.NodeStatus {
	out := &pb.NodeStatus{
		Name: s.Name, GrpcAddr: s.GRPCAddr,
		LoadedTotal: int32(s.LoadedTotal), OwnedTotal: int32(s.OwnedTotal),
		Truncated: s.Truncated(), Error: s.Err, Reached: s.Reached,
	}
	for _, id := range s.Loaded {
		out.LoadedShows = append(out.LoadedShows, string(id))
	}
	for _, o := range s.Owned {
		out.OwnedShows = append(out.OwnedShows, &pb.OwnedShow{ShowId: o.ShowID, Epoch: o.Epoch, LeaseRemaining: durationpb.New(o.LeaseRemaining)})
	}
	return out
}

func nodeStatusFromPB(s *pb.NodeStatus) NodeStatus {
	out := NodeStatus{
		Name: s.GetName(), GRPCAddr: s.GetGrpcAddr(),
		LoadedTotal: int(s.GetLoadedTotal()), OwnedTotal: int(s.GetOwnedTotal()), Err: s.GetError(), Reached: s.GetReached(),
	}
	for _, id := range s.GetLoadedShows() {
		out.Loaded = append(out.Loaded, ar.ShowID(id))
	}
	for _, o := range s.GetOwnedShows() {
		out.Owned = append(out.Owned, persistence.OwnerInfo{
			ShowID: o.GetShowId(), Node: s.GetName(), Epoch: o.GetEpoch(), LeaseRemaining: o.GetLeaseRemaining().AsDuration(),
		})
	}
	return out
}

// askStatus returns the StatusRequest.Ask of a call: a local-only
// ClusterStatus on the member, with the caller's authorization and marked
// forwarded by self. Each ask dials its own connection and closes it: a
// status call is rare, and this leaves nothing open to close at shutdown
// nor a connection to a member's previous incarnation to reuse.
func askStatus(ctx context.Context, self string) func(context.Context, ring.Member) (NodeStatus, error) {
	md := metadata.MD{}
	if in, ok := metadata.FromIncomingContext(ctx); ok {
		if v := in.Get("authorization"); len(v) > 0 {
			md.Set("authorization", v...)
		}
	}
	md.Set(forwardedKey, self)
	return func(ctx context.Context, m ring.Member) (NodeStatus, error) {
		conn, err := grpc.NewClient(m.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return NodeStatus{}, err
		}
		defer conn.Close()
		resp, err := pb.NewAdminServiceClient(conn).ClusterStatus(metadata.NewOutgoingContext(ctx, md), &pb.ClusterStatusRequest{LocalOnly: true})
		if err != nil {
			st := status.Convert(err)
			return NodeStatus{}, fmt.Errorf("%v: %s", st.Code(), st.Message())
		}
		for _, ns := range resp.GetNodes() {
			if ns.GetName() == m.Name {
				return nodeStatusFromPB(ns), nil
			}
		}
		return NodeStatus{}, fmt.Errorf("%s answered as node %q", m.GRPCAddr, resp.GetSelf())
	}
}
