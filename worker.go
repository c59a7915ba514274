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
	"time"

	"github.com/godist/dist/internal/wire"
)

const protocolVersion = wire.Version

// EnvWorkerProfile, when set to a directory in the driver's environment, makes every local
// worker write its CPU profile there (worker-OSPID.prof) when it exits.
const EnvWorkerProfile = "GODIST_WORKER_CPUPROFILE"

// Main must be the first statement of main() (and of TestMain in tests that start clusters).
// In a process launched as a worker it joins the cluster, serves calls until the driver tells
// it to stop or is lost, and exits the process; it never returns there. In any other process
// it returns at once.
func Main() {
	if os.Getenv(EnvWorker) == "" {
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
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
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
	if wc.ConnectTimeout <= 0 {
		wc.ConnectTimeout = time.Minute
	}
	cfg := newConfig([]Option{WithLogger(logger)})
	c := newCluster(cfg, []byte(wc.Cookie), false)
	c.joined = make(chan struct{})
	c.driverLost = make(chan struct{})
	if err := setCurrent(c); err != nil {
		return fail("%v", err)
	}
	ln, addr, err := listen(wc)
	if err != nil {
		return fail("%v", err)
	}
	if wc.Network == "unix" {
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
	fmt.Fprintf(stdout, "%s %d %s %s\n", handshakePrefix, protocolVersion, wc.Network, addr)

	stdinEOF := make(chan struct{})
	go func() {
		io.Copy(io.Discard, in) // ends when the driver, or whatever launched us, is gone
		close(stdinEOF)
	}()
	code := 0
	select {
	case <-c.joined:
	case <-time.After(wc.ConnectTimeout):
		fmt.Fprintf(os.Stderr, "dist: worker: no driver connected within %v; exiting\n", wc.ConnectTimeout)
		code = 1
	case <-stdinEOF:
		code = 1
	}
	if code == 0 {
		select {
		case <-c.driverLost:
		case <-stdinEOF:
		case <-exitRequested:
		}
	}
	c.shutdown()
	return code
}

// exitRequested is closed when the driver asks this worker to exit.
var exitRequested = make(chan struct{})

func listen(wc WorkerConfig) (net.Listener, string, error) {
	switch wc.Network {
	case "unix":
		path := filepath.Join(wc.Bind, fmt.Sprintf("w%d.sock", os.Getpid()))
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, "", err
		}
		return ln, path, nil
	case "tcp":
		bind := wc.Bind
		if bind == "" {
			bind = ":0"
		}
		ln, err := net.Listen("tcp", bind)
		if err != nil {
			return nil, "", err
		}
		return ln, ln.Addr().String(), nil
	}
	return nil, "", fmt.Errorf("unknown network %q", wc.Network)
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
			if err := wire.Accept(nc, c.cookie, handshakeTimeout); err != nil {
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
	ci.st.pid.Store(1)
	c.mu.Lock()
	c.peers[1] = &peer{info: peerInfo{Pid: 1}, conn: ci.conn}
	c.mu.Unlock()
	c.applyPeers(peersUpdate{Add: req.Peers})
	close(c.joined)
	host, _ := os.Hostname()
	return joinReply{Host: host, OSPid: os.Getpid()}, nil
}

// handleHello registers the process at the other end of a connection it dialled.
func (c *Cluster) handleHello(ctx context.Context, pid int) error {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	if ci == nil || pid <= 1 {
		return fmt.Errorf("bad introduction from pid %d", pid)
	}
	ci.st.pid.Store(int64(pid))
	c.mu.Lock()
	p := c.peers[pid]
	if p == nil {
		p = &peer{info: peerInfo{Pid: pid}}
		c.peers[pid] = p
	}
	c.mu.Unlock()
	p.mu.Lock()
	if p.conn == nil && p.gone == nil {
		p.conn = ci.conn
	}
	p.mu.Unlock()
	return nil
}

// ProtocolVersion is the version of the wire protocol this build speaks.
const ProtocolVersion = protocolVersion
