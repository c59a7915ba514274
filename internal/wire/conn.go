package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist/internal/payload"
)

// A Conn's read role
//
// One goroutine at a time reads a connection's stream, through its bufio.Reader (Conn.br):
// whoever holds the read role (readRole, role.go). The role is one atomic word, so that a
// call's path takes no lock. Its states and who moves it between them:
//
//	background  a reader goroutine of the connection's own (read) holds it. NewConn starts in
//	            this state, with readLoop.
//	caller      a synchronous caller (Call) reads for itself until its reply comes: the reply
//	            then wakes it directly, not through a reader goroutine (leader/follower).
//	free        nobody reads. Only a connection that merely calls is left free: one that has
//	            served a request from its peer within serverQuiet never is.
//
// Transitions:
//
//	free → caller         Call claims the role by compare-and-swap after sending its request.
//	free → background     claimed by StartFunc/StartLazy (startReader), by the monitor when the
//	                      role has been free for two ticks (a peer's request may be waiting), or
//	                      by setFree itself when replies turn out to be awaited by others.
//	caller → background   the caller stops reading (its reply came, its context ended, or a
//	                      request from the peer arrived) and cannot leave the role free: a
//	                      frame or bytes wait, this end served a request within serverQuiet,
//	                      or others await replies. It passes the role to a goroutine it
//	                      starts (role.pass), which handles the waiting frame first.
//	caller → free         the caller stops reading and none of that holds (setFree).
//	background → free     the reader delivered a reply to a caller that counts itself in
//	                      role.callers, with nothing buffered: that caller reads from its next
//	                      call on (setFree).
//	background → background  a handler running on the reader (handleInline) overran
//	                      InlineBudget (found by the monitor) or announced WillBlock: a new
//	                      reader goroutine takes the reader over (inlineRun.takeOver); the old
//	                      one ends when its handler returns.
//
// Only the holder releases or passes the role; everyone else only claims it while free. A
// caller interrupted by its context stops reading at a frame boundary (leaderState), so a
// frame is never split between two holders. The monitor (monitor.go) is the one goroutine
// that acts on time: it runs while handlers run inline or roles are free, sleeps after
// monitorIdle of neither, and exits when the process has no connection.

// ErrClosed is wrapped by the errors of calls on a connection that has ended.
var ErrClosed = errors.New("wire: connection closed")

// Msg is an outgoing message: a CBOR part and an optional raw part (see package payload).
// Raw aliases the caller's slice; Send does not return before the bytes are written or copied.
type Msg = payload.Msg

// Handler receives the frames of kind request, oneway and cancel. It runs on the connection's
// reader goroutine: a quick handler costs no goroutine hand-off at all, which on a small
// virtual machine is most of a call's latency. A handler that blocks or runs longer than
// InlineBudget is not a problem: another goroutine takes over reading, and the one running
// the handler ends when the handler returns. A handler about to wait for something that may
// need this connection (a call's reply) should say so with WillBlock, to be taken over at once.
type Handler func(c *Conn, f *Frame)

// InlineBudget is how long a handler may run on the reader goroutine before another
// goroutine takes over reading the connection. The monitor checks every monitorTick, timing
// handlers with a clock of its own that may be a tick behind, so a slow handler delays the
// frames behind it by up to InlineBudget+monitorTick, once; a quick one that straddles a tick
// may be taken over needlessly, which costs a goroutine.
const InlineBudget = time.Millisecond

// InlineContext returns ctx marked as the context of the handler of f, so that WillBlock(ctx)
// can find the reader goroutine the handler runs on.
func InlineContext(ctx context.Context, f *Frame) context.Context {
	if f.run == nil {
		return ctx
	}
	return context.WithValue(ctx, InlineKey{}, f)
}

// InlineKey is the context key under which InlineContext files a handler's frame. A context
// type of the caller's own may answer it instead, with the frame when IsInline(f).
type InlineKey struct{}

// IsInline reports whether f's handler runs on its connection's reader goroutine.
func IsInline(f *Frame) bool { return f.run != nil }

