package dist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// exitGrace is how long the driver waits, once a worker's connection broke, for its process
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
	c.membersChanged()
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
	if done {
		return
	}
	c.publish(ev)
	if ev.Reason == ExitCrash || ev.Reason == ExitLost {
		c.replace(p)
	}
}

// Membership costs O(N) messages to start or stop N workers. The driver tells a new worker
// nothing of the others, and the others nothing of it. A worker learns a peer's address when
// it first calls it (lookupPeer asks the driver) and learns that a peer is gone when it next
// needs it: the connection to it broke (peerDown asks the driver), or a dial fails. Only a
// worker that asks for the whole membership (Procs, Workers, Subscribe) is kept informed of
// it: the driver pushes it the list of pids, versioned, after every change, coalescing
// changes that come together (a start or a Close of many workers).

// rememberPeer (worker) records where a peer listens, as the driver told it.
func (c *Cluster) rememberPeer(info peerInfo) {
	if info.Pid == c.MyID() {
		return
	}
	c.mu.Lock()
	p := c.peers[info.Pid]
	if p == nil {
		p = &peer{}
		c.peers[info.Pid] = p
	}
	c.mu.Unlock()
	p.mu.Lock()
	p.info = info
	p.mu.Unlock()
}

// peerGone (worker) forgets a peer the driver says has left: its connection is closed, the
// values it would have created fail their waiters, and subscribers see it exit, once.
func (c *Cluster) peerGone(pid int, cause error) {
	c.mu.Lock()
	p := c.peers[pid]
	if p == nil {
		p = &peer{info: peerInfo{Pid: pid}}
		c.peers[pid] = p
	}
	c.mu.Unlock()
	p.mu.Lock()
	was := p.gone == nil
	if was {
		p.gone = cause
	}
	conn := p.conn
	p.mu.Unlock()
	if !was {
		return
	}
	if conn != nil {
		conn.Close()
	}
	c.refs.forget(pid)
	c.view.drop(pid)
	c.publish(Event{Kind: Exited, Pid: pid, Cause: &ProcessExitedError{Pid: pid, Cause: cause}})
}

// errRemoved is the cause of a peer the driver reports gone.
var errRemoved = errors.New("removed from the cluster")

// peerDown (worker) runs when a connection to another worker ends: the peer may have exited,
// or only the link between the two may have broken. The driver, which watches every worker,
// tells which; a peer that lives is dialled again on the next call.
func (c *Cluster) peerDown(pid int) {
	if !c.bg.add() {
		return
	}
	go func() {
		defer c.bg.done()
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.hbTimeout+c.cfg.connTimeout)
		defer cancel()
		fr, err := c.call(ctx, 1, callHeader{Fn: fnPeerAlive}, pid)
		if err != nil {
			return // the driver is gone or closing: this worker ends too
		}
		if alive, err := decodeReply[bool](fnPeerAlive, fr); err == nil && !alive {
			c.peerGone(pid, errRemoved)
		}
	}()
}

// peerAlive (driver) answers whether worker pid is still a member, for a worker whose
// connection to it ended. If the driver's own connection to it is up, a ping tells: a worker
// that just died fails the ping once the kernel or the heartbeat has closed the connection.
func (c *Cluster) peerAlive(ctx context.Context, pid int) bool {
	c.mu.Lock()
	p := c.peers[pid]
	c.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	conn, gone := p.conn, p.gone
	p.mu.Unlock()
	if gone != nil || conn == nil {
		return false
	}
	m, err := c.encodeCall(ctx, callHeader{Fn: fnPing}, struct{}{})
	if err != nil {
		return true
	}
	if _, err := conn.Call(ctx, m); err != nil {
		// The connection closed (the worker is being removed: workerGone runs on its
		// close), or no answer came in time: either way it is no member to rely on.
		return false
	}
	return p.alive()
}

// membersUpdate carries the whole membership as pids, ascending, the driver and the receiver
// included. A list of pids is a few kilobytes even at thousands of workers; addresses are not
// in it (lookupPeer asks for one when it is needed).
type membersUpdate struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Pids    []int
}

// roster (driver) keeps the workers that asked to follow the membership informed of it.
type roster struct {
	mu        sync.Mutex
	version   uint64
	subs      map[int]bool
	scheduled bool
}

// pushDelay is how long the driver waits after a change before telling followers, so that
// the joins or exits of many workers at once travel as one list per follower.
const pushDelay = 5 * time.Millisecond

// follow (driver) adds pid to the followers and returns the membership as it is now.
func (c *Cluster) follow(pid int) membersUpdate {
	r := &c.roster
	r.mu.Lock()
	if r.subs == nil {
		r.subs = make(map[int]bool)
	}
	r.subs[pid] = true
	v := r.version
	r.mu.Unlock()
	return membersUpdate{Version: v, Pids: c.Procs()}
}

// membersChanged (driver) counts a change of membership and schedules telling the followers.
func (c *Cluster) membersChanged() {
	r := &c.roster
	r.mu.Lock()
	r.version++
	if r.scheduled || len(r.subs) == 0 {
		r.mu.Unlock()
		return
	}
	r.scheduled = true
	r.mu.Unlock()
	if !c.bg.add() {
		return
	}
	go func() {
		defer c.bg.done()
		t := time.NewTimer(pushDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return
		}
		r.mu.Lock()
		r.scheduled = false
		v := r.version
		subs := make([]int, 0, len(r.subs))
		for pid := range r.subs {
			subs = append(subs, pid)
		}
		r.mu.Unlock()
		u := membersUpdate{Version: v, Pids: c.Procs()}
		live := subs[:0]
		for _, pid := range subs {
			if !c.isMember(pid) || c.isExiting(pid) {
				r.mu.Lock()
				delete(r.subs, pid)
				r.mu.Unlock()
				continue
			}
			live = append(live, pid)
		}
		c.push(u, live)
	}()
}

