package dist

import (
	"context"
	"errors"
	"fmt"
)

// Range is the half-open range of integers [Lo, Hi): one worker's share of a distributed loop.
// It is what the body of Reduce and For receives.
type Range struct {
	_  struct{} `cbor:",toarray"`
	Lo int
	Hi int
}

// Len returns the number of integers in r (0 when Hi <= Lo).
func (r Range) Len() int { return max(r.Hi-r.Lo, 0) }

// String formats r as [Lo, Hi).
func (r Range) String() string { return fmt.Sprintf("[%d, %d)", r.Lo, r.Hi) }

// Chunks splits [lo, hi) into min(k, hi-lo) contiguous, non-empty ranges that cover it in
// order, whose lengths differ by at most one, the longer ones first (Julia's splitrange, which
// @distributed uses). It returns nil when hi <= lo, and panics when k < 1. hi-lo must fit in an
// int.
func Chunks(lo, hi, k int) []Range {
	if k < 1 {
		panic(fmt.Sprintf("dist: Chunks into %d parts", k))
	}
	n := hi - lo
	if n <= 0 {
		return nil
	}
	k = min(k, n)
	each, extra := n/k, n%k
	out := make([]Range, k)
	for i := range out {
		size := each
		if i < extra {
			size++
		}
		out[i] = Range{Lo: lo, Hi: lo + size}
		lo += size
	}
	return out
}

// ErrEmptyRange is matched by the error of Reduce over a range with no integers: there is no
// partial result to return, and combine has no identity element to fall back on.
var ErrEmptyRange = errors.New("dist: reduce over an empty range")

// LoopOption configures Reduce and For.
type LoopOption func(*loopConfig)

type loopConfig struct {
	pids []int
}

// OnProcs makes a loop run on pids, one chunk each in this order, instead of on all workers
// (c.Workers(), ascending). A pid may appear more than once to give it several chunks.
func OnProcs(pids ...int) LoopOption {
	return func(cfg *loopConfig) { cfg.pids = append([]int(nil), pids...) }
}

// Reduce is Julia's `@distributed (combine) for i = lo:hi-1 ... end`. It splits [lo, hi) with
// Chunks into one contiguous chunk per worker (see OnProcs), runs body on each worker over its
// chunk, and folds the partial results on the caller with combine, left to right in chunk
// order, which is the order of the processes (ascending pids by default):
// combine(combine(p₁, p₂), p₃)… So the reduction happens
// twice, as in Julia: in the body, by user code on the worker, over its chunk (the iterations
// never cross the wire), and then on the caller over one value per worker. combine need not
// be commutative, but should be associative for the result not to depend on the number of
// workers; it must not be nil.
//
// When a worker exits before its chunk is done, the chunk runs again on a surviving process of
// the loop, so body should be a function of its Range alone (e.g. seed random numbers from it).
// Any other failure of a chunk cancels the others, and Reduce returns that first failure
// (a *RemoteError for an error or panic of body), naming the chunk and its process. Cancelling
// ctx cancels every chunk. A range with no integers fails with ErrEmptyRange.
func Reduce[T any](ctx context.Context, c *Cluster, lo, hi int, body *Func[Range, T], combine func(T, T) T, opts ...LoopOption) (T, error) {
	var zero T
	if hi <= lo {
		return zero, fmt.Errorf("dist: Reduce over [%d, %d): %w", lo, hi, ErrEmptyRange)
	}
	parts, err := runChunks(ctx, c, lo, hi, body, opts)
	if err != nil {
		return zero, err
	}
	acc := parts[0]
	for _, p := range parts[1:] {
		acc = combine(acc, p)
	}
	return acc, nil
}