// WillBlock is called by code about to wait, typically for a reply: if ctx is the context of
// a handler running on a connection's reader goroutine (InlineContext), another goroutine
// takes over reading that connection now, not after InlineBudget. Without it, a handler that
// calls back the process it serves waits for the monitor before its reply can be read.
func WillBlock(ctx context.Context) {
	if f, ok := ctx.Value(InlineKey{}).(*Frame); ok && f.run != nil {
		f.run.takeOver()
	}
}

// Conn is a multiplexed connection: many calls in flight, replies matched by id, writes from
// many goroutines coalesced into few system calls.
type Conn struct {
	nc      net.Conn
	lim     Limits
	handler Handler
	onClose func(error)

	nextID atomic.Uint64
	inline atomic.Pointer[inlineRun] // the handler running on the reader goroutine, if any

	// Reading is a role held by one goroutine at a time; br belongs to the holder.
	br          *bufio.Reader
	role        readRole
	lastRequest atomic.Int64 // when a request from the peer was last handled (unix ns)
	lead        leaderState
	mu          sync.Mutex
	pending     map[uint64]Replier
	err         error // why the connection ended; set once
	done        chan struct{}

	w writer

	rings ringState
	// ringAbortFn is ringAbort made once: a transfer through a ring that must wait asks it
	// (see ring.put), and a method value made per transfer would cost an allocation.
	ringAbortFn func() error

	// mon times handlers and free roles: the process's, or a test's. Last, so that the hot
	// fields above keep the cache lines they were measured in.
	mon *monitor
}

// ringState is a connection's use of shared-memory rings (see ring.go).
type ringState struct {
	offered   atomic.Bool           // this side has offered its ring, or found it cannot: never again
	out       atomic.Pointer[ring]  // this side's ring, from its offer to the connection's end
	outOK     atomic.Bool           // the peer accepted out: large raw parts go through it
	in        atomic.Pointer[ring]  // the peer's ring, once accepted
	inOffered atomic.Bool           // the peer has offered its ring: later offers are refused
	refusal   atomic.Pointer[error] // why this side refused the peer's ring, if it did
}

// socketBuffer is the kernel buffer size asked for on each side of a connection.
const socketBuffer = 4 << 20

// copyThreshold is the raw size up to which a message is copied into the send buffer. Larger
// raw parts are written from the caller's memory with writev and the sender waits for the write.
const copyThreshold = 64 << 10

// NewConn starts serving a connection that has completed its handshake. onClose, if not nil,
// is called once with the reason the connection ended, after pending calls have failed.
func NewConn(nc net.Conn, lim Limits, h Handler, onClose func(error)) *Conn {
	return newConn(nc, lim, h, onClose, processMonitor)
}

// newConn is NewConn watched by monitor m.
func newConn(nc net.Conn, lim Limits, h Handler, onClose func(error), m *monitor) *Conn {
	c := &Conn{
		mon:     m,
		nc:      nc,
		lim:     lim,
		handler: h,
		onClose: onClose,
		pending: make(map[uint64]Replier),
		done:    make(chan struct{}),
		br:      bufio.NewReaderSize(nc, 256<<10),
	}
	// Bulk data crosses in fewer, larger hand-offs between the two processes when the kernel
	// may queue more of it (the default is ~200 KiB; the system maximum caps the request).
	if b, ok := nc.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		b.SetReadBuffer(socketBuffer)
		b.SetWriteBuffer(socketBuffer)
	}
	c.w.init(nc)
	c.ringAbortFn = c.ringAbort
	c.mon.add(c)
	go c.readLoop()
	go c.flushLoop()
	return c
}

// RemoteAddr returns the address of the other end.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

func (c *Conn) doneCh() <-chan struct{} { return c.done }

func (c *Conn) setReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection; pending calls fail with an error wrapping ErrClosed.
func (c *Conn) Close() error {
	c.shutdown(fmt.Errorf("%w by this process", ErrClosed))
	return nil
}

func (c *Conn) shutdown(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	c.nc.Close()
	c.w.fail(err)
	c.mon.remove(c)
	close(c.done)
	c.closeRings()
	for _, r := range pending {
		r.Reply(nil, err)
	}
	if c.onClose != nil {
		c.onClose(err)
	}
}

