package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/rueidis"
)

// rueidisConn is the Redis design on rueidis (target redis-rueidis): the
// same scripts and keys as on go-redis, but with rueidis's auto-pipelining,
// on by default: the commands of concurrent calls go out together on a few
// shared connections, so 256 users in flight cost a handful of writes and
// reads per batch instead of a round trip each. Client-side caching is off
// (the design reads nothing twice; SeatMapMaxAge is its cache).
type rueidisConn struct {
	c       rueidis.Client
	scripts [numRsnScripts]*rueidis.Lua
}

var _ redisConn = (*rueidisConn)(nil)

// newRueidisConn connects to cfg.RedisAddr (rueidis dials at once).
func newRueidisConn(cfg RedisSetNXConfig) (*rueidisConn, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{cfg.RedisAddr}, DisableCache: true})
	if err != nil {
		return nil, rueidisError(err)
	}
	rc := &rueidisConn{c: c}
	for i, src := range rsnScripts {
		// EVALSHA first, EVAL once the server answers NOSCRIPT.
		rc.scripts[i] = rueidis.NewLuaScript(src)
	}
	return rc, nil
}

func (rc *rueidisConn) eval(ctx context.Context, s rsnScript, keys []string, args ...string) (int64, []int64, error) {
	msg, err := rc.scripts[s].Exec(ctx, rc.c, keys, args).ToMessage()
	if err != nil {
		return 0, nil, rueidisError(err)
	}
	switch {
	case msg.IsInt64():
		n, err := msg.AsInt64()
		return n, nil, rueidisError(err)
	case msg.IsArray():
		elems, err := msg.ToArray()
		if err != nil {
			return 0, nil, rueidisError(err)
		}
		list := make([]int64, 0, len(elems))
		for _, e := range elems {
			if i, err := e.AsInt64(); err == nil {
				list = append(list, i)
			}
		}
		return 0, list, nil
	}
	return 0, nil, &Error{Outcome: Failed, Err: fmt.Errorf("script answered %s", msg.String())}
}

func (rc *rueidisConn) seatStatuses(ctx context.Context, l *rsnLayout) ([]SeatStatus, error) {
	cmds := make(rueidis.Commands, len(l.chunks))
	for i, chunk := range l.chunks {
		cmds[i] = rc.c.B().Mget().Key(chunk...).Build()
	}
	st := make([]SeatStatus, 0, len(l.keys))
	for _, res := range rc.c.DoMulti(ctx, cmds...) {
		vals, err := res.ToArray()
		if err != nil {
			return nil, rueidisError(err)
		}
		for _, v := range vals {
			if v.IsNil() {
				st = append(st, Available)
				continue
			}
			s, err := v.ToString()
			if err != nil {
				return nil, rueidisError(err)
			}
			st = append(st, rsnStatus(s, true))
		}
	}
	return st, nil
}

func (rc *rueidisConn) scan(ctx context.Context, match string) ([]string, error) {
	var keys []string
	for cursor := uint64(0); ; {
		e, err := rc.c.Do(ctx, rc.c.B().Scan().Cursor(cursor).Match(match).Count(1000).Build()).AsScanEntry()
		if err != nil {
			return nil, rueidisError(err)
		}
		keys = append(keys, e.Elements...)
		if cursor = e.Cursor; cursor == 0 {
			return keys, nil
		}
	}
}

func (rc *rueidisConn) hgetall(ctx context.Context, keys []string) ([]map[string]string, error) {
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = rc.c.B().Hgetall().Key(k).Build()
	}
	hs := make([]map[string]string, len(keys))
	for i, res := range rc.c.DoMulti(ctx, cmds...) {
		h, err := res.AsStrMap()
		if err != nil {
			return nil, rueidisError(err)
		}
		hs[i] = h
	}
	return hs, nil
}

func (rc *rueidisConn) ping(ctx context.Context) error {
	return rueidisError(rc.c.Do(ctx, rc.c.B().Ping().Build()).Error())
}

func (rc *rueidisConn) close() error {
	rc.c.Close()
	return nil
}

// rueidisError classifies an error of rueidis as baselineRedisError does
// go-redis's: nil stays nil, a passed deadline is Timeout, no connection
// (refused, lost, the client closing) or a server loading or busy is
// Unavailable, anything else Failed.
func rueidisError(err error) error {
	if err == nil {
		return nil
	}
	out := Failed
	var (
		netErr   net.Error
		redisErr *rueidis.RedisError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		out = Timeout
	case errors.Is(err, rueidis.ErrClosing),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		out = Unavailable
	case errors.As(err, &redisErr):
		for _, prefix := range []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"} {
			if strings.HasPrefix(redisErr.Error(), prefix) {
				out = Unavailable
			}
		}
	case errors.As(err, &netErr):
		out = Unavailable
		if netErr.Timeout() {
			out = Timeout
		}
	}
	return &Error{Outcome: out, Err: err}
}
