package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
	"github.com/boxoffice/boxoffice/client"
)

// BoxofficeConfig configures the boxoffice target.
type BoxofficeConfig struct {
	// Addr is the gRPC address of an engine node (required). Through the
	// client, the others are learned from its ring.
	Addr string
	// Token is the service token sent with every call; AdminToken the one
	// sent with CreateShow. If AdminToken is empty, Token is sent.
	Token      string
	AdminToken string
	// DatabaseURL is the engine's PostgreSQL, read by Records and
	// CheckStore for verification (required).
	DatabaseURL string
	// Conns is the number of gRPC connections per node. If 0, 4 with Unary
	// (one HTTP/2 connection serializes its frames through one writer on
	// each side, which a flash sale of thousands of users in flight
	// saturates), the client's default otherwise.
	Conns int
	// Unary makes every call one unary RPC (HoldSeats, ConfirmHold,
	// GetSeatMap) on one of Conns connections to Addr, taken in turn: the
	// engine as it is called without the client. By default calls go
	// through package client: holds and confirms coalesced on Pipeline
	// streams to the show's owner, seat maps from a live replica.
	Unary bool
	// NoIdempotencyKeys makes Hold send no idempotency key (Unary only:
	// the client gives every hold a key, so that it can retry it safely).
	// By default each Hold sends a fresh random key, as a web tier does;
	// the engine then records the key with the hold.
	NoIdempotencyKeys bool
}

// defaultBoxofficeConns is BoxofficeConfig.Conns when it is 0 with Unary.
const defaultBoxofficeConns = 4

// Boxoffice is the engine as a bench target. By default it is a web tier
// using package client: holds and confirms go through the pipeline of the
// show's owner, and seat maps are read from the client's live replica
// (whose lag ReplicaLag reports). With BoxofficeConfig.Unary every call is
// one RPC of the gRPC API. Records reads the engine's Postgres directly.
// Every acknowledged hold is durable either way.
//
// It is safe for concurrent use: its fields are set by NewBoxoffice and
// only read afterwards, except next, which is atomic, laidOut, a sync.Map, layouts,
// a singleflight.Group, and lag, which has its own lock.
type Boxoffice struct {
	cli      *client.Client // nil with Unary
	conns    []*grpc.ClientConn
	catalog  []pb.CatalogServiceClient
	reserve  []pb.ReservationServiceClient
	rooms    []pb.WaitingRoomServiceClient
	next     atomic.Uint32
	laidOut  sync.Map           // show ID → struct{}: shows whose layout was checked
	layouts  singleflight.Group // the first reads of shows, by show ID
	md       metadata.MD        // the service token, shared read-only by every call
	adminMD  metadata.MD        // the admin token
	pool     *pgxpool.Pool
	withKeys bool
	addr     string // BoxofficeConfig.Addr, where WatchSeatMaps opens its streams

	lagMu sync.Mutex
	lag   *hdrhistogram.Histogram // replica lag, µs
}

var (
	_ Target          = (*Boxoffice)(nil)
	_ HoldsDurabler   = (*Boxoffice)(nil)
	_ StoreChecker    = (*Boxoffice)(nil)
	_ FreshSeatMapper = (*Boxoffice)(nil)
	_ ReplicaLagger   = (*Boxoffice)(nil)
	_ LocalSeatMapper = (*Boxoffice)(nil)
	_ Queuer          = (*Boxoffice)(nil)
)

// ReplicaLagger is implemented by targets whose seat maps come from a
// replica: ReplicaLag returns the distribution of its lag (µs) so far.
type ReplicaLagger interface {
	ReplicaLag() *hdrhistogram.Histogram
}

