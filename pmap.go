package dist

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// PmapOption configures Pmap.
type PmapOption func(*pmapConfig)

type pmapConfig struct {
	pool     *WorkerPool
	batch    int
	retries  int
	delays   func(attempt int) time.Duration
	retryIf  func(error) bool
	onError  any
	local    bool
	progress io.Writer
	stats    *PmapStats
}

// WithPool makes Pmap run on the workers of p instead of the cluster's default pool. Pmap
// takes workers from p as they become free and gives each back when it has no more work for
// it, so Pmaps and Remote calls sharing a pool share its workers.
func WithPool(p *WorkerPool) PmapOption { return func(c *pmapConfig) { c.pool = p } }

// WithBatchSize makes Pmap send exactly n items per call to a worker (the last batches may be
// smaller). n ≤ 0 restores automatic batching, the default; see Pmap.
func WithBatchSize(n int) PmapOption { return func(c *pmapConfig) { c.batch = max(n, 0) } }

// WithRetry makes Pmap run an item again, up to n more times, when it fails. Before retry
// number a (1, 2, …) it waits delays(a); a nil delays retries at once. Only errors for which
// retryIf returns true are retried; a nil retryIf retries every error. The wait does not hold
// a worker. An item whose worker exits while running it is run again elsewhere without counting
// as a retry.
func WithRetry(n int, delays func(attempt int) time.Duration, retryIf func(error) bool) PmapOption {
	return func(c *pmapConfig) { c.retries, c.delays, c.retryIf = max(n, 0), delays, retryIf }
}

// ExponentialBackoff returns delays for WithRetry: first, then doubling, never above limit.
func ExponentialBackoff(first, limit time.Duration) func(attempt int) time.Duration {
	return func(attempt int) time.Duration {
		d := first
		for i := 1; i < attempt && d < limit; i++ {
			d *= 2
		}
		return min(d, limit)
	}
}

// WithOnError makes Pmap turn an item that failed for good (after any retries) into a value:
// fn gets the item and its error and returns the value to put in the result, or an error that
// fails the whole Pmap. In and Out must be those of the Pmap; otherwise Pmap fails at once.
// fn runs in the calling process, possibly on several goroutines at a time.
func WithOnError[In, Out any](fn func(item In, err error) (Out, error)) PmapOption {
	return func(c *pmapConfig) { c.onError = fn }
}

// WithLocal makes Pmap run f on goroutines of this process (GOMAXPROCS of them) instead of on
// workers, without encoding items; c may then be nil. Useful to debug, and to compare.
func WithLocal() PmapOption { return func(c *pmapConfig) { c.local = true } }

// WithProgress makes Pmap report its progress on w. When w is a terminal, it draws a bar for
// the total and one per worker (items each has done) while Pmap runs; otherwise (a file, a
// pipe, a buffer) it writes one summary line when Pmap returns, so logs stay readable.
func WithProgress(w io.Writer) PmapOption { return func(c *pmapConfig) { c.progress = w } }

// WithStats makes Pmap fill s with how the run went when it returns, successful or not.
func WithStats(s *PmapStats) PmapOption { return func(c *pmapConfig) { c.stats = s } }

// PmapStats describes one run of Pmap.
type PmapStats struct {
	Items    int           // items in the input
	Calls    int           // calls made to workers (batches sent)
	MaxBatch int           // items in the largest batch sent
	Retries  int           // runs of items repeated after an error (WithRetry)
	Requeued int           // items run again because their worker exited before answering
	ByWorker map[int]int   // items whose result came from each pid (this process's for local work)
	Elapsed  time.Duration // from the call of Pmap to its return
}

