package rawbench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// startupTimeout bounds how long we wait for the re-executed binary to
	// dial back, so that a binary that forgot ChildMain cannot hang us.
	startupTimeout = 10 * time.Second
	// exitGrace is how long a peer gets to notice the closed connection
	// (then the closed stdin) before we kill it.
	exitGrace = 2 * time.Second
	// tokenLen is the hex length of the handshake token that keeps a
	// stranger dialling our loopback port from being benchmarked instead.
	tokenLen = 32
)

// peer is the parent's view of a running benchmark peer process.
type peer struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	conn     net.Conn
	dir      string // temp dir holding the unix socket, if any
	stderr   *capBuffer
	waitDone chan struct{} // closed once cmd.Wait has returned
	waitErr  error         // valid after waitDone is closed
	killed   atomic.Bool   // we killed it on purpose: its exit status means nothing
	stopCtx  func() bool   // unregisters the ctx-cancel hook
}

// startPeer listens on network, re-executes this binary as a peer in the
// given mode, and returns once the peer has dialled in and proven it is ours.
// On error nothing is left behind: process, listener, temp dir, goroutines.
func startPeer(ctx context.Context, network, mode string) (_ *peer, err error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("rawbench: start peer: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("rawbench: start peer: locate own executable: %w", err)
	}
	tok := make([]byte, tokenLen/2)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("rawbench: start peer: token: %w", err)
	}
	token := hex.EncodeToString(tok)

	p := &peer{stderr: &capBuffer{max: 4 << 10}, waitDone: make(chan struct{})}
	ln, err := p.listen(network)
	if err != nil {
		p.removeDir()
		return nil, err
	}
	started := false
	defer func() {
		if err != nil {
			ln.Close()
			if started {
				p.killed.Store(true)
				p.cmd.Process.Kill()
				p.stdin.Close()
				<-p.waitDone
			}
			if p.conn != nil {
				p.conn.Close()
			}
			p.removeDir()
		}
	}()

	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%s:%s:%s",
		envPeer, mode, token, ln.Addr().Network(), ln.Addr().String()))
	cmd.Stdout = nil // /dev/null: the peer speaks only on the socket
	cmd.Stderr = p.stderr
	cmd.WaitDelay = exitGrace // never hang in Wait on a stray stderr holder
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("rawbench: start peer: stdin pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		stdin.Close()
		return nil, fmt.Errorf("rawbench: start peer %s: %w", exe, err)
	}
	p.cmd, p.stdin, started = cmd, stdin, true
	go func() {
		p.waitErr = cmd.Wait()
		close(p.waitDone)
	}()

	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		acc <- accepted{c, err}
	}()
	timer := time.NewTimer(startupTimeout)
	defer timer.Stop()
	select {
	case a := <-acc:
		if a.err != nil {
			return nil, fmt.Errorf("rawbench: start peer: accept: %w", a.err)
		}
		p.conn = a.c
		tune(p.conn)
	case <-p.waitDone:
		ln.Close()
		if a := <-acc; a.c != nil {
			a.c.Close()
		}
		return nil, fmt.Errorf("rawbench: start peer: %w before connecting (does main call rawbench.ChildMain?): %v%s",
			errPeerGone, p.waitErr, p.stderrSuffix())
	case <-ctx.Done():
		ln.Close()
		if a := <-acc; a.c != nil {
			a.c.Close()
		}
		return nil, fmt.Errorf("rawbench: start peer: %w", ctx.Err())
	case <-timer.C:
		ln.Close()
		if a := <-acc; a.c != nil {
			a.c.Close()
		}
		return nil, fmt.Errorf("rawbench: start peer: no connection from peer within %v (does main call rawbench.ChildMain?)", startupTimeout)
	}
	// One connection is all we need; nobody else gets to dial in.
	ln.Close()

	// From here on, cancelling ctx unblocks any I/O by closing the socket
	// and killing the peer.
	p.stopCtx = context.AfterFunc(ctx, func() {
		p.killed.Store(true)
		p.conn.Close()
		p.cmd.Process.Kill()
	})
	defer func() {
		if err != nil {
			p.stopCtx()
		}
	}()

	got := make([]byte, tokenLen)
	p.conn.SetDeadline(time.Now().Add(startupTimeout))
	if _, err := io.ReadFull(p.conn, got); err != nil {
		return nil, p.ioError(ctx, "handshake", err)
	}
	if subtle.ConstantTimeCompare(got, []byte(token)) != 1 {
		return nil, fmt.Errorf("rawbench: handshake: connection did not present the peer token")
	}
	p.conn.SetDeadline(time.Time{})
	return p, nil
}

