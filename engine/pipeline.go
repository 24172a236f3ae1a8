package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ar "github.com/boxoffice/boxoffice/activereservation"
	pb "github.com/boxoffice/boxoffice/api/boxoffice/v1"
)

// pipelineMaxResults is the most results one PipelineResponse carries.
const pipelineMaxResults = 1024

// PipelineMaxCalls is the most calls one PipelineRequest may carry (package
// client sends at most 1,024): a message with more ends the stream
// InvalidArgument, after the calls taken before it are answered. Each call
// refused costs a status of its own until it is sent, so without the bound
// one message of millions of empty calls (a few bytes each) would cost the
// node a gigabyte.
const PipelineMaxCalls = 16384

// Pipeline serves batches of hold, confirm and release calls on one stream.
//
// The receive loop reads the request messages and takes their calls. A call
// with call_id 0 or the call_id of a call in flight on the stream, with no
// call or a bad timeout (InvalidArgument), beyond the stream's bound on
// calls in flight (ResourceExhausted OVERLOADED), or whose timeout is
// already over (DeadlineExceeded) is refused at once: it waits for no call
// in flight, only, as every answer does, for room among the answers the
// sender has not taken yet (when the client reads slower than it sends).
// The other hold, confirm and release calls of one message for one show
// are decided together, in order, under one acquisition of the show's
// lock, by the code behind the unary RPCs (showBatch: refusals are
// answered at once, changes once they and the others of their message for
// that show have committed). A join, and a call that has
// to wait, runs on a goroutine of its own under the stream's context
// bounded by its timeout, through holdSeats, confirmHold, releaseHold or
// joinQueue: the unary RPCs' code, whose error becomes the CallError the
// unary RPC's status would carry. So every rule, error and idempotency
// behaviour is theirs. (A hold's
// SEATS_TAKEN refusal is sent compact, its taken seats as a bitmask of the
// call's; CallError.Expanded gives the unary answer.) A call is in
// flight from when it is taken until the sender takes its answer.
//
// One sender goroutine batches naturally: it waits for the first answer,
// yields the processor once (runtime.Gosched: the goroutines with answers
// ready to hand over run first, which costs nothing on an idle node), takes
// whatever other answers are ready without waiting (at most
// pipelineMaxResults), and sends them in one message. There is no timer, so
// an idle stream adds no latency, and answers come out in the order the
// calls complete. (The yield made hold-storm runs 4% faster in the median
// of 4 alternating pairs, 0.80-1.09x.)
//
// The stream ends:
//   - when the client closes its side: every call taken is answered, then
//     the stream ends OK;
//   - when a message carries more than PipelineMaxCalls calls: its calls
//     are not taken, every call taken before is answered, and the stream
//     ends InvalidArgument;
//   - when the client goes away (the stream's context ends): the calls in
//     flight run to their outcome, as unary calls whose client went away do
//     (committed or not: a retry with the idempotency key tells), and their
//     answers are dropped;
//   - at Shutdown, once the node drained: the stream takes no more calls,
//     answers the ones it took, and ends Unavailable SHUTTING_DOWN. A call
//     the client sent that got no answer was not run (unless the client
//     went away meanwhile, as above).
//
// The handler returns only after every call it took has ended. Its receive
// loop may outlive it by moments (blocked in Recv, it ends when the stream
// does, as the handler's return ends it), but takes no call after it.
func (s *reservationServer) Pipeline(stream pb.ReservationService_PipelineServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	bound := s.pipelineMax
	if bound <= 0 {
		bound = DefaultPipelineMaxInFlight
	}
	p := &pipeline{
		n:        s.n,
		stream:   stream,
		ctx:      ctx,
		bound:    bound,
		inFlight: make(map[uint64]struct{}),
		results:  make(chan answer, bound),
		finish:   make(chan struct{}),
	}
	received := make(chan error, 1)
	go func() { received <- p.receive() }()
	sent := make(chan error, 1)
	go func() { sent <- p.send() }()

	life := s.life
	if life == nil {
		life = context.Background()
	}
	var err error
	senderDone := false
	select {
	case err = <-received:
		if errors.Is(err, io.EOF) {
			err = nil
		}
	case err = <-sent:
		// The stream is broken: no answer can go out any more.
		senderDone = true
		cancel()
	case <-life.Done():
		err = toStatus(fmt.Errorf("pipeline: %w", ErrShuttingDown))
	}
	p.close()
	p.calls.Wait()
	close(p.finish)
	if !senderDone {
		if serr := <-sent; serr != nil && err == nil {
			err = serr
		}
	}
	return err
}

