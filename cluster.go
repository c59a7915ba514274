package dist

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/godist/dist/internal/wire"
)

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
	sockDir string // driver: where local workers listen: an abstract socket name prefix

	ctx    context.Context // ends at Close: bounds every handler and background goroutine
	cancel context.CancelFunc
	bg     tracker

	mu      sync.Mutex
	peers   map[int]*peer
	conns   map[*wire.Conn]*connState
	nextPid int
	rr      int
	closed  bool
	lns     []net.Listener

	roster     roster       // driver: the workers that follow the membership
	memberMsgs atomic.Int64 // see Stats.MemberMsgs
	trees      treeRuns     // results of recent tree calls, by call
	treeSeq    atomic.Uint64
	view       memberView // worker: the membership, once something asked for it
	refs       refTable
	drops      dropBatcher
	subs       subscribers
	watch      ctxWatch
	nextRef    atomic.Uint64

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
	proc     Process  // driver only: the launched process
	lineage  *lineage // driver only: how to replace it (WithRestart); nil for AddProcess
	mu       sync.Mutex
	conn     *wire.Conn
	connOut  bool          // conn is the one this process dialled
	dialing  chan struct{} // closed when a dial in progress ends
	adopted  chan struct{} // closed when a connection from the peer is registered
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
	// Local workers listen in the abstract socket namespace: no file to create (a thousand
	// binds into one directory were a tenth of a worker's start-up, in the file system's
	// inode allocation) and none left behind by a crash. The name is random, and a
	// connection must still pass the cookie handshake.
	var tok [8]byte
	rand.Read(tok[:])
	c.sockDir = "@godist-" + hex.EncodeToString(tok[:])
	if err := setCurrent(c); err != nil {
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
	budget := cfg.recvBudget
	if budget <= 0 {
		budget = int64(cfg.limits.MaxRaw) + int64(cfg.limits.MaxCBOR)
	}
	cfg.limits.Budget = wire.NewBudget(budget)
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

// Procs returns the pids of all processes of the cluster, the driver included, ascending. In
// a worker, the first call asks the driver (bounded by the connect timeout); from then on the
// driver keeps the worker informed, so later calls answer at once.
func (c *Cluster) Procs() []int {
	if !c.driver {
		if pids, ok := c.members(); ok {
			return pids
		}
	}
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
