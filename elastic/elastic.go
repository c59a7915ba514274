// Package elastic lets workers started by anything else (a shell, a container, a batch
// system, mpirun) join a running driver, and lets the driver take them while it runs.
//
// The driver opens a Listener on its cluster:
//
//	ln, err := elastic.Listen(ctx, c, "0.0.0.0:9009")
//
// and a worker, which is the same binary, calls Serve with the driver's address once dist.Main
// has returned (so that the process is not a local worker of someone else):
//
//	func main() {
//		dist.Main()
//		if addr := os.Getenv("DRIVER_ADDR"); addr != "" {
//			err := elastic.Serve(context.Background(), addr) // cookie from GODIST_COOKIE
//			if err != nil && !errors.Is(err, dist.ErrDriverLost) {
//				log.Fatal(err)
//			}
//			return
//		}
//		... // the driver
//	}
//
// # Protocol
//
// The worker dials the driver's listener (retrying until its connect timeout, so workers may
// start before the driver) and the two run the cluster's HMAC cookie handshake: the cookie
// never crosses the wire, and each side proves it knows it. The worker then listens on its
// own address (by default the local address of that connection, port 0, or a unix socket
// next to the driver's when the driver listens on one) and sends it as one JSON line. The
// driver joins the worker through the normal path (Cluster.AddProcess): it connects to that
// address, gives it the next pid and the membership, and tells the other processes; worker↔
// worker connections are then made lazily as for any other worker, and the worker is in the
// default pool. The driver answers the announcement with one JSON line, the pid or why it
// refused.
//
// That first connection (the control connection) stays open for the worker's life and plays
// the part a local worker's standard input plays: when it ends, the other side is gone. The
// driver removes a worker whose control connection ended; a worker whose control connection
// ended stops serving. Killing such a worker from the driver (Process.Kill, a failed join,
// Cluster.Close after the polite exit timed out) closes its control connection; Interrupt
// sends it an interrupt request, which it delivers to itself as SIGINT, as a local worker's
// manager would.
package elastic

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/wire"
)

// Option configures Listen and Serve. Options that concern only one side say so and are
// ignored by the other.
type Option func(*options)

type options struct {
	cookie         string
	cookieSet      bool
	network, bind  string
	connectTimeout time.Duration
	logger         *slog.Logger
	portMin        int
	portMax        int
	tls            dist.TLSFiles
	tlsSet         bool
}

// WithCookie sets the cluster cookie a worker proves it knows (Serve only). The default is
// dist.CookieFromEnv: the GODIST_COOKIE environment variable, else the file named by
// GODIST_COOKIE_FILE. The driver always uses its cluster's cookie.
func WithCookie(cookie string) Option {
	return func(o *options) { o.cookie, o.cookieSet = cookie, true }
}

// WithListen sets where a worker accepts connections from the driver and other workers (Serve
// only): network "tcp" with bind host:port (port 0 for any free port), or "unix" with bind a
// directory for the socket. By default a worker listens like the driver's listener: on a unix
// socket in the same directory when the driver's address is a unix socket, else on TCP at the
// local IP address its connection to the driver uses, any port.
func WithListen(network, bind string) Option {
	return func(o *options) { o.network, o.bind = network, bind }
}

// WithPortRange makes a worker listening on TCP port 0 take a port in [lo, hi] (Serve only;
// the driver's listener takes the cluster's dist.WithPortRange).
func WithPortRange(lo, hi int) Option {
	return func(o *options) { o.portMin, o.portMax = lo, hi }
}

// WithTLS makes a worker's TCP connections mutual TLS with these files (Serve only; the
// default is dist.TLSFilesFromEnv, none if GODIST_TLS_CERT is not set). The driver's listener
// is TLS when its cluster was started with dist.WithTLS; both must use certificates signed by
// the same CA.
func WithTLS(files dist.TLSFiles) Option {
	return func(o *options) { o.tls, o.tlsSet = files, true }
}