// For is Julia's `@distributed for i = lo:hi-1 ... end` without a reducer: it starts body on
// each worker over its chunk of [lo, hi), split as in Reduce, and returns at once. The
// returned Future is owned by the caller and becomes ready when every chunk is done; its
// Wait returns the first failure, as Reduce does (and a worker's exit reruns its chunk
// elsewhere, as in Reduce). An empty range does nothing and succeeds. Cancelling ctx cancels
// the loop.
func For(ctx context.Context, c *Cluster, lo, hi int, body *Func[Range, struct{}], opts ...LoopOption) *Future[struct{}] {
	if c == nil {
		return failedFuture[struct{}](c, 0, errors.New("dist: For on a nil cluster"))
	}
	fut, set := newLocalFuture[struct{}](c)
	if hi <= lo {
		set(struct{}{}, nil)
		return fut
	}
	go func() {
		_, err := runChunks(ctx, c, lo, hi, body, opts)
		set(struct{}{}, err)
	}()
	return fut
}

// chunkResult is the outcome of one attempt at one chunk.
type chunkResult[T any] struct {
	i   int
	pid int
	out T
	err error
}

// runChunks runs body over the chunks of [lo, hi) (not empty), one per process of the loop,
// and returns the results in chunk order.
func runChunks[T any](ctx context.Context, c *Cluster, lo, hi int, body *Func[Range, T], opts []LoopOption) ([]T, error) {
	if c == nil {
		return nil, errors.New("dist: distributed loop on a nil cluster")
	}
	var cfg loopConfig
	for _, o := range opts {
		o(&cfg)
	}
	pids := cfg.pids
	if len(pids) == 0 {
		pids = c.Workers()
	}
	chunks := Chunks(lo, hi, len(pids))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Buffered for every attempt that can be outstanding at once (one per chunk), so that the
	// goroutines of chunks still running when we return early never block.
	results := make(chan chunkResult[T], len(chunks))
	load := make(map[int]int, len(pids)) // chunks in flight per pid, to spread reruns
	start := func(i, pid int) {
		load[pid]++
		go func() {
			out, err := body.Call(ctx, c, pid, chunks[i])
			results <- chunkResult[T]{i: i, pid: pid, out: out, err: err}
		}()
	}
	for i := range chunks {
		start(i, pids[i])
	}
	outs := make([]T, len(chunks))
	var first error
	// Each rerun follows the loss of a process, so a rerun budget of one per process of the
	// loop is only exceeded when processes keep dying; then the loop fails rather than chase them.
	reruns := len(pids)
	for pending := len(chunks); pending > 0; {
		r := <-results
		load[r.pid]--
		if r.err == nil {
			outs[r.i] = r.out
			pending--
			continue
		}
		if first == nil && ctx.Err() == nil && exitedWhileRunning(r.err, r.pid) && reruns > 0 {
			if alt, ok := leastLoaded(c, pids, load); ok {
				reruns--
				start(r.i, alt)
				continue
			}
		}
		pending--
		if first == nil {
			first = fmt.Errorf("dist: chunk %v of [%d, %d) on process %d: %w", chunks[r.i], lo, hi, r.pid, r.err)
			cancel() // the loop has failed: stop the other chunks' work
		}
	}
	if first != nil {
		return nil, first
	}
	return outs, nil
}

// exitedWhileRunning reports whether err says that process pid itself exited, as opposed to
// a failure reported by a live pid (a *RemoteError, even one caused by another process's exit).
func exitedWhileRunning(err error, pid int) bool {
	if _, remote := err.(*RemoteError); remote {
		return false
	}
	var pe *ProcessExitedError
	return errors.As(err, &pe) && pe.Pid == pid
}

// leastLoaded picks the live process of pids with the fewest chunks in flight, the first in
// pids on a tie.
func leastLoaded(c *Cluster, pids []int, load map[int]int) (int, bool) {
	best, found := 0, false
	for _, p := range pids {
		if !procLive(c, p) {
			continue
		}
		if !found || load[p] < load[best] {
			best, found = p, true
		}
	}
	return best, found
}

// procLive reports whether pid is this process or a live member of the cluster.
func procLive(c *Cluster, pid int) bool {
	if pid == c.MyID() {
		return true
	}
	_, ok := c.ProcInfo(pid)
	return ok
}
