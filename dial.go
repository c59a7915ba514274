package dist

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/godist/dist/internal/wire"
)

// connTo returns the connection to pid, dialling it on first use. A worker asks the driver
// where a peer listens the first time it needs it.
func (c *Cluster) connTo(ctx context.Context, pid int) (*wire.Conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClusterClosed
	}
	p := c.peers[pid]
	c.mu.Unlock()
	if !c.driver && pid > 1 && (p == nil || p.unresolved()) {
		if err := c.lookupPeer(ctx, pid); err != nil {
			return nil, err
		}
		c.mu.Lock()
		p = c.peers[pid]
		c.mu.Unlock()
	}
	if p == nil {
		return nil, &ProcessExitedError{Pid: pid, Cause: c.missing(pid)}
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
		if wait := p.dialing; wait != nil {
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
		if errors.Is(err, errCrossedDial) {
			if err := p.awaitAdoption(ctx, c.cfg.connTimeout); err != nil {
				p.mu.Unlock()
				return nil, &ProcessExitedError{Pid: pid, Cause: err}
			}
			continue
		}
		if err != nil {
			p.mu.Unlock()
			return nil, &ProcessExitedError{Pid: pid, Cause: err}
		}
		if p.conn == nil {
			p.conn, p.connOut = conn, true
		}
	}
}

// unresolved reports whether a worker knows too little of p to reach it: it knows of it only
// from a connection p made, which has ended.
func (p *peer) unresolved() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone == nil && p.conn == nil && p.dialing == nil && p.info.Addr == ""
}

// errCrossedDial is the answer to an introduction on a connection that crossed one the other
// process is making to this one: the lower pid's connection is kept, so that two workers that
// dial each other at the same moment end with one connection between them.
var errCrossedDial = errors.New("dist: crossed dials: the other side's connection is kept")

// awaitAdoption waits, with p.mu held (released while waiting), until the connection the
// other process made to this one is registered, or d passes.
func (p *peer) awaitAdoption(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for p.conn == nil && p.gone == nil {
		if p.adopted == nil {
			p.adopted = make(chan struct{})
		}
		wait := p.adopted
		p.mu.Unlock()
		select {
		case <-wait:
		case <-t.C:
			p.mu.Lock()
			if p.conn == nil && p.gone == nil {
				return fmt.Errorf("crossed dials: the connection from process %d did not arrive within %v", p.info.Pid, d)
			}
			return nil
		case <-ctx.Done():
			p.mu.Lock()
			return ctx.Err()
		}
		p.mu.Lock()
	}
	return nil
}

// lookupPeer (worker) asks the driver where pid listens and records the answer.
func (c *Cluster) lookupPeer(ctx context.Context, pid int) error {
	fr, err := c.call(ctx, 1, callHeader{Fn: fnLookupFor}, pid)
	if err != nil {
		return err
	}
	info, err := decodeReply[peerInfo](fnLookupFor, fr)
	if err != nil {
		// The driver's answer is the cause, not a failure of a function on the driver:
		// kept as a RemoteError it would hide, across further hops, which process exited.
		var re *RemoteError
		switch {
		case errors.Is(err, ErrNoSuchProcess):
			err = ErrNoSuchProcess
		case errors.As(err, &re):
			err = fmt.Errorf("the driver says: %s", re.Msg)
		}
		return &ProcessExitedError{Pid: pid, Cause: err}
	}
	c.rememberPeer(info)
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
	if err == nil {
		var crossed bool
		if crossed, err = decodeReply[bool](fnHello, fr); err == nil && crossed {
			conn.Close()
			return nil, errCrossedDial
		}
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

// missing (driver) says why pid has no peer here: it left (RmProcs forgets workers), or it
// never was a process of the cluster.
func (c *Cluster) missing(pid int) error {
	c.mu.Lock()
	next := c.nextPid
	c.mu.Unlock()
	if c.driver && pid > 1 && pid < next {
		return errRemoved
	}
	return ErrNoSuchProcess
}