// WithConnectTimeout bounds (Serve) how long a worker keeps trying to reach the driver and
// waits to be joined, default one minute; (Listen) how long the driver gives a connecting
// worker to prove the cookie, announce itself and be joined, default 30 seconds.
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) { o.connectTimeout = d }
}

// WithLogger sets where Listen logs rejected workers and joins (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

func newOptions(opts []Option, timeout time.Duration) options {
	o := options{connectTimeout: timeout, logger: slog.Default()}
	for _, f := range opts {
		f(&o)
	}
	if o.connectTimeout <= 0 {
		o.connectTimeout = timeout
	}
	return o
}

// announcement is the worker's first line on the control connection.
type announcement struct {
	Version int    `json:"version"`
	Network string `json:"network"`
	Addr    string `json:"addr"`
	Host    string `json:"host"`
	OSPid   int    `json:"ospid"`
}

// verdict is the driver's answer to an announcement.
type verdict struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// control is a later message: from the driver, "interrupt"; from the worker, "bye" as it
// exits on purpose.
type control struct {
	Op string `json:"op"`
}

const (
	opInterrupt = "interrupt"
	opBye       = "bye"
)

// maxLine bounds every line of the control protocol: a stranger cannot make us buffer more.
const maxLine = 4096

// ParseAddr splits an elastic address into a network and an address for net.Dial:
// "unix:/path/to.sock" is a unix socket, "tcp:host:port" and "host:port" are TCP.
func ParseAddr(addr string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		network, address = "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, "tcp:"):
		network, address = "tcp", strings.TrimPrefix(addr, "tcp:")
	default:
		network, address = "tcp", addr
	}
	if address == "" {
		return "", "", fmt.Errorf("elastic: empty address in %q", addr)
	}
	if network == "tcp" {
		if _, _, err := net.SplitHostPort(address); err != nil {
			return "", "", fmt.Errorf("elastic: address %q: %w", addr, err)
		}
	}
	return network, address, nil
}

// Listener accepts workers into a cluster. Its methods are safe for concurrent use.
type Listener struct {
	c      *dist.Cluster
	ln     net.Listener
	addr   string
	opts   options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// pending holds the connections that Close closes: those still proving the cookie or
	// announcing. A connection leaves it when its worker's join starts, which Close ends by
	// cancelling ctx instead: a join the cluster has counted is not undone, and that worker's
	// control connection, its Process's from then on, outlives the listener.
	pending map[net.Conn]struct{}
	closed  bool
}

// Listen makes the driver of c accept workers on addr ("host:port", "tcp:host:port" or
// "unix:/path"; port 0 picks a free port, see Addr). Workers are joined while the cluster
// runs, each as it arrives, and become members of the default pool. The listener stops
// accepting when Close is called, ctx ends or the cluster is closed; workers already joined
// stay members. Only the driver can listen.
func Listen(ctx context.Context, c *dist.Cluster, addr string, opts ...Option) (*Listener, error) {
	if c == nil || c.MyID() != 1 {
		return nil, fmt.Errorf("elastic: listen: %w", dist.ErrNotDriver)
	}
	network, address, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	o := newOptions(opts, 30*time.Second)
	ln, err := c.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("elastic: listen on %s: %w", addr, err)
	}
	l := &Listener{c: c, ln: ln, opts: o, pending: make(map[net.Conn]struct{})}
	if network == "unix" {
		l.addr = "unix:" + ln.Addr().String()
	} else {
		l.addr = ln.Addr().String()
	}
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		select {
		case <-ctx.Done():
		case <-c.Done():
		case <-l.ctx.Done():
		}
		l.shut()
	}()
	go func() {
		defer l.wg.Done()
		l.acceptLoop()
	}()
	return l, nil
}

// Addr returns the address workers pass to Serve: "host:port" for TCP (with the port chosen if
// 0 was asked), "unix:/path" for a unix socket.
func (l *Listener) Addr() string { return l.addr }

