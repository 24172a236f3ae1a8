package engine

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// roomServer is the wire side of WaitingRoomService.
type roomServer struct {
	pb.UnimplementedWaitingRoomServiceServer
	n    *Node
	life context.Context // ends at Shutdown: long polls and watches answer
}

func (s roomServer) JoinQueue(ctx context.Context, req *pb.JoinQueueRequest) (*pb.JoinQueueResponse, error) {
	v, existed, err := s.n.JoinQueue(ctx, ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.JoinQueueResponse{Entry: roomViewToPB(v), Existed: existed}, nil
}

func (s roomServer) LeaveQueue(ctx context.Context, req *pb.LeaveQueueRequest) (*pb.LeaveQueueResponse, error) {
	v, err := s.n.LeaveQueue(ctx, ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.LeaveQueueResponse{Entry: roomViewToPB(v)}, nil
}

// PollQueue answers at once when the room changed since the caller's
// version (or the entry ended), otherwise when it next changes or the
// caller's wait (at most MaxPollWait) ends, whichever comes first.
func (s roomServer) PollQueue(ctx context.Context, req *pb.PollQueueRequest) (*pb.PollQueueResponse, error) {
	show, user := ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId())
	v, err := longPoll(ctx, s.life, req.GetWait(), func() (RoomView, bool, <-chan struct{}, error) {
		v, changed, err := s.n.RoomEntry(ctx, show, user)
		return v, v.Version != req.GetSinceVersion() || v.State.Ended(), changed, err
	})
	if err != nil {
		return nil, err
	}
	return &pb.PollQueueResponse{Entry: roomViewToPB(v)}, nil
}

// WatchQueue sends the entry as it is, then whenever its state or position
// changes, and ends after an end state.
func (s roomServer) WatchQueue(req *pb.WatchQueueRequest, stream pb.WaitingRoomService_WatchQueueServer) error {
	ctx := stream.Context()
	show, user := ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId())
	var last *pb.QueueEntry
	for {
		v, changed, err := s.n.RoomEntry(ctx, show, user)
		if err != nil {
			return toStatus(err)
		}
		if e := roomViewToPB(v); last == nil || last.GetState() != e.GetState() || last.GetPosition() != e.GetPosition() {
			if err := stream.Send(&pb.WatchQueueResponse{Entry: e}); err != nil {
				return err
			}
			last = e
		}
		if v.State.Ended() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return toStatus(ctx.Err())
		case <-s.life.Done():
			return toStatus(fmt.Errorf("watch: %w", ErrShuttingDown))
		}
	}
}

var roomStates = [...]pb.QueueState{
	RoomQueued:   pb.QueueState_QUEUE_STATE_QUEUED,
	RoomAdmitted: pb.QueueState_QUEUE_STATE_ADMITTED,
	RoomLeft:     pb.QueueState_QUEUE_STATE_LEFT,
	RoomLapsed:   pb.QueueState_QUEUE_STATE_LAPSED,
	RoomSoldOut:  pb.QueueState_QUEUE_STATE_SOLD_OUT,
	RoomDone:     pb.QueueState_QUEUE_STATE_DONE,
	RoomClosed:   pb.QueueState_QUEUE_STATE_CLOSED,
}

func (s roomServer) SetWaitingRoom(ctx context.Context, req *pb.SetWaitingRoomRequest) (*pb.SetWaitingRoomResponse, error) {
	var maxActive *int
	if req.MaxActiveShoppers != nil {
		v := int(req.GetMaxActiveShoppers())
		maxActive = &v
	}
	st, err := s.n.SetWaitingRoom(ctx, ar.ShowID(req.GetShowId()), req.AdmitPerSecond, maxActive, req.GetClose())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.SetWaitingRoomResponse{
		Room: &pb.WaitingRoom{
			OpensAt:           timestamppb.New(st.Config.OpensAt),
			AdmitPerSecond:    st.Config.AdmitPerSecond,
			MaxActiveShoppers: int32(st.Config.MaxActive),
			ShoppingWindow:    durationpb.New(st.Config.ShoppingWindow),
		},
		Closed: st.Closed, Queued: int32(st.Queued), Shoppers: int32(st.Shoppers),
	}, nil
}

func roomViewToPB(v RoomView) *pb.QueueEntry {
	e := &pb.QueueEntry{
		ShowId:   string(v.Show),
		UserId:   string(v.User),
		State:    roomStates[v.State],
		Sequence: v.Seq,
		JoinedAt: timestamppb.New(v.JoinedAt),
		Position: int32(v.Position),
		Version:  v.Version,
	}
	switch v.State {
	case RoomQueued:
		e.EstimatedWait = durationpb.New(v.EstimatedWait)
	case RoomAdmitted:
		e.AdmissionToken, e.AdmissionDeadline = v.Token, timestamppb.New(v.Deadline)
	}
	return e
}