// flushLoop writes lazily sent messages. A goroutine that sends many requests without
// waiting (Func.Go in a loop) leaves them queued, and one write here carries them all.
func (c *Conn) flushLoop() {
	for {
		select {
		case <-c.done:
			return
		case <-c.w.kick:
		}
		c.Flush()
	}
}

// Flush writes whatever is queued now, unless a write is already under way (which will).
func (c *Conn) Flush() {
	c.w.mu.Lock()
	if c.w.flushing || c.w.err != nil || (len(c.w.bufs) == 0 && len(c.w.tail) == 0) {
		c.w.mu.Unlock()
		return
	}
	c.w.flushLocked()
}

func (c *Conn) readLoop() {
	c.read(c.br, nil)
}

// read reads frames, starting with first if not nil, until the connection ends, a slow
// handler hands reading over, or reading is left to a synchronous caller (see Call).
func (c *Conn) read(r *bufio.Reader, first *Frame) {
	for {
		f := first
		first = nil
		if f == nil {
			if r.Buffered() == 0 {
				// About to block: send the replies gathered from the last burst of frames.
				c.w.uncork()
			}
			var err error
			if f, err = readFrame(r, c.lim, c); err != nil {
				c.readFailed(err)
				return
			}
		}
		switch f.Kind {
		case KindRing:
			c.acceptRing(f)
		case KindRingAck:
			c.ringAnswered(f)
		case KindReply, KindError:
			// Looked at before delivering: the caller woken may be gone at once.
			callerWaits := c.role.callersWaiting()
			c.deliver(f)
			if callerWaits && r.Buffered() == 0 && c.setFree() {
				// The caller just woken reads for itself from its next call on: that
				// spares a goroutine hand-off, and a thread wake-up, per call.
				return
			}
		default:
			c.w.cork()
			if c.handleInline(f, r) {
				return // another goroutine reads now
			}
		}
	}
}

// readFailed ends the connection because reading failed.
func (c *Conn) readFailed(err error) {
	// Every way a connection ends is ErrClosed to its callers; a malformed frame also keeps
	// ErrFrame in the chain for the log.
	c.shutdown(fmt.Errorf("%w: %w", ErrClosed, err))
}

// deliver hands a reply frame to whoever waits for it. A reply nobody waits for belongs to a
// call that was cancelled: it is dropped.
func (c *Conn) deliver(f *Frame) {
	c.mu.Lock()
	r, ok := c.pending[f.ID]
	if ok {
		delete(c.pending, f.ID)
	}
	c.mu.Unlock()
	if ok {
		r.Reply(f, nil)
	}
}

// serverQuiet is how long after serving a request from the peer a connection is never left
// free: only the side that merely calls gains from reading for itself.
const serverQuiet = 100 * time.Millisecond

// setFree gives up the reading role held by the calling goroutine and reports whether it did.
// It keeps it (false) when replies are awaited by others, who need a reader.
func (c *Conn) setFree() bool {
	now := c.mon.freshClock()
	if now-c.lastRequest.Load() < int64(serverQuiet) {
		// This end serves requests on this connection: a free connection would leave them
		// waiting for the monitor.
		return false
	}
	c.w.uncork()
	c.role.release(now)
	if c.hasPending() {
		// Whoever started those calls may have seen the role still taken: read for them.
		if c.role.claim(roleBackground) {
			return false
		}
		return true // somebody else took the role meanwhile
	}
	c.mon.active()
	return true
}

func (c *Conn) hasPending() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0
}

// startReader starts a background reader if nobody reads.
func (c *Conn) startReader() {
	if c.role.claim(roleBackground) {
		go c.read(c.br, nil)
	}
}

