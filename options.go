package dist

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

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
	exitGrace     time.Duration // see WithExitGrace
	restart       RestartPolicy // see WithRestart
	recvBudget    int64         // see WithRecvBudget; 0: the largest message
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
	return func(c *config) { c.limits.MaxCBOR, c.limits.MaxRaw = cborBytes, rawBytes }
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
		exitGrace:     defaultExitGrace,
	}
	cfg.limits.Stall = defaultStall
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// WithExitGrace sets how long a worker that must stop waits for the calls it runs to end once
// it has cancelled them (default 5s). A worker stops when the driver asks it to (RmProcs,
// Close) and when it loses the driver: the driver exited or crashed, or stopped answering
// heartbeats. Code that ignores its context's cancellation is not waited for beyond the grace
// period: the worker says so on standard error and exits, so that no worker outlives its
// driver for longer (Julia's workers run on until the call returns, Distributed.jl#198).
func WithExitGrace(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.exitGrace = d
		}
	}
}

// defaultExitGrace is the grace period of WithExitGrace.
const defaultExitGrace = 5 * time.Second

// WithRecvBudget bounds the memory this process's connections may claim for the messages they
// are receiving (default: the largest message WithMaxMessage allows, 2 GiB + 64 MiB), and how
// long a large message may go without a byte arriving before its connection is closed as
// stalled (default 30s). A message of 1 MiB or more is allocated in full when its header
// arrives; with the budget claimed, the next one waits for room (its sender is held back by
// the socket), and a message larger than the whole budget is refused. So an authenticated
// peer that announces huge messages and sends nothing makes a process reserve at most the
// budget, for the stall time at most. Workers launched with the option get it too. 0 keeps
// a default.
func WithRecvBudget(bytes int64, stall time.Duration) Option {
	return func(c *config) {
		if bytes > 0 {
			c.recvBudget = bytes
		}
		if stall > 0 {
			c.limits.Stall = stall
		}
	}
}

// defaultStall is WithRecvBudget's default stall time.
const defaultStall = 30 * time.Second
