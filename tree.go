package dist

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// A call to many processes (Func.On, Everywhere) travels over a tree of them: the caller sends
// the call to a few processes, each runs it and forwards it to a few more, and each combines
// its subtree's results into one reply. The caller then sends and receives treeFanout
// messages instead of one per process, and the fan-out work is spread over the tree. A
// process that fails to forward to a child (the child died) covers that child's subtree
// itself, so one dead process costs the results of that process only.

const (
	// treeFanout is how many children each process of the tree forwards to.
	treeFanout = 32
	// treeMin is the number of processes from which a call goes over a tree; below it, the
	// caller calls each directly, which is as fast and keeps each result's own error.
	treeMin = 24
)

// treeReq is a call to run here and to forward to Pids.
type treeReq struct {
	_       struct{} `cbor:",toarray"`
	ID      uint64   // the same for every process of one tree call
	Call    []byte   // the call as one process would get it: call header, then the argument
	RawKind wire.RawKind
	Raw     []byte // the argument's raw part
	Pids    []int  // the processes below this one in the tree
	// Where each of Pids listens, when the caller knew (the driver does): a process that
	// forwards to one it has not called yet then needs not ask the driver first.
	Addrs []peerInfo
}

// treeResult is one process's result, as its reply frame would have carried it.
type treeResult struct {
	_       struct{} `cbor:",toarray"`
	Pid     int
	Failed  bool   // CBOR is an errRecord
	Exited  string // the process could not be reached: why (Failed is false)
	CBOR    []byte
	RawKind wire.RawKind
	Raw     []byte
}

// treeReply is the results of a subtree.
type treeReply struct {
	_       struct{} `cbor:",toarray"`
	Results []treeResult
}

// treeSafe reports whether values of t may be encoded once and delivered to many processes.
// A value holding references (futures, channels, shared arrays and values) must not: encoding
// a reference hands it a share of its weight, once per receiver. Such types marshal
// themselves, as does anything the check cannot see into (interfaces), so only plain data
// qualifies.
func treeSafe(t reflect.Type) bool {
	if v, ok := treeSafeTypes.Load(t); ok {
		return v.(bool)
	}
	ok := plainType(t, make(map[reflect.Type]bool))
	treeSafeTypes.Store(t, ok)
	return ok
}

var treeSafeTypes sync.Map // reflect.Type → bool

var (
	cborMarshaler   = reflect.TypeFor[cbor.Marshaler]()
	binaryMarshaler = reflect.TypeFor[encoding.BinaryMarshaler]()
	textMarshaler   = reflect.TypeFor[encoding.TextMarshaler]()
)

func plainType(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return true // recursive: judged where it started
	}
	seen[t] = true
	for _, m := range []reflect.Type{cborMarshaler, binaryMarshaler, textMarshaler} {
		if t.Implements(m) || reflect.PointerTo(t).Implements(m) {
			return false
		}
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return true
	case reflect.Slice, reflect.Array, reflect.Pointer:
		return plainType(t.Elem(), seen)
	case reflect.Map:
		return plainType(t.Key(), seen) && plainType(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if !plainType(t.Field(i).Type, seen) {
				return false
			}
		}
		return true
	}
	return false
}

// callTree runs the call fn(arg) on every one of pids, over a tree, and returns each
// process's reply frame (kind reply or error) or the error of reaching it. pids must not
// hold this process's pid.
func (c *Cluster) callTree(ctx context.Context, fn string, arg any, pids []int) (map[int]*wire.Frame, map[int]error, error) {
	m, err := c.encodeCall(ctx, callHeader{Fn: fn}, arg)
	if err != nil {
		return nil, nil, err
	}
	id := uint64(c.MyID())<<40 | c.treeSeq.Add(1)&(1<<40-1)
	req := treeReq{ID: id, Call: m.CBOR, RawKind: m.RawKind, Raw: m.Raw, Pids: pids}
	if c.driver {
		req.Addrs = c.peerInfos(pids)
	}
	results := c.forwardTree(ctx, req)
	frames := make(map[int]*wire.Frame, len(results))
	errs := make(map[int]error)
	for i := range results {
		r := &results[i]
		if r.Exited != "" {
			errs[r.Pid] = &ProcessExitedError{Pid: r.Pid, Cause: errors.New(r.Exited)}
			continue
		}
		frames[r.Pid] = r.frame()
	}
	for _, pid := range pids {
		if _, ok := frames[pid]; !ok && errs[pid] == nil {
			errs[pid] = &ProcessExitedError{Pid: pid, Cause: errors.New("no result came back through the tree")}
		}
	}
	return frames, errs, nil
}

// frame rebuilds the reply frame a direct call would have received.
func (r *treeResult) frame() *wire.Frame {
	fr := &wire.Frame{Header: wire.Header{Kind: wire.KindReply}, CBOR: r.CBOR}
	if r.Failed {
		fr.Kind = wire.KindError
	}
	if r.RawKind != wire.RawNone && r.RawKind.Size() > 0 {
		raw, b := wire.MakeRaw(r.RawKind, len(r.Raw)/r.RawKind.Size())
		copy(b, r.Raw)
		fr.Raw = raw
	}
	return fr
}

// peerInfos (driver) returns where each of pids listens; a pid it does not know gets only
// its pid.
func (c *Cluster) peerInfos(pids []int) []peerInfo {
	infos := make([]peerInfo, len(pids))
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, pid := range pids {
		infos[i].Pid = pid
		if p := c.peers[pid]; p != nil {
			p.mu.Lock()
			infos[i] = p.info
			p.mu.Unlock()
		}
	}
	return infos
}