// pipeline is one Pipeline stream. The receive loop takes calls, a
// goroutine per call runs it, and the sender sends the answers; they meet
// in results and, under mu, in inFlight.
type pipeline struct {
	n      *Node
	stream pb.ReservationService_PipelineServer
	ctx    context.Context // the stream's; also ends when the sender fails
	bound  int             // the most calls in flight

	mu       sync.Mutex          // guards inFlight and closed
	inFlight map[uint64]struct{} // call IDs of the calls in flight; at most bound
	closed   bool                // no more calls are taken

	// calls counts the goroutines running calls. Add happens under mu
	// while !closed, so none happens once Wait may have begun.
	calls sync.WaitGroup
	// results are the answers for the sender. Its capacity is bound, so a
	// call's answer waits for room only behind refusals the sender has not
	// sent yet; every send also gives up when ctx ends, so no goroutine
	// blocks forever once the client is gone.
	results chan answer
	// finish is closed once every call taken has put its answer in results
	// (or dropped it): the sender sends what is left and returns.
	finish chan struct{}
}

// answer is a result for the sender; taken marks the answer of a call that
// is in flight (not a refusal), whose call ID the sender frees.
type answer struct {
	res   *pb.PipelineResult
	taken bool
}

// receive reads request messages and takes their calls until Recv fails
// (io.EOF once the client closed its side).
func (p *pipeline) receive() error {
	for {
		req, err := p.stream.Recv()
		if err != nil {
			return err
		}
		p.n.metrics.pipeRecv.Inc()
		if k := len(req.GetCalls()); k > PipelineMaxCalls {
			return toStatus(fmt.Errorf("%w: a pipeline message of %d calls; at most %d", ErrInvalid, k, PipelineMaxCalls))
		}
		p.take(req.GetCalls())
	}
}

// takenCall is a call taken to run, with its deadline (zero: the
// stream's).
type takenCall struct {
	call     *pb.PipelineCall
	deadline time.Time
	waited   bool // the call waited (see await) and was counted as waiting
}

// take refuses or starts each of calls. A message's calls are decided in
// one critical section, so the first of two calls with the same ID in one
// message is the one that runs, and a message with more calls than room
// gets the excess refused whatever the calls taken do meanwhile.
func (p *pipeline) take(calls []*pb.PipelineCall) {
	type refusal struct {
		call *pb.PipelineCall
		err  error
	}
	var refused []refusal
	run := make([]takenCall, 0, len(calls))
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	for _, c := range calls {
		tc, err := p.admitLocked(c)
		if err != nil {
			refused = append(refused, refusal{c, err})
			continue
		}
		p.inFlight[c.GetCallId()] = struct{}{}
		p.calls.Add(1)
		run = append(run, tc)
	}
	p.mu.Unlock()
	// The holds, confirms and releases by show, in order: a message has
	// calls for a few shows (most often one), so a linear search beats a
	// map.
	type showCalls struct {
		show ar.ShowID
		tcs  []takenCall
	}
	var byShow []showCalls
	for _, tc := range run {
		show, ok := callShow(tc.call)
		if !ok {
			go p.run(tc)
			continue
		}
		i := slices.IndexFunc(byShow, func(g showCalls) bool { return g.show == show })
		if i < 0 {
			i = len(byShow)
			g := showCalls{show: show}
			if i == 0 {
				g.tcs = make([]takenCall, 0, len(run)) // most messages have one show
			}
			byShow = append(byShow, g)
		}
		byShow[i].tcs = append(byShow[i].tcs, tc)
	}
	start := time.Now()
	for _, g := range byShow {
		p.showBatch(g.show, g.tcs, start)
	}
	for _, r := range refused {
		p.n.metrics.pipeCall(pipelineKind(r.call), status.Code(r.err), 0)
		p.answer(answer{res: errorResult(r.call.GetCallId(), r.err)})
	}
}

