package dist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/godist/dist/internal/wire"
)

// WorkerSetMode says how a WorkerSet picks the process for a call.
type WorkerSetMode int

const (
	// RoundRobin sends each call to the next member in turn, busy or not (PTools' mode 1).
	RoundRobin WorkerSetMode = iota + 1
	// FirstFree sends each call to a member that is not running another call of the set; when
	// every member is busy, calls wait in first-come, first-served order and are dispatched as
	// members free up (PTools' mode 2).
	FirstFree
)

// String names the mode.
func (m WorkerSetMode) String() string {
	switch m {
	case RoundRobin:
		return "round robin"
	case FirstFree:
		return "first free"
	}
	return fmt.Sprintf("WorkerSetMode(%d)", int(m))
}

// ErrWorkerSetClosed is matched by calls through a WorkerSet after Close, including calls that
// were waiting for a free worker when it was closed.
var ErrWorkerSetClosed = errors.New("dist: worker set closed")

// WorkerSet is a set of processes with a scheduling mode, from PTools.jl: calls made through it
// (WorkerSetCall, WorkerSetGo, or Acquire for anything else) run on a member chosen by the
// mode. Members that exit are dropped from the set. Its methods are safe for concurrent use.
//
// Go methods cannot have type parameters, so typed calls are the package functions
// WorkerSetCall and WorkerSetGo, and Acquire is the primitive under them.
type WorkerSet struct {
	c      *Cluster
	mode   WorkerSetMode
	follow bool // members are the cluster's workers, joins included
	unsub  func()

	mu      sync.Mutex
	members []int // in the order given; round robin follows it
	free    []int // FirstFree: idle members, longest idle first
	waiters []*wsWaiter
	next    int // RoundRobin: index of the next member
	closed  bool
}

// wsWaiter is a call waiting for a free member.
type wsWaiter struct {
	grant chan wsGrant // buffered: granting never blocks the granter
}

type wsGrant struct {
	pid int
	err error
}

// NewWorkerSet returns a set of the processes pids (pid 1, the driver, may be one of them)
// scheduled by mode. With no pids, the set is the cluster's workers and follows the cluster:
// workers that join later become members. Pids that are not live members of the cluster are
// left out. It panics on an unknown mode. Close the set when done with it.
func NewWorkerSet(c *Cluster, pids []int, mode WorkerSetMode) *WorkerSet {
	if mode != RoundRobin && mode != FirstFree {
		panic(fmt.Sprintf("dist: NewWorkerSet: unknown mode %d", int(mode)))
	}
	ws := &WorkerSet{c: c, mode: mode, follow: len(pids) == 0}
	// Subscribe before looking at the membership, so that no change falls in between. An event
	// handled before the snapshot below is harmless: liveness is recorded before the event is
	// published, and adding merges.
	ws.unsub = c.Subscribe(ws.onEvent)
	if ws.follow {
		pids = c.realWorkers()
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for _, p := range pids {
		if procLive(c, p) {
			ws.addLocked(p)
		}
	}
	return ws
}

func (ws *WorkerSet) onEvent(e Event) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return
	}
	switch e.Kind {
	case Joined:
		if ws.follow && e.Pid != 1 {
			ws.addLocked(e.Pid)
		}
	case Exited:
		ws.removeLocked(e.Pid)
	}
}

// Add makes the live processes among pids members of the set; a pid already a member is left
// as it is. Callers waiting for a free worker may get the new members at once.
func (ws *WorkerSet) Add(pids ...int) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return
	}
	for _, p := range pids {
		if procLive(ws.c, p) {
			ws.addLocked(p)
		}
	}
}

func (ws *WorkerSet) addLocked(pid int) {
	if slices.Contains(ws.members, pid) {
		return
	}
	ws.members = append(ws.members, pid)
	if ws.mode == FirstFree {
		ws.releaseLocked(pid)
	}
}

func (ws *WorkerSet) removeLocked(pid int) {
	i := slices.Index(ws.members, pid)
	if i < 0 {
		return
	}
	ws.members = slices.Delete(ws.members, i, i+1)
	if i < ws.next {
		ws.next-- // keep the round robin's place
	}
	ws.free = slices.DeleteFunc(ws.free, func(p int) bool { return p == pid })
	if len(ws.members) == 0 {
		// Nobody is left to free up: waiting would be forever.
		for _, w := range ws.waiters {
			w.grant <- wsGrant{err: fmt.Errorf("%w: every member of the worker set has exited", ErrNoWorkers)}
		}
		ws.waiters = nil
	}
}

// releaseLocked marks pid free: the longest-waiting call gets it, or it joins the free list.
// A pid that is no longer a member (it exited while busy) is ignored.
func (ws *WorkerSet) releaseLocked(pid int) {
	if ws.closed || !slices.Contains(ws.members, pid) || slices.Contains(ws.free, pid) {
		return
	}
	if len(ws.waiters) > 0 {
		w := ws.waiters[0]
		ws.waiters = slices.Delete(ws.waiters, 0, 1)
		w.grant <- wsGrant{pid: pid}
		return
	}
	ws.free = append(ws.free, pid)
}