// NewBoxoffice connects to the node at cfg.Addr — with the client, which
// asks it for the ring, or with Unary, cfg.Conns connections connected
// lazily — and opens a small pool on cfg.DatabaseURL, which it pings.
func NewBoxoffice(ctx context.Context, cfg BoxofficeConfig) (*Boxoffice, error) {
	if cfg.Addr == "" {
		return nil, errors.New("bench: boxoffice: no gRPC address")
	}
	if cfg.DatabaseURL == "" {
		return nil, errors.New("bench: boxoffice: no database URL (verification reads it)")
	}
	if cfg.Conns < 0 {
		return nil, fmt.Errorf("bench: boxoffice: %d connections", cfg.Conns)
	}
	if cfg.AdminToken == "" {
		cfg.AdminToken = cfg.Token
	}
	b := &Boxoffice{
		md:       metadata.Pairs("authorization", "Bearer "+cfg.Token),
		adminMD:  metadata.Pairs("authorization", "Bearer "+cfg.AdminToken),
		withKeys: !cfg.NoIdempotencyKeys,
		addr:     cfg.Addr,
		lag:      hdrhistogram.New(1, maxLatencyUS, runDigits),
	}
	conns := cfg.Conns
	if !cfg.Unary {
		conns = 1 // CreateShow and the layout check only
	} else if conns == 0 {
		conns = defaultBoxofficeConns
	}
	for range conns {
		conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("bench: boxoffice: %w", err)
		}
		b.conns = append(b.conns, conn)
		b.catalog = append(b.catalog, pb.NewCatalogServiceClient(conn))
		b.reserve = append(b.reserve, pb.NewReservationServiceClient(conn))
		b.rooms = append(b.rooms, pb.NewWaitingRoomServiceClient(conn))
	}
	if !cfg.Unary {
		var err error
		b.cli, err = client.New(ctx, client.Config{
			Addrs: []string{cfg.Addr}, Token: cfg.Token, ConnsPerNode: cfg.Conns,
			ReplicaLag: b.recordLag,
		})
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("bench: boxoffice: %w", err)
		}
	}
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bench: boxoffice: %w", err)
	}
	if !strings.Contains(cfg.DatabaseURL, "pool_max_conns") {
		pc.MaxConns = 2 // verification only: a query or two after the run
	}
	b.pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err == nil {
		err = b.pool.Ping(ctx)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bench: boxoffice: database: %w", err)
	}
	return b, nil
}

// Name returns "boxoffice", or "boxoffice-unary" with Unary.
func (b *Boxoffice) Name() string {
	if b.cli == nil {
		return "boxoffice-unary"
	}
	return "boxoffice"
}

// HoldsDurable returns true: the engine acknowledges a hold only after it
// is committed.
func (b *Boxoffice) HoldsDurable() bool { return true }

// pick returns the index of the connection for the next call.
func (b *Boxoffice) pick() int { return int(b.next.Add(1) % uint32(len(b.conns))) }

// recordLag records one replica lag (negative ones, from the two clocks,
// as 0).
func (b *Boxoffice) recordLag(_ string, lag time.Duration) {
	us := min(max(lag.Microseconds(), 0), maxLatencyUS)
	b.lagMu.Lock()
	_ = b.lag.RecordValue(us) // cannot fail: clamped to the histogram's range
	b.lagMu.Unlock()
}

// ReplicaLag returns a copy of the replica lag's distribution so far (µs):
// for every seat-map message the client's replicas applied, the time from
// the engine publishing it to its arrival. Empty with Unary.
func (b *Boxoffice) ReplicaLag() *hdrhistogram.Histogram {
	b.lagMu.Lock()
	defer b.lagMu.Unlock()
	return hdrhistogram.Import(b.lag.Export())
}