// admitLocked checks c and returns it with its context, or the error (a
// gRPC status) that refuses it. p.mu must be held.
func (p *pipeline) admitLocked(c *pb.PipelineCall) (takenCall, error) {
	id := c.GetCallId()
	switch {
	case id == 0:
		return takenCall{}, toStatus(fmt.Errorf("%w: call_id must not be 0", ErrInvalid))
	case c.GetCall() == nil:
		return takenCall{}, toStatus(fmt.Errorf("%w: call %d has no hold, confirm, release or join", ErrInvalid, id))
	}
	if _, dup := p.inFlight[id]; dup {
		return takenCall{}, toStatus(fmt.Errorf("%w: call_id %d is already in flight on this stream", ErrInvalid, id))
	}
	var timeout time.Duration
	if d := c.GetTimeout(); d != nil {
		if d.CheckValid() != nil || d.AsDuration() < 0 {
			return takenCall{}, toStatus(fmt.Errorf("%w: call %d: timeout must be a valid duration, not negative", ErrInvalid, id))
		}
		timeout = d.AsDuration()
		if timeout == 0 {
			return takenCall{}, toStatus(fmt.Errorf("call %d: %w", id, context.DeadlineExceeded))
		}
	}
	if len(p.inFlight) >= p.bound {
		return takenCall{}, toStatus(fmt.Errorf("%w: %d calls in flight on this pipeline stream", ErrOverloaded, p.bound))
	}
	if err := p.ctx.Err(); err != nil {
		return takenCall{}, toStatus(fmt.Errorf("call %d: %w", id, err))
	}
	tc := takenCall{call: c}
	if c.GetTimeout() != nil {
		tc.deadline = time.Now().Add(timeout)
	}
	return tc, nil
}

// run runs a taken call, under the stream's context bounded by the call's
// deadline, and hands its answer to the sender.
func (p *pipeline) run(tc takenCall) {
	defer p.calls.Done()
	start := time.Now()
	ctx := p.ctx
	if !tc.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(p.ctx, tc.deadline)
		defer cancel()
	}
	res := &pb.PipelineResult{CallId: tc.call.GetCallId()}
	var err error
	switch c := tc.call.GetCall().(type) {
	case *pb.PipelineCall_Hold:
		var r *pb.HoldSeatsResponse
		if r, err = holdSeats(ctx, p.n, c.Hold); err == nil {
			res.Result = &pb.PipelineResult_Hold{Hold: r}
		}
	case *pb.PipelineCall_Confirm:
		var r *pb.ConfirmHoldResponse
		if r, err = confirmHold(ctx, p.n, c.Confirm); err == nil {
			res.Result = &pb.PipelineResult_Confirm{Confirm: r}
		}
	case *pb.PipelineCall_Release:
		var r *pb.ReleaseHoldResponse
		if r, err = releaseHold(ctx, p.n, c.Release); err == nil {
			res.Result = &pb.PipelineResult_Release{Release: r}
		}
	case *pb.PipelineCall_Join:
		var r *pb.JoinQueueResponse
		if r, err = joinQueue(ctx, p.n, c.Join); err == nil {
			res.Result = &pb.PipelineResult_Join{Join: r}
		}
	default: // admitLocked lets no other call through
		err = status.Error(codes.Internal, "INTERNAL: unknown pipeline call")
	}
	if err != nil {
		res.Result = &pb.PipelineResult_Error{Error: pipelineError(tc.call, err)}
	}
	p.n.metrics.pipeCall(pipelineKind(tc.call), resultCode(res), time.Since(start))
	p.answer(answer{res: res, taken: true})
}

// callShow returns the show of a hold, confirm or release call, which
// showBatch decides with the other calls of its message for that show; ok
// is false for a join, or a call whose hold ID names no show (run answers
// it).
func callShow(c *pb.PipelineCall) (show ar.ShowID, ok bool) {
	var err error
	switch c := c.GetCall().(type) {
	case *pb.PipelineCall_Hold:
		show = ar.ShowID(c.Hold.GetShowId())
		err = validateShowID(show)
	case *pb.PipelineCall_Confirm:
		show, err = showOfHold(ar.HoldID(c.Confirm.GetHoldId()))
	case *pb.PipelineCall_Release:
		show, err = showOfHold(ar.HoldID(c.Release.GetHoldId()))
	default:
		return "", false
	}
	return show, err == nil
}