// handleInline runs the handler here and reports whether reading was handed over meanwhile.
func (c *Conn) handleInline(f *Frame, r *bufio.Reader) bool {
	run := &f.inline
	*run = inlineRun{start: c.mon.freshClock(), c: c, r: r}
	c.lastRequest.Store(run.start)
	f.run = run
	// Published before the monitor is told: it announces sleeping and then looks for inline
	// runs, so one of the two sides sees the other's store (see monitor.loop).
	c.inline.Store(run)
	c.mon.active()
	c.handler(c, f)
	// Only our own record: after a takeover, the new reader may be running a handler of its own.
	c.inline.CompareAndSwap(run, nil)
	return !run.state.CompareAndSwap(0, 1)
}

// inlineRun is one handler running on a reader goroutine.
type inlineRun struct {
	start int64
	c     *Conn
	r     *bufio.Reader
	state atomic.Int32 // 0 running, 1 finished in time, 2 handed over
}

// takeOver starts a new reader if the handler is still running.
func (run *inlineRun) takeOver() {
	if run.state.CompareAndSwap(0, 2) {
		go run.c.read(run.r, nil)
	}
}

// Call sends a request and waits for its reply frame (kind reply or error). If ctx ends
// first, a cancel frame is sent so that the other end can stop working on it.
//
// When nobody is reading the connection, the caller reads it itself until its reply comes
// (leader/follower): the reply then wakes the caller directly, as in a plain blocking
// ping-pong, instead of waking a reader goroutine that wakes the caller.
func (c *Conn) Call(ctx context.Context, m Msg) (*Frame, error) {
	ch := make(chan callResult, 1)
	// Counted before the request leaves: a reader that delivers the reply sooner than this
	// caller looks at the role must know to leave reading to it.
	c.role.callerWaiting()
	id, err := c.start(m, ReplyFunc(func(f *Frame, err error) { ch <- callResult{f, err} }), KindRequest, true)
	if err != nil {
		c.role.callerDone()
		return nil, err
	}
	WillBlock(ctx)
	if c.role.claim(roleCaller) {
		c.role.callerDone()
		if r, ok := c.readForReply(ctx, ch); ok {
			return r.f, r.err
		}
	} else {
		defer c.role.callerDone()
	}
	select {
	case r := <-ch:
		return r.f, r.err
	case <-ctx.Done():
		c.Cancel(id)
		return nil, ctx.Err()
	}
}

type callResult struct {
	f   *Frame
	err error
}

// leaderState lets a context's end interrupt the caller that holds the reading role, without
// ever cutting a frame in two.
type leaderState struct {
	mu          sync.Mutex
	gen         uint64 // which leadership an interruption is for
	midFrame    bool   // a frame is being read: an interruption waits for its end
	interrupted bool   // the context ended
	deadlineSet bool   // the read deadline was moved to the past
}

// aLongTimeAgo is a read deadline that fails a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// readForReply reads frames as the holder of the reading role until ch has the reply. It
// reports false, with the role given up, when the caller must wait on ch as usual instead:
// the context ended, a request from the peer arrived (a background reader handles it and
// what follows), or the connection ended (ch then has the error).
func (c *Conn) readForReply(ctx context.Context, ch chan callResult) (callResult, bool) {
	c.lead.mu.Lock()
	c.lead.gen++
	gen := c.lead.gen
	c.lead.mu.Unlock()
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { c.interruptLeader(gen) })
	}
	var handOver *Frame
	ok := func() bool {
		for {
			select {
			case r := <-ch:
				ch <- r
				return true
			default:
			}
			if ctx.Err() != nil {
				return false
			}
			f, err := c.leaderRead()
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
					return false
				}
				c.readFailed(err)
				return false
			}
			if f.Kind != KindReply && f.Kind != KindError {
				handOver = f
				return false
			}
			c.deliver(f)
		}
	}()
	if stop != nil {
		stop()
	}
	c.lead.mu.Lock()
	c.lead.gen++ // a late interruption of this leadership does nothing now
	if c.lead.deadlineSet {
		c.nc.SetReadDeadline(time.Time{})
	}
	c.lead.interrupted, c.lead.deadlineSet = false, false
	c.lead.mu.Unlock()
	if c.Err() != nil {
		return callResult{}, false
	}
	if handOver != nil || c.br.Buffered() > 0 {
		c.role.pass()
		go c.read(c.br, handOver)
	} else if !c.setFree() {
		c.role.pass() // setFree kept it: this end serves requests, or others await replies
		go c.read(c.br, nil)
	}
	if !ok {
		return callResult{}, false
	}
	return <-ch, true
}

