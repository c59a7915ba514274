package dist

import "sync"

// EventKind says what happened to a process of the cluster.
type EventKind int

// Event kinds.
const (
	// Joined: the process joined the cluster and answers calls.
	Joined EventKind = iota + 1
	// Exited: the process left the cluster; Event.Cause says why.
	Exited
)

func (k EventKind) String() string {
	switch k {
	case Joined:
		return "joined"
	case Exited:
		return "exited"
	}
	return "unknown"
}

// Event is a change of the cluster's membership, as this process saw it.
type Event struct {
	Kind  EventKind
	Pid   int
	Cause error // for Exited: nil after RmProcs, else what was observed (a crash, a lost link)
}

type subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(Event)
}

// Subscribe calls fn for every later change of membership seen by this process, in order, on
// a goroutine of the cluster's: fn must return quickly. The returned function unsubscribes.
// Pools use it to drop dead workers and take new ones.
func (c *Cluster) Subscribe(fn func(Event)) (unsubscribe func()) {
	c.subs.mu.Lock()
	defer c.subs.mu.Unlock()
	if c.subs.fns == nil {
		c.subs.fns = make(map[int]func(Event))
	}
	id := c.subs.next
	c.subs.next++
	c.subs.fns[id] = fn
	return func() {
		c.subs.mu.Lock()
		delete(c.subs.fns, id)
		c.subs.mu.Unlock()
	}
}

// publish delivers e to every subscriber. The lock is held while delivering so that events
// arrive in order.
func (c *Cluster) publish(e Event) {
	c.subs.mu.Lock()
	defer c.subs.mu.Unlock()
	for _, fn := range c.subs.fns {
		fn(e)
	}
}