// showBatch decides the hold, confirm and release calls of one message for
// one show, in order, under one acquisition of the show's lock, through
// the steps Node.Hold, Node.Confirm and Node.Release take (tryHoldLocked,
// tryConfirmLocked, tryReleaseLocked): refusals (and replays) are answered
// at once, and the changes queued are settled by one goroutine (settle),
// so a commit of many of them wakes one goroutine, not one per call: it
// applies their outcomes as their writes commit, then answers them. The
// calls that must wait for a write in flight (on their seats, their hold or
// a turn) wait together on one goroutine too (await), and are decided again
// together. A call that must wait for a replay or a read of the store, and
// every call of a show that is not loaded here, stale or dropped, or of a
// node that drains, runs on its own goroutine through the unary RPC's code
// instead, as run does. start is when the calls were taken, for the
// metrics.
func (p *pipeline) showBatch(show ar.ShowID, tcs []takenCall, start time.Time) {
	sh, ok := p.n.lockLoaded(show)
	if !ok {
		for _, tc := range tcs {
			go p.run(tc)
		}
		return
	}
	// Sized for the common case, so they do not grow call by call: most
	// calls of a sale are refused at once.
	answers := make([]callResult, 0, len(tcs))
	var (
		slow    []takenCall
		parked  []parkedCall
		commits []queuedCall
	)
	for i, tc := range tcs {
		if sh.dropped || sh.stale { // a failed write in this batch made it so
			slow = append(slow, tcs[i:]...)
			break
		}
		q, res, wait, ch := p.decideLocked(sh, tc)
		switch {
		case ch != nil:
			if !tc.waited && tc.call.GetHold() != nil {
				p.n.metrics.holdWaits.Inc()
			}
			tc.waited = true
			parked = append(parked, parkedCall{tc, ch})
		case wait:
			slow = append(slow, tc)
		case res != nil:
			answers = append(answers, callResult{tc.call, res})
		default:
			commits = append(commits, q)
		}
	}
	sh.mu.Unlock()
	for _, tc := range slow {
		go p.run(tc)
	}
	if len(parked) > 0 {
		go p.await(show, parked, start)
	}
	if len(commits) == 0 {
		p.n.gate.leave()
	} else {
		go p.settle(commits, start)
	}
	for _, a := range answers {
		p.done(a.call, a.res, start)
	}
}

// parkedCall is a call that waits for ch, the outcome of a write in flight
// (see show.busy), before it is decided again.
type parkedCall struct {
	tc takenCall
	ch <-chan struct{}
}

// await waits for the writes in flight that the calls parked by showBatch
// wait for, one after the other (those of one show commit in order), and
// then decides the calls again together with showBatch. A call whose
// deadline passes first, or every call once the stream ends, is answered
// with that error, as the unary code answers a wait that its context ends.
func (p *pipeline) await(show ar.ShowID, parked []parkedCall, start time.Time) {
	var timer *time.Timer
	var expiry <-chan time.Time
	arm := func() {
		var first time.Time
		for _, c := range parked {
			if d := c.tc.deadline; !d.IsZero() && (first.IsZero() || d.Before(first)) {
				first = d
			}
		}
		expiry = nil
		if !first.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(first))
			} else {
				timer.Reset(time.Until(first))
			}
			expiry = timer.C
		}
	}
	end := func(keep func(takenCall) bool, err error) {
		kept := parked[:0]
		for _, c := range parked {
			if keep(c.tc) {
				kept = append(kept, c)
				continue
			}
			p.done(c.tc.call, errorAnswer(c.tc.call.GetCallId(), pipelineError(c.tc.call, err)), start)
		}
		parked = kept
	}
	arm()
	for i := 0; i < len(parked); {
		select {
		case <-parked[i].ch:
			i++
		case now := <-expiry:
			end(func(tc takenCall) bool { return tc.deadline.IsZero() || tc.deadline.After(now) }, context.DeadlineExceeded)
			i = 0 // the calls kept moved; the channels closed pass at once
			arm()
		case <-p.ctx.Done():
			end(func(takenCall) bool { return false }, p.ctx.Err())
		}
	}
	if timer != nil {
		timer.Stop()
	}
	if len(parked) == 0 {
		return
	}
	tcs := make([]takenCall, len(parked))
	for i, c := range parked {
		tcs[i] = c.tc
	}
	p.showBatch(show, tcs, start)
}