// interruptLeader fails the blocked read of the caller holding the reading role, unless it
// is in the middle of a frame (it then stops after the frame) or has given up the role.
func (c *Conn) interruptLeader(gen uint64) {
	c.lead.mu.Lock()
	defer c.lead.mu.Unlock()
	if c.lead.gen != gen {
		return
	}
	c.lead.interrupted = true
	if !c.lead.midFrame {
		c.nc.SetReadDeadline(aLongTimeAgo)
		c.lead.deadlineSet = true
	}
}

// leaderRead reads one frame for the caller holding the reading role. It waits for a frame's
// header without consuming anything, so an interruption never loses part of a frame.
func (c *Conn) leaderRead() (*Frame, error) {
	if _, err := c.br.Peek(HeaderSize); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, err
	}
	c.lead.mu.Lock()
	c.lead.midFrame = true
	if c.lead.deadlineSet {
		c.nc.SetReadDeadline(time.Time{})
		c.lead.deadlineSet = false
	}
	c.lead.mu.Unlock()
	f, err := readFrame(c.br, c.lim, c)
	c.lead.mu.Lock()
	c.lead.midFrame = false
	c.lead.mu.Unlock()
	return f, err
}

// StartFunc sends a request and arranges for done to be called exactly once with its reply
// frame or with the error that ended the connection, unless Cancel or Forget comes first.
// done runs on the connection's reader goroutine and must not block. The request is written
// before StartFunc returns.
func (c *Conn) StartFunc(m Msg, done func(*Frame, error)) (uint64, error) {
	return c.start(m, ReplyFunc(done), KindRequest, false)
}

// StartLazy is StartFunc for a caller that does not wait for the reply at once: the request
// may be queued briefly so that it shares a write with others. Flush sends it now. The reply
// goes to r.Reply, under the same rules as StartFunc's done: a caller that already has an
// object per request makes it the Replier and saves allocating a closure.
func (c *Conn) StartLazy(m Msg, r Replier) (uint64, error) {
	return c.start(m, r, kindLazyRequest, false)
}

// Replier receives the reply to a request, or the error that ended the connection first.
type Replier interface {
	Reply(f *Frame, err error)
}

// ReplyFunc is a function used as a Replier.
type ReplyFunc func(*Frame, error)

// Reply implements Replier.
func (f ReplyFunc) Reply(fr *Frame, err error) { f(fr, err) }

// kindLazyRequest is KindRequest, sent without forcing a write.
const kindLazyRequest Kind = 0x80 | KindRequest

