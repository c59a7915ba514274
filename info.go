package dist

import "runtime"

// ProcInfo describes a process of the cluster as this process knows it.
type ProcInfo struct {
	Pid     int
	Host    string // hostname of the machine it runs on
	OSPid   int    // its operating-system process id
	Network string // "unix" or "tcp"
	Addr    string // where it accepts connections
}

// ProcInfo returns what this process knows about pid, and whether pid is a live member. A
// worker learns a peer's address and host only when it first calls it, so for a live peer it
// has not called yet only Pid is set.
func (c *Cluster) ProcInfo(pid int) (ProcInfo, bool) {
	c.mu.Lock()
	p := c.peers[pid]
	c.mu.Unlock()
	if p == nil {
		if c.driver || !c.isMember(pid) {
			return ProcInfo{}, false
		}
		return ProcInfo{Pid: pid}, true
	}
	p.mu.Lock()
	i, gone := p.info, p.gone
	p.mu.Unlock()
	if gone != nil {
		return ProcInfo{}, false
	}
	return ProcInfo{Pid: pid, Host: i.Host, OSPid: i.OSPid, Network: i.Network, Addr: i.Addr}, true
}

// Stats are counters of this process's share of the cluster, for tests and dashboards.
type Stats struct {
	Pid        int // this process
	Refs       int // values (futures' results, channels) this process keeps for references
	Conns      int // open connections
	ShmOut     int // of which send large numeric slices through shared memory (see below)
	ShmIn      int // of which receive them that way
	Goroutines int
	HeapAlloc  uint64 // bytes of live heap, as of the call (no GC is forced)
	// MemberMsgs counts the messages this process sent or answered to keep the membership:
	// in the driver, one join per worker, the lists pushed to workers that follow the
	// membership, and the answers to workers asking where a peer listens, whether one is
	// alive, or to follow. Starting or stopping N workers costs O(N) of them, not O(N²).
	MemberMsgs int64
}

// Stats returns this process's counters.
//
// Between two processes of one host, a numeric slice of 1 MiB or more crosses through a
// shared-memory ring rather than the socket, once the connection has set one up: the first
// such slice in each direction still goes through the socket and offers the ring. ShmOut and
// ShmIn count the connections where that is done; a peer that cannot map the ring (another
// user, restricted /proc) leaves the socket in use.
func (c *Cluster) Stats() Stats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := Stats{Pid: c.MyID(), Refs: c.refs.Len(), Goroutines: runtime.NumGoroutine(), HeapAlloc: ms.HeapAlloc, MemberMsgs: c.memberMsgs.Load()}
	c.mu.Lock()
	s.Conns = len(c.conns)
	for cn := range c.conns {
		out, in := cn.Rings()
		if out {
			s.ShmOut++
		}
		if in {
			s.ShmIn++
		}
	}
	c.mu.Unlock()
	return s
}
