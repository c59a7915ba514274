package dist

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// Option configures Start and AddProcs.
type Option func(*config)

type config struct {
	manager       Manager
	n             int
	cookie        string
	cookieFile    string
	output        io.Writer
	logger        *slog.Logger
	launchTimeout time.Duration
	limits        wire.Limits
	network       string // how local workers listen: "unix" (default) or "tcp"
	bind          string // for "tcp": host:port to listen on
	topology      Topology
	portMin       int // when not 0, TCP listeners asked for port 0 take one in [portMin, portMax]
	portMax       int
	tlsFiles      TLSFiles
	tls           *tls.Config // nil: plain TCP
	connTimeout   time.Duration
	hbInterval    time.Duration // 0: no heartbeats
	hbTimeout     time.Duration
}

// WithWorkers sets how many workers Start launches (default runtime.NumCPU()).
func WithWorkers(n int) Option { return func(c *config) { c.n = n } }

// WithManager sets the manager Start launches workers with (default the local manager).
func WithManager(m Manager) Option { return func(c *config) { c.manager = m } }

// WithCookie sets the cluster cookie every process must prove it knows. The default is the
// GODIST_COOKIE environment variable, else a random one.
func WithCookie(cookie string) Option { return func(c *config) { c.cookie = cookie } }

// WithOutput sets where workers' forwarded stdout/stderr lines go (default os.Stdout).
func WithOutput(w io.Writer) Option { return func(c *config) { c.output = w } }

// WithLogger sets the logger for the cluster's own events (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithLaunchTimeout bounds how long a worker may take from launch until it has joined
// (default 60s). A worker that is not ready by then is killed and reported as an error.
func WithLaunchTimeout(d time.Duration) Option { return func(c *config) { c.launchTimeout = d } }

// WithConnectTimeout bounds how long opening a connection to another process of the cluster
// may take, dialling and handshakes (TLS, cookie) included (default 10s); the driver's
// connections to its workers and the workers' to each other. A connection that is not up
// in time fails with an error wrapping ErrConnectTimeout that names the address.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.connTimeout = d
		}
	}
}

// ErrConnectTimeout is wrapped by the error of a connection that was not up within the
// connect timeout (WithConnectTimeout).
var ErrConnectTimeout = errors.New("dist: connect timeout")

const defaultConnectTimeout = 10 * time.Second

// WithNetwork sets how workers launched with this option listen: "unix" (the default for the
// local manager, ~3x lower latency than TCP on one host) or "tcp" with bind as the host:port
// (port 0 for any free port; "127.0.0.1:0" by default).
func WithNetwork(network, bind string) Option {
	return func(c *config) { c.network, c.bind = network, bind }
}

// WithMaxMessage bounds the size of the structured (CBOR) part and of the raw numeric part of
// any one message this process sends or accepts (defaults 64 MiB and 2 GiB).
func WithMaxMessage(cborBytes, rawBytes int) Option {
	return func(c *config) { c.limits = wire.Limits{MaxCBOR: cborBytes, MaxRaw: rawBytes} }
}