// Pmap applies f to every item of in, on the workers of a pool (by default c.DefaultPool(),
// which is this process alone while c has no workers), and returns the results in the order of
// in: Julia's pmap. Items are handed out dynamically, so a fast worker does more of them than
// a slow one, and workers added to the pool while Pmap runs start taking items.
//
// On each worker, the items of one Pmap run one at a time, as in Julia. Small items travel in
// batches, so that the cost of a call is shared by many items. By default the batch size is
// automatic: the first batch holds one item; from then on batches are sized to take about
// 25 ms on a worker, using the execution time per item measured so far (a call costs the
// driver ~0.2 ms of CPU on a small virtual machine, mostly waking threads: ~1% of 25 ms), but
// never more than 8 times the largest batch already answered (so a wrong early estimate
// costs little), never more than a quarter of a worker's fair share of the items still
// queued (so the end of the run stays balanced), and never more than 4 MiB of encoded items
// or 16 MiB of expected results. Two batches or more are in flight to each worker, so that
// it never waits for the next one; but batches of 50 ms or more go one at a time, so that no
// item waits in a busy worker's queue while another worker is free.
//
// When a worker exits during a Pmap, the items it had not answered for run on the others, and
// the result is complete: every item has exactly one result, never none nor two (Julia's pmap
// can lose or repeat them, julia#44465); an item may have run twice if its worker died after
// running it and before answering. An item in flight on three workers
// that all exited fails with their last ProcessExitedError. When every worker of the pool is
// gone, Pmap fails with an error matching ErrNoWorkers.
//
// Without WithOnError, the first item that fails for good fails the Pmap: the calls in flight
// are cancelled and the error (a *RemoteError for a failure of f) is returned, wrapped with
// the item's index. Cancelling ctx cancels the calls in flight and makes Pmap return promptly
// with ctx's error. On error, the result is nil.
func Pmap[In, Out any](ctx context.Context, c *Cluster, f *Func[In, Out], in []In, opts ...PmapOption) ([]Out, error) {
	start := time.Now()
	var cfg pmapConfig
	for _, o := range opts {
		o(&cfg)
	}
	if f == nil {
		return nil, errors.New("dist: Pmap: nil function")
	}
	var onErr func(In, error) (Out, error)
	if cfg.onError != nil {
		fn, ok := cfg.onError.(func(In, error) (Out, error))
		if !ok {
			return nil, fmt.Errorf("dist: Pmap %s: WithOnError takes a %T, want a func(%T, error) (%T, error)", f.name, cfg.onError, *new(In), *new(Out))
		}
		onErr = fn
	}
	r := &pmapRun[In, Out]{c: c, f: f, in: in, cfg: cfg, onErr: onErr, me: myPid()}
	if c != nil {
		r.me = c.MyID()
	}
	pool := cfg.pool
	switch {
	case cfg.local:
		// Local slots are negative pseudo-pids in a private pool, so that local and remote
		// runs share one dispatcher.
		pool = newWorkerPool(nil)
		for i := range runtime.GOMAXPROCS(0) {
			pool.addUnchecked(-1 - i)
		}
	case c == nil:
		return nil, fmt.Errorf("dist: Pmap %s: nil cluster (use WithLocal to run without one)", f.name)
	case pool == nil:
		pool = c.DefaultPool()
	case pool.c != c:
		return nil, fmt.Errorf("dist: Pmap %s: the pool belongs to another cluster", f.name)
	}
	r.pool = pool
	err := r.run(ctx)
	if cfg.stats != nil {
		r.mu.Lock()
		*cfg.stats = r.stats
		r.mu.Unlock()
		cfg.stats.Items = len(in)
		cfg.stats.Elapsed = time.Since(start)
	}
	if err != nil {
		return nil, err
	}
	return r.out, nil
}

// Tuning of automatic batching; see Pmap's documentation.
const (
	pmapTargetBatch = 25 * time.Millisecond
	pmapMaxGrowth   = 8
	pmapShare       = 4
	pmapMaxBatch    = 1 << 16
	pmapMaxBatchIn  = 4 << 20
	pmapMaxBatchOut = 16 << 20
	pmapMaxDepth    = 8
	pmapSlowBatch   = 50 * time.Millisecond
	pmapMaxCrashes  = 3
)

// pmapSched decides which items go in the next batch and how many: the deterministic core of
// Pmap's dispatcher, without goroutines or IO. Its user serialises calls.
type pmapSched struct {
	n     int
	next  int   // items [next, n) have never been handed out
	redo  []int // items to hand out again, served first
	left  int   // items without a final result
	fixed int   // WithBatchSize; 0 for automatic

	itemNs float64 // execution time per item on a worker (moving average); 0 until measured
	overNs float64 // time per batch not spent executing: round trip and codec
	seen   int     // largest batch answered
	inB    float64 // encoded bytes per item
	outB   float64 // encoded bytes per result
}

func newPmapSched(n, fixed int) pmapSched { return pmapSched{n: n, left: n, fixed: fixed} }

func (s *pmapSched) queued() int { return len(s.redo) + s.n - s.next }

// size returns the number of items the next batch should hold, for a pool of workers.
func (s *pmapSched) size(workers int) int {
	q := s.queued()
	if q == 0 {
		return 0
	}
	if s.fixed > 0 {
		return min(s.fixed, q)
	}
	if s.itemNs <= 0 {
		return 1 // nothing measured yet: probe with one item
	}
	b := int(min(float64(pmapTargetBatch)/max(s.itemNs, 1), pmapMaxBatch))
	b = min(b, max(s.seen, 1)*pmapMaxGrowth)
	b = min(b, (q+pmapShare*max(workers, 1)-1)/(pmapShare*max(workers, 1)))
	if s.inB > 0 {
		b = min(b, int(min(pmapMaxBatchIn/s.inB, pmapMaxBatch)))
	}
	if s.outB > 0 {
		b = min(b, int(min(pmapMaxBatchOut/s.outB, pmapMaxBatch)))
	}
	return max(b, 1)
}