// Close stops accepting workers, abandons joins in progress (those workers are told and
// stop), and returns once the listener's goroutines have ended. Workers already joined stay
// members of the cluster, including one whose join the cluster has counted (NWorkers, a
// Joined event) while its admission was still finishing. Close is idempotent.
func (l *Listener) Close() error {
	l.shut()
	l.wg.Wait()
	return nil
}

func (l *Listener) shut() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	pending := make([]net.Conn, 0, len(l.pending))
	for nc := range l.pending {
		pending = append(pending, nc)
	}
	l.mu.Unlock()
	l.cancel()
	l.ln.Close()
	for _, nc := range pending {
		nc.Close()
	}
}

func (l *Listener) acceptLoop() {
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.opts.logger.Error("elastic: accept", "err", err)
			select {
			case <-time.After(10 * time.Millisecond):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			nc.Close()
			return
		}
		l.pending[nc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			if !l.admit(nc) {
				nc.Close()
			}
			l.mu.Lock()
			delete(l.pending, nc)
			l.mu.Unlock()
		}()
	}
}

// admit runs the driver's side of the protocol on one connection and reports whether the
// worker joined (its connection then belongs to its Process).
func (l *Listener) admit(nc net.Conn) bool {
	remote := nc.RemoteAddr().String()
	if err := wire.Accept(nc, []byte(l.c.Cookie()), l.opts.connectTimeout); err != nil {
		l.opts.logger.Warn("elastic: rejected a worker", "remote", remote, "err", err)
		return false
	}
	nc.SetReadDeadline(time.Now().Add(l.opts.connectTimeout))
	br := bufio.NewReaderSize(nc, maxLine)
	line, err := readLine(br)
	if err != nil {
		l.opts.logger.Warn("elastic: worker sent no announcement", "remote", remote, "err", err)
		return false
	}
	nc.SetReadDeadline(time.Time{})
	var a announcement
	refuse := func(why string) bool {
		l.opts.logger.Warn("elastic: refused a worker", "remote", remote, "why", why)
		writeJSON(nc, verdict{Error: why})
		return false
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return refuse(fmt.Sprintf("bad announcement: %v", err))
	}
	if a.Version != dist.ProtocolVersion {
		return refuse(fmt.Sprintf("protocol version %d, the driver speaks %d", a.Version, dist.ProtocolVersion))
	}
	if a.Network != "tcp" && a.Network != "unix" {
		return refuse(fmt.Sprintf("unknown network %q", a.Network))
	}
	// The join ends by ctx from now on, not by Close closing the connection (see pending).
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	delete(l.pending, nc)
	l.mu.Unlock()
	p := &process{nc: nc, br: br, network: a.Network, addr: a.Addr, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.connectTimeout)
	defer cancel()
	// The control connection is watched from now on: a worker that gives up while it is
	// being joined ends the join instead of leaving it to time out.
	go p.watch()
	pid, err := l.c.AddProcess(ctx, p)
	if err != nil {
		// AddProcess killed p, which closed the connection; the worker learns from that.
		l.opts.logger.Warn("elastic: could not join a worker", "remote", remote, "host", a.Host, "err", err)
		return false
	}
	if err := p.send(verdict{Pid: pid}); err != nil {
		// It joined but is already gone: the cluster sees its connections end.
		l.opts.logger.Warn("elastic: worker left as it joined", "pid", pid, "err", err)
	}
	l.opts.logger.Debug("elastic: worker joined", "pid", pid, "host", a.Host, "ospid", a.OSPid, "addr", a.Addr)
	return true
}

func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("line longer than %d bytes", maxLine)
	}
	return line, err
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// process is an elastic worker as the driver's cluster controls it: through its control
// connection.
type process struct {
	nc      net.Conn
	br      *bufio.Reader
	network string
	addr    string
	wmu     sync.Mutex
	done    chan struct{}
	waitErr error
	killed  bool
}

