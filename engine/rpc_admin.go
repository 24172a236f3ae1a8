package engine

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/persistence"
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