// depth returns how many batches of b items to keep in flight per worker. Two at least, so
// that a worker never waits for the driver between batches (on a busy machine the driver may
// be descheduled for milliseconds), more when batches are short next to the round trip; but
// one for slow batches, as Julia does: an item committed early to a busy worker is one that
// cannot go to a worker that frees up sooner.
func (s *pmapSched) depth(b int) int {
	if s.itemNs <= 0 || s.overNs <= 0 || b <= 0 {
		return 1
	}
	bd := float64(b) * s.itemNs
	if bd >= float64(pmapSlowBatch) && bd >= 50*s.overNs {
		return 1
	}
	return min(max(1+int(math.Ceil(1.5*s.overNs/bd)), 2), pmapMaxDepth)
}

// take hands out up to k items: those to run again first, then new ones in input order.
func (s *pmapSched) take(k int) []int {
	out := make([]int, 0, k)
	for len(out) < k && len(s.redo) > 0 {
		out = append(out, s.redo[0])
		s.redo = s.redo[1:]
	}
	for len(out) < k && s.next < s.n {
		out = append(out, s.next)
		s.next++
	}
	return out
}

// again queues item i to be handed out again.
func (s *pmapSched) again(i int) { s.redo = append(s.redo, i) }

// observe records a batch of items answered: exec is the time the worker spent running them,
// over the rest of the round trip, inBytes and outBytes the encoded sizes (0 if unknown).
func (s *pmapSched) observe(items int, exec, over time.Duration, inBytes, outBytes int) {
	if items <= 0 {
		return
	}
	avg := func(old, v float64) float64 {
		if old <= 0 {
			return v
		}
		return 0.7*old + 0.3*v
	}
	s.itemNs = avg(s.itemNs, max(float64(exec)/float64(items), 1))
	if over > 0 {
		s.overNs = avg(s.overNs, float64(over))
	}
	if inBytes > 0 {
		s.inB = avg(s.inB, float64(inBytes)/float64(items))
	}
	if outBytes > 0 {
		s.outB = avg(s.outB, float64(outBytes)/float64(items))
	}
	s.seen = max(s.seen, items)
}

// pmapRuns numbers runs, so that a worker can tell the batches of one Pmap from another's.
var pmapRuns atomic.Uint64

// pmapRun is one call of Pmap.
type pmapRun[In, Out any] struct {
	c     *Cluster
	f     *Func[In, Out]
	in    []In
	out   []Out
	cfg   pmapConfig
	onErr func(In, error) (Out, error)
	pool  *WorkerPool
	me    int
	id    uint64
	prog  *pmapProgress

	ctx    context.Context // ends with the run: stops the dispatcher and the calls in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	s        pmapSched
	done     []bool
	attempts map[int]int
	crashes  map[int]int
	feeders  int
	err      error // the first fatal error
	lastExit error
	timers   map[*time.Timer]struct{}
	changed  chan struct{} // closed when items are queued again, feeders end, or the run ends
	finished chan struct{} // closed once every item is done or err is set
	stats    PmapStats
}

func (r *pmapRun[In, Out]) run(ctx context.Context) error {
	n := len(r.in)
	r.out = make([]Out, n)
	r.done = make([]bool, n)
	r.s = newPmapSched(n, r.cfg.batch)
	r.attempts = make(map[int]int)
	r.crashes = make(map[int]int)
	r.timers = make(map[*time.Timer]struct{})
	r.changed = make(chan struct{})
	r.finished = make(chan struct{})
	r.stats.ByWorker = make(map[int]int)
	r.id = pmapRuns.Add(1)
	if r.cfg.progress != nil {
		r.prog = newPmapProgress(r.cfg.progress, r.f.name, n)
	}
	if n == 0 {
		r.finishProgress(nil)
		return nil
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	defer r.cancel()
	r.wg.Add(1)
	go r.dispatch()
	select {
	case <-r.finished:
	case <-ctx.Done():
	}
	r.mu.Lock()
	if r.err == nil && r.s.left > 0 {
		r.err = fmt.Errorf("dist: pmap %s: %w", r.f.name, context.Cause(ctx))
	}
	for t := range r.timers {
		t.Stop()
	}
	err := r.err
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.finishProgress(err)
	return err
}

func (r *pmapRun[In, Out]) finishProgress(err error) {
	if r.prog != nil {
		r.prog.finish(err)
	}
}

// changedLocked wakes everyone waiting for a change of the run's state.
func (r *pmapRun[In, Out]) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
	if r.err != nil || r.s.left == 0 {
		select {
		case <-r.finished:
		default:
			close(r.finished)
		}
	}
}

func (r *pmapRun[In, Out]) failLocked(err error) {
	if r.err == nil {
		r.err = err
		r.cancel() // stop the calls in flight now: the result is lost anyway
	}
	r.changedLocked()
}

