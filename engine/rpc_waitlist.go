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

// MaxPollWait is the longest PollWaitlist waits for a change.
const MaxPollWait = 30 * time.Second

// waitlistServer is the wire side of WaitlistService. Watches and polls end
// when life does (at Shutdown), so that they never hold a graceful stop.
type waitlistServer struct {
	pb.UnimplementedWaitlistServiceServer
	n     *Node
	life  context.Context
	wheel *pollWheel // ends the long polls' waits
}

func (s waitlistServer) JoinWaitlist(ctx context.Context, req *pb.JoinWaitlistRequest) (*pb.JoinWaitlistResponse, error) {
	v, existed, err := s.n.JoinWaitlist(ctx, ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId()), int(req.GetSeatsWanted()), req.GetAdmissionToken())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.JoinWaitlistResponse{Entry: waitViewToPB(v), Existed: existed}, nil
}

func (s waitlistServer) LeaveWaitlist(ctx context.Context, req *pb.LeaveWaitlistRequest) (*pb.LeaveWaitlistResponse, error) {
	v, err := s.n.LeaveWaitlist(ctx, ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.LeaveWaitlistResponse{Entry: waitViewToPB(v)}, nil
}

// WatchWaitlist sends the entry as it is, then at once whenever its state
// changes (a turn, an end), and its position when it moved, at most every
// positionEvery; it ends after an end state.
func (s waitlistServer) WatchWaitlist(req *pb.WatchWaitlistRequest, stream pb.WaitlistService_WatchWaitlistServer) error {
	ctx := stream.Context()
	show, user := ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId())
	var last *pb.WaitlistEntry
	for {
		v, changed, stop, err := s.n.WaitWaitlistEntry(ctx, show, user)
		if err != nil {
			return toStatus(err)
		}
		if e := waitViewToPB(v); last == nil || standingChanged(last, e) {
			if err := stream.Send(&pb.WatchWaitlistResponse{Entry: e}); err != nil {
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

// PollWaitlist answers at once when the entry's version differs from the
// caller's (its state changed) or the entry ended, otherwise when its state
// next changes or the caller's wait (at most MaxPollWait) ends, whichever
// comes first, with the position as it is then. Other users' joins, turns
// and ends do not wake it.
func (s waitlistServer) PollWaitlist(ctx context.Context, req *pb.PollWaitlistRequest) (*pb.PollWaitlistResponse, error) {
	show, user := ar.ShowID(req.GetShowId()), ar.UserID(req.GetUserId())
	v, err := longPoll(ctx, s.life, s.wheel, req.GetWait(), func() (WaitView, bool, <-chan struct{}, func(), error) {
		if req.GetWait().AsDuration() == 0 || req.GetSinceVersion() == 0 {
			v, err := s.n.WaitlistEntry(ctx, show, user)
			return v, true, nil, nil, err
		}
		v, changed, stop, err := s.n.WaitWaitlistEntry(ctx, show, user)
		if err == nil && (v.Version != req.GetSinceVersion() || v.State.Ended()) {
			stop()
			return v, true, nil, nil, nil
		}
		return v, false, changed, stop, err
	})
	if err != nil {
		return nil, err
	}
	return &pb.PollWaitlistResponse{Entry: waitViewToPB(v)}, nil
}

// longPoll answers a long poll: read's view at once when it says it is
// news (or fails), else as soon as the next change makes it news, or, when
// wait (at most MaxPollWait; nil: none) has passed (within pollTick, on
// wheel) or the server shuts down, as it is then.
func longPoll[V any](ctx, life context.Context, wheel *pollWheel, wait *durationpb.Duration, read func() (v V, news bool, changed <-chan struct{}, stop func(), err error)) (V, error) {
	var zero V
	d := time.Duration(0)
	if wait != nil {
		if wait.CheckValid() != nil || wait.AsDuration() < 0 || wait.AsDuration() > MaxPollWait {
			return zero, toStatus(fmt.Errorf("%w: wait must be 0 to %s", ErrInvalid, MaxPollWait))
		}
		d = wait.AsDuration()
	}
	due := wheel.after(d)
	for {
		v, news, changed, stop, err := read()
		if err != nil {
			return zero, toStatus(err)
		}
		if news {
			if stop != nil {
				stop()
			}
			return v, nil
		}
		var woke bool
		select {
		case <-changed:
			woke = true
		case <-due:
		case <-ctx.Done():
			err = toStatus(ctx.Err())
		case <-life.Done():
		}
		if stop != nil {
			stop()
		}
		switch {
		case woke:
			continue
		case err != nil:
			return zero, err
		}
		return v, nil
	}
}

// standingChanged reports whether e differs from last in what a waiting
// user acts on: state, position, turn. Versions and estimates alone are
// not worth a message.
func standingChanged(last, e *pb.WaitlistEntry) bool {
	return last.GetState() != e.GetState() || last.GetPosition() != e.GetPosition() ||
		last.GetTurn().GetDeadline().AsTime() != e.GetTurn().GetDeadline().AsTime()
}

var waitStates = [...]pb.WaitlistState{
	WaitWaiting:  pb.WaitlistState_WAITLIST_STATE_WAITING,
	WaitTurn:     pb.WaitlistState_WAITLIST_STATE_TURN,
	WaitDone:     pb.WaitlistState_WAITLIST_STATE_DONE,
	WaitLapsed:   pb.WaitlistState_WAITLIST_STATE_LAPSED,
	WaitLeft:     pb.WaitlistState_WAITLIST_STATE_LEFT,
	WaitSoldOut:  pb.WaitlistState_WAITLIST_STATE_SOLD_OUT,
	WaitTimedOut: pb.WaitlistState_WAITLIST_STATE_TIMED_OUT,
}

func waitViewToPB(v WaitView) *pb.WaitlistEntry {
	e := &pb.WaitlistEntry{
		ShowId:      string(v.Show),
		UserId:      string(v.Entry.User),
		State:       waitStates[v.State],
		SeatsWanted: int32(v.Entry.SeatsWanted),
		Position:    int32(v.Position),
		JoinedAt:    timestamppb.New(v.Entry.JoinedAt),
		Deadline:    timestamppb.New(v.Entry.Deadline),
		Version:     v.Version,
		Sequence:    v.Entry.Seq,
	}
	if v.HasEstimate {
		e.EstimatedWait = durationpb.New(v.EstimatedWait)
	}
	if t := v.Turn; t != nil {
		e.Turn = &pb.WaitlistTurn{SeatIds: t.Seats}
		if !t.OfferedAt.IsZero() {
			e.Turn.OfferedAt, e.Turn.Deadline = timestamppb.New(t.OfferedAt), timestamppb.New(t.Deadline)
		}
	}
	return e
}
