package engine

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/persistence"
)

// catalogServer is the wire side of CatalogService.
type catalogServer struct {
	pb.UnimplementedCatalogServiceServer
	n *Node
}

func (s catalogServer) CreateShow(ctx context.Context, req *pb.CreateShowRequest) (*pb.CreateShowResponse, error) {
	// AsTime and AsDuration do not refuse malformed values; a starts_at
	// past what PostgreSQL stores would fail as an internal error.
	if ts := req.GetStartsAt(); ts != nil && ts.CheckValid() != nil {
		return nil, toStatus(fmt.Errorf("%w: starts_at: %v", ErrInvalid, ts.CheckValid()))
	}
	room := req.GetWaitingRoom()
	if ts := room.GetOpensAt(); ts != nil && ts.CheckValid() != nil {
		return nil, toStatus(fmt.Errorf("%w: waiting_room.opens_at: %v", ErrInvalid, ts.CheckValid()))
	}
	for name, d := range map[string]*durationpb.Duration{"hold_ttl": req.GetHoldTtl(), "offer_window": req.GetOfferWindow(), "max_wait": req.GetMaxWait(),
		"waiting_room.shopping_window": room.GetShoppingWindow()} {
		if d != nil && d.CheckValid() != nil {
			return nil, toStatus(fmt.Errorf("%w: %s: %v", ErrInvalid, name, d.CheckValid()))
		}
	}
	sh := persistence.Show{
		ID:       req.GetShowId(),
		Title:    req.GetTitle(),
		City:     req.GetCity(),
		Venue:    req.GetVenue(),
		StartsAt: req.GetStartsAt().AsTime(),
		HoldTTL:  req.GetHoldTtl().AsDuration(),

		OfferWindow: req.GetOfferWindow().AsDuration(),
		MaxWait:     req.GetMaxWait().AsDuration(),
	}
	if room != nil {
		sh.Room = &persistence.WaitingRoom{
			AdmitPerSecond: room.GetAdmitPerSecond(),
			MaxActive:      int(room.GetMaxActiveShoppers()),
			ShoppingWindow: room.GetShoppingWindow().AsDuration(),
		}
		if room.GetOpensAt() != nil {
			sh.Room.OpensAt = room.GetOpensAt().AsTime()
		}
	}
	for _, c := range req.GetCategories() {
		sh.Categories = append(sh.Categories, persistence.Category{Name: c.GetName(), PriceCents: c.GetPriceCents()})
	}
	for _, r := range req.GetRows() {
		sh.Rows = append(sh.Rows, persistence.Row{Label: r.GetLabel(), SeatCount: int(r.GetSeatCount()), Category: r.GetCategory()})
	}
	out, err := s.n.CreateShow(ctx, sh)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateShowResponse{Show: showToPB(out)}, nil
}

func (s catalogServer) GetShow(ctx context.Context, req *pb.GetShowRequest) (*pb.GetShowResponse, error) {
	sh, err := s.n.GetShow(ctx, ar.ShowID(req.GetShowId()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetShowResponse{Show: showToPB(sh)}, nil
}

func showToPB(sh persistence.Show) *pb.Show {
	out := &pb.Show{
		ShowId:   sh.ID,
		Title:    sh.Title,
		City:     sh.City,
		Venue:    sh.Venue,
		StartsAt: timestamppb.New(sh.StartsAt),
		HoldTtl:  durationpb.New(sh.HoldTTL),

		OfferWindow: durationpb.New(sh.OfferWindow),
		MaxWait:     durationpb.New(sh.MaxWait),
		Capacity:    int32(sh.Capacity),
		CreatedAt:   timestamppb.New(sh.CreatedAt),
	}
	if r := sh.Room; r != nil {
		out.WaitingRoom = &pb.WaitingRoom{
			OpensAt:           timestamppb.New(r.OpensAt),
			AdmitPerSecond:    r.AdmitPerSecond,
			MaxActiveShoppers: int32(r.MaxActive),
			ShoppingWindow:    durationpb.New(r.ShoppingWindow),
		}
	}
	for _, c := range sh.Categories {
		out.Categories = append(out.Categories, &pb.Category{Name: c.Name, PriceCents: c.PriceCents})
	}
	for _, r := range sh.Rows {
		out.Rows = append(out.Rows, &pb.Row{Label: r.Label, SeatCount: int32(r.SeatCount), Category: r.Category})
	}
	return out
}