// dispatch takes workers from the pool while items are queued and starts a feeder for each.
func (r *pmapRun[In, Out]) dispatch() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		for r.s.queued() == 0 && r.err == nil && r.s.left > 0 {
			ch := r.changed
			r.mu.Unlock()
			select {
			case <-ch:
			case <-r.ctx.Done():
				return
			}
			r.mu.Lock()
		}
		if r.err != nil || r.s.left == 0 {
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		pid, err := r.pool.Take(r.ctx)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			// The pool is empty. Feeders still running may requeue items, but nothing will
			// run them unless the pool grows.
			r.mu.Lock()
			if r.feeders == 0 {
				if r.lastExit != nil {
					err = fmt.Errorf("%w (the last worker: %w)", err, r.lastExit)
				}
				r.failLocked(fmt.Errorf("dist: pmap %s: %w", r.f.name, err))
				r.mu.Unlock()
				return
			}
			ch := r.changed
			r.mu.Unlock()
			select {
			case <-ch:
			case <-r.pool.changedCh():
			case <-r.ctx.Done():
				return
			}
			continue
		}
		r.mu.Lock()
		r.feeders++
		r.mu.Unlock()
		r.wg.Add(1)
		go r.feed(&pmapFeeder{pid: pid, local: pid < 0 || pid == r.me, slots: 1})
	}
}

// pmapFeeder is one worker taken from the pool by a run. Its fields are guarded by the run.
type pmapFeeder struct {
	pid   int
	local bool // run items in this process, without encoding them
	slots int  // goroutines sending batches to the worker, one batch in flight each
	dead  bool
}

// feed sends batches to one worker until no item is queued, then gives the worker back (or
// drops it, if it exited). It is the worker's first slot: a goroutine that takes a batch,
// sends it, waits for the answer, records it and takes the next, so that a batch costs no
// goroutine hand-off but the reply's (each hand-off wakes a thread: on a small virtual
// machine, that was most of the driver's cost of a batch). More slots are started while the
// depth asks for them, and stop when it asks for fewer; fd.slots counts them, this one too.
func (r *pmapRun[In, Out]) feed(fd *pmapFeeder) {
	defer r.wg.Done()
	r.mu.Lock()
	for !fd.dead && r.err == nil && r.ctx.Err() == nil && r.s.queued() > 0 {
		b := r.s.size(max(r.pool.Len(), r.feeders))
		depth := r.s.depth(b)
		if fd.slots > depth {
			break
		}
		idx := r.s.take(b)
		if !fd.local {
			r.stats.Calls++
			r.stats.MaxBatch = max(r.stats.MaxBatch, len(idx))
		}
		if fd.slots < depth && r.s.queued() > 0 {
			fd.slots++
			r.wg.Add(1)
			go r.feed(fd)
		}
		r.mu.Unlock()
		var o pmapOutcome[Out]
		if fd.local {
			o = r.runLocal(idx)
		} else {
			o = r.runRemote(fd.pid, idx)
		}
		r.settle(fd, &o)
		r.mu.Lock()
	}
	fd.slots--
	last := fd.slots == 0
	if last {
		r.feeders--
		r.changedLocked() // the dispatcher may wait for feeders to end
	}
	dead := fd.dead
	r.mu.Unlock()
	if !last {
		return
	}
	if dead {
		r.pool.Remove(fd.pid)
	} else {
		r.pool.Put(fd.pid)
	}
}

// pmapOutcome is what came back for one batch.
type pmapOutcome[Out any] struct {
	idx    []int
	vals   []Out
	errs   []error // per item; nil for a value
	exited error   // the worker exited: items without a value run again
	exec   time.Duration
	over   time.Duration
	inB    int
	outB   int
}

func (r *pmapRun[In, Out]) runLocal(idx []int) pmapOutcome[Out] {
	o := pmapOutcome[Out]{idx: idx, vals: make([]Out, len(idx)), errs: make([]error, len(idx))}
	t := time.Now()
	for k, i := range idx {
		if err := r.ctx.Err(); err != nil {
			o.errs[k] = err
			continue
		}
		o.vals[k], o.errs[k] = r.f.local(r.ctx, r.in[i])
	}
	o.exec = time.Since(t)
	return o
}