// listen opens the parent's end. The parent listens and the child dials, so
// the address is known before the child starts and no stdout parsing is needed.
func (p *peer) listen(network string) (net.Listener, error) {
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("rawbench: listen tcp: %w", err)
		}
		return ln, nil
	case "unix":
		dir, err := os.MkdirTemp("", "rawbench-")
		if err != nil {
			return nil, fmt.Errorf("rawbench: listen unix: temp dir: %w", err)
		}
		path := filepath.Join(dir, "s.sock")
		if len(path) > 100 { // sun_path is 108 bytes; a long TMPDIR would not fit
			os.Remove(dir)
			if dir, err = os.MkdirTemp("/tmp", "rawbench-"); err != nil {
				return nil, fmt.Errorf("rawbench: listen unix: temp dir: %w", err)
			}
			path = filepath.Join(dir, "s.sock")
		}
		p.dir = dir
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("rawbench: listen unix: %w", err)
		}
		return ln, nil
	default:
		return nil, fmt.Errorf("rawbench: unsupported network %q (want \"unix\" or \"tcp\")", network)
	}
}

func (p *peer) removeDir() {
	if p.dir != "" {
		os.RemoveAll(p.dir)
		p.dir = ""
	}
}

// ioError turns a socket error into the most useful explanation: the
// caller's cancellation, a dead peer (with its stderr), or the raw error.
func (p *peer) ioError(ctx context.Context, what string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("rawbench: %s: %w", what, cerr)
	}
	select {
	case <-p.waitDone:
		return fmt.Errorf("rawbench: %s: %w (%v): %w%s", what, errPeerGone, p.waitErr, err, p.stderrSuffix())
	case <-time.After(50 * time.Millisecond):
		// The peer may be exiting right now; give it a moment so the
		// error can say so, but do not wait for a live one.
	}
	return fmt.Errorf("rawbench: %s: %w", what, err)
}

// close shuts the peer down. Graceful: close the connection and let the
// peer exit on EOF, then close stdin, then kill, each after exitGrace.
// Not graceful (after an error): kill at once. Either way it returns only
// after the process has been reaped and every resource released. Its error
// reports a graceful peer that exited unsuccessfully.
func (p *peer) close(graceful bool) error {
	if p.stopCtx != nil {
		p.stopCtx()
	}
	p.conn.Close()
	if !graceful {
		p.killed.Store(true)
		p.cmd.Process.Kill()
	}
	timer := time.NewTimer(exitGrace)
	defer timer.Stop()
	select {
	case <-p.waitDone:
	case <-timer.C:
	}
	p.stdin.Close()
	timer.Reset(exitGrace)
	select {
	case <-p.waitDone:
	case <-timer.C:
		p.killed.Store(true)
		p.cmd.Process.Kill()
		<-p.waitDone
	}
	p.removeDir()
	if graceful && !p.killed.Load() && p.waitErr != nil {
		return fmt.Errorf("rawbench: peer: %w%s", p.waitErr, p.stderrSuffix())
	}
	return nil
}

func (p *peer) stderrSuffix() string {
	if s := p.stderr.String(); s != "" {
		return fmt.Sprintf(" (peer stderr: %q)", s)
	}
	return ""
}

// capBuffer keeps the first max bytes of the peer's stderr: enough to
// explain a failure, bounded so a chatty peer cannot eat memory.
type capBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tune gives a connection the kernel buffers godist's own connections ask for, so that the
// baseline is the best a raw socket does here, not a default one.
func tune(c net.Conn) {
	if b, ok := c.(interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}); ok {
		b.SetReadBuffer(4 << 20)
		b.SetWriteBuffer(4 << 20)
	}
}
