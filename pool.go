package dist

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"weak"

	"github.com/godist/dist/internal/wire"
)

// WorkerPool is a set of worker pids from which callers take a free worker and to which they
// put it back, like Julia's WorkerPool. Each member is either free or taken; Take hands out
// free members first come, first served, and blocks while all are taken.
//
// A pool follows its cluster's membership for as long as it is reachable: a member that exits
// is dropped, whether free or taken (a taken one is not put back), and the default pool
// (Cluster.DefaultPool) also takes in workers added later. Its methods are safe for concurrent
// use.
type WorkerPool struct {
	c        *Cluster
	followsC bool // the default pool: workers that join become members

	mu      sync.Mutex
	members map[int]bool // pid → taken
	free    []int        // free members, in the order they became free
	changed chan struct{}
}

// NewWorkerPool returns a pool of the given pids of c, all free. Pids that are not live
// members of c (or this process) are left out.
func NewWorkerPool(c *Cluster, pids ...int) *WorkerPool {
	p := newWorkerPool(c)
	p.follow(false)
	p.Add(pids...)
	return p
}

func newWorkerPool(c *Cluster) *WorkerPool {
	return &WorkerPool{c: c, members: make(map[int]bool), changed: make(chan struct{})}
}

// follow subscribes the pool to its cluster's membership. The subscription holds the pool
// weakly, so that an unreachable pool does not stay registered for the cluster's lifetime:
// its cleanup unsubscribes.
func (p *WorkerPool) follow(joins bool) {
	if p.c == nil {
		return
	}
	p.followsC = joins
	wp := weak.Make(p)
	unsub := p.c.Subscribe(func(e Event) {
		if q := wp.Value(); q != nil {
			q.onEvent(e)
		}
	})
	runtime.AddCleanup(p, func(unsub func()) { unsub() }, unsub)
}

func (p *WorkerPool) onEvent(e Event) {
	switch e.Kind {
	case Exited:
		p.drop(e.Pid)
	case Joined:
		if p.followsC && e.Pid != 1 {
			p.addUnchecked(e.Pid)
			if me := p.c.MyID(); me == 1 {
				p.Remove(me) // a real worker replaces the driver's stand-in
			}
		}
	}
}

// Take removes a free worker from the pool's free set and returns its pid, waiting until one
// is free or ctx ends. It fails with an error matching ErrNoWorkers when the pool has no
// members at all, free or taken: nothing could ever be put back. Give the worker back with
// Put when done with it.
func (p *WorkerPool) Take(ctx context.Context) (int, error) {
	for {
		p.mu.Lock()
		if len(p.free) > 0 {
			pid := p.free[0]
			p.free = p.free[1:]
			p.members[pid] = true
			p.mu.Unlock()
			if p.gone(pid) {
				// It left the cluster and its Exited event is still on the way: drop it now
				// rather than hand out a worker every call to will fail on.
				p.drop(pid)
				continue
			}
			return pid, nil
		}
		if len(p.members) == 0 {
			p.mu.Unlock()
			return 0, fmt.Errorf("dist: WorkerPool.Take: %w: the pool is empty", ErrNoWorkers)
		}
		ch := p.changed
		p.mu.Unlock()
		wire.WillBlock(ctx)
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("dist: WorkerPool.Take: %w", ctx.Err())
		}
	}
}