// settle waits for the writes of commits, which showBatch queued at start,
// brings memory up to date with each outcome, in order, and only then
// answers them: handing an answer to the sender may wait (for a client
// that reads slower than it sends), and memory must not wait for the
// client — until a write's outcome is applied, the seats it took keep
// other users' holds waiting, and the node's drain waits for it.
func (p *pipeline) settle(commits []queuedCall, start time.Time) {
	results := make([]callResult, len(commits))
	var settling []int
	for i, c := range commits {
		switch {
		case c.hold != nil:
			r, err := p.n.finishHold(c.hold)
			results[i] = callResult{c.tc.call, holdResult(c.tc.call, r, err)}
		case c.release != nil:
			r, err := p.n.finishRelease(c.release)
			results[i] = callResult{c.tc.call, changeResult(c.tc.call, r, err)}
		default:
			// A booking's waitlist and room writes are queued as it is
			// applied and waited for after every change of the batch is,
			// so that the bookings' writes commit together.
			commits[i].applied = p.n.applyConfirm(c.confirm)
			settling = append(settling, i)
		}
	}
	for _, i := range settling {
		c := commits[i]
		r, err := p.n.settleConfirm(c.applied)
		results[i] = callResult{c.tc.call, changeResult(c.tc.call, r, err)}
	}
	p.n.gate.leave()
	for _, a := range results {
		p.done(a.call, a.res, start)
	}
}

// queuedCall is a pipeline call whose change showBatch queued: one of hold,
// confirm and release is set; applied is the confirm's outcome, once known.
type queuedCall struct {
	tc      takenCall
	hold    *queuedHold
	confirm *queuedConfirm
	release *queuedRelease
	applied appliedConfirm
}

// decideLocked decides tc, a hold, confirm or release of sh (locked,
// neither stale nor dropped, and left locked): its answer (res), or the
// change queued (q), or the write in flight it must wait for before it is
// decided again (ch), or that it must wait otherwise and run through the
// unary code (wait).
func (p *pipeline) decideLocked(sh *show, tc takenCall) (q queuedCall, res *pb.PipelineResult, wait bool, ch <-chan struct{}) {
	q.tc = tc
	switch c := tc.call.GetCall().(type) {
	case *pb.PipelineCall_Hold:
		req := holdRequest(c.Hold)
		var st holdStep
		if err := checkHold(req); err != nil {
			st.err = err
		} else {
			var fp string
			st = p.n.tryHoldLocked(sh, req, &fp)
		}
		switch {
		case st.wait != nil:
			return q, nil, false, st.wait
		case st.stored != "":
			return q, nil, true, nil
		case st.queued != nil:
			q.hold = st.queued
			return q, nil, false, nil
		}
		return q, holdResult(tc.call, st.r, st.err), false, nil
	case *pb.PipelineCall_Confirm:
		req := confirmRequest(c.Confirm)
		if _, err := checkConfirm(req); err != nil {
			return q, changeResult(tc.call, ar.Reservation{}, err), false, nil
		}
		st := p.n.tryConfirmLocked(sh, req, confirmFingerprint(req))
		switch {
		case st.wait != nil:
			return q, nil, false, st.wait
		case st.ended:
			return q, nil, true, nil
		case st.queued != nil:
			q.confirm = st.queued
			return q, nil, false, nil
		}
		return q, changeResult(tc.call, st.r, st.err), false, nil
	case *pb.PipelineCall_Release:
		id, user := ar.HoldID(c.Release.GetHoldId()), ar.UserID(c.Release.GetUserId())
		if _, err := checkRelease(id, user); err != nil {
			return q, changeResult(tc.call, ar.Reservation{}, err), false, nil
		}
		st := p.n.tryReleaseLocked(sh, id, user)
		switch {
		case st.wait != nil:
			return q, nil, false, st.wait
		case st.ended:
			return q, nil, true, nil
		case st.queued != nil:
			q.release = st.queued
			return q, nil, false, nil
		}
		return q, changeResult(tc.call, st.r, st.err), false, nil
	}
	return q, nil, true, nil // callShow lets no other call through
}

// callResult is a call's answer.
type callResult struct {
	call *pb.PipelineCall
	res  *pb.PipelineResult
}

// done hands res, the answer of call c that showBatch took at start, to
// the sender.
func (p *pipeline) done(c *pb.PipelineCall, res *pb.PipelineResult, start time.Time) {
	p.n.metrics.pipeCall(pipelineKind(c), resultCode(res), time.Since(start))
	p.answer(answer{res: res, taken: true})
	p.calls.Done()
}

