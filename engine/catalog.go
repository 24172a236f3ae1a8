package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	ar "github.com/boxoffice/boxoffice/activereservation"
	"github.com/boxoffice/boxoffice/persistence"
	wu "github.com/boxoffice/boxoffice/waitinguser"
)

// Limits of a show's definition.
const (
	maxShowSeats = 100_000
	minHoldTTL   = 10 * time.Second
	maxHoldTTL   = time.Hour
	// A waitlist turn's offer lasts 10 s to 1 h; a user waits 1 min to a
	// week.
	minOfferWindow = 10 * time.Second
	maxOfferWindow = time.Hour
	minMaxWait     = time.Minute
	maxMaxWait     = 7 * 24 * time.Hour
	// An admission lasts 1 min to a day.
	minShoppingWindow = time.Minute
	maxShoppingWindow = 24 * time.Hour
)

// CreateShow validates and stores a new show. HoldTTL zero means
// activereservation.DefaultHoldTTL; OfferWindow and MaxWait zero mean
// waitinguser.DefaultOfferWindow and DefaultMaxWait. A waiting room needs
// the node's AdmissionKey; its zero OpensAt means now, its zero
// ShoppingWindow waitinguser.DefaultShoppingWindow.
func (n *Node) CreateShow(ctx context.Context, sh persistence.Show) (persistence.Show, error) {
	if err := validateShowID(ar.ShowID(sh.ID)); err != nil {
		return persistence.Show{}, err
	}
	if sh.Title == "" || len(sh.Title) > 200 || len(sh.City) > 100 || len(sh.Venue) > 200 || unstorable(sh.Title+sh.City+sh.Venue) {
		return persistence.Show{}, fmt.Errorf("%w: title needs 1-200 characters, city at most 100, venue at most 200, UTF-8 without NUL", ErrInvalid)
	}
	if sh.HoldTTL == 0 {
		sh.HoldTTL = ar.DefaultHoldTTL
	}
	if sh.HoldTTL < minHoldTTL || sh.HoldTTL > maxHoldTTL {
		return persistence.Show{}, fmt.Errorf("%w: hold_ttl must be between %s and %s", ErrInvalid, minHoldTTL, maxHoldTTL)
	}
	if sh.OfferWindow == 0 {
		sh.OfferWindow = wu.DefaultOfferWindow
	}
	if sh.OfferWindow < minOfferWindow || sh.OfferWindow > maxOfferWindow {
		return persistence.Show{}, fmt.Errorf("%w: offer_window must be between %s and %s", ErrInvalid, minOfferWindow, maxOfferWindow)
	}
	if sh.MaxWait == 0 {
		sh.MaxWait = wu.DefaultMaxWait
	}
	if sh.MaxWait < minMaxWait || sh.MaxWait > maxMaxWait {
		return persistence.Show{}, fmt.Errorf("%w: max_wait must be between %s and %s", ErrInvalid, minMaxWait, maxMaxWait)
	}
	if r := sh.Room; r != nil {
		if n.cfg.AdmissionKey == nil {
			return persistence.Show{}, fmt.Errorf("%w: this node has no admission key (--admission-key) to sign a waiting room's tokens", ErrInvalid)
		}
		room := *r
		if room.OpensAt.IsZero() {
			room.OpensAt = n.now()
		}
		if room.ShoppingWindow == 0 {
			room.ShoppingWindow = wu.DefaultShoppingWindow
		}
		if err := (wu.RoomConfig{AdmitPerSecond: room.AdmitPerSecond, MaxActive: room.MaxActive}).Check(); err != nil {
			return persistence.Show{}, fmt.Errorf("%w: waiting_room: %v", ErrInvalid, err)
		}
		if room.ShoppingWindow < minShoppingWindow || room.ShoppingWindow > maxShoppingWindow {
			return persistence.Show{}, fmt.Errorf("%w: waiting_room.shopping_window must be between %s and %s", ErrInvalid, minShoppingWindow, maxShoppingWindow)
		}
		room.OpensAt = room.OpensAt.UTC().Truncate(time.Microsecond)
		room.ShoppingWindow = room.ShoppingWindow.Truncate(time.Millisecond)
		sh.Room = &room
	}
	cats := make(map[string]bool, len(sh.Categories))
	for _, c := range sh.Categories {
		if c.Name == "" || cats[c.Name] || c.PriceCents < 0 || unstorable(c.Name) {
			return persistence.Show{}, fmt.Errorf("%w: category %q: names must be distinct and non-empty, prices not negative", ErrInvalid, c.Name)
		}
		cats[c.Name] = true
	}
	if len(sh.Rows) == 0 {
		return persistence.Show{}, fmt.Errorf("%w: a show needs rows", ErrInvalid)
	}
	labels := make(map[string]bool, len(sh.Rows))
	sh.Capacity = 0
	for _, r := range sh.Rows {
		if err := validateRowLabel(r.Label); err != nil {
			return persistence.Show{}, err
		}
		if labels[r.Label] {
			return persistence.Show{}, fmt.Errorf("%w: row %q twice", ErrInvalid, r.Label)
		}
		labels[r.Label] = true
		if r.SeatCount < 1 || r.SeatCount > maxShowSeats {
			return persistence.Show{}, fmt.Errorf("%w: row %q needs 1-%d seats", ErrInvalid, r.Label, maxShowSeats)
		}
		if r.Category != "" && !cats[r.Category] {
			return persistence.Show{}, fmt.Errorf("%w: row %q has unknown category %q", ErrInvalid, r.Label, r.Category)
		}
		sh.Capacity += r.SeatCount
	}
	if sh.Capacity > maxShowSeats {
		return persistence.Show{}, fmt.Errorf("%w: at most %d seats", ErrInvalid, maxShowSeats)
	}
	sh.StartsAt = sh.StartsAt.UTC().Truncate(time.Microsecond)
	sh.HoldTTL = sh.HoldTTL.Truncate(time.Millisecond) // as the database keeps them
	sh.OfferWindow = sh.OfferWindow.Truncate(time.Millisecond)
	sh.MaxWait = sh.MaxWait.Truncate(time.Millisecond)
	out, err := n.store.CreateShow(ctx, sh)
	if errors.Is(err, persistence.ErrExists) {
		return persistence.Show{}, fmt.Errorf("show %s: %w", sh.ID, ErrShowExists)
	}
	if err == nil {
		n.forgetUnknown(ar.ShowID(sh.ID))
	}
	return out, err
}

