package rawbench

import (
	"context"
	"os"
	"time"
)

// TestPeer lets the external tests drive a peer's lifecycle directly, which
// the public API deliberately hides.
type TestPeer struct{ p *peer }

// StartTestPeer starts a ping-pong peer exactly as PingPong would.
func StartTestPeer(ctx context.Context, network string) (*TestPeer, error) {
	p, err := startPeer(ctx, network, modePingPong)
	if err != nil {
		return nil, err
	}
	return &TestPeer{p}, nil
}

// Pid is the peer's process id.
func (t *TestPeer) Pid() int { return t.p.cmd.Process.Pid }

// CloseConn closes only the socket, leaving stdin open.
func (t *TestPeer) CloseConn() error { return t.p.conn.Close() }

// CloseStdin closes only the peer's stdin, leaving the socket open.
func (t *TestPeer) CloseStdin() error { return t.p.stdin.Close() }

// WaitExit waits up to d for the peer to be reaped and returns its state,
// or nil if it is still running.
func (t *TestPeer) WaitExit(d time.Duration) *os.ProcessState {
	select {
	case <-t.p.waitDone:
		return t.p.cmd.ProcessState
	case <-time.After(d):
		return nil
	}
}

// Close releases everything, killing the peer if needed.
func (t *TestPeer) Close() { t.p.close(false) }

// ExitStdinGone is the peer's exit code when its stdin reaches EOF.
const ExitStdinGone = exitStdinGone
