package shm

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/godist/dist"
)

// Select chooses which hosts DescribePids describes, relative to the caller's host.
type Select int

const (
	// Remote selects the hosts other than the caller's (ClusterUtils' default, remote=0).
	Remote Select = iota
	// Local selects the caller's host only (remote=1).
	Local
	// All selects every host (remote=2).
	All
)

// Query says which processes DescribePids describes. The zero value describes every process of
// the cluster on hosts other than the caller's.
type Query struct {
	Pids       []int             // processes to consider; nil means c.Procs()
	Select     Select            // which hosts, relative to the caller's
	HostFilter func(string) bool // if set, only hosts whose name it accepts
}

// Topology maps the lowest pid of each host (its representative) to every considered pid on
// that host, sorted (ClusterUtils' describepids).
type Topology map[int][]int

// Reps returns the representatives, sorted.
func (t Topology) Reps() []int { return slices.Sorted(maps.Keys(t)) }

// hostFunc answers with this process's hostname.
var hostFunc = dist.NewFunc("godist.shm.host", func(ctx context.Context, _ struct{}) (string, error) {
	h, _ := hostID()
	return h, nil
})

// hostCache remembers hostnames asked of processes that the cluster's own membership records
// do not name (the driver, as seen from a worker), by cluster and pid: pids are never reused
// within a cluster. A cluster's entry is dropped when it closes, so that the cache keeps no
// closed cluster alive.
var hostCache = struct {
	sync.Mutex
	m map[*dist.Cluster]map[int]string
}{m: make(map[*dist.Cluster]map[int]string)}

// cachedHost returns the remembered hostname of pid in c.
func cachedHost(c *dist.Cluster, pid int) (string, bool) {
	hostCache.Lock()
	defer hostCache.Unlock()
	h, ok := hostCache.m[c][pid]
	return h, ok
}

// rememberHost remembers that pid of c runs on host, until c closes.
func rememberHost(c *dist.Cluster, pid int, host string) {
	hostCache.Lock()
	defer hostCache.Unlock()
	select {
	case <-c.Done():
		return // the entry would never be dropped
	default:
	}
	m := hostCache.m[c]
	if m == nil {
		m = make(map[int]string)
		hostCache.m[c] = m
		go func() {
			<-c.Done()
			hostCache.Lock()
			delete(hostCache.m, c)
			hostCache.Unlock()
		}()
	}
	m[pid] = host
}

// Hosts returns the hostname of each of pids (default: every process of c), concurrently asking
// the processes whose host the cluster's membership does not record (answers are remembered:
// pids are never reused). If some cannot be asked, the error names
// the first that failed and the map holds the others.
func Hosts(ctx context.Context, c *dist.Cluster, pids ...int) (map[int]string, error) {
	if len(pids) == 0 {
		pids = c.Procs()
	}
	out := make(map[int]string, len(pids))
	type res struct {
		pid  int
		host string
		err  error
	}
	var ask []int
	for _, p := range pids {
		if p == c.MyID() {
			out[p], _ = hostID()
			continue
		}
		if info, ok := c.ProcInfo(p); ok && info.Host != "" {
			out[p] = info.Host
			continue
		}
		if h, ok := cachedHost(c, p); ok {
			out[p] = h
			continue
		}
		ask = append(ask, p)
	}
	ch := make(chan res, len(ask))
	for _, p := range ask {
		go func() {
			h, err := hostFunc.Call(ctx, c, p, struct{}{})
			ch <- res{p, h, err}
		}()
	}
	var first error
	for range ask {
		r := <-ch
		if r.err != nil {
			if first == nil {
				first = fmt.Errorf("shm: hostname of process %d: %w", r.pid, r.err)
			}
			continue
		}
		rememberHost(c, r.pid, r.host)
		out[r.pid] = r.host
	}
	return out, first
}

// DescribePids groups the processes of q by host: the lowest pid of each selected host maps to
// all of the considered pids on it (ClusterUtils' describepids).
func DescribePids(ctx context.Context, c *dist.Cluster, q Query) (Topology, error) {
	if c == nil {
		return nil, fmt.Errorf("shm: DescribePids: nil cluster")
	}
	hosts, err := Hosts(ctx, c, q.Pids...)
	if err != nil {
		return nil, err
	}
	me, _ := hostID()
	byHost := make(map[string][]int)
	for p, h := range hosts {
		switch {
		case q.Select == Remote && h == me, q.Select == Local && h != me:
			continue
		case q.HostFilter != nil && !q.HostFilter(h):
			continue
		}
		byHost[h] = append(byHost[h], p)
	}
	t := make(Topology, len(byHost))
	for _, ps := range byHost {
		slices.Sort(ps)
		t[ps[0]] = ps
	}
	return t, nil
}

// LocalPids returns the pids of every process on the caller's host, the caller included, sorted.
func LocalPids(ctx context.Context, c *dist.Cluster) ([]int, error) {
	t, err := DescribePids(ctx, c, Query{Select: Local})
	if err != nil {
		return nil, err
	}
	for _, ps := range t {
		return ps, nil
	}
	return []int{c.MyID()}, nil
}

// InvTopology inverts t: each pid maps to its host's representative.
func InvTopology(t Topology) map[int]int {
	out := make(map[int]int)
	for rep, ps := range t {
		for _, p := range ps {
			out[p] = rep
		}
	}
	return out
}

// Chunk splits [0, n) into k contiguous ranges in order whose lengths differ by at most one (the
// first n%k are one longer). k < 1 is taken as 1; when k > n the last ones are empty.
func Chunk(n, k int) []Range {
	if k < 1 {
		k = 1
	}
	if n < 0 {
		n = 0
	}
	out := make([]Range, k)
	q, r := n/k, n%k
	lo := 0
	for i := range out {
		l := q
		if i < r {
			l++
		}
		out[i] = Range{lo, lo + l}
		lo += l
	}
	return out
}