// start registers done for a new request and sends it. A synchronous caller (Call) may read
// the reply itself; other callers need a reader.
func (c *Conn) start(m Msg, done Replier, kind Kind, sync bool) (uint64, error) {
	id := c.nextID.Add(1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending[id] = done
	c.mu.Unlock()
	if !sync {
		c.startReader()
	}
	if err := c.Send(kind, id, m); err != nil {
		c.mu.Lock()
		_, mine := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !mine {
			// shutdown got there first and has called done: report nothing twice.
			return id, nil
		}
		return 0, err
	}
	return id, nil
}

// Cancel forgets request id and tells the other end to stop working on it.
func (c *Conn) Cancel(id uint64) {
	c.Forget(id)
	c.Send(KindCancel, id, Msg{}) // best effort: a dead connection needs no cancel
}

// Forget stops waiting for the reply to request id; a reply that still comes is dropped.
func (c *Conn) Forget(id uint64) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// SendLazy is Send for a one-way message that may share a write with later ones.
func (c *Conn) SendLazy(kind Kind, id uint64, m Msg) error {
	return c.Send(kind|0x80, id, m)
}

// Send writes one frame of the given kind and id.
func (c *Conn) Send(kind Kind, id uint64, m Msg) error {
	lazy := kind&0x80 != 0
	kind &^= 0x80
	if len(m.CBOR) > c.lim.MaxCBOR || len(m.Raw) > c.lim.MaxRaw {
		return fmt.Errorf("%w: message of %d+%d bytes exceeds the limits (%d, %d)", ErrFrame, len(m.CBOR), len(m.Raw), c.lim.MaxCBOR, c.lim.MaxRaw)
	}
	if (m.RawKind == RawNone) != (len(m.Raw) == 0) && !(m.RawKind != RawNone && m.Raw != nil) ||
		m.RawKind >= rawMax || (m.RawKind != RawNone && len(m.Raw)%m.RawKind.Size() != 0) || kind == 0 || kind > KindCancel ||
		m.Flags&FlagRing != 0 {
		// The peer would reject such a frame and close the whole connection: refuse it here.
		return fmt.Errorf("%w: refusing to send an invalid %v frame (raw kind %d, %d raw bytes)", ErrFrame, kind, m.RawKind, len(m.Raw))
	}
	if len(m.Raw) >= ringMin {
		if c.rings.outOK.Load() {
			var hb [HeaderSize]byte
			PutHeader(hb[:], Header{CBORLen: uint32(len(m.CBOR)), RawLen: uint64(len(m.Raw)), Kind: kind, Raw: m.RawKind, Flags: m.Flags | FlagRing, ID: id})
			return c.w.writeRing(hb[:], m.CBOR, m.Raw, c.rings.out.Load(), c.ringAbortFn)
		}
		c.offerRing()
	}
	var hb [HeaderSize]byte
	PutHeader(hb[:], Header{CBORLen: uint32(len(m.CBOR)), RawLen: uint64(len(m.Raw)), Kind: kind, Raw: m.RawKind, Flags: m.Flags, ID: id})
	// A request's sender waits for the reply, so it must go out now; replies and one-way
	// messages may wait for the end of the burst the reader is handling.
	switch {
	case lazy:
		return c.w.write(hb[:], m.CBOR, m.Raw, writeLazy)
	case kind == KindRequest:
		return c.w.write(hb[:], m.CBOR, m.Raw, writeNow)
	}
	return c.w.write(hb[:], m.CBOR, m.Raw, writeCorkable)
}

// How a frame is written.
const (
	writeNow      = iota // now, or by the write under way
	writeCorkable        // now, unless the reader is handling a burst (it flushes after)
	writeLazy            // by the flusher goroutine, with whatever else gathers
)

// writer coalesces frames from many goroutines. The first sender to find the writer idle
// becomes the flusher and writes everything queued, including what others append meanwhile;
// an idle connection therefore costs no goroutine hand-off per message.
type writer struct {
	nc       net.Conn
	mu       sync.Mutex
	cond     sync.Cond // broadcast after each flush
	bufs     net.Buffers
	tail     []byte // owned buffer at the end of bufs that small frames append to
	spare    []byte
	queued   int // bytes in bufs
	flushing bool
	corked   bool          // the reader is handling a burst: small frames wait for uncork
	kick     chan struct{} // wakes the flusher goroutine
	seq      uint64        // number of the batch being filled
	flushed  uint64        // batches written so far
	err      error
}

// maxQueued is how far senders may run ahead of the socket before they wait for a flush.
const maxQueued = 8 << 20

func (w *writer) init(nc net.Conn) {
	w.nc = nc
	w.cond.L = &w.mu
	w.kick = make(chan struct{}, 1)
	w.seq = 1
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
	w.mu.Unlock()
}

func (w *writer) cork() {
	w.mu.Lock()
	w.corked = true
	w.mu.Unlock()
}

// uncork sends what gathered while corked.
func (w *writer) uncork() {
	w.mu.Lock()
	w.corked = false
	if w.flushing || w.err != nil || (len(w.bufs) == 0 && len(w.tail) == 0) {
		w.mu.Unlock()
		return
	}
	w.flushLocked()
}

func (w *writer) write(hdr, cbor, raw []byte, mode int) error {
	w.mu.Lock()
	for w.err == nil && w.queued > maxQueued && w.flushing {
		w.cond.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.appendHead(hdr, cbor)
	byRef := len(raw) > copyThreshold
	if byRef {
		w.bufs = append(w.bufs, w.tail, raw)
		w.tail = nil
	} else {
		w.tail = append(w.tail, raw...)
	}
	w.queued += len(hdr) + len(cbor) + len(raw)
	mine := w.seq
	if !byRef && w.queued < copyThreshold {
		if mode == writeLazy && !w.flushing {
			w.mu.Unlock()
			select {
			case w.kick <- struct{}{}:
			default:
			}
			return nil
		}
		if w.corked && mode != writeNow {
			w.mu.Unlock()
			return nil
		}
	}
	if w.flushing {
		if byRef {
			// The caller may reuse raw once we return: wait until our batch is written.
			for w.err == nil && w.flushed < mine {
				w.cond.Wait()
			}
			err := w.err
			w.mu.Unlock()
			return err
		}
		w.mu.Unlock()
		return nil
	}
	return w.flushLocked()
}

// appendHead queues a frame's header and CBOR part in the owned buffer. w.mu is held.
func (w *writer) appendHead(hdr, cbor []byte) {
	if w.tail == nil {
		w.tail = w.spare[:0]
		w.spare = nil
	}
	w.tail = append(w.tail, hdr...)
	w.tail = append(w.tail, cbor...)
}

// writeRing writes a frame whose raw part goes through ring r: the header and CBOR part on
// the stream, after everything queued before them, then the raw part into the ring. Nothing
// else is written to the stream in between: the receiver reads the stream no further until it
// has the raw part, so a write there could wait for good while the ring waits for the reader.
func (w *writer) writeRing(hdr, cbor, raw []byte, r *ring, abort func() error) error {
	w.mu.Lock()
	for w.err == nil && w.flushing {
		w.cond.Wait()
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.appendHead(hdr, cbor)
	w.flushing = true
	w.flushBatch()
	if w.err == nil {
		w.mu.Unlock()
		err := errRingClosed
		if r != nil {
			err = r.put(raw, abort)
		}
		w.mu.Lock()
		if err != nil && w.err == nil {
			// The stream has the header of a frame whose raw part will never come: it is lost.
			w.err = fmt.Errorf("%w: raw part through shared memory: %w", ErrClosed, err)
			w.cond.Broadcast()
		}
	}
	return w.flushRest()
}

// flushLocked writes everything queued, including what others queue meanwhile. It is called
// with w.mu held and returns with it released.
func (w *writer) flushLocked() error {
	w.flushing = true
	return w.flushRest()
}

// flushRest is flushLocked for the goroutine that is already the flusher.
func (w *writer) flushRest() error {
	for w.err == nil && (len(w.bufs) > 0 || len(w.tail) > 0) {
		w.flushBatch()
	}
	w.flushing = false
	w.cond.Broadcast() // for a writeRing waiting to be the flusher
	err := w.err
	w.mu.Unlock()
	if err != nil {
		w.nc.Close() // wake the reader so that the connection shuts down
	}
	return err
}

// flushBatch writes what is queued as one batch. It is called by the flusher with w.mu held,
// which it releases during the write.
func (w *writer) flushBatch() {
	bufs := w.bufs
	if len(bufs) > 0 && len(w.tail) > 0 {
		bufs = append(bufs, w.tail)
	}
	owned := w.tail
	w.bufs, w.tail, w.queued = nil, nil, 0
	w.seq++
	w.mu.Unlock()
	var err error
	if len(bufs) == 0 {
		// The common case, small frames gathered in the owned buffer: writing it
		// through net.Buffers would cost two allocations per write.
		_, err = w.nc.Write(owned)
	} else {
		// A copy, so that only this path pays for WriteTo's pointer receiver: taking
		// bufs' address moved it to the heap on every flush, the common case included.
		nb := bufs
		_, err = nb.WriteTo(w.nc)
	}
	w.mu.Lock()
	w.flushed++
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("%w: write: %w", ErrClosed, err)
	}
	if cap(owned) <= 1<<20 {
		w.spare = owned[:0]
	}
	w.cond.Broadcast()
}