func newConfig(opts []Option) config {
	cfg := config{
		n:             runtime.NumCPU(),
		output:        os.Stdout,
		logger:        slog.Default(),
		launchTimeout: 60 * time.Second,
		limits:        wire.DefaultLimits,
		connTimeout:   defaultConnectTimeout,
		hbInterval:    defaultHeartbeat,
		hbTimeout:     defaultHeartbeatTimeout,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// Cluster is one process's view of the processes it works with. In the driver it is returned
// by Start; in a worker, Current returns it inside remote functions. Its methods are safe for
// concurrent use.
type Cluster struct {
	me      atomic.Int64
	driver  bool
	cookie  []byte
	cfg     config
	log     *slog.Logger
	outMu   sync.Mutex
	sockDir string // driver: directory of local workers' sockets

	ctx    context.Context // ends at Close: bounds every handler and background goroutine
	cancel context.CancelFunc
	bg     tracker

	joinMu  sync.Mutex // driver: serialises membership announcements
	mu      sync.Mutex
	peers   map[int]*peer
	conns   map[*wire.Conn]*connState
	nextPid int
	rr      int
	closed  bool
	lns     []net.Listener

	refs    refTable
	drops   dropBatcher
	subs    subscribers
	watch   ctxWatch
	nextRef atomic.Uint64

	// worker only
	joined     chan struct{}
	driverLost chan struct{}
	lostOnce   sync.Once
	exitReq    chan struct{} // closed when the driver asks this worker to exit
	exitOnce   sync.Once
	topoName   string // the cluster's topology, for errors
}

type peerInfo struct {
	_       struct{} `cbor:",toarray"`
	Pid     int
	Network string
	Addr    string
	Host    string
	OSPid   int
	NoLink  bool // the topology forbids the receiving worker to connect to this one
}

type peer struct {
	info     peerInfo
	proc     Process // driver only: the launched process
	mu       sync.Mutex
	conn     *wire.Conn
	dialing  chan struct{}
	gone     error
	exiting  bool  // driver: asked to exit by RmProcs, which reaps it
	reported bool  // driver: its Exited event was published
	pinging  bool  // a heartbeat is outstanding
	hbLost   error // set when heartbeats went unanswered and the connection was closed
}

var (
	currentMu sync.Mutex
	current   *Cluster
)

// Current returns this process's cluster: inside a remote function, the worker's view, from
// which the function can call other processes. It returns nil in a process with no cluster.
// ctx is accepted so that a future version can carry several clusters per process.
func Current(ctx context.Context) *Cluster {
	currentMu.Lock()
	defer currentMu.Unlock()
	return current
}

func myPid() int {
	if c := Current(context.Background()); c != nil {
		return c.MyID()
	}
	return 0
}

// Start makes this process the driver (pid 1) of a new cluster and launches its first workers
// (by default runtime.NumCPU() local ones; WithWorkers(0) starts none). It returns once every
// worker has joined, or an error; on error nothing is left running. One cluster may be open per
// process at a time.
func Start(ctx context.Context, opts ...Option) (*Cluster, error) {
	cfg := newConfig(opts)
	cookie := cfg.cookie
	if cookie == "" && cfg.cookieFile != "" {
		var err error
		if cookie, err = ReadCookieFile(cfg.cookieFile); err != nil {
			return nil, err
		}
	}
	if cookie == "" {
		var err error
		if cookie, err = CookieFromEnv(); err != nil {
			return nil, err
		}
	}
	if cookie == "" {
		var b [16]byte
		rand.Read(b[:])
		cookie = hex.EncodeToString(b[:])
	}
	if !cfg.tlsFiles.isZero() {
		var err error
		if cfg.tls, err = LoadTLS(cfg.tlsFiles); err != nil {
			return nil, err
		}
	}
	c := newCluster(cfg, []byte(cookie), true)
	c.me.Store(1)
	c.startHeartbeat()
	c.nextPid = 2
	dir, err := os.MkdirTemp("", "godist-")
	if err != nil {
		return nil, fmt.Errorf("dist: start: %w", err)
	}
	c.sockDir = dir
	if err := setCurrent(c); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if cfg.n > 0 {
		m := cfg.manager
		if m == nil {
			m = LocalManager()
		}
		if _, err := c.AddProcs(ctx, m, cfg.n); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func setCurrent(c *Cluster) error {
	currentMu.Lock()
	defer currentMu.Unlock()
	if current != nil {
		return errors.New("dist: a cluster is already open in this process; Close it first")
	}
	current = c
	return nil
}

func newCluster(cfg config, cookie []byte, driver bool) *Cluster {
	c := &Cluster{
		driver:  driver,
		cookie:  cookie,
		cfg:     cfg,
		log:     cfg.logger,
		peers:   make(map[int]*peer),
		conns:   make(map[*wire.Conn]*connState),
		exitReq: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.refs.init()
	c.drops.init(c)
	return c
}

// MyID returns this process's pid: 1 in the driver.
func (c *Cluster) MyID() int { return int(c.me.Load()) }

// Procs returns the pids of all processes of the cluster, the driver included, ascending.
func (c *Cluster) Procs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := []int{c.MyID()}
	for pid, p := range c.peers {
		if p.alive() {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return slices.Compact(pids)
}

// Workers returns the pids of all workers, ascending. With no workers, it returns [1] as
// Julia's workers() does, so that code written for workers also runs alone.
func (c *Cluster) Workers() []int {
	var w []int
	for _, p := range c.Procs() {
		if p != 1 {
			w = append(w, p)
		}
	}
	if len(w) == 0 {
		return []int{1}
	}
	return w
}

// NWorkers returns the number of workers (0 when the driver is alone).
func (c *Cluster) NWorkers() int {
	return len(c.Procs()) - 1
}

func (p *peer) alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone == nil
}

// resolve turns Any into a concrete worker pid.
func (c *Cluster) resolve(pid int) (int, error) {
	if c == nil {
		return 0, errors.New("dist: nil cluster")
	}
	if pid != Any {
		return pid, nil
	}
	ws := c.Workers()
	c.mu.Lock()
	c.rr++
	i := c.rr
	c.mu.Unlock()
	return ws[i%len(ws)], nil
}

// callHeader precedes the argument of every request.
type callHeader struct {
	_       struct{} `cbor:",toarray"`
	Fn      string
	Store   uint64 // when not 0, the result is also kept under ref (caller, Store)
	Timeout int64  // nanoseconds left of the caller's deadline; 0 for none
}

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

// connTo returns the connection to pid, dialling it on first use.
func (c *Cluster) connTo(ctx context.Context, pid int) (*wire.Conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("dist: cluster is closed")
	}
	p := c.peers[pid]
	c.mu.Unlock()
	if p == nil && !c.driver && pid > 1 {
		// The driver's announcement may still be on its way: ask.
		if err := c.lookupPeer(ctx, pid); err != nil {
			return nil, err
		}
		c.mu.Lock()
		p = c.peers[pid]
		c.mu.Unlock()
	}
	if p == nil {
		return nil, &ProcessExitedError{Pid: pid, Cause: errors.New("no such process in the cluster")}
	}
	p.mu.Lock()
	for {
		if p.gone != nil {
			err := p.gone
			p.mu.Unlock()
			return nil, &ProcessExitedError{Pid: pid, Cause: err}
		}
		if p.conn != nil {
			conn := p.conn
			p.mu.Unlock()
			return conn, nil
		}
		if p.dialing != nil {
			wait := p.dialing
			p.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			p.mu.Lock()
			continue
		}
		if p.info.NoLink {
			p.mu.Unlock()
			return nil, c.topologyError(pid)
		}
		if p.info.Addr == "" {
			p.mu.Unlock()
			return nil, &ProcessExitedError{Pid: pid, Cause: errors.New("its address is not known here")}
		}
		p.dialing = make(chan struct{})
		info := p.info
		p.mu.Unlock()
		conn, err := c.dialPeer(ctx, info)
		p.mu.Lock()
		close(p.dialing)
		p.dialing = nil
		if err != nil {
			p.mu.Unlock()
			return nil, &ProcessExitedError{Pid: pid, Cause: err}
		}
		if p.conn == nil {
			p.conn = conn
		}
	}
}

// lookupPeer (worker) asks the driver where pid listens and records the answer.
func (c *Cluster) lookupPeer(ctx context.Context, pid int) error {
	fr, err := c.call(ctx, 1, callHeader{Fn: fnLookupFor}, pid)
	if err != nil {
		return err
	}
	info, err := decodeReply[peerInfo](fnLookupFor, fr)
	if err != nil {
		return &ProcessExitedError{Pid: pid, Cause: err}
	}
	c.applyPeers(peersUpdate{Add: []peerInfo{info}})
	return nil
}

// dialPeer connects to another worker and introduces this process.
func (c *Cluster) dialPeer(ctx context.Context, info peerInfo) (*wire.Conn, error) {
	conn, err := c.dial(ctx, info.Network, info.Addr, info.Pid)
	if err != nil {
		return nil, err
	}
	m, err := c.encodeCall(ctx, callHeader{Fn: fnHello}, c.MyID())
	if err != nil {
		conn.Close()
		return nil, err
	}
	fr, err := conn.Call(ctx, m)
	if err == nil && fr.Kind == wire.KindError {
		_, err = decodeReply[struct{}](fnHello, fr)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("introducing ourselves to process %d: %w", info.Pid, err)
	}
	return conn, nil
}

// dial opens an authenticated connection to addr (TLS first for TCP when the cluster has it,
// then the cookie handshake), within the connect timeout; pid is the process expected there.
func (c *Cluster) dial(ctx context.Context, network, addr string, pid int) (*wire.Conn, error) {
	timeout := c.cfg.connTimeout
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(stage string, err error) error {
		if ctx.Err() == nil && (dctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)) {
			return fmt.Errorf("%w: %s %s not connected within %v (%s: %v)", ErrConnectTimeout, network, addr, timeout, stage, err)
		}
		return fmt.Errorf("%s %s %s: %w", stage, network, addr, err)
	}
	var d net.Dialer
	nc, err := d.DialContext(dctx, network, addr)
	if err != nil {
		return nil, fail("dial", err)
	}
	if network == "tcp" && c.cfg.tls != nil {
		tc := tls.Client(nc, c.cfg.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fail("TLS handshake", err)
		}
		nc = tc
	}
	dl, _ := dctx.Deadline()
	if err := wire.Dial(nc, c.cookie, time.Until(dl)); err != nil {
		nc.Close()
		return nil, fail("cookie handshake", err)
	}
	return c.serveConn(nc, pid), nil
}

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
	}
}

// exitGrace is how long the driver waits, once a worker's connection broke, for its process
// to be seen ending, so that a crash is told apart from a lost connection.
const exitGrace = 2 * time.Second

// workerGone (driver) removes a worker that exited or whose connection broke. A worker the
// driver asked to exit is reaped and reported by RmProcs; any other is reported here once its
// process has ended, or killed and reported lost if it has not within exitGrace.
func (c *Cluster) workerGone(pid int, cause error) {
	c.mu.Lock()
	p := c.peers[pid]
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	already := p.gone != nil
	if !already {
		p.gone = cause
		if p.gone == nil {
			p.gone = errors.New("removed")
		}
	}
	conn, exiting := p.conn, p.exiting
	p.mu.Unlock()
	if already {
		return
	}
	if conn != nil {
		conn.Close()
	}
	c.refs.forget(pid)
	c.broadcastPeers(peersUpdate{Remove: []int{pid}})
	if exiting {
		return
	}
	p.mu.Lock()
	hbLost := p.hbLost
	p.mu.Unlock()
	if p.proc == nil || hbLost != nil {
		// No answer for a long while: whatever the process does next (it may well exit
		// cleanly, having lost us too), the connection was lost first.
		if hbLost != nil {
			cause = hbLost
		}
		lost := func() {
			if p.proc != nil {
				killAndReap(p.proc)
			}
			c.publishExit(p, Event{Kind: Exited, Pid: pid, Reason: ExitLost, Cause: &ProcessExitedError{Pid: pid, Cause: fmt.Errorf("%w: %v", ErrConnectionLost, cause)}})
		}
		// Reaping may take a while: not on the goroutine that found the loss (the heartbeat
		// monitor of every worker, or a connection's reader).
		if !c.bg.add() {
			lost() // closing: nothing else to keep going
			return
		}
		go func() {
			defer c.bg.done()
			lost()
		}()
		return
	}
	report := func(wait bool) {
		grace := exitGrace
		if !wait {
			grace = 0
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		timer := t.C
		ev := Event{Kind: Exited, Pid: pid}
		select {
		case <-procDone(p.proc):
			werr := p.proc.Wait()
			ev.Reason = exitReason(werr)
			if werr == nil {
				werr = errors.New("exit status 0")
			}
			ev.Cause = &ProcessExitedError{Pid: pid, Cause: fmt.Errorf("process ended: %w", werr)}
		case <-timer:
			ev.Reason = ExitLost
			ev.Cause = &ProcessExitedError{Pid: pid, Cause: fmt.Errorf("%w: %v", ErrConnectionLost, cause)}
		case <-c.ctx.Done():
			// Closing: Close must not wait out the grace period.
			ev.Reason = ExitLost
			ev.Cause = &ProcessExitedError{Pid: pid, Cause: fmt.Errorf("%w: %v", ErrConnectionLost, cause)}
		}
		if ev.Reason == ExitLost {
			killAndReap(p.proc) // a worker we cannot talk to must not live on
		}
		c.publishExit(p, ev)
	}
	if !c.bg.add() {
		report(false) // closing: no waiting
		return
	}
	go func() {
		defer c.bg.done()
		report(true)
	}()
}

// killAndReap kills a worker's process and waits, for a bounded time, until it has ended, so
// that Close returns with no process of its own left running. A kill is only a request: a
// process tearing down a large address space can take a moment to be gone.
func killAndReap(p Process) {
	p.Kill()
	t := time.NewTimer(reapWait)
	defer t.Stop()
	select {
	case <-procDone(p):
	case <-t.C:
	}
}

// reapWait bounds how long killAndReap waits for a killed process.
const reapWait = 5 * time.Second

// publishExit publishes a worker's Exited event, once.
func (c *Cluster) publishExit(p *peer, ev Event) {
	p.mu.Lock()
	done := p.reported
	p.reported = true
	p.mu.Unlock()
	if !done {
		c.publish(ev)
	}
}

// peersUpdate tells workers about processes that joined or left.
type peersUpdate struct {
	_      struct{} `cbor:",toarray"`
	Add    []peerInfo
	Remove []int
}

func (c *Cluster) broadcastPeers(u peersUpdate) {
	for _, pid := range c.Procs() {
		if pid == c.MyID() || slices.Contains(u.Remove, pid) {
			continue
		}
		c.send(c.ctx, pid, callHeader{Fn: fnPeers}, u)
	}
}

// applyPeers (worker) updates the membership.
func (c *Cluster) applyPeers(u peersUpdate) {
	for _, info := range u.Add {
		if info.Pid == c.MyID() {
			continue
		}
		c.mu.Lock()
		p := c.peers[info.Pid]
		isNew := p == nil
		if isNew {
			p = &peer{}
			c.peers[info.Pid] = p
		}
		c.mu.Unlock()
		p.mu.Lock()
		isNew = isNew || p.info.Addr == ""
		p.info = info
		p.mu.Unlock()
		if isNew && c.joinedDone() {
			c.publish(Event{Kind: Joined, Pid: info.Pid})
		}
	}
	for _, pid := range u.Remove {
		c.mu.Lock()
		p := c.peers[pid]
		c.mu.Unlock()
		if p == nil {
			continue
		}
		p.mu.Lock()
		was := p.gone == nil
		if was {
			p.gone = errors.New("removed from the cluster")
		}
		conn := p.conn
		p.mu.Unlock()
		if conn != nil {
			conn.Close()
		}
		c.refs.forget(pid)
		if was {
			c.publish(Event{Kind: Exited, Pid: pid})
		}
	}
}

// joinedDone reports whether this worker has joined (the driver always has).
func (c *Cluster) joinedDone() bool {
	if c.joined == nil {
		return true
	}
	select {
	case <-c.joined:
		return true
	default:
		return false
	}
}

// Close ends the cluster. In the driver it stops every worker (politely, then by force) and
// returns once they have exited; nothing is left running. Close is idempotent.
func (c *Cluster) Close() error {
	if !c.driver {
		return ErrNotDriver
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	err := c.RmProcs(context.Background(), c.realWorkers()...)
	c.shutdown()
	currentMu.Lock()
	if current == c {
		current = nil
	}
	currentMu.Unlock()
	if c.sockDir != "" {
		os.RemoveAll(c.sockDir)
	}
	return err
}

// shutdown closes every connection and listener and waits for background goroutines.
func (c *Cluster) shutdown() {
	c.mu.Lock()
	c.closed = true
	lns := c.lns
	conns := make([]*wire.Conn, 0, len(c.conns))
	for cn := range c.conns {
		conns = append(conns, cn)
	}
	c.mu.Unlock()
	c.cancel()
	for _, ln := range lns {
		ln.Close()
	}
	for _, cn := range conns {
		cn.Close()
	}
	c.drops.stop()
	c.bg.closeAndWait()
}

// tracker counts the cluster's background goroutines and handlers so that shutdown can wait
// for them. Once it is closed it refuses new ones: a WaitGroup must not be added to while a
// Wait on it may be running.
type tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// add registers one more goroutine; false means the cluster is shutting down and the work must
// not start.
func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) done() { t.wg.Done() }

// closeAndWait refuses new goroutines and waits for the registered ones.
func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