// Put gives back a worker returned by Take. A pid that is not a taken member (it was removed,
// for example because it exited, or it is already free) is ignored, and one that is no longer
// a live member of the cluster is dropped.
func (p *WorkerPool) Put(pid int) {
	if p.gone(pid) {
		p.drop(pid)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if taken, ok := p.members[pid]; !ok || !taken {
		return
	}
	p.members[pid] = false
	p.free = append(p.free, pid)
	p.notifyLocked()
}

// Add makes pids free members of the pool. Pids already members are left as they are; pids
// that are not live members of the cluster (or this process) are ignored.
func (p *WorkerPool) Add(pids ...int) {
	for _, pid := range pids {
		if p.c != nil && pid != p.c.MyID() {
			if _, ok := p.c.ProcInfo(pid); !ok {
				continue
			}
		}
		p.addUnchecked(pid)
	}
}

// drop removes a member that left the cluster. The default pool that is left empty takes in
// this process instead, as Workers() does: alone, it does the work.
func (p *WorkerPool) drop(pid int) {
	p.Remove(pid)
	if p.followsC && p.Len() == 0 {
		p.addUnchecked(p.c.MyID())
	}
}

// gone reports whether pid has left the cluster. A worker leaves Procs as soon as its
// connection breaks, but its Exited event waits until the process has been reaped; the pool
// must agree with Procs in between.
func (p *WorkerPool) gone(pid int) bool {
	if p.c == nil || pid == p.c.MyID() {
		return false
	}
	_, ok := p.c.ProcInfo(pid)
	return !ok
}

func (p *WorkerPool) addUnchecked(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.members[pid]; ok {
		return
	}
	p.members[pid] = false
	p.free = append(p.free, pid)
	p.notifyLocked()
}

// Remove drops pid from the pool. If it is taken, it will not come back when Put.
func (p *WorkerPool) Remove(pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.members[pid]; !ok {
		return
	}
	delete(p.members, pid)
	p.free = slices.DeleteFunc(p.free, func(q int) bool { return q == pid })
	p.notifyLocked()
}

// Workers returns the pids of all members, free or taken, ascending.
func (p *WorkerPool) Workers() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.members))
}

// Len returns the number of members, free or taken.
func (p *WorkerPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

// Idle returns the number of free members.
func (p *WorkerPool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

// notifyLocked wakes everybody waiting for a change.
func (p *WorkerPool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// changedCh returns a channel closed at the next change of the pool.
func (p *WorkerPool) changedCh() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

var defaultPools = struct {
	sync.Mutex
	m map[*Cluster]*WorkerPool
}{m: make(map[*Cluster]*WorkerPool)}

// DefaultPool returns the cluster's default pool, which Pmap and Remote use unless told
// otherwise (Julia's default_worker_pool). It holds every worker, takes in workers added
// later, and drops workers that exit. As Workers does, it holds this process instead while
// the cluster has no workers, so that code written for workers also runs alone. Every call
// returns the same pool.
func (c *Cluster) DefaultPool() *WorkerPool {
	defaultPools.Lock()
	defer defaultPools.Unlock()
	for k := range defaultPools.m {
		if k.ctx.Err() != nil {
			delete(defaultPools.m, k) // that cluster is closed
		}
	}
	if p := defaultPools.m[c]; p != nil {
		return p
	}
	p := newWorkerPool(c)
	// Subscribe before reading the membership, so that no change falls between the two.
	p.follow(true)
	for _, pid := range c.Workers() {
		p.addUnchecked(pid)
	}
	if c.NWorkers() > 0 {
		p.Remove(1) // a worker joined between Workers and here
	}
	defaultPools.m[c] = p
	return p
}

// Remote calls f(in) on the next free worker of pool and waits for the result (Julia's
// remote(f, pool)). The worker is taken for the call and put back afterwards, whatever the
// outcome, error or panic included; only a worker that exited during the call is not put
// back (it is dropped from the pool). Errors are those of Take and Func.Call.
func Remote[In, Out any](ctx context.Context, pool *WorkerPool, f *Func[In, Out], in In) (out Out, err error) {
	pid, err := pool.Take(ctx)
	if err != nil {
		return out, err
	}
	defer func() {
		if exitedDuring(err, pid) {
			pool.Remove(pid)
		} else {
			pool.Put(pid)
		}
	}()
	return f.Call(ctx, pool.c, pid, in)
}

// exitedDuring reports whether err says that pid itself exited while serving a call, as
// opposed to a remote failure that mentions another process's exit.
func exitedDuring(err error, pid int) bool {
	var re *RemoteError
	if err == nil || errors.As(err, &re) {
		return false
	}
	var pe *ProcessExitedError
	return errors.As(err, &pe) && pe.Pid == pid
}
