package dist

import (
	"context"
	"errors"
	"fmt"
)

// Topology says which pairs of workers may connect to each other (Julia's topology keyword).
// The driver is connected to every worker whatever the topology. Connections between workers
// are made lazily, on the first call between them, and only where the topology allows; a call
// it does not allow fails at once with an error wrapping ErrTopology. The zero Topology is
// AllToAll.
//
// A topology constrains everything that crosses between workers: calls, and also the
// futures and remote channels a worker hands to another, which the receiver reaches at their
// owner. Under MasterWorker, pass values between workers through the driver.
type Topology struct {
	name  string
	allow func(a, b ProcInfo) bool // nil: every pair
}

// AllToAll lets every worker connect to every other (the default).
func AllToAll() Topology { return Topology{name: "all-to-all"} }

// MasterWorker connects workers to the driver only: calls from one worker to another fail
// with ErrTopology. It needs one connection per worker instead of up to n², and no port open
// between workers.
func MasterWorker() Topology {
	return Topology{name: "master-worker", allow: func(a, b ProcInfo) bool { return false }}
}

// CustomTopology lets workers a and b connect when allow(a, b) is true (Julia's :custom, with a
// function instead of idents). allow runs in the driver, once per pair as workers join, with
// a.Pid < b.Pid, and sees what the driver knows of each (host, address, OS pid): "workers on
// the same host" or "each worker with its neighbours" are one line. name appears in errors.
func CustomTopology(name string, allow func(a, b ProcInfo) bool) Topology {
	if name == "" {
		name = "custom"
	}
	return Topology{name: name, allow: allow}
}

// String returns the topology's name.
func (t Topology) String() string {
	if t.name == "" {
		return "all-to-all"
	}
	return t.name
}

// WithTopology sets which workers may connect to each other (default AllToAll). Only Start
// takes it: the topology is the cluster's.
func WithTopology(t Topology) Option { return func(c *config) { c.topology = t } }

// ErrTopology is wrapped by the error of a call between two workers that the cluster's
// topology does not connect.
var ErrTopology = errors.New("dist: the cluster's topology does not connect these processes")

// linked (driver) reports whether workers a and b may connect.
func (c *Cluster) linked(a, b peerInfo) bool {
	allow := c.cfg.topology.allow
	if allow == nil || a.Pid <= 1 || b.Pid <= 1 || a.Pid == b.Pid {
		return true
	}
	if a.Pid > b.Pid {
		a, b = b, a
	}
	ok := false
	func() {
		defer func() {
			if r := recover(); r != nil {
				c.log.Error("topology function panicked; the pair is not connected", "a", a.Pid, "b", b.Pid, "panic", r)
			}
		}()
		ok = allow(a.procInfo(), b.procInfo())
	}()
	return ok
}

func (i peerInfo) procInfo() ProcInfo {
	return ProcInfo{Pid: i.Pid, Host: i.Host, OSPid: i.OSPid, Network: i.Network, Addr: i.Addr}
}

// infoFor (driver) returns what process to should be told of peer: its info, marked when the
// two may not connect.
func (c *Cluster) infoFor(to, peer peerInfo) peerInfo {
	peer.NoLink = !c.linked(to, peer)
	return peer
}

// allToAll reports whether every pair of workers may connect, as a tree call needs.
func (c *Cluster) allToAll() bool {
	if c.driver {
		return c.cfg.topology.allow == nil
	}
	return c.topoName == "" || c.topoName == AllToAll().String()
}

// topologyError is the error of a call from this worker to pid that the topology forbids.
func (c *Cluster) topologyError(pid int) error {
	return fmt.Errorf("%w: process %d may not connect to process %d (topology %s)", ErrTopology, c.MyID(), pid, c.topoName)
}

// fnLookupFor answers a worker's question about another process with what that worker
// should know of it, its link included.
const fnLookupFor = "_dist.lookup.for"

func init() {
	builtin(fnLookupFor, func(ctx context.Context, c *Cluster, pid int) (peerInfo, error) {
		from := CallerPid(ctx)
		c.memberMsgs.Add(1)
		c.mu.Lock()
		p, q := c.peers[pid], c.peers[from]
		c.mu.Unlock()
		if p == nil {
			return peerInfo{}, c.missing(pid)
		}
		p.mu.Lock()
		info, gone := p.info, p.gone
		p.mu.Unlock()
		if gone != nil {
			return peerInfo{}, gone
		}
		self := peerInfo{Pid: from}
		if q != nil {
			q.mu.Lock()
			self = q.info
			q.mu.Unlock()
		}
		return c.infoFor(self, info), nil
	})
}