// push (driver) sends u to the followers pids: over the tree when they are many, so that the
// driver sends a few lists rather than one per follower.
func (c *Cluster) push(u membersUpdate, pids []int) {
	if len(pids) >= treeMin && c.allToAll() {
		slices.Sort(pids)
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.connTimeout+c.cfg.hbTimeout)
		defer cancel()
		if _, errs, err := c.callTree(ctx, fnMembers, u, pids); err == nil {
			c.memberMsgs.Add(int64(min(treeFanout, len(pids))))
			for pid, err := range errs {
				c.log.Debug("membership push failed", "pid", pid, "err", err)
			}
			return
		}
	}
	for _, pid := range pids {
		if c.send(c.ctx, pid, callHeader{Fn: fnMembers}, u) == nil {
			c.memberMsgs.Add(1)
		}
	}
}

// isExiting (driver) reports whether pid was asked to exit.
func (c *Cluster) isExiting(pid int) bool {
	c.mu.Lock()
	p := c.peers[pid]
	c.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exiting
}

// memberView (worker) is the membership as this worker follows it: empty until something
// needs it, then kept current by the driver's pushes.
type memberView struct {
	mu      sync.Mutex
	state   viewState
	ready   chan struct{} // closed when a first attempt to follow ended
	version uint64
	pids    []int
}

type viewState int

const (
	viewNone viewState = iota
	viewAsking
	viewFollowing
)

// members (worker) returns the pids of the cluster, following the membership from now on if
// it did not already; false if the driver could not be asked.
func (c *Cluster) members() ([]int, bool) {
	v := &c.view
	for {
		v.mu.Lock()
		switch v.state {
		case viewFollowing:
			pids := slices.Clone(v.pids)
			v.mu.Unlock()
			return pids, true
		case viewAsking:
			ready := v.ready
			v.mu.Unlock()
			select {
			case <-ready:
			case <-c.ctx.Done():
				return nil, false
			}
			v.mu.Lock()
			ok := v.state == viewFollowing
			v.mu.Unlock()
			if !ok {
				return nil, false
			}
			continue
		}
		if !c.joinedDone() {
			v.mu.Unlock()
			return nil, false
		}
		v.state, v.ready = viewAsking, make(chan struct{})
		v.mu.Unlock()
		u, err := c.askMembers()
		v.mu.Lock()
		if err != nil {
			v.state = viewNone
			close(v.ready)
			v.mu.Unlock()
			return nil, false
		}
		v.state = viewFollowing
		close(v.ready)
		v.mu.Unlock()
		c.applyMembers(u)
	}
}

// askMembers (worker) asks the driver for the membership, and to be told of its changes. It
// is bounded by the connect timeout: the driver answers at once unless it is gone.
func (c *Cluster) askMembers() (membersUpdate, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.connTimeout)
	defer cancel()
	fr, err := c.call(ctx, 1, callHeader{Fn: fnFollow}, struct{}{})
	if err != nil {
		return membersUpdate{}, err
	}
	return decodeReply[membersUpdate](fnFollow, fr)
}

// followLater (worker) starts following the membership in the background, for a subscriber.
func (c *Cluster) followLater() {
	if c.driver || !c.bg.add() {
		return
	}
	go func() {
		defer c.bg.done()
		c.members()
	}()
}

// applyMembers (worker) takes a pushed or fetched membership if it is newer than what this
// worker has, and tells subscribers who joined and who left since.
func (c *Cluster) applyMembers(u membersUpdate) {
	v := &c.view
	v.mu.Lock()
	if v.version >= u.Version && v.pids != nil {
		v.mu.Unlock()
		return
	}
	old := v.pids
	first := old == nil
	v.version, v.pids = u.Version, slices.Clone(u.Pids)
	v.mu.Unlock()
	if first {
		return // what was there before this worker followed is not news
	}
	for _, pid := range u.Pids {
		if _, found := slices.BinarySearch(old, pid); !found && pid != c.MyID() {
			c.publish(Event{Kind: Joined, Pid: pid})
		}
	}
	for _, pid := range old {
		if _, found := slices.BinarySearch(u.Pids, pid); !found {
			c.peerGone(pid, errRemoved)
		}
	}
}

// drop (worker) removes pid from a followed membership.
func (v *memberView) drop(pid int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if i, found := slices.BinarySearch(v.pids, pid); found {
		v.pids = slices.Delete(slices.Clone(v.pids), i, i+1)
	}
}

// isMember reports whether pid is a live process of the cluster as this process knows it. A
// worker that does not follow the membership yet starts following it.
func (c *Cluster) isMember(pid int) bool {
	if pid == c.MyID() {
		return true
	}
	if !c.driver {
		if pids, ok := c.members(); ok {
			_, found := slices.BinarySearch(pids, pid)
			return found
		}
	}
	c.mu.Lock()
	p := c.peers[pid]
	c.mu.Unlock()
	return p != nil && p.alive()
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
