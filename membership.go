package dist

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

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