func (r *pmapRun[In, Out]) runRemote(pid int, idx []int) pmapOutcome[Out] {
	o := pmapOutcome[Out]{idx: idx, vals: make([]Out, len(idx)), errs: make([]error, len(idx))}
	// Items that cannot be encoded fail here, alone; the others are sent. Their CBOR goes
	// into one buffer (an offset each), not a buffer per item.
	var enc bytes.Buffer
	msgs := make([]wire.Msg, 0, len(idx))
	ends := make([]int, 0, len(idx)) // where each item's CBOR ends in enc
	sent := make([]int, 0, len(idx)) // positions in idx of the items sent
	size := 0
	for k, i := range idx {
		m, err := codec.EncodeAppend(&enc, r.in[i])
		if err != nil {
			o.errs[k] = fmt.Errorf("%w: argument of %s: %v", ErrTypeMismatch, r.f.name, err)
			continue
		}
		m.CBOR = nil // enc may move as it grows: the item is enc[previous end:ends[j]]
		msgs = append(msgs, m)
		ends = append(ends, enc.Len())
		sent = append(sent, k)
		size += len(m.Raw) + 4
	}
	if len(sent) == 0 {
		return o
	}
	size += enc.Len()
	buf := appendPmapHeader(make([]byte, 0, size+len(r.f.name)+24), r.f.name, r.id, len(sent))
	cbor, start := enc.Bytes(), 0
	for j, m := range msgs {
		m.CBOR = cbor[start:ends[j]] // empty for a raw value, which wrote nothing to enc
		start = ends[j]
		buf = appendPmapItem(buf, m)
	}
	o.inB = len(buf)
	t := time.Now()
	fr, err := r.c.call(r.ctx, pid, callHeader{Fn: fnPmapBatch}, buf)
	total := time.Since(t)
	var rep pmapReply
	if err == nil {
		var raw []byte
		raw, err = decodeReply[[]byte](fnPmapBatch, fr)
		if err == nil {
			rep, err = parsePmapReply(raw, len(sent))
			o.outB = len(raw)
		}
	}
	if err != nil {
		if exitedDuring(err, pid) {
			o.exited = err
			return o
		}
		for _, k := range sent {
			o.errs[k] = err
		}
		return o
	}
	o.exec = rep.exec
	o.over = max(total-rep.exec-rep.wait, 0)
	for j, k := range sent {
		res := rep.items[j]
		switch {
		case res.err != nil:
			o.errs[k] = res.err
		default:
			raw := res.rawValue()
			if err := codec.Decode(res.data, raw, &o.vals[k]); err != nil {
				o.errs[k] = decodeError("result", r.f.name, err)
			}
		}
	}
	return o
}

// pmapFailure is an item that failed, and what to do about it.
type pmapFailure[Out any] struct {
	i       int
	err     error
	attempt int
	retry   bool // counts as an attempt (false for a worker's exit past the limit)
	delay   time.Duration
	again   bool
	val     Out
	hasVal  bool
	fatal   error
}

// settle records a batch's outcome. User callbacks (retryIf, delays, OnError) run without
// the run's lock held.
func (r *pmapRun[In, Out]) settle(fd *pmapFeeder, o *pmapOutcome[Out]) {
	r.mu.Lock()
	if r.err != nil || r.ctx.Err() != nil {
		r.mu.Unlock()
		return
	}
	var fails []pmapFailure[Out]
	succeeded := 0
	requeued := false
	pid := fd.pid
	if fd.local {
		pid = r.me
	}
	if o.exited != nil {
		fd.dead = true
		r.lastExit = o.exited
		for _, i := range o.idx {
			if r.done[i] {
				continue
			}
			r.crashes[i]++
			if r.crashes[i] >= pmapMaxCrashes {
				fails = append(fails, pmapFailure[Out]{i: i, err: o.exited})
				continue
			}
			r.s.again(i)
			r.stats.Requeued++
			requeued = true
		}
	} else {
		for k, i := range o.idx {
			if r.done[i] {
				continue
			}
			if err := o.errs[k]; err != nil {
				r.attempts[i]++
				fails = append(fails, pmapFailure[Out]{i: i, err: err, attempt: r.attempts[i], retry: true})
				continue
			}
			r.out[i] = o.vals[k]
			r.done[i] = true
			r.s.left--
			r.stats.ByWorker[pid]++
			succeeded++
		}
		if !fd.local || r.cfg.local {
			r.s.observe(len(o.idx), o.exec, o.over, o.inB, o.outB)
		}
	}
	if requeued || r.s.left == 0 {
		// Only the dispatcher and Pmap wait for changes: a feeder goes on by itself.
		r.changedLocked()
	}
	r.mu.Unlock()
	if r.prog != nil && succeeded > 0 {
		r.prog.add(pid, succeeded)
	}
	if len(fails) == 0 {
		return
	}
	for k := range fails {
		r.decide(&fails[k])
	}
	if recovered := r.apply(fails); r.prog != nil && recovered > 0 {
		r.prog.add(pid, recovered)
	}
}