// forwardTree sends req to the subtrees of req.Pids and gathers their results. A child that
// cannot be reached is reported exited, and its subtree is covered from here.
func (c *Cluster) forwardTree(ctx context.Context, req treeReq) []treeResult {
	if len(req.Pids) == 0 {
		return nil
	}
	if len(req.Addrs) != len(req.Pids) {
		req.Addrs = nil
	}
	chunks := splitTree(len(req.Pids))
	out := make([][]treeResult, len(chunks))
	var wg sync.WaitGroup
	for i, chunk := range chunks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := req
			child := req.Pids[chunk.lo]
			sub.Pids = req.Pids[chunk.lo+1 : chunk.hi]
			if req.Addrs != nil {
				c.learnPeer(req.Addrs[chunk.lo])
				sub.Addrs = req.Addrs[chunk.lo+1 : chunk.hi]
			}
			fr, err := c.call(ctx, child, callHeader{Fn: fnTree}, sub)
			if err == nil {
				var rep treeReply
				if rep, err = decodeReply[treeReply](fnTree, fr); err == nil {
					out[i] = rep.Results
					return
				}
			}
			why := err.Error()
			var pe *ProcessExitedError
			if errors.As(err, &pe) && pe.Cause != nil {
				why = pe.Cause.Error()
			}
			out[i] = append([]treeResult{{Pid: child, Exited: why}}, c.forwardTree(ctx, sub)...)
		}()
	}
	wg.Wait()
	return slices.Concat(out...)
}

// span is a run of a list, [lo, hi).
type span struct{ lo, hi int }

// splitTree cuts a list of n pids into at most treeFanout runs of nearly equal length; the
// first pid of each run is the child that covers the rest of it.
func splitTree(n int) []span {
	k := min(treeFanout, n)
	spans := make([]span, 0, k)
	for i := range k {
		spans = append(spans, span{i * n / k, (i + 1) * n / k})
	}
	return spans
}

// learnPeer (worker) records where a peer listens, as a tree call told it, unless this
// worker already knows (the driver's answer to a lookup says more: whether the topology
// links the two).
func (c *Cluster) learnPeer(info peerInfo) {
	if c.driver || info.Addr == "" {
		return
	}
	c.mu.Lock()
	p := c.peers[info.Pid]
	c.mu.Unlock()
	if p == nil || p.unresolved() {
		c.rememberPeer(info)
	}
}

// serveTree (the handler of fnTree) runs the call here while forwarding it below.
func (c *Cluster) serveTree(ctx context.Context, req treeReq) (treeReply, error) {
	h, arg, err := parseCallHeader(req.Call)
	if err != nil {
		return treeReply{}, fmt.Errorf("%w: tree call: %v", ErrTypeMismatch, err)
	}
	if h.Fn == fnTree {
		return treeReply{}, fmt.Errorf("%w: a tree call may not nest another", ErrTypeMismatch)
	}
	var below []treeResult
	done := make(chan struct{})
	if len(req.Pids) > 0 {
		wire.WillBlock(ctx) // a subtree may take long: let another goroutine read meanwhile
		go func() {
			defer close(done)
			below = c.forwardTree(ctx, req)
		}()
	} else {
		close(done)
	}
	own := c.trees.once(req.ID, func() treeResult { return c.runTreeCall(ctx, h.Fn, req, arg) })
	<-done
	return treeReply{Results: append([]treeResult{own}, below...)}, nil
}

// runTreeCall runs this process's part of a tree call.
func (c *Cluster) runTreeCall(ctx context.Context, fn string, req treeReq, arg []byte) treeResult {
	own := treeResult{Pid: c.MyID()}
	fr := &wire.Frame{}
	if req.RawKind != wire.RawNone && req.RawKind.Size() > 0 {
		raw, b := wire.MakeRaw(req.RawKind, len(req.Raw)/req.RawKind.Size())
		copy(b, req.Raw)
		fr.Raw = raw
	}
	res, err := c.runHandler(ctx, fn, fr, arg)
	if err != nil {
		rec, merr := codec.Marshal(recordOf(c.MyID(), fn, err))
		if merr != nil {
			rec, _ = codec.Marshal(&errRecord{Pid: c.MyID(), Func: fn, Msg: err.Error()})
		}
		own.Failed, own.CBOR = true, rec
	} else {
		own.CBOR, own.RawKind, own.Raw = res.CBOR, res.RawKind, res.Raw
	}
	return own
}

// treeRuns remembers this process's results of its last few tree calls. When a process of
// the tree dies, its parent covers its subtree again, and the processes below, which may
// have run the call already (their replies went to the dead one), answer with that result
// instead of running the function a second time.
type treeRuns struct {
	mu    sync.Mutex
	runs  map[uint64]*treeRun
	order []uint64 // oldest first
}

type treeRun struct {
	done chan struct{}
	res  treeResult
}

// treeRunsKept bounds the results kept: a subtree is covered again within the same call,
// while the results of calls long finished are of no use.
const treeRunsKept = 32

// once runs fn for id unless it ran or runs already, and returns its result.
func (t *treeRuns) once(id uint64, fn func() treeResult) treeResult {
	t.mu.Lock()
	if r := t.runs[id]; r != nil {
		t.mu.Unlock()
		<-r.done
		return r.res
	}
	if t.runs == nil {
		t.runs = make(map[uint64]*treeRun)
	}
	r := &treeRun{done: make(chan struct{})}
	t.runs[id] = r
	t.order = append(t.order, id)
	if len(t.order) > treeRunsKept {
		delete(t.runs, t.order[0])
		t.order = t.order[1:]
	}
	t.mu.Unlock()
	r.res = fn()
	close(r.done)
	return r.res
}