// CreateShow creates the show through CatalogService.CreateShow with the
// admin token: its rows in one category, its hold TTL (the engine's
// default if zero), and its waiting room, opening show.Room.OpensIn from
// now.
func (b *Boxoffice) CreateShow(ctx context.Context, show ShowSpec) error {
	req := &pb.CreateShowRequest{
		ShowId:     show.ID,
		Title:      "Bench show " + show.ID,
		City:       "Bench",
		Venue:      "Bench hall",
		StartsAt:   timestamppb.New(time.Now().Add(24 * time.Hour).Truncate(time.Second)),
		Categories: []*pb.Category{{Name: "standard", PriceCents: 50000}},
		Rows:       make([]*pb.Row, len(show.Rows)),
	}
	if show.HoldTTL > 0 {
		req.HoldTtl = durationpb.New(show.HoldTTL)
	}
	if r := show.Room; r != nil {
		req.WaitingRoom = &pb.WaitingRoom{
			OpensAt: timestamppb.New(time.Now().Add(r.OpensIn)), AdmitPerSecond: r.AdmitPerSecond,
			MaxActiveShoppers: int32(r.MaxActive), ShoppingWindow: durationpb.New(r.Window),
		}
	}
	for i, r := range show.Rows {
		req.Rows[i] = &pb.Row{Label: r.Label, SeatCount: int32(r.Seats), Category: "standard"}
	}
	_, err := b.catalog[b.pick()].CreateShow(metadata.NewOutgoingContext(ctx, b.adminMD), req)
	return boxofficeError(err)
}

// SeatMap reads the show's seat map. The statuses are in the engine's
// layout order, which must be ShowSpec.SeatIDs order: the first read of a
// show asks GetSeatMap for the layout too and fails if it is not the
// show's. Users who read the show meanwhile wait for that one read, as a
// web tier's layout cache would have them, rather than each fetching the
// layout. Later reads, like a web tier's, come from the client's replica
// (with Unary, from GetSeatMap without the layout); the statuses they
// return are the replica's own and must not be modified.
func (b *Boxoffice) SeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	if _, checked := b.laidOut.Load(show.ID); !checked {
		sm, err, shared := b.layouts.Do(show.ID, func() (any, error) { return b.FreshSeatMap(ctx, show) })
		if err != nil {
			return SeatMap{}, err
		}
		if !shared {
			return sm.(SeatMap), nil
		}
	}
	if b.cli != nil {
		m, err := b.cli.SeatMap(ctx, show.ID)
		if err != nil {
			return SeatMap{}, boxofficeError(err)
		}
		return b.statuses(show, m.Statuses)
	}
	return b.FreshSeatMap(ctx, show)
}

// LocalSeatMap answers from the client's replica once it has its first
// snapshot (and the layout was checked by a first read).
func (b *Boxoffice) LocalSeatMap(show ShowSpec) (SeatMap, bool) {
	if _, checked := b.laidOut.Load(show.ID); !checked || b.cli == nil {
		return SeatMap{}, false
	}
	m, ok := b.cli.TrySeatMap(show.ID)
	if !ok {
		return SeatMap{}, false
	}
	sm, err := b.statuses(show, m.Statuses)
	return sm, err == nil
}

// FreshSeatMap reads the show's seat map from its owner's memory with
// GetSeatMap (the layout too on a show's first read, checked as SeatMap
// says).
func (b *Boxoffice) FreshSeatMap(ctx context.Context, show ShowSpec) (SeatMap, error) {
	_, checked := b.laidOut.Load(show.ID)
	req := &pb.GetSeatMapRequest{ShowId: show.ID, IncludeLayout: !checked}
	var (
		resp *pb.GetSeatMapResponse
		err  error
	)
	if b.cli != nil {
		resp, err = b.cli.GetSeatMap(ctx, req)
	} else {
		resp, err = b.reserve[b.pick()].GetSeatMap(metadata.NewOutgoingContext(ctx, b.md), req)
	}
	if err != nil {
		return SeatMap{}, boxofficeError(err)
	}
	if !checked {
		if err := sameLayout(show, resp.GetRows()); err != nil {
			return SeatMap{}, &Error{Outcome: Failed, Err: err}
		}
		b.laidOut.Store(show.ID, struct{}{})
	}
	return b.statuses(show, slices.Clone(resp.GetStatuses()))
}

