package dist

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/godist/dist/internal/wire"
)

const protocolVersion = wire.Version

// EnvWorkerProfile, when set to a directory in the driver's environment, makes every local
// worker write its CPU profile there (worker-OSPID.prof) when it exits.
const EnvWorkerProfile = "GODIST_WORKER_CPUPROFILE"

// mainHooks run in Main in a process that is not a worker.
var mainHooks []func()

// OnMain registers fn to run inside Main in every process that is not a worker, before Main
// returns: where a package that starts this binary in a role of its own (shm.Fork's children)
// takes over its process, once every package's variables (the registered functions) exist.
// Call it from an init function; fn must return at once in processes not in its role.
func OnMain(fn func()) { mainHooks = append(mainHooks, fn) }

// Main must be the first statement of main() (and of TestMain in tests that start clusters).
// In a process launched as a worker it joins the cluster, serves calls until the driver tells
// it to stop or is lost, and exits the process; it never returns there. In any other process
// it returns at once.
func Main() {
	if os.Getenv(EnvWorker) == "" {
		for _, h := range mainHooks {
			h()
		}
		return
	}
	os.Unsetenv(EnvWorker) // children of user code are not workers
	if dir := os.Getenv(EnvWorkerProfile); dir != "" {
		// Diagnostics: each worker writes its CPU profile when it exits.
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("worker-%d.prof", os.Getpid()))); err == nil {
			pprof.StartCPUProfile(f)
			code := runWorker(os.Stdin, os.Stdout)
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(code)
		}
	}
	os.Exit(runWorker(os.Stdin, os.Stdout))
}

func runWorker(stdin io.Reader, stdout io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "dist: worker: "+format+"\n", args...)
		return 1
	}
	in := bufio.NewReader(stdin)
	lineCh := make(chan []byte, 1)
	go func() {
		line, _ := in.ReadBytes('\n')
		lineCh <- line
	}()
	var line []byte
	select {
	case line = <-lineCh:
	case <-time.After(time.Minute):
		return fail("no configuration on standard input within a minute")
	}
	var wc WorkerConfig
	if err := json.Unmarshal(line, &wc); err != nil {
		return fail("bad configuration line: %v", err)
	}
	// Standard input ending means the driver, or whatever launched us, is gone.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		io.Copy(io.Discard, in)
		cancel(errStdinClosed)
	}()
	err := ServeWorker(ctx, wc, func(network, addr string) error {
		_, err := fmt.Fprintf(stdout, "%s %d %s %s\n", handshakePrefix, protocolVersion, network, addr)
		return err
	})
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrDriverLost):
		return 0 // the normal end of a worker whose driver exited without telling it
	case errors.Is(context.Cause(ctx), errStdinClosed):
		return 0 // whoever launched us closed it: an orderly end
	}
	fmt.Fprintln(os.Stderr, err)
	return 1
}

var errStdinClosed = errors.New("standard input closed")

// ErrDriverLost is returned by ServeWorker when the connection to the driver broke (the driver
// exited or crashed, or the network between them failed) after the worker had joined.
var ErrDriverLost = errors.New("dist: lost the connection to the driver")

// ErrNotJoined is wrapped by ServeWorker's error when no driver joined the worker within
// WorkerConfig.ConnectTimeout.
var ErrNotJoined = errors.New("dist: worker: no driver connected")