// holdResult is the answer to hold call c: r, or err's.
func holdResult(c *pb.PipelineCall, r ar.Reservation, err error) *pb.PipelineResult {
	id := c.GetCallId()
	if err != nil {
		return errorAnswer(id, pipelineError(c, err))
	}
	return &pb.PipelineResult{CallId: id, Result: &pb.PipelineResult_Hold{Hold: holdResponse(r)}}
}

// errorAnswer is the answer e to call id. The result and its oneof case
// are allocated together, as one object: a refusal is the answer to most
// holds of a sale.
func errorAnswer(id uint64, e *pb.CallError) *pb.PipelineResult {
	a := &struct {
		res   pb.PipelineResult
		oneof pb.PipelineResult_Error
	}{}
	a.oneof.Error = e
	a.res.CallId, a.res.Result = id, &a.oneof
	return &a.res
}

// changeResult is the answer to confirm or release call c: r, or err's.
func changeResult(c *pb.PipelineCall, r ar.Reservation, err error) *pb.PipelineResult {
	id := c.GetCallId()
	switch {
	case err != nil:
		return errorAnswer(id, pipelineError(c, err))
	case c.GetConfirm() != nil:
		return &pb.PipelineResult{CallId: id, Result: &pb.PipelineResult_Confirm{Confirm: &pb.ConfirmHoldResponse{Reservation: reservationToPB(r)}}}
	}
	return &pb.PipelineResult{CallId: id, Result: &pb.PipelineResult_Release{Release: &pb.ReleaseHoldResponse{Reservation: reservationToPB(r)}}}
}

// resultCode is the gRPC code of a result, for the RPC metrics.
func resultCode(res *pb.PipelineResult) codes.Code {
	if e := res.GetError(); e != nil {
		return codes.Code(e.GetCode())
	}
	return codes.OK
}

// answer hands a to the sender, or drops it once the stream's context
// ended.
func (p *pipeline) answer(a answer) {
	select {
	case p.results <- a:
	case <-p.ctx.Done():
	}
}

// close makes the receive loop take no more calls.
func (p *pipeline) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

// send sends answers, as many as are ready per message, until finish is
// closed and no answer is left (nil), the stream's context ends, or a Send
// fails.
func (p *pipeline) send() error {
	for {
		batch := make([]*pb.PipelineResult, 0, 8)
		var freed []uint64
		add := func(a answer) {
			batch = append(batch, a.res)
			if a.taken {
				freed = append(freed, a.res.GetCallId())
			}
		}
		select {
		case a := <-p.results:
			add(a)
		case <-p.finish:
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
		runtime.Gosched()
	ready:
		for len(batch) < pipelineMaxResults {
			select {
			case a := <-p.results:
				add(a)
			default:
				break ready
			}
		}
		if len(batch) == 0 { // finished, and every answer is sent
			return nil
		}
		if len(freed) > 0 {
			// Freed before the send: the client learns of the answer, and
			// may reuse the ID, only after it.
			p.mu.Lock()
			for _, id := range freed {
				delete(p.inFlight, id)
			}
			p.mu.Unlock()
		}
		if err := p.stream.Send(&pb.PipelineResponse{Results: batch}); err != nil {
			return err
		}
		p.n.metrics.pipeSent.Inc()
	}
}

// pipelineError is err as the answer to pipeline call c carries it: a
// hold's SEATS_TAKEN compact (the taken seats as positions in the call's
// seat IDs; see CallError in the proto), any other as toCallError makes it.
func pipelineError(c *pb.PipelineCall, err error) *pb.CallError {
	if taken, ok := err.(*ar.SeatsTakenError); ok {
		if e, ok := pb.CompactSeatsTaken(int32(codes.AlreadyExists), c.GetHold().GetSeatIds(), taken.Seats); ok {
			return e
		}
	}
	return toCallError(err)
}

// errorResult is the answer to call id that err (a gRPC status) refused.
func errorResult(id uint64, err error) *pb.PipelineResult {
	return errorAnswer(id, toCallError(err))
}

// pipelineKind is the kind of a pipeline call in the RPC metrics, whose
// method label is "Pipeline.HoldSeats" and so on; "Pipeline" for a call
// with none.
func pipelineKind(c *pb.PipelineCall) pipeKind {
	switch c.GetCall().(type) {
	case *pb.PipelineCall_Hold:
		return pipeHold
	case *pb.PipelineCall_Confirm:
		return pipeConfirm
	case *pb.PipelineCall_Release:
		return pipeRelease
	case *pb.PipelineCall_Join:
		return pipeJoin
	}
	return pipeOther
}