// statuses returns st (one SeatStatus byte per seat) as a SeatMap, without
// copying it: SeatStatus has byte's layout.
func (b *Boxoffice) statuses(show ShowSpec, st []byte) (SeatMap, error) {
	if len(st) != show.Capacity() {
		return SeatMap{}, &Error{Outcome: Failed, Err: fmt.Errorf("boxoffice: seat map of show %s has %d statuses, want %d", show.ID, len(st), show.Capacity())}
	}
	if len(st) == 0 {
		return SeatMap{}, nil
	}
	return SeatMap{Statuses: unsafe.Slice((*SeatStatus)(unsafe.Pointer(&st[0])), len(st))}, nil
}

// sameLayout checks that the engine's rows are the show's, in order.
func sameLayout(show ShowSpec, rows []*pb.Row) error {
	if len(rows) != len(show.Rows) {
		return fmt.Errorf("boxoffice: show %s has %d rows, want %d", show.ID, len(rows), len(show.Rows))
	}
	for i, r := range rows {
		if r.GetLabel() != show.Rows[i].Label || int(r.GetSeatCount()) != show.Rows[i].Seats {
			return fmt.Errorf("boxoffice: row %d of show %s is %s of %d seats, want %s of %d",
				i, show.ID, r.GetLabel(), r.GetSeatCount(), show.Rows[i].Label, show.Rows[i].Seats)
		}
	}
	return nil
}

// Hold holds seats through HoldSeats, with a fresh idempotency key unless
// the config turned keys off. A caller that retries one logical attempt
// should use HoldWithKey with the same key instead.
func (b *Boxoffice) Hold(ctx context.Context, show ShowSpec, user string, seats []string) (Hold, error) {
	var key string
	if b.withKeys {
		key = NewIdempotencyKey()
	}
	return b.HoldWithKey(ctx, show, user, seats, key)
}

// NewIdempotencyKey returns a fresh random idempotency key (26 characters
// of base32, 128 bits).
func NewIdempotencyKey() string { return rand.Text() }

// HoldWithKey is Hold with the caller's idempotency key (none if empty): a
// retry with the key of an attempt whose answer was lost gets that
// attempt's answer instead of a second hold.
func (b *Boxoffice) HoldWithKey(ctx context.Context, show ShowSpec, user string, seats []string, key string) (Hold, error) {
	return b.hold(ctx, &pb.HoldSeatsRequest{ShowId: show.ID, UserId: user, SeatIds: seats, IdempotencyKey: key})
}

// HoldAdmitted is Hold with user's admission token for the show's waiting
// room.
func (b *Boxoffice) HoldAdmitted(ctx context.Context, show ShowSpec, user string, seats []string, token string) (Hold, error) {
	var key string
	if b.withKeys {
		key = NewIdempotencyKey()
	}
	return b.hold(ctx, &pb.HoldSeatsRequest{ShowId: show.ID, UserId: user, SeatIds: seats, IdempotencyKey: key, AdmissionToken: token})
}

func (b *Boxoffice) hold(ctx context.Context, req *pb.HoldSeatsRequest) (Hold, error) {
	user := req.GetUserId()
	var (
		resp *pb.HoldSeatsResponse
		err  error
	)
	if b.cli != nil {
		resp, err = b.cli.HoldSeats(ctx, req)
	} else {
		resp, err = b.reserve[b.pick()].HoldSeats(metadata.NewOutgoingContext(ctx, b.md), req)
	}
	if err != nil {
		return Hold{}, boxofficeError(err)
	}
	return Hold{ID: resp.GetHoldId(), User: user, Seats: resp.GetSeatIds(), ExpiresAt: resp.GetExpiresAt().AsTime()}, nil
}

// Confirm books the hold through ConfirmHold. The engine answers a repeat
// with the same payment reference with the booking, so a retry is safe
// without an idempotency key.
func (b *Boxoffice) Confirm(ctx context.Context, show ShowSpec, hold Hold, paymentRef string) error {
	req := &pb.ConfirmHoldRequest{HoldId: hold.ID, UserId: hold.User, PaymentRef: paymentRef}
	var err error
	if b.cli != nil {
		_, err = b.cli.ConfirmHold(ctx, req)
	} else {
		_, err = b.reserve[b.pick()].ConfirmHold(metadata.NewOutgoingContext(ctx, b.md), req)
	}
	return boxofficeError(err)
}

