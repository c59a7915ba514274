package wire

import "sync/atomic"

// Who holds a connection's read role (see the comment at the top of conn.go).
const (
	roleBackground = iota // a reader goroutine of the connection's own
	roleCaller            // a synchronous caller, reading until its reply comes (Conn.Call)
	roleFree              // nobody: the next caller, an asynchronous start or the monitor claims it
)

// readRole says which goroutine may read a connection's stream and use its bufio.Reader: at
// most one at a time, handed over by compare-and-swap so that the path of a call takes no
// lock. A holder gives the role up (release) or hands it to a goroutine it starts (pass);
// anyone else gets it only by claiming it while free.
type readRole struct {
	holder    atomic.Int32 // roleBackground, roleCaller or roleFree
	freeSince atomic.Int64 // when holder last became roleFree (unix ns, the monitor's clock)
	// callers counts synchronous callers that wait for a reply and could read for themselves.
	// A background reader that delivers a reply while one waits releases the role to it.
	callers atomic.Int32
}

// who returns the holder now; by the time the caller looks, it may have changed.
func (r *readRole) who() int32 { return r.holder.Load() }

// claim takes the role for who if nobody holds it, and reports whether it did. The load
// first keeps the common case, a role already held, from dirtying the cache line.
func (r *readRole) claim(who int32) bool {
	return r.holder.Load() == roleFree && r.holder.CompareAndSwap(roleFree, who)
}

// release gives the role up at now; the holder must not read after it.
func (r *readRole) release(now int64) {
	r.freeSince.Store(now)
	r.holder.Store(roleFree)
}

// pass makes the role the background reader's: the holder calls it just before starting the
// goroutine that reads in its place, and must not read after it.
func (r *readRole) pass() { r.holder.Store(roleBackground) }

// freeAtLeast reports whether the role has been free for at least d nanoseconds at now.
func (r *readRole) freeAtLeast(now, d int64) bool {
	return r.holder.Load() == roleFree && now-r.freeSince.Load() >= d
}

// callerWaiting and callerDone count a synchronous caller from before its request leaves
// until it reads for itself or has its reply.
func (r *readRole) callerWaiting()       { r.callers.Add(1) }
func (r *readRole) callerDone()          { r.callers.Add(-1) }
func (r *readRole) callersWaiting() bool { return r.callers.Load() > 0 }
