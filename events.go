package dist

import (
	"errors"
	"sync"
)

// EventKind says what happened to a process of the cluster.
type EventKind int

// Event kinds. Subscribe delivers Joined and Exited of members (membership); SubscribeLifecycle
// delivers every kind, in the order they happened: for one worker launched by AddProcs,
// Starting (for the batch), Started, Joined, then, when it ends, Exiting (if the driver asked
// it to exit) and Exited; a worker that never joined ends with an Exited of Pid 0 and Reason
// ExitNotStarted.
const (
	// Joined: the process joined the cluster and answers calls.
	Joined EventKind = iota + 1
	// Exited: the process left the cluster; Event.Cause and Event.Reason say why.
	Exited
	// Starting (driver only): AddProcs is asking a manager for Event.Count workers.
	Starting
	// Started (driver only): a launched worker is up and listening at Event.Addr; the driver is
	// joining it. Pid is still 0.
	Started
	// Exiting (driver only): the driver asked the worker to exit (RmProcs, Close).
	Exiting
	// Restarting (driver only): the worker Event.Pid crashed or was lost, and the driver is
	// launching a replacement (WithRestart); the replacement's Joined event names Pid in
	// Event.Replaces.
	Restarting
)

func (k EventKind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Exited:
		return "exited"
	case Starting:
		return "starting"
	case Started:
		return "started"
	case Exiting:
		return "exiting"
	case Restarting:
		return "restarting"
	}
	return "unknown"
}

// ExitReason classifies why a worker left, as the driver saw it.
type ExitReason int

// Exit reasons. They are set in the driver's events only; a worker, which learns of other
// processes leaving from the driver, sees 0 (unknown).
const (
	// ExitClean: the process ended successfully, whether asked to (RmProcs, Close) or on its
	// own.
	ExitClean ExitReason = iota + 1
	// ExitCrash: the process ended with a failure (non-zero status, a signal), or had to be
	// killed because it did not exit when asked.
	ExitCrash
	// ExitLost: the connection to the process broke and the process was not seen to end (its
	// host or the network went down, or its manager lost track of it). The driver kills it
	// if its manager can.
	ExitLost
	// ExitNotStarted: a launched process never joined (the launch or the join failed).
	// Event.Pid is 0 and Event.Cause says why.
	ExitNotStarted
)

func (r ExitReason) String() string {
	switch r {
	case ExitClean:
		return "clean exit"
	case ExitCrash:
		return "crash"
	case ExitLost:
		return "lost connection"
	case ExitNotStarted:
		return "not started"
	}
	return "unknown"
}

// ErrConnectionLost is what a Process's Wait returns (wrapped) when its manager lost track of
// the process instead of seeing it end: the ssh connection or the link to its host broke. The
// driver reports such a worker as ExitLost rather than ExitCrash.
var ErrConnectionLost = errors.New("dist: connection to the process lost")

// exitReason classifies the result of a Process's Wait.
func exitReason(waitErr error) ExitReason {
	switch {
	case waitErr == nil:
		return ExitClean
	case errors.Is(waitErr, ErrConnectionLost):
		return ExitLost
	}
	return ExitCrash
}

// Event is a change of the cluster's membership or of a worker's life, as this process saw
// it.
type Event struct {
	Kind EventKind
	Pid  int // 0 for Starting, Started and an Exited with ExitNotStarted
	// Cause is, for Exited: nil after a clean exit the driver asked for (RmProcs, Close), else
	// what was observed (errors.Is(Cause, ErrProcessExited) holds for a worker that had
	// joined).
	Cause  error
	Reason ExitReason // for Exited, in the driver
	Count  int        // for Starting: how many workers were asked for
	Addr   string     // for Started: "network address" the worker listens at
	// Replaces is, for Joined and Restarting in the driver, the pid of the crashed or lost
	// worker the new one replaces (WithRestart); 0 otherwise.
	Replaces int
}

type subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]subscriber
}

type subscriber struct {
	fn  func(Event)
	all bool // lifecycle: every kind, not only members joining and leaving
}

// Subscribe calls fn for every later change of membership seen by this process (Joined and
// Exited of processes that had joined), in order, on a goroutine of the cluster's: fn must
// return quickly. The returned function unsubscribes. Pools use it to drop dead workers and
// take new ones.
func (c *Cluster) Subscribe(fn func(Event)) (unsubscribe func()) {
	return c.subscribe(subscriber{fn: fn})
}

// SubscribeLifecycle calls fn for every later event of every kind (see EventKind): workers
// starting, started, joined, exiting and exited with the reason. It is Julia's manage
// callback for observers: a dashboard, a log, a manager that keeps per-worker state. fn runs
// as Subscribe's does, in order, and must return quickly. The returned function
// unsubscribes.
func (c *Cluster) SubscribeLifecycle(fn func(Event)) (unsubscribe func()) {
	return c.subscribe(subscriber{fn: fn, all: true})
}

func (c *Cluster) subscribe(s subscriber) func() {
	// A worker follows the membership only once something wants to know of its changes.
	c.followLater()
	c.subs.mu.Lock()
	defer c.subs.mu.Unlock()
	if c.subs.fns == nil {
		c.subs.fns = make(map[int]subscriber)
	}
	id := c.subs.next
	c.subs.next++
	c.subs.fns[id] = s
	return func() {
		c.subs.mu.Lock()
		delete(c.subs.fns, id)
		c.subs.mu.Unlock()
	}
}

// publish delivers e to every subscriber that wants it. The lock is held while delivering so
// that events arrive in order.
func (c *Cluster) publish(e Event) {
	member := (e.Kind == Joined || e.Kind == Exited) && e.Pid > 0
	c.subs.mu.Lock()
	defer c.subs.mu.Unlock()
	for _, s := range c.subs.fns {
		if s.all || member {
			s.fn(e)
		}
	}
}