// JoinQueue joins the show's waiting room through JoinQueue.
func (b *Boxoffice) JoinQueue(ctx context.Context, show ShowSpec, user string) (QueueEntry, error) {
	req := &pb.JoinQueueRequest{ShowId: show.ID, UserId: user}
	var (
		resp *pb.JoinQueueResponse
		err  error
	)
	if b.cli != nil {
		resp, err = b.cli.JoinQueue(ctx, req)
	} else {
		resp, err = b.rooms[b.pick()].JoinQueue(metadata.NewOutgoingContext(ctx, b.md), req)
	}
	if err != nil {
		return QueueEntry{}, boxofficeError(err)
	}
	return queueEntry(resp.GetEntry()), nil
}

// PollQueue long-polls the user's entry through PollQueue.
func (b *Boxoffice) PollQueue(ctx context.Context, show ShowSpec, user string, since uint64, wait time.Duration) (QueueEntry, error) {
	req := &pb.PollQueueRequest{ShowId: show.ID, UserId: user, SinceVersion: since, Wait: durationpb.New(wait)}
	var (
		resp *pb.PollQueueResponse
		err  error
	)
	if b.cli != nil {
		resp, err = b.cli.PollQueue(ctx, req)
	} else {
		resp, err = b.rooms[b.pick()].PollQueue(metadata.NewOutgoingContext(ctx, b.md), req)
	}
	if err != nil {
		return QueueEntry{}, boxofficeError(err)
	}
	return queueEntry(resp.GetEntry()), nil
}

// LeaveQueue leaves the show's waiting room through LeaveQueue.
func (b *Boxoffice) LeaveQueue(ctx context.Context, show ShowSpec, user string) error {
	req := &pb.LeaveQueueRequest{ShowId: show.ID, UserId: user}
	var err error
	if b.cli != nil {
		_, err = b.cli.LeaveQueue(ctx, req)
	} else {
		_, err = b.rooms[b.pick()].LeaveQueue(metadata.NewOutgoingContext(ctx, b.md), req)
	}
	return boxofficeError(err)
}

func queueEntry(e *pb.QueueEntry) QueueEntry {
	q := QueueEntry{Seq: e.GetSequence(), Position: int(e.GetPosition()), Wait: e.GetEstimatedWait().AsDuration(), Version: e.GetVersion()}
	switch e.GetState() {
	case pb.QueueState_QUEUE_STATE_QUEUED:
		q.State = QueueQueued
	case pb.QueueState_QUEUE_STATE_ADMITTED:
		q.State, q.Token, q.Deadline = QueueAdmitted, e.GetAdmissionToken(), e.GetAdmissionDeadline().AsTime()
	case pb.QueueState_QUEUE_STATE_SOLD_OUT:
		q.State = QueueSoldOut
	default:
		q.State = QueueEnded
	}
	return q
}

// Records reads every reservation of the show from the engine's
// reservations table, in one statement (one snapshot). Statuses become
// RecordStates by lower-casing ("HELD" → StateHeld).
func (b *Boxoffice) Records(ctx context.Context, show ShowSpec) ([]Record, error) {
	rows, _ := b.pool.Query(ctx, `
		SELECT reservation_id, user_id, seat_ids, lower(status), coalesce(payment_ref, '')
		FROM reservations WHERE show_id = $1
		ORDER BY created_at, reservation_id`, show.ID)
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Record, error) {
		var r Record
		err := row.Scan(&r.ID, &r.User, &r.Seats, &r.State, &r.PaymentRef)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: boxoffice: reading reservations of %s: %w", show.ID, err)
	}
	return recs, nil
}

// maxClaimMismatches bounds what CheckStore reads back.
const maxClaimMismatches = 100