// apply carries out the decisions about failed items and returns how many got a value.
func (r *pmapRun[In, Out]) apply(fails []pmapFailure[Out]) (recovered int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.ctx.Err() != nil {
		return 0
	}
	defer r.changedLocked()
	for _, fl := range fails {
		switch {
		case fl.fatal != nil:
			r.failLocked(fl.fatal)
			return recovered
		case fl.again:
			r.stats.Retries++
			if fl.delay <= 0 {
				r.s.again(fl.i)
				continue
			}
			// The wait holds no worker: the item is queued again when it ends.
			var t *time.Timer
			t = time.AfterFunc(fl.delay, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				delete(r.timers, t)
				if r.err == nil && r.ctx.Err() == nil {
					r.s.again(fl.i)
					r.changedLocked()
				}
			})
			r.timers[t] = struct{}{}
		case fl.hasVal:
			if !r.done[fl.i] {
				r.out[fl.i] = fl.val
				r.done[fl.i] = true
				r.s.left--
				recovered++
			}
		}
	}
	return recovered
}

// decide runs the user's policy for one failed item.
func (r *pmapRun[In, Out]) decide(fl *pmapFailure[Out]) {
	defer func() {
		if p := recover(); p != nil {
			fl.again, fl.hasVal = false, false
			fl.fatal = fmt.Errorf("dist: pmap %s: item %d: panic in a retry or error callback: %v", r.f.name, fl.i, p)
		}
	}()
	if fl.retry && fl.attempt <= r.cfg.retries && (r.cfg.retryIf == nil || r.cfg.retryIf(fl.err)) {
		fl.again = true
		if r.cfg.delays != nil {
			fl.delay = r.cfg.delays(fl.attempt)
		}
		return
	}
	if r.onErr != nil {
		v, err := r.onErr(r.in[fl.i], fl.err)
		if err != nil {
			fl.fatal = fmt.Errorf("dist: pmap %s: item %d: %w", r.f.name, fl.i, err)
			return
		}
		fl.val, fl.hasVal = v, true
		return
	}
	fl.fatal = fmt.Errorf("dist: pmap %s: item %d: %w", r.f.name, fl.i, fl.err)
}

// Batches travel as one raw byte slice, in a format of their own, so that no item is encoded
// twice and an item whose argument or result is a numeric slice keeps its raw form:
//
//	request: uvarint len(fn), fn, uvarint run, uvarint n, n × item
//	reply:   uvarint n, n × item, exec ns (8 bytes LE), lane wait ns (8 bytes LE)
//	item:    tag byte, uvarint len, bytes; tag 0 = CBOR value, a wire.RawKind = raw value,
//	         pmapTagErr = CBOR error record (replies only), pmapTagBoth = a value with both
//	         parts (numeric slices of a struct out of band): uvarint len(CBOR), CBOR, raw
const (
	fnPmapBatch = "_dist.pmap.batch"
	pmapTagErr  = 0xff
	pmapTagBoth = 0xfe
)

func appendPmapHeader(b []byte, fn string, run uint64, n int) []byte {
	b = binary.AppendUvarint(b, uint64(len(fn)))
	b = append(b, fn...)
	b = binary.AppendUvarint(b, run)
	return binary.AppendUvarint(b, uint64(n))
}

func appendPmapItem(b []byte, m wire.Msg) []byte {
	if m.RawKind != wire.RawNone && len(m.CBOR) > 0 {
		var lb [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(lb[:], uint64(len(m.CBOR)))
		b = append(b, pmapTagBoth)
		b = binary.AppendUvarint(b, uint64(n+len(m.CBOR)+len(m.Raw)))
		b = append(b, lb[:n]...)
		b = append(b, m.CBOR...)
		return append(b, m.Raw...)
	}
	if m.RawKind != wire.RawNone {
		return appendPmapTagged(b, byte(m.RawKind), m.Raw)
	}
	return appendPmapTagged(b, 0, m.CBOR)
}

func appendPmapTagged(b []byte, tag byte, data []byte) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}

var errPmapFormat = fmt.Errorf("%w: malformed pmap batch", ErrTypeMismatch)

type pmapItem struct {
	kind wire.RawKind
	data []byte
	raw  []byte // pmapTagBoth: the raw part (data is then the CBOR)
	err  error  // replies: the item's error
}

// rawValue is the item's raw part as codec.Decode takes it, or nil. It is a copy: the decoded
// value may keep it, and must not keep the whole batch alive.
func (it pmapItem) rawValue() any {
	switch {
	case it.raw != nil:
		_, b := wire.MakeRaw(wire.RawBytes, len(it.raw))
		copy(b, it.raw)
		return b
	case it.kind != wire.RawNone:
		v, b := wire.MakeRaw(it.kind, len(it.data)/it.kind.Size())
		copy(b, it.data)
		return v
	}
	return nil
}

// pmapReader reads the batch format, checking every length against what is left.
type pmapReader struct {
	b   []byte
	err error
}

func (rd *pmapReader) uvarint() uint64 {
	if rd.err != nil {
		return 0
	}
	v, n := binary.Uvarint(rd.b)
	if n <= 0 {
		rd.err = errPmapFormat
		return 0
	}
	rd.b = rd.b[n:]
	return v
}