// watch reads the control connection until it ends. The worker sends one message after its
// announcement, "bye", as it exits on purpose; its absence tells a crash from a clean exit.
func (p *process) watch() {
	line, err := readLine(p.br)
	var m control
	bye := err == nil && json.Unmarshal(line, &m) == nil && m.Op == opBye
	if bye {
		_, err = p.br.ReadByte() // then the end of the connection
	}
	p.nc.Close()
	p.wmu.Lock()
	switch {
	case p.killed:
		p.waitErr = errors.New("elastic: killed (control connection closed by the driver)")
	case bye:
		p.waitErr = nil
	case err == nil:
		p.waitErr = fmt.Errorf("elastic: worker broke the control protocol (sent %q)", line)
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		// The kernel closed its end: the process is gone, without the goodbye of a clean
		// exit.
		p.waitErr = fmt.Errorf("elastic: worker ended without saying goodbye (crashed or was killed): %v", err)
	default:
		// A timeout or an unreachable host: its fate is unknown.
		p.waitErr = fmt.Errorf("%w: elastic control connection: %w", dist.ErrConnectionLost, err)
	}
	p.wmu.Unlock()
	close(p.done)
}

func (p *process) send(v any) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	defer p.nc.SetWriteDeadline(time.Time{})
	return writeJSON(p.nc, v)
}

// Addr implements dist.Process.
func (p *process) Addr() (string, string) { return p.network, p.addr }

// SetPid implements dist.Process.
func (p *process) SetPid(int) {}

// Kill implements dist.Process: it closes the control connection, on which the worker stops
// serving at once. The driver cannot do more to a process it did not start.
func (p *process) Kill() error {
	p.wmu.Lock()
	p.killed = true
	p.wmu.Unlock()
	return p.nc.Close()
}

// Interrupt implements dist.Process: the worker raises SIGINT in itself.
func (p *process) Interrupt() error { return p.send(control{Op: opInterrupt}) }

// Wait implements dist.Process.
func (p *process) Wait() error {
	<-p.done
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return p.waitErr
}

// Done is closed when the control connection has ended.
func (p *process) Done() <-chan struct{} { return p.done }

