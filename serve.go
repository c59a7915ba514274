package dist

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// connState is what this process knows about one connection.
type connState struct {
	pid    atomic.Int64 // the process at the other end; 0 until it introduced itself
	mu     sync.Mutex
	active map[uint64]context.CancelFunc // requests being served, by id (one-way: oneWayKey)
	oneWay uint64                        // keys for one-way requests, which have no id
	closed bool                          // connClosed has cancelled active: cancel new ones at once
}

// oneWayKey marks the keys of one-way requests in connState.active: request ids never reach it.
const oneWayKey = 1 << 63

func (c *Cluster) serveConn(nc net.Conn, pid int) *wire.Conn {
	st := &connState{active: make(map[uint64]context.CancelFunc)}
	st.pid.Store(int64(pid))
	var conn *wire.Conn
	ready := make(chan struct{})
	conn = wire.NewConn(nc, c.cfg.limits, func(cn *wire.Conn, f *wire.Frame) {
		if f.Kind == wire.KindCancel {
			st.mu.Lock()
			cancel := st.active[f.ID]
			st.mu.Unlock()
			if cancel != nil {
				cancel()
			}
			return
		}
		// Served on the reader goroutine: the connection hands reading to another goroutine
		// if this takes long (see wire.Handler).
		if !c.bg.add() {
			return // shutting down: the connection is about to close
		}
		defer c.bg.done()
		c.serve(st, cn, f)
	}, func(err error) {
		<-ready
		c.connClosed(st, conn, err)
	})
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.conns[conn] = st
	}
	c.mu.Unlock()
	close(ready)
	if closed {
		// shutdown has taken its list of connections to close: this one, made meanwhile,
		// would serve requests whose contexts nothing ends (they are cancelled through
		// their connection's closing).
		conn.Close()
	}
	return conn
}

// callInfo travels in the context of a served request.
type callInfo struct {
	st   *connState
	conn *wire.Conn
}

// reqCtx is the context of a served request: its own cancellable context, answering for the
// callInfo and, when the handler runs on the connection's reader goroutine, the frame that
// wire.WillBlock looks for. One value instead of a chain of two WithValue wrappers.
type reqCtx struct {
	context.Context
	info  callInfo
	frame *wire.Frame // nil unless the handler runs inline
}

// Value implements context.Context.
func (r *reqCtx) Value(key any) any {
	switch key.(type) {
	case callInfoKey:
		return &r.info
	case wire.InlineKey:
		if r.frame != nil {
			return r.frame
		}
		return nil
	}
	return r.Context.Value(key)
}

type callInfoKey struct{}

// CallerPid returns the pid of the process that called the remote function running with ctx,
// or this process's pid for a local call.
func CallerPid(ctx context.Context) int {
	if ci, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return int(ci.st.pid.Load())
	}
	if c := Current(ctx); c != nil {
		return c.MyID()
	}
	return 0
}

func (c *Cluster) serve(st *connState, conn *wire.Conn, f *wire.Frame) {
	h, rest, err := parseCallHeader(f.CBOR)
	if err != nil {
		err = fmt.Errorf("dist: undecodable call header from %v: %w", conn.RemoteAddr(), err)
		c.log.Error("bad request", "err", err)
		if f.Kind == wire.KindRequest {
			rec, _ := codec.Marshal(recordOf(c.MyID(), "?", err))
			conn.Send(wire.KindError, f.ID, wire.Msg{CBOR: rec})
		}
		return
	}
	// Not derived from c.ctx: that would insert into and delete from c.ctx's set of
	// children on every request. The cluster's end reaches the request all the same,
	// through connClosed: closing the cluster closes every connection.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if h.Timeout > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(h.Timeout))
		defer c2()
	}
	rc := &reqCtx{Context: ctx, info: callInfo{st: st, conn: conn}}
	if wire.IsInline(f) {
		rc.frame = f
	}
	ctx = rc
	key := f.ID
	st.mu.Lock()
	if f.Kind != wire.KindRequest {
		st.oneWay++
		key = oneWayKey | st.oneWay
	}
	if st.closed {
		cancel() // whoever asked is gone already
	} else {
		st.active[key] = cancel
	}
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.active, key)
		st.mu.Unlock()
	}()
	var entry *refEntry
	from := int(st.pid.Load())
	if from == 0 && h.Fn != fnHello && h.Fn != fnJoin {
		err = fmt.Errorf("dist: %s called on a connection whose process has not introduced itself", h.Fn)
	} else {
		if h.Store != 0 {
			entry = c.refs.add(refKey{from, h.Store}, initialWeight)
		}
		var out wire.Msg
		out, err = c.runHandler(ctx, h.Fn, f, rest)
		if entry != nil {
			entry.set(out, err, c.MyID(), h.Fn)
		}
		if err == nil {
			if f.Kind == wire.KindRequest {
				if serr := conn.Send(wire.KindReply, f.ID, out); serr != nil && !errors.Is(serr, wire.ErrClosed) {
					// The result could not be sent (too large): tell the caller why.
					err = serr
				} else {
					return
				}
			} else {
				return
			}
		}
	}
	if f.Kind == wire.KindOneWay {
		c.log.Error("remote_do failed", "func", h.Fn, "from", from, "err", err)
		return
	}
	rec, merr := codec.Marshal(recordOf(c.MyID(), h.Fn, err))
	if merr != nil {
		rec, _ = codec.Marshal(&errRecord{Pid: c.MyID(), Func: h.Fn, Msg: err.Error()})
	}
	conn.Send(wire.KindError, f.ID, wire.Msg{CBOR: rec})
}

// connClosed runs once for every connection that ends, for whatever reason.
func (c *Cluster) connClosed(st *connState, conn *wire.Conn, err error) {
	st.mu.Lock()
	st.closed = true
	for _, cancel := range st.active {
		cancel() // whoever asked is gone: stop working for them
	}
	st.mu.Unlock()
	pid := int(st.pid.Load())
	c.mu.Lock()
	delete(c.conns, conn)
	closed := c.closed
	p := c.peers[pid]
	c.mu.Unlock()
	if closed {
		return
	}
	if errors.Is(err, wire.ErrFrame) {
		c.log.Error("connection closed: malformed input", "peer", pid, "remote", conn.RemoteAddr().String(), "err", err)
	}
	if p != nil {
		p.mu.Lock()
		if p.conn == conn {
			p.conn = nil
		}
		p.mu.Unlock()
	}
	switch {
	case !c.driver && pid == 1:
		c.lostOnce.Do(func() { close(c.driverLost) })
	case c.driver && pid > 1:
		c.workerGone(pid, err)
	case !c.driver && pid > 1 && p != nil && p.alive():
		c.peerDown(pid)
	}
}