// CheckStore cross-checks the engine's seat_claims against its
// reservations, in one statement: every seat of a live (HELD or BOOKED)
// reservation has a claim naming it, and every claim names a live
// reservation that has the seat. It returns one ViolationClaimMismatch per
// disagreement, up to 100.
func (b *Boxoffice) CheckStore(ctx context.Context, show ShowSpec) ([]string, error) {
	rows, _ := b.pool.Query(ctx, `
		WITH live AS (
			SELECT reservation_id, unnest(seat_ids) AS seat_id
			FROM reservations WHERE show_id = $1 AND status IN ('HELD', 'BOOKED')
		), claims AS (
			SELECT reservation_id, seat_id FROM seat_claims WHERE show_id = $1
		)
		SELECT coalesce(l.reservation_id, c.reservation_id), coalesce(l.seat_id, c.seat_id), l.seat_id IS NULL
		FROM live l FULL JOIN claims c ON c.reservation_id = l.reservation_id AND c.seat_id = l.seat_id
		WHERE l.seat_id IS NULL OR c.seat_id IS NULL
		ORDER BY 1, 2
		LIMIT $2`, show.ID, maxClaimMismatches)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var (
			res, seat string
			claimOnly bool
		)
		if err := row.Scan(&res, &seat, &claimOnly); err != nil {
			return "", err
		}
		if claimOnly {
			return fmt.Sprintf("%s: seat %s is claimed by %s, which is not a live reservation with that seat", ViolationClaimMismatch, seat, res), nil
		}
		return fmt.Sprintf("%s: seat %s of live reservation %s has no claim", ViolationClaimMismatch, seat, res), nil
	})
	if err != nil {
		return nil, fmt.Errorf("bench: boxoffice: reading seat claims of %s: %w", show.ID, err)
	}
	return out, nil
}

// Close closes the client, the connections and the pool.
func (b *Boxoffice) Close() error {
	var err error
	if b.cli != nil {
		err = b.cli.Close()
		b.cli = nil
	}
	for _, c := range b.conns {
		err = errors.Join(err, c.Close())
	}
	b.conns = nil
	if b.pool != nil {
		b.pool.Close()
	}
	return err
}

// Reasons of the engine's errors (google.rpc.ErrorInfo) that change an
// outcome.
const (
	reasonOverloaded = "OVERLOADED"
	reasonShowExists = "SHOW_EXISTS"
)

// boxofficeError classifies an error of a call to the engine by its gRPC
// code: AlreadyExists is Taken (with the seats the error names), except
// for a show that exists; ResourceExhausted is Limit (the user's limit,
// sold out), except "overloaded", which is Unavailable; FailedPrecondition
// is Ended; Unavailable is Unavailable; DeadlineExceeded and Canceled are
// Timeout; anything else Failed. nil stays nil.
func boxofficeError(err error) error {
	if err == nil {
		return nil
	}
	code := client.Code(err)
	if code == codes.Unknown {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return &Error{Outcome: Timeout, Err: err}
		}
		return &Error{Outcome: Failed, Err: err}
	}
	e := &Error{Outcome: Failed, Err: err}
	switch code {
	case codes.AlreadyExists:
		if reason, seats := errorInfo(err); reason != reasonShowExists {
			e.Outcome, e.Seats = Taken, seats
		}
	case codes.ResourceExhausted:
		e.Outcome = Limit
		if reason, _ := errorInfo(err); reason == reasonOverloaded {
			e.Outcome = Unavailable
		}
	case codes.FailedPrecondition:
		e.Outcome = Ended
	case codes.Unavailable:
		e.Outcome = Unavailable
	case codes.DeadlineExceeded, codes.Canceled:
		e.Outcome = Timeout
	}
	return e
}

// errorInfo returns the reason of err's ErrorInfo and, for SEATS_TAKEN,
// the seats taken (its metadata "seats"). Without an ErrorInfo, the
// reason is the message's prefix before ": ", as the engine writes it.
func errorInfo(err error) (reason string, seats []string) {
	if reason = client.Reason(err); reason != "" {
		return reason, client.TakenSeats(err)
	}
	reason, _, _ = strings.Cut(status.Convert(err).Message(), ": ")
	return reason, nil
}
