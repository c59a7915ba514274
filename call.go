package dist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

func (c *Cluster) encodeCall(ctx context.Context, h callHeader, arg any) (wire.Msg, error) {
	return c.encodeCallTo(ctx, h, arg, make([]byte, 0, 64))
}

// encodeCallTo is encodeCall appending to buf, which the caller may reuse once the message
// has been sent (connections copy what they send, but for large raw parts).
func (c *Cluster) encodeCallTo(ctx context.Context, h callHeader, arg any, buf []byte) (wire.Msg, error) {
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return wire.Msg{}, context.DeadlineExceeded
		}
		h.Timeout = int64(left)
	}
	prefix := h.appendCBOR(buf)
	if p, ok := arg.(prefixed); ok {
		prefix = append(prefix, p.prefix...)
		arg = p.v
	}
	m, err := codec.Encode(prefix, arg)
	if err != nil {
		return m, fmt.Errorf("%w: argument of %s: %v", ErrTypeMismatch, h.Fn, err)
	}
	return m, nil
}

// callBufs holds buffers for encoding calls, each used from encoding until the send.
var callBufs = sync.Pool{New: func() any { b := make([]byte, 0, 128); return &b }}

// maxCallBuf is the largest buffer kept for reuse: an argument of megabytes must not stay
// pinned by the pool.
const maxCallBuf = 4 << 10

func getCallBuf() *[]byte { return callBufs.Get().(*[]byte) }

func putCallBuf(b *[]byte) {
	if cap(*b) <= maxCallBuf {
		*b = (*b)[:0]
		callBufs.Put(b)
	}
}

// call sends a request to pid and waits for the reply frame.
func (c *Cluster) call(ctx context.Context, pid int, h callHeader, arg any) (*wire.Frame, error) {
	conn, err := c.connTo(ctx, pid)
	if err != nil {
		return nil, err
	}
	buf := getCallBuf()
	m, err := c.encodeCallTo(ctx, h, arg, *buf)
	if err != nil {
		putCallBuf(buf)
		return nil, err
	}
	fr, err := conn.Call(ctx, m)
	*buf = m.CBOR[:0] // sent: the connection copied it
	putCallBuf(buf)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, wire.ErrClosed) {
			return nil, &ProcessExitedError{Pid: pid, Cause: err}
		}
		return nil, err
	}
	return fr, nil
}

// send sends a one-way request to pid.
func (c *Cluster) send(ctx context.Context, pid int, h callHeader, arg any) error {
	conn, err := c.connTo(ctx, pid)
	if err != nil {
		return err
	}
	buf := getCallBuf()
	defer putCallBuf(buf)
	m, err := c.encodeCallTo(ctx, h, arg, *buf)
	if err != nil {
		return err
	}
	defer func() { *buf = m.CBOR[:0] }() // sent (copied) by then; runs before putCallBuf
	if err := conn.SendLazy(wire.KindOneWay, 0, m); err != nil {
		if errors.Is(err, wire.ErrClosed) {
			return &ProcessExitedError{Pid: pid, Cause: err}
		}
		return err
	}
	return nil
}

// callLocalEncoded runs a registered function in this process through the same encoding a
// remote call uses, for untyped calls.
func (c *Cluster) callLocalEncoded(ctx context.Context, name string, arg any) (*wire.Frame, error) {
	m, err := c.encodeCall(ctx, callHeader{Fn: name}, arg)
	if err != nil {
		return nil, err
	}
	_, rest, err := parseCallHeader(m.CBOR)
	if err != nil {
		return nil, err
	}
	var raw any
	if m.RawKind != wire.RawNone {
		r, b := wire.MakeRaw(m.RawKind, len(m.Raw)/m.RawKind.Size())
		copy(b, m.Raw)
		raw = r
	}
	fr := &wire.Frame{Raw: raw}
	out, err := c.runHandler(ctx, name, fr, rest)
	if err != nil {
		rec, _ := codec.Marshal(recordOf(c.MyID(), name, err))
		return &wire.Frame{Header: wire.Header{Kind: wire.KindError}, CBOR: rec}, nil
	}
	res := &wire.Frame{Header: wire.Header{Kind: wire.KindReply}, CBOR: out.CBOR}
	if out.RawKind != wire.RawNone {
		r, b := wire.MakeRaw(out.RawKind, len(out.Raw)/out.RawKind.Size())
		copy(b, out.Raw)
		res.Raw = r
	}
	return res, nil
}

func (c *Cluster) runHandler(ctx context.Context, name string, fr *wire.Frame, arg []byte) (wire.Msg, error) {
	h, ok := lookup(name)
	if !ok {
		return wire.Msg{}, fmt.Errorf("%w %q on process %d (is its NewFunc at package level, and is the binary the same?)", ErrUnknownFunc, name, c.MyID())
	}
	return h(ctx, fr, arg)
}
