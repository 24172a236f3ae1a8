package engine

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// roomServer is the wire side of WaitingRoomService.
type roomServer struct {
	pb.UnimplementedWaitingRoomServiceServer
	n     *Node
	life  context.Context // ends at Shutdown: long polls and watches answer
	wheel *pollWheel      // ends their waits
}

func (s roomServer) JoinQueue(ctx context.Context, req *pb.JoinQueueRequest) (*pb.JoinQueueResponse, error) {
	r, err := joinQueue(ctx, s.n, req)
	return r, toStatus(err)
}

// joinQueue is JoinQueue, unary or in a pipeline; it returns the engine's
// error as it is, as holdSeats does.
func joinQueue(ctx context.Context, n *Node, req *pb.JoinQueueRequest) (*pb.JoinQueueResponse, error) {
	v, existed, err := n.JoinQueue(ctx, ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId()))
	if err != nil {
		return nil, err
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

// PollQueue answers at once when the entry's version differs from the
// caller's (its state changed) or the entry ended, otherwise when its state
// next changes or the caller's wait (at most MaxPollWait) ends, whichever
// comes first, with the position as it is then. Other users' joins and
// admissions do not wake it.
func (s roomServer) PollQueue(ctx context.Context, req *pb.PollQueueRequest) (*pb.PollQueueResponse, error) {
	show, user := ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId())
	v, err := longPoll(ctx, s.life, s.wheel, req.GetWait(), func() (RoomView, bool, <-chan struct{}, func(), error) {
		if req.GetWait().AsDuration() == 0 || req.GetSinceVersion() == 0 {
			v, err := s.n.RoomEntry(ctx, show, user)
			return v, true, nil, nil, err
		}
		v, changed, stop, err := s.n.WaitRoomEntry(ctx, show, user)
		if err == nil && (v.Version != req.GetSinceVersion() || v.State.Ended()) {
			stop()
			return v, true, nil, nil, nil
		}
		return v, false, changed, stop, err
	})
	if err != nil {
		return nil, err
	}
	return &pb.PollQueueResponse{Entry: roomViewToPB(v)}, nil
}

// WatchQueue sends the entry as it is, then at once whenever its state
// changes, and its position when it moved, at most every positionEvery;
// it ends after an end state.
func (s roomServer) WatchQueue(req *pb.WatchQueueRequest, stream pb.WaitingRoomService_WatchQueueServer) error {
	ctx := stream.Context()
	show, user := ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId())
	var last *pb.QueueEntry
	for {
		v, changed, stop, err := s.n.WaitRoomEntry(ctx, show, user)
		if err != nil {
			return toStatus(err)
		}
		if e := roomViewToPB(v); last == nil || last.GetState() != e.GetState() || last.GetPosition() != e.GetPosition() {
			if err := stream.Send(&pb.WatchQueueResponse{Entry: e}); err != nil {
				stop()
				return err
			}
			last = e
		}
		if v.State.Ended() {
			stop()
			return nil
		}
		due := s.wheel.after(positionEvery(v.EstimatedWait))
		select {
		case <-changed:
		case <-due:
		case <-ctx.Done():
			err = toStatus(ctx.Err())
		case <-s.life.Done():
			err = toStatus(fmt.Errorf("watch: %w", ErrShuttingDown))
		}
		stop()
		if err != nil {
			return err
		}
	}
}

// positionEvery is how often a watcher with the given estimated wait is
// sent its position: a tenth of the wait, from 1 s to 10 s, so a crowd of
// watchers far back in the queue costs the engine little.
func positionEvery(wait time.Duration) time.Duration {
	return min(max(wait/10, time.Second), 10*time.Second)
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