// GetShow returns a show's definition: from memory when loaded, so it works
// while the database is down, else from the database; an ID found unknown
// within NotFoundTTL is answered ErrShowNotFound at once.
func (n *Node) GetShow(ctx context.Context, id ar.ShowID) (persistence.Show, error) {
	if err := validateShowID(id); err != nil {
		return persistence.Show{}, err
	}
	n.mu.RLock()
	sh := n.shows[id]
	unknown := sh == nil && n.knownUnknownLocked(id)
	n.mu.RUnlock()
	if sh != nil {
		info := sh.info
		if info.Room != nil && sh.room != nil { // the operator may have braked it since the load
			sh.mu.Lock()
			c := sh.room.rules.Config()
			sh.mu.Unlock()
			r := *info.Room
			r.AdmitPerSecond, r.MaxActive = c.AdmitPerSecond, c.MaxActive
			info.Room = &r
		}
		return info, nil
	}
	if unknown {
		return persistence.Show{}, fmt.Errorf("show %s: %w", id, ErrShowNotFound)
	}
	gen := n.createdSoFar()
	info, err := n.store.GetShow(ctx, string(id))
	if errors.Is(err, persistence.ErrNotFound) {
		n.rememberUnknown(id, gen)
		return persistence.Show{}, fmt.Errorf("show %s: %w", id, ErrShowNotFound)
	}
	return info, err
}
