package dist

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// Future is the result of a call started with Func.Go: a write-once value owned by the
// process that computed it (Where). The first Fetch caches the value locally and gives the
// reference back, so later Fetches cost nothing and the owner can free its copy.
//
// A *Future may be passed inside the argument of a remote function; the receiver can Fetch it
// from the owner. The owner keeps the value while any process holds a reference; Release gives
// this process's reference back early, and an unreachable Future releases itself.
type Future[T any] struct {
	// The state sits behind a pointer: encoders copy the handle they marshal, and a copy of
	// the state would race with the reply filling it in.
	*future[T]
}

type future[T any] struct {
	c       *Cluster
	id      refID
	hold    *refHold
	pending bool       // this process started the call and its reply will arrive by itself
	conn    *wire.Conn // for pending remote futures: the connection the request may wait on

	ready atomic.Bool // val and err are known here; they never change after
	// ownerReady: the owner said the value is ready (ReadyCtx). It stays so: the value is
	// written once.
	ownerReady atomic.Bool
	mu         sync.Mutex
	done       chan struct{} // made by the first waiter before ready, closed by set
	val        T
	err        error
}

// closedChan is the channel of every future that was ready before anyone waited: most
// futures of a loop of Go calls get their reply before their Wait, and need none of their own.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// doneChan returns a channel closed once the value is known here.
func (f *future[T]) doneChan() <-chan struct{} {
	if f.ready.Load() {
		return closedChan
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready.Load() {
		return closedChan
	}
	if f.done == nil {
		f.done = make(chan struct{})
	}
	return f.done
}

func newFuture[T any](c *Cluster, id refID, weight int64, pending bool) *Future[T] {
	if pending {
		return &newPendingFuture[T](c, id, weight).handle
	}
	f := &Future[T]{&future[T]{c: c, id: id}}
	if weight > 0 {
		f.hold = &refHold{c: c, id: id, weight: weight}
		// A pending future gives its weight back when its reply arrives, reachable or not;
		// only a received one needs the garbage collector's help.
		runtime.AddCleanup(f, func(h *refHold) { h.release() }, f.hold)
	}
	return f
}

// newPendingFuture makes a future for a call this process starts. One allocation holds the
// handle, its state, its hold and the call's bookkeeping, on the path of every Go call. (A
// received future cannot share: its cleanup's argument, the hold, would keep the handle
// reachable and never let the cleanup run.)
func newPendingFuture[T any](c *Cluster, id refID, weight int64) *pendingFuture[T] {
	all := &pendingFuture[T]{}
	all.state = future[T]{c: c, id: id, pending: true}
	all.handle.future = &all.state
	if weight > 0 {
		all.hold = refHold{c: c, id: id, weight: weight}
		all.state.hold = &all.hold
	}
	return all
}

// pendingFuture is the single allocation behind a future this process started. It receives
// the reply (wire.Replier) and the end of the caller's context (ctxWatch), so that neither
// needs a closure of its own.
type pendingFuture[T any] struct {
	handle Future[T]
	state  future[T]
	hold   refHold

	fn      string
	pid     int
	watched <-chan struct{} // the caller's context, in c.watch under key
	key     uint64
	reqID   atomic.Uint64 // the request's id on state.conn, once known
}

// Reply receives the call's reply, or the error that ended its connection.
func (p *pendingFuture[T]) Reply(fr *wire.Frame, err error) {
	p.state.c.watch.remove(p.watched, p.key)
	if err != nil {
		var zero T
		p.handle.set(zero, &ProcessExitedError{Pid: p.pid, Cause: err})
		return
	}
	v, err := decodeReply[T](p.fn, fr)
	p.handle.set(v, err)
	p.hold.release() // the value is here now: the owner need not keep it for us
}

// contextEnded fails the future with the caller's context's error and cancels the call.
func (p *pendingFuture[T]) contextEnded(err error) {
	var zero T
	if p.handle.set(zero, err) {
		if id := p.reqID.Load(); id != 0 {
			p.state.conn.Cancel(id)
		}
	}
}

func failedFuture[T any](c *Cluster, pid int, err error) *Future[T] {
	f := newFuture[T](c, refID{Owner: pid}, 0, true)
	var zero T
	f.set(zero, err)
	return f
}

// set records the value once; later calls are ignored.
func (f *Future[T]) set(v T, err error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready.Load() {
		return false
	}
	f.val, f.err = v, err
	f.ready.Store(true)
	if f.done != nil {
		close(f.done)
	}
	return true
}

// goRemote starts fn(in) on pid, asking pid to keep the result under a new reference.
func goRemote[Out any](ctx context.Context, c *Cluster, pid int, fn string, in any) *Future[Out] {
	id := refID{Owner: pid, Whence: c.MyID(), Num: c.nextRef.Add(1)}
	p := newPendingFuture[Out](c, id, initialWeight)
	f := &p.handle
	var zero Out
	conn, err := c.connTo(ctx, pid)
	if err != nil {
		p.hold.weight = 0 // nothing was created on pid
		f.set(zero, err)
		return f
	}
	buf := getCallBuf()
	defer putCallBuf(buf)
	m, err := c.encodeCallTo(ctx, callHeader{Fn: fn, Store: id.Num}, in, *buf)
	if err != nil {
		p.hold.weight = 0
		f.set(zero, err)
		return f
	}
	p.fn, p.pid, p.state.conn = fn, pid, conn
	// The watch comes first, so that the reply (on another goroutine) can always remove it.
	p.watched, p.key = c.watch.add(ctx, p)
	rid, err := conn.StartLazy(m, p)
	*buf = m.CBOR[:0] // the request is copied into the connection's write buffer
	if err != nil {
		c.watch.remove(p.watched, p.key)
		p.hold.weight = 0
		f.set(zero, &ProcessExitedError{Pid: pid, Cause: err})
		return f
	}
	p.reqID.Store(rid)
	if ctx.Err() != nil {
		conn.Cancel(rid) // ctx ended before the id was known to the watch
	}
	return f
}

// newLocalFuture makes a future for a call running in this process; its value is also filed
// in this process's reference table so that other processes can fetch it.
func newLocalFuture[T any](c *Cluster) (*Future[T], func(T, error)) {
	id := refID{Owner: c.MyID(), Whence: c.MyID(), Num: c.nextRef.Add(1)}
	e := c.refs.add(id.key(), initialWeight)
	f := newFuture[T](c, id, initialWeight, true)
	return f, func(v T, err error) {
		if err != nil {
			e.set(wire.Msg{}, err, c.MyID(), "")
		} else if m, merr := codec.Encode(nil, v); merr != nil {
			e.set(wire.Msg{}, merr, c.MyID(), "")
		} else {
			e.set(m, nil, c.MyID(), "")
		}
		f.set(v, err)
		f.hold.release()
	}
}

// Where returns the pid of the process that owns the value.
func (f *Future[T]) Where() int { return f.id.Owner }

// Ready reports whether the value is available without waiting, from what this process
// knows: the value has arrived here, or an earlier ReadyCtx found it ready at its owner (a
// Future's value never changes once set, so a yes stays true). It never waits on the network:
// for a Future received from another process whose owner has not been asked, it reports false;
// ReadyCtx asks the owner.
func (f *Future[T]) Ready() bool {
	return f.ready.Load() || f.ownerReady.Load()
}

// ReadyCtx reports whether the value is available without waiting, asking the owner for a
// Future received from another process (Julia's isready on a remote Future). ctx bounds that
// question; its error, or the owner's, is returned with false. A true answer is remembered,
// so later calls of Ready and ReadyCtx report it without asking.
func (f *Future[T]) ReadyCtx(ctx context.Context) (bool, error) {
	if f.Ready() {
		return true, nil
	}
	if f.pending {
		// The reply comes to this process by itself: there is nobody to ask.
		return false, nil
	}
	ok, err := f.c.refCall(ctx, f.id, fnReady)
	if err != nil {
		return false, fmt.Errorf("dist: asking pid %d whether a future is ready: %w", f.id.Owner, err)
	}
	if ok {
		f.ownerReady.Store(true)
	}
	return ok, nil
}

// Fetch waits for the value and returns it with the remote call's error, if any. The value is
// cached: later Fetches return it at once. ctx bounds only this wait.
func (f *Future[T]) Fetch(ctx context.Context) (T, error) {
	if f.ready.Load() {
		return f.val, f.err
	}
	if f.pending && f.conn != nil {
		f.conn.Flush() // the request may still be queued for a shared write
	}
	if !f.pending {
		var zero T
		if f.hold == nil {
			return zero, ErrReleased
		}
		f.hold.mu.Lock()
		w := f.hold.weight
		f.hold.mu.Unlock()
		if w == 0 {
			return zero, ErrReleased
		}
		m, err := f.c.fetchRef(ctx, f.id, fnFetch)
		if err != nil && ctx.Err() != nil {
			return zero, err
		}
		var v T
		if err == nil {
			if derr := codec.Decode(m.CBOR, m.RawValue, &v); derr != nil {
				err = derr
			}
		}
		f.set(v, err)
		f.hold.release()
	}
	if f.ready.Load() {
		return f.val, f.err
	}
	wire.WillBlock(ctx)
	select {
	case <-f.doneChan():
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// Wait waits until the value is available and returns the remote call's error, if any.
func (f *Future[T]) Wait(ctx context.Context) error {
	_, err := f.Fetch(ctx)
	return err
}

// Release gives this process's reference back to the owner. A value already fetched stays
// available here; otherwise Fetch fails with ErrReleased, unless the reply of the call this
// process started is still to come.
func (f *Future[T]) Release() {
	if f.hold != nil {
		f.hold.release()
	}
}

// futureWire is how a Future travels inside an argument.
type futureWire struct {
	_      struct{} `cbor:",toarray"`
	ID     refID
	Weight int64
	Ready  bool
	Err    *errRecord
	Val    cbor.RawMessage
}

// MarshalCBOR lets a *Future travel inside a remote call's argument: a value already here
// travels with it, otherwise part of this process's reference goes to the receiver.
func (f *Future[T]) MarshalCBOR() ([]byte, error) {
	w := futureWire{ID: f.id}
	switch {
	case f.ready.Load():
		w.Ready = true
		if f.err != nil {
			w.Err = recordOf(f.c.MyID(), "", f.err)
		} else {
			b, err := codec.Marshal(f.val)
			if err != nil {
				return nil, err
			}
			w.Val = b
		}
	default:
		if f.hold == nil {
			return nil, ErrReleased
		}
		weight, err := f.hold.split()
		if err != nil {
			return nil, err
		}
		w.Weight = weight
	}
	return codec.Marshal(&w)
}

// UnmarshalCBOR is the receiving side of MarshalCBOR.
func (f *Future[T]) UnmarshalCBOR(data []byte) error {
	var w futureWire
	if err := codec.Unmarshal(data, &w); err != nil {
		return err
	}
	c := Current(context.Background())
	*f = Future[T]{&future[T]{c: c, id: w.ID}}
	if w.Ready {
		var v T
		var err error
		if w.Err != nil {
			err = w.Err.toError()
		} else if err = codec.Unmarshal(w.Val, &v); err != nil {
			return err
		}
		f.set(v, err)
		return nil
	}
	if c == nil {
		return ErrNotDriver
	}
	f.hold = &refHold{c: c, id: w.ID, weight: w.Weight}
	runtime.AddCleanup(f, func(h *refHold) { h.release() }, f.hold)
	return nil
}

// fetchRef waits on the owner for a reference's value.
func (c *Cluster) fetchRef(ctx context.Context, id refID, fn string) (wire.Msg, error) {
	if id.Owner == c.MyID() {
		return c.refs.get(id.key(), c.MyID()).wait(ctx)
	}
	fr, err := c.call(ctx, id.Owner, callHeader{Fn: fn}, id)
	if err != nil {
		return wire.Msg{}, err
	}
	if fr.Kind == wire.KindError {
		_, err := decodeReply[struct{}](fn, fr)
		return wire.Msg{}, err
	}
	m := wire.Msg{CBOR: fr.CBOR}
	if fr.Raw != nil {
		m.RawKind, m.Raw, _ = wire.RawOf(fr.Raw)
		m.RawValue = fr.Raw
	}
	return m, nil
}

// refCall asks the owner a yes/no question about a reference.
func (c *Cluster) refCall(ctx context.Context, id refID, fn string) (bool, error) {
	if id.Owner == c.MyID() {
		h, _ := lookup(fn)
		m, err := h(context.WithValue(ctx, localCallKey{}, true), &wire.Frame{}, mustMarshal(id))
		if err != nil {
			return false, err
		}
		var ok bool
		err = codec.Decode(m.CBOR, nil, &ok)
		return ok, err
	}
	fr, err := c.call(ctx, id.Owner, callHeader{Fn: fn}, id)
	if err != nil {
		return false, err
	}
	return decodeReply[bool](fn, fr)
}

type localCallKey struct{}

func mustMarshal(v any) []byte {
	b, err := codec.Marshal(v)
	if err != nil {
		panic(err) // only used on this package's own plain structs
	}
	return b
}