// Serve makes this process a worker of the driver listening at driverAddr (an address as
// Listener.Addr returns it) and serves until the driver tells it to exit (nil), the driver is
// lost (an error wrapping dist.ErrDriverLost: it exited, crashed, or closed the control
// connection), ctx ends, or it cannot join: the driver is unreachable or refuses it within the
// connect timeout, or the cookie is wrong (an error wrapping wire's cookie error, reported at
// once, without retrying). Call it after dist.Main, in a process that has no cluster. When it
// returns, everything it started has ended.
func Serve(ctx context.Context, driverAddr string, opts ...Option) error {
	o := newOptions(opts, time.Minute)
	network, address, err := ParseAddr(driverAddr)
	if err != nil {
		return err
	}
	cookie := o.cookie
	if !o.cookieSet {
		if cookie, err = dist.CookieFromEnv(); err != nil {
			return fmt.Errorf("elastic: %w", err)
		}
	}
	if cookie == "" {
		return fmt.Errorf("elastic: no cookie: set %s or %s, or use WithCookie", dist.EnvCookie, dist.EnvCookieFile)
	}
	files := o.tls
	if !o.tlsSet {
		files = dist.TLSFilesFromEnv()
	}
	var tconf *tls.Config
	if files != (dist.TLSFiles{}) {
		if tconf, err = dist.LoadTLS(files); err != nil {
			return fmt.Errorf("elastic: %w", err)
		}
	}
	deadline := time.Now().Add(o.connectTimeout)
	nc, err := dialDriver(ctx, network, address, []byte(cookie), tconf, deadline)
	if err != nil {
		return err
	}
	defer nc.Close()

	wc := dist.WorkerConfig{Cookie: cookie, Network: o.network, Bind: o.bind, ConnectTimeout: time.Until(deadline), PortMin: o.portMin, PortMax: o.portMax, TLS: files}
	if wc.Network == "" {
		wc.Network = network
		if network == "unix" {
			wc.Bind = filepath.Dir(address)
		} else if ta, ok := nc.LocalAddr().(*net.TCPAddr); ok {
			wc.Bind = net.JoinHostPort(ta.IP.String(), "0")
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	defer wg.Wait() // after nc.Close (deferred later, run earlier) ends the reader
	defer nc.Close()
	announce := func(network, addr string) error {
		host, _ := os.Hostname()
		nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := writeJSON(nc, announcement{Version: dist.ProtocolVersion, Network: network, Addr: addr, Host: host, OSPid: os.Getpid()}); err != nil {
			return err
		}
		nc.SetWriteDeadline(time.Time{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			cancel(readControl(nc, driverAddr))
		}()
		return nil
	}
	err = dist.ServeWorker(ctx, wc, announce)
	if err != nil && errors.Is(err, errDriverClosed) {
		return fmt.Errorf("%w (%s)", dist.ErrDriverLost, err)
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// Leaving on purpose: the driver reports a clean exit, not a crash.
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		writeJSON(nc, control{Op: opBye})
	}
	return err
}

var errDriverClosed = errors.New("the driver closed the control connection")

// readControl serves the driver's messages on the control connection and returns why it ended.
func readControl(nc net.Conn, driverAddr string) error {
	br := bufio.NewReaderSize(nc, maxLine)
	first := true
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return context.Canceled // we closed it: ServeWorker has returned
			}
			return fmt.Errorf("%w: %v", errDriverClosed, err)
		}
		if first {
			first = false
			var v verdict
			if err := json.Unmarshal(line, &v); err != nil {
				return fmt.Errorf("elastic: driver at %s sent a bad answer: %v", driverAddr, err)
			}
			if v.Error != "" {
				return fmt.Errorf("elastic: driver at %s refused this worker: %s", driverAddr, v.Error)
			}
			continue
		}
		var m control
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("elastic: driver at %s sent a bad message: %v", driverAddr, err)
		}
		if m.Op == opInterrupt {
			syscall.Kill(os.Getpid(), syscall.SIGINT)
		}
	}
}

// dialDriver connects to the driver and proves the cookie, retrying refused or unreachable
// connections until deadline: a worker may start before its driver listens.
func dialDriver(ctx context.Context, network, address string, cookie []byte, tconf *tls.Config, deadline time.Time) (net.Conn, error) {
	wait := 50 * time.Millisecond
	for {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		var d net.Dialer
		nc, err := d.DialContext(dctx, network, address)
		if err == nil && tconf != nil && network == "tcp" {
			tc := tls.Client(nc, tconf)
			if err = tc.HandshakeContext(dctx); err != nil {
				nc.Close()
				cancel()
				// A certificate the driver refuses will not be accepted on a retry.
				return nil, fmt.Errorf("elastic: driver at %s: TLS handshake: %w", address, err)
			}
			nc = tc
		}
		cancel()
		if err == nil {
			err = wire.Dial(nc, cookie, min(time.Until(deadline), 30*time.Second))
			if err == nil {
				return nc, nil
			}
			nc.Close()
			if errors.Is(err, wire.ErrCookie) {
				return nil, fmt.Errorf("elastic: driver at %s: %w", address, err)
			}
			if tconf != nil && strings.Contains(err.Error(), "remote error: tls") {
				// The driver refused our certificate (TLS 1.3 tells the client after its
				// handshake): a retry would be refused the same way.
				return nil, fmt.Errorf("elastic: driver at %s refused this worker's TLS certificate: %w", address, err)
			}
			if tconf == nil && errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w (no handshake from the driver: does its listener use TLS? see dist.WithTLS and %s)", err, dist.EnvTLSCert)
			}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("elastic: connecting to the driver at %s: %w", address, ctx.Err())
		}
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("elastic: could not reach the driver at %s %s before the connect timeout: %w", network, address, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("elastic: connecting to the driver at %s: %w", address, ctx.Err())
		}
		wait = min(wait*2, time.Second)
	}
}