// Acquire picks a member for one call and returns it with a release function that the caller
// must call when the call is over (calling it again does nothing). In RoundRobin mode it picks
// the next member and never waits. In FirstFree mode it marks the member busy until release,
// and when every member is busy it waits, first come first served, until one is released, a
// member is added, or ctx ends. It fails at once when the set has no members (matching
// ErrNoWorkers) or is closed (ErrWorkerSetClosed), and a waiting Acquire fails the same way
// when the last member exits or the set is closed.
func (ws *WorkerSet) Acquire(ctx context.Context) (pid int, release func(), err error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	ws.mu.Lock()
	switch {
	case ws.closed:
		ws.mu.Unlock()
		return 0, nil, ErrWorkerSetClosed
	case len(ws.members) == 0:
		ws.mu.Unlock()
		return 0, nil, fmt.Errorf("%w in the worker set", ErrNoWorkers)
	case ws.mode == RoundRobin:
		pid := ws.members[ws.next%len(ws.members)]
		ws.next = (ws.next + 1) % len(ws.members)
		ws.mu.Unlock()
		return pid, func() {}, nil
	case len(ws.free) > 0:
		pid := ws.free[0]
		ws.free = slices.Delete(ws.free, 0, 1)
		ws.mu.Unlock()
		return pid, ws.releaser(pid), nil
	}
	w := &wsWaiter{grant: make(chan wsGrant, 1)}
	ws.waiters = append(ws.waiters, w)
	ws.mu.Unlock()
	wire.WillBlock(ctx)
	select {
	case g := <-w.grant:
		if g.err != nil {
			return 0, nil, g.err
		}
		return g.pid, ws.releaser(g.pid), nil
	case <-ctx.Done():
		ws.mu.Lock()
		i := slices.Index(ws.waiters, w)
		if i >= 0 {
			ws.waiters = slices.Delete(ws.waiters, i, i+1)
		}
		ws.mu.Unlock()
		if i < 0 {
			// A grant raced with the cancellation and is in the buffer: pass the member on,
			// or it would be lost to the set.
			if g := <-w.grant; g.err == nil {
				ws.releaser(g.pid)()
			}
		}
		return 0, nil, ctx.Err()
	}
}

func (ws *WorkerSet) releaser(pid int) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			ws.mu.Lock()
			defer ws.mu.Unlock()
			ws.releaseLocked(pid)
		})
	}
}

// Mode returns the set's scheduling mode.
func (ws *WorkerSet) Mode() WorkerSetMode { return ws.mode }

// Pids returns the members, in the order calls go to them in RoundRobin mode.
func (ws *WorkerSet) Pids() []int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return slices.Clone(ws.members)
}

// Free returns the members not running a call of the set, the one the next call gets first.
// In RoundRobin mode, where members are never busy, it returns every member.
func (ws *WorkerSet) Free() []int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.mode == RoundRobin {
		return slices.Clone(ws.members)
	}
	return slices.Clone(ws.free)
}

// Waiting returns the number of calls waiting for a free member.
func (ws *WorkerSet) Waiting() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.waiters)
}

// Close stops the set following the cluster and fails the calls waiting for a member with
// ErrWorkerSetClosed; calls already running finish normally. Close is idempotent.
func (ws *WorkerSet) Close() {
	ws.unsub() // before taking ws.mu: the event callback runs under the cluster's lock
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return
	}
	ws.closed = true
	for _, w := range ws.waiters {
		w.grant <- wsGrant{err: ErrWorkerSetClosed}
	}
	ws.waiters, ws.free = nil, nil
}

// WorkerSetCall runs f(in) on a member of ws chosen by its mode and waits for the result: the
// remotecall_fetch of PTools' WorkerSet. In FirstFree mode it first waits for a free member;
// the member is free again when the call returns, whatever the outcome (an error, a panic of
// f, which comes back as a *RemoteError, or ctx ending; a cancelled remote function may still
// be winding down when its member is given to the next call), except that a member whose
// process exits during the call leaves the set at once. The call is not retried elsewhere.
// Errors are those of Acquire and of Func.Call.
func WorkerSetCall[In, Out any](ctx context.Context, ws *WorkerSet, f *Func[In, Out], in In) (Out, error) {
	pid, release, err := ws.Acquire(ctx)
	if err != nil {
		var zero Out
		return zero, fmt.Errorf("dist: %s through a worker set: %w", f.Name(), err)
	}
	defer release()
	out, err := f.Call(ctx, ws.c, pid, in)
	if exitedWhileRunning(err, pid) {
		// Drop the member now rather than when the cluster's event arrives: in between,
		// release would hand a dead process to the next waiting call.
		ws.mu.Lock()
		ws.removeLocked(pid)
		ws.mu.Unlock()
	}
	return out, err
}

// WorkerSetGo starts f(in) on a member of ws chosen by its mode and returns at once with a
// Future for the result: the remotecall of PTools' WorkerSet. In RoundRobin mode this is
// f.Go on the next member, and the Future's Where is that member. In FirstFree mode the call
// waits for a free member in the background, so the member is not known yet: the Future is
// owned by the caller (Where is the caller's pid) and is set when the call ends. Cancelling
// ctx cancels the call, waiting or running.
func WorkerSetGo[In, Out any](ctx context.Context, ws *WorkerSet, f *Func[In, Out], in In) *Future[Out] {
	if ws.mode == RoundRobin {
		pid, _, err := ws.Acquire(ctx)
		if err != nil {
			return failedFuture[Out](ws.c, ws.c.MyID(), fmt.Errorf("dist: %s through a worker set: %w", f.Name(), err))
		}
		return f.Go(ctx, ws.c, pid, in)
	}
	fut, set := newLocalFuture[Out](ws.c)
	go func() {
		out, err := WorkerSetCall(ctx, ws, f, in)
		set(out, err)
	}()
	return fut
}