func (rd *pmapReader) bytes(n uint64) []byte {
	if rd.err != nil {
		return nil
	}
	if n > uint64(len(rd.b)) {
		rd.err = errPmapFormat
		return nil
	}
	s := rd.b[:n:n]
	rd.b = rd.b[n:]
	return s
}

// items reads a count and that many items; each item takes at least two bytes, which bounds
// the count by the input's size before anything is allocated.
func (rd *pmapReader) items(allowErr bool) []pmapItem {
	n := rd.uvarint()
	if rd.err != nil || n > uint64(len(rd.b))/2 {
		rd.err = errPmapFormat
		return nil
	}
	items := make([]pmapItem, n)
	for k := range items {
		if len(rd.b) == 0 {
			rd.err = errPmapFormat
			return nil
		}
		tag := rd.b[0]
		rd.b = rd.b[1:]
		data := rd.bytes(rd.uvarint())
		if rd.err != nil {
			return nil
		}
		switch {
		case tag == 0:
		case tag == pmapTagErr && allowErr:
			var rec errRecord
			if err := codec.Unmarshal(data, &rec); err != nil {
				rd.err = errPmapFormat
				return nil
			}
			items[k].err = rec.toError()
		case wire.RawKind(tag).Size() > 0 && len(data)%wire.RawKind(tag).Size() == 0:
			items[k].kind = wire.RawKind(tag)
		case tag == pmapTagBoth:
			in := pmapReader{b: data}
			cbor := in.bytes(in.uvarint())
			if in.err != nil || len(cbor) == 0 {
				rd.err = errPmapFormat
				return nil
			}
			items[k].kind, items[k].raw, data = wire.RawBytes, in.b, cbor
		default:
			rd.err = errPmapFormat
			return nil
		}
		items[k].data = data
	}
	return items
}

type pmapReply struct {
	items      []pmapItem
	exec, wait time.Duration
}

func parsePmapReply(b []byte, want int) (pmapReply, error) {
	if len(b) < 16 {
		return pmapReply{}, errPmapFormat
	}
	rd := pmapReader{b: b[:len(b)-16]}
	rep := pmapReply{items: rd.items(true)}
	if rd.err == nil && (len(rd.b) != 0 || len(rep.items) != want) {
		rd.err = errPmapFormat
	}
	t := b[len(b)-16:]
	rep.exec = time.Duration(binary.LittleEndian.Uint64(t))
	rep.wait = time.Duration(binary.LittleEndian.Uint64(t[8:]))
	return rep, rd.err
}

// pmapLanes make the batches of one run execute one at a time on a worker, in the order they
// arrive, although several are in flight to hide the round trip.
type pmapLaneKey struct {
	from int
	run  uint64
}

type pmapLane struct {
	sem   chan struct{}
	users int
}

var pmapLanes = struct {
	sync.Mutex
	m map[pmapLaneKey]*pmapLane
}{m: make(map[pmapLaneKey]*pmapLane)}

func pmapEnterLane(ctx context.Context, k pmapLaneKey) (leave func(), err error) {
	pmapLanes.Lock()
	l := pmapLanes.m[k]
	if l == nil {
		l = &pmapLane{sem: make(chan struct{}, 1)}
		pmapLanes.m[k] = l
	}
	l.users++
	pmapLanes.Unlock()
	out := func() {
		pmapLanes.Lock()
		l.users--
		if l.users == 0 {
			delete(pmapLanes.m, k)
		}
		pmapLanes.Unlock()
	}
	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; out() }, nil
	case <-ctx.Done():
		out()
		return nil, ctx.Err()
	}
}

func init() {
	rawBuiltin(fnPmapBatch, servePmapBatch)
}