// ServeWorker makes this process a worker described by wc and serves the cluster until the
// driver asks it to exit (it returns nil), the driver is lost (ErrDriverLost), ctx ends
// (ctx's error) or no driver joins it within wc.ConnectTimeout (an error wrapping ErrNotJoined;
// default one minute). It is the worker side of every launch path: Main calls it for workers
// started by a Manager, and package elastic and the mpi manager call it for processes started
// by something else (a shell, a container, mpirun).
//
// ServeWorker listens as wc.Network and wc.Bind say, then calls announce with the address it
// listens on; announce must make that address known to the driver (Main prints it on standard
// output; elastic sends it over its control connection) and return without waiting for the
// join, which happens concurrently. An error from announce ends ServeWorker with that error.
// The driver then connects to the address, proves the cookie, and gives the worker its pid
// and the membership (Cluster.AddProcess on the driver's side does this for a Process whose
// Addr returns the announced address).
//
// Only one cluster may be open per process: ServeWorker fails if this process already has
// one (it is a driver, or already a worker). When it returns, every connection and listener
// it started is closed, the calls it was running were cancelled, and Current returns nil
// again. It waits for those calls to end for the grace period of WithExitGrace at most
// (WorkerConfig.ExitGrace); calls that ignore their cancellation are left running, said on
// standard error, so that the process can exit: a worker's program must not outlive
// ServeWorker for long (Main exits at once).
func ServeWorker(ctx context.Context, wc WorkerConfig, announce func(network, addr string) error) error {
	if wc.ConnectTimeout <= 0 {
		wc.ConnectTimeout = time.Minute
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := newConfig([]Option{WithLogger(logger)})
	if err := cfg.applyWorker(wc); err != nil {
		return err
	}
	c := newCluster(cfg, []byte(wc.Cookie), false)
	c.joined = make(chan struct{})
	c.driverLost = make(chan struct{})
	if err := setCurrent(c); err != nil {
		return err
	}
	defer func() {
		currentMu.Lock()
		if current == c {
			current = nil
		}
		currentMu.Unlock()
	}()
	ln, network, addr, err := c.listen(wc)
	if err != nil {
		c.shutdown()
		return fmt.Errorf("dist: worker: %w", err)
	}
	if network == "unix" && !strings.HasPrefix(addr, "@") {
		defer os.Remove(addr)
	}
	c.mu.Lock()
	c.lns = append(c.lns, ln)
	c.mu.Unlock()
	c.bg.add() // a new cluster: always accepted
	go func() {
		defer c.bg.done()
		c.acceptLoop(ln)
	}()
	why := "asked to stop"
	defer func() {
		if !c.shutdownWithin(c.cfg.exitGrace) {
			fmt.Fprintf(os.Stderr, "dist: worker %d: %s; calls that ignore their cancellation are still running %v later: leaving them behind\n", c.MyID(), why, c.cfg.exitGrace)
		}
	}()
	if err := announce(network, addr); err != nil {
		return fmt.Errorf("dist: worker: announcing %s %s: %w", network, addr, err)
	}
	timer := time.NewTimer(wc.ConnectTimeout)
	defer timer.Stop()
	select {
	case <-c.joined:
		// An armed timer would wake an idle worker once more, a minute from now.
		timer.Stop()
	case <-timer.C:
		return fmt.Errorf("%w within %v (listening on %s %s); exiting", ErrNotJoined, wc.ConnectTimeout, network, addr)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case <-c.driverLost:
		why = "lost the driver"
		fmt.Fprintf(os.Stderr, "dist: worker %d: lost the driver; cancelling its calls and exiting\n", c.MyID())
		return ErrDriverLost
	case <-ctx.Done():
		why = context.Cause(ctx).Error()
		return context.Cause(ctx)
	case <-c.exitReq:
		return nil
	}
}

// requestExit (worker) makes ServeWorker return: the driver asked this worker to exit.
func (c *Cluster) requestExit() {
	c.exitOnce.Do(func() { close(c.exitReq) })
}

// acceptLoop serves incoming connections; each must pass the cookie handshake. A failure is
// logged and affects only that connection.
func (c *Cluster) acceptLoop(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Error("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !c.bg.add() {
			nc.Close()
			return
		}
		go func() {
			defer c.bg.done()
			if err := wire.Accept(nc, c.cookie, c.cfg.connTimeout); err != nil {
				c.log.Error("rejected connection", "remote", nc.RemoteAddr().String(), "err", err)
				nc.Close()
				return
			}
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				nc.Close()
				return
			}
			c.serveConn(nc, 0)
		}()
	}
}

// handleJoin (worker) takes the pid and membership the driver gives.
func (c *Cluster) handleJoin(ctx context.Context, req joinReq) (joinReply, error) {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	if ci == nil {
		return joinReply{}, errors.New("join outside a connection")
	}
	select {
	case <-c.joined:
		return joinReply{}, errors.New("already joined")
	default:
	}
	c.me.Store(int64(req.Pid))
	c.topoName = req.Topology
	ci.st.pid.Store(1)
	c.mu.Lock()
	c.peers[1] = &peer{info: peerInfo{Pid: 1}, conn: ci.conn}
	c.mu.Unlock()
	if ci.conn.RemoteAddr().Network() == "tcp" {
		// Only a TCP driver needs watching (see WithHeartbeat): on one host the kernel tells
		// of its end at once, and a ticker would wake every idle worker for nothing.
		c.startHeartbeat()
	}
	for _, info := range req.Peers {
		c.rememberPeer(info)
	}
	close(c.joined)
	host, _ := os.Hostname()
	return joinReply{Host: host, OSPid: os.Getpid()}, nil
}

// handleHello registers the process at the other end of a connection it dialled. When this
// process is dialling that one too and has the lower pid, its own connection is the one kept:
// the answer true tells the other side to drop this one and wait for it.
func (c *Cluster) handleHello(ctx context.Context, pid int) (crossed bool, err error) {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	if ci == nil || pid <= 1 {
		return false, fmt.Errorf("bad introduction from pid %d", pid)
	}
	c.mu.Lock()
	p := c.peers[pid]
	if p == nil {
		p = &peer{info: peerInfo{Pid: pid}}
		c.peers[pid] = p
	}
	c.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.info.NoLink {
		return false, c.topologyError(pid)
	}
	if c.MyID() < pid && (p.dialing != nil || (p.conn != nil && p.connOut)) {
		return true, nil
	}
	ci.st.pid.Store(int64(pid))
	if p.gone == nil && (p.conn == nil || !p.connOut) {
		// An earlier connection from the same process has broken on its side already.
		p.conn, p.connOut = ci.conn, false
		if p.adopted != nil {
			close(p.adopted)
			p.adopted = nil
		}
	}
	return false, nil
}

// ProtocolVersion is the version of the wire protocol this build speaks.
const ProtocolVersion = protocolVersion
