package dist

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godist/dist/internal/wire"
)

// WithHeartbeat sets how often a process checks that its TCP peers answer (the driver its
// workers, a worker its driver) and how long an answer may take before the connection is
// declared lost and closed: the driver then reports the worker Exited with ExitLost and kills
// it if its manager can, and a worker that lost its driver stops (workers wait twice the
// timeout, so that the driver decides first). Without it a host that
// vanishes (power, a cable, a firewall dropping packets) goes unnoticed until TCP gives up,
// which can take many minutes. Defaults: every 5s, 30s; interval 0 disables. Unix-socket
// peers are not checked: on one host the kernel reports a dead peer at once.
func WithHeartbeat(interval, timeout time.Duration) Option {
	return func(c *config) { c.hbInterval, c.hbTimeout = interval, timeout }
}

const (
	defaultHeartbeat        = 5 * time.Second
	defaultHeartbeatTimeout = 30 * time.Second
)

// errHeartbeat is the cause of a connection closed because its peer stopped answering.
var errHeartbeat = errors.New("no answer to heartbeats")

// heartbeat runs until the cluster closes, pinging TCP peers.
func (c *Cluster) startHeartbeat() {
	if c.cfg.hbInterval <= 0 || !c.bg.add() {
		return
	}
	go func() {
		defer c.bg.done()
		t := time.NewTicker(c.cfg.hbInterval)
		defer t.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-t.C:
			}
			for _, p := range c.heartbeatPeers() {
				c.ping(p)
			}
		}
	}()
}

// heartbeatPeers returns the peers this process checks: in the driver its TCP workers, in a
// worker the driver if it is reached over TCP.
func (c *Cluster) heartbeatPeers() []*peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*peer
	for pid, p := range c.peers {
		if (c.driver && pid > 1) || (!c.driver && pid == 1) {
			ps = append(ps, p)
		}
	}
	return ps
}

// ping sends one heartbeat to p unless one is outstanding, and closes the connection if no
// answer comes within the timeout.
func (c *Cluster) ping(p *peer) {
	p.mu.Lock()
	conn := p.conn
	if conn == nil || p.gone != nil || p.pinging || conn.RemoteAddr().Network() != "tcp" {
		p.mu.Unlock()
		return
	}
	p.pinging = true
	pid := p.info.Pid
	p.mu.Unlock()
	if !c.bg.add() {
		return
	}
	go func() {
		defer c.bg.done()
		defer func() {
			p.mu.Lock()
			p.pinging = false
			p.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.hbTimeout)
		defer cancel()
		m, err := c.encodeCall(ctx, callHeader{Fn: fnPing}, struct{}{})
		if err != nil {
			return
		}
		_, err = conn.Call(ctx, m)
		if err == nil || c.ctx.Err() != nil || errors.Is(err, wire.ErrClosed) {
			return // answered, closing, or already gone (reported by the connection's end)
		}
		if !c.driver {
			pid = 1
		}
		c.log.Warn("peer stopped answering; closing its connection", "pid", pid, "remote", conn.RemoteAddr().String(), "timeout", c.cfg.hbTimeout)
		p.mu.Lock()
		p.hbLost = fmt.Errorf("%w within %v", errHeartbeat, c.cfg.hbTimeout)
		p.mu.Unlock()
		conn.Close()
	}()
}