// servePmapBatch runs a batch of items through the handler registered under the batch's
// function name, so that any function registered with NewFunc can be batched without a
// registration of its own.
func servePmapBatch(ctx context.Context, c *Cluster, fr *wire.Frame, _ []byte) (wire.Msg, error) {
	payload, ok := fr.Raw.([]byte)
	if !ok {
		return wire.Msg{}, errPmapFormat
	}
	rd := pmapReader{b: payload}
	fn := string(rd.bytes(rd.uvarint()))
	run := rd.uvarint()
	items := rd.items(false)
	if rd.err == nil && len(rd.b) != 0 {
		rd.err = errPmapFormat
	}
	if rd.err != nil {
		return wire.Msg{}, rd.err
	}
	h, ok := lookup(fn)
	if !ok {
		return wire.Msg{}, fmt.Errorf("%w %q on process %d (is its NewFunc at package level, and is the binary the same?)", ErrUnknownFunc, fn, c.MyID())
	}
	t := time.Now()
	leave, err := pmapEnterLane(ctx, pmapLaneKey{CallerPid(ctx), run})
	if err != nil {
		return wire.Msg{}, err
	}
	defer leave()
	wait := time.Since(t)
	t = time.Now()
	out := binary.AppendUvarint(make([]byte, 0, len(payload)+16+4*len(items)), uint64(len(items)))
	var ifr wire.Frame // reused: handlers do not keep the frame
	for _, it := range items {
		var m wire.Msg
		err := ctx.Err()
		if err == nil {
			ifr.Raw = it.rawValue()
			arg := it.data
			if it.kind != wire.RawNone && it.raw == nil {
				arg = nil // the value is the raw part
			}
			m, err = h(ctx, &ifr, arg)
		}
		if err != nil {
			rec, merr := codec.Marshal(recordOf(c.MyID(), fn, err))
			if merr != nil {
				rec, _ = codec.Marshal(&errRecord{Pid: c.MyID(), Func: fn, Msg: err.Error()})
			}
			out = appendPmapTagged(out, pmapTagErr, rec)
			continue
		}
		out = appendPmapItem(out, m)
	}
	out = binary.LittleEndian.AppendUint64(out, uint64(time.Since(t)))
	out = binary.LittleEndian.AppendUint64(out, uint64(wait))
	return wire.Msg{RawKind: wire.RawBytes, Raw: out, RawValue: out}, nil
}

// pmapProgress reports a run's progress: bars on a terminal, a summary line elsewhere.
type pmapProgress struct {
	w     io.Writer
	name  string
	total int
	start time.Time

	mu     sync.Mutex
	counts map[int]int   // items done by pid
	p      *mpb.Progress // nil when w is not a terminal
	bar    *mpb.Bar
	bars   map[int]*mpb.Bar
	order  []int
}

func newPmapProgress(w io.Writer, name string, total int) *pmapProgress {
	pp := &pmapProgress{w: w, name: name, total: total, start: time.Now(), counts: make(map[int]int), bars: make(map[int]*mpb.Bar)}
	if !isTerminal(w) {
		return pp
	}
	// Auto refresh is asked for explicitly: mpb only detects terminals that are *os.File.
	pp.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithAutoRefresh())
	pp.bar = pp.p.AddBar(int64(total),
		mpb.PrependDecorators(decor.Name("pmap "+name, decor.WCSyncSpaceR), decor.CountersNoUnit("%d / %d", decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Name(" "), decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO), "done")),
	)
	return pp
}

// isTerminal reports whether w writes to a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// add counts n more items done by pid.
func (pp *pmapProgress) add(pid, n int) {
	pp.mu.Lock()
	pp.counts[pid] += n
	if pp.p == nil {
		pp.mu.Unlock()
		return
	}
	b := pp.bars[pid]
	if b == nil {
		// A worker's bar shows its share of all the items.
		b = pp.p.AddBar(int64(pp.total),
			mpb.PrependDecorators(decor.Name(fmt.Sprintf("  worker %d", pid), decor.WCSyncSpaceR), decor.CurrentNoUnit("%d items", decor.WCSyncSpace)),
		)
		pp.bars[pid] = b
		pp.order = append(pp.order, pid)
	}
	pp.mu.Unlock()
	b.IncrBy(n)
	pp.bar.IncrBy(n)
}

// finish ends the bars, or writes the summary line, and returns once output is done.
func (pp *pmapProgress) finish(err error) {
	if pp.p != nil {
		pp.mu.Lock()
		bars := make([]*mpb.Bar, 0, len(pp.bars))
		for _, pid := range pp.order {
			bars = append(bars, pp.bars[pid])
		}
		pp.mu.Unlock()
		for _, b := range bars {
			b.Abort(false) // ends the bar where it is: a share, not a completion
		}
		if err != nil {
			pp.bar.Abort(false)
		} else {
			pp.bar.SetTotal(-1, true)
		}
		pp.p.Wait()
		if err != nil {
			fmt.Fprintf(pp.w, "pmap %s: failed: %v\n", pp.name, err)
		}
		return
	}
	pp.mu.Lock()
	by := pp.counts
	pp.mu.Unlock()
	done := 0
	pids := make([]int, 0, len(by))
	for pid, n := range by {
		done += n
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	var sb strings.Builder
	fmt.Fprintf(&sb, "pmap %s: %d/%d items in %s", pp.name, done, pp.total, time.Since(pp.start).Round(time.Millisecond))
	if len(pids) > 0 {
		sb.WriteString(" (items by pid:")
		for _, pid := range pids {
			fmt.Fprintf(&sb, " %d:%d", pid, by[pid])
		}
		sb.WriteString(")")
	}
	if err != nil {
		fmt.Fprintf(&sb, ": failed: %v", err)
	}
	sb.WriteString("\n")
	io.WriteString(pp.w, sb.String())
}
