package dist

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/sched"
	"github.com/godist/dist/internal/wire"
)

// A run of Pmap is a thin IO loop around internal/sched's Pmap, which decides which items go
// in each batch and what becomes of failed ones: a dispatcher goroutine takes workers from the
// pool, a feeder per worker sends batches and reports their outcomes, a timer tells the
// scheduler when retry delays end, and user callbacks run outside the run's lock.

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
	prog  ProgressRun // nil without WithProgress

	ctx    context.Context // ends with the run: stops the dispatcher and the calls in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	s        *sched.Pmap // which items go where; the run is its IO and its clock
	feeders  int
	err      error // the first fatal error
	lastExit error
	retry    *time.Timer   // queues items whose retry delay ended; nil until one waits
	changed  chan struct{} // closed when items are queued again, feeders end, or the run ends
	finished chan struct{} // closed once every item is done or err is set
	stats    PmapStats
}

func (r *pmapRun[In, Out]) run(ctx context.Context) error {
	n := len(r.in)
	r.out = make([]Out, n)
	r.s = sched.NewPmap(n, r.cfg.batch)
	if r.cfg.lost > 0 {
		r.s.SetMaxLost(r.cfg.lost)
	}
	r.changed = make(chan struct{})
	r.finished = make(chan struct{})
	r.stats.ByWorker = make(map[int]int)
	r.id = pmapRuns.Add(1)
	if r.cfg.progress != nil {
		r.prog = r.cfg.progress.Begin(r.f.name, n)
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
	if r.err == nil && r.s.Left() > 0 {
		r.err = fmt.Errorf("dist: pmap %s: %w", r.f.name, context.Cause(ctx))
	}
	if r.retry != nil {
		r.retry.Stop()
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
		r.prog.End(err)
	}
}

// changedLocked wakes everyone waiting for a change of the run's state.
func (r *pmapRun[In, Out]) changedLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
	if r.err != nil || r.s.Left() == 0 {
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
		for r.s.Queued() == 0 && r.err == nil && r.s.Left() > 0 {
			ch := r.changed
			r.mu.Unlock()
			select {
			case <-ch:
			case <-r.ctx.Done():
				return
			}
			r.mu.Lock()
		}
		if r.err != nil || r.s.Left() == 0 {
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
	for !fd.dead && r.err == nil && r.ctx.Err() == nil && r.s.Queued() > 0 {
		b := r.s.Size(max(r.pool.Len(), r.feeders))
		depth := r.s.Depth(b)
		if fd.slots > depth {
			break
		}
		idx := r.s.Take(b)
		if !fd.local {
			r.stats.Calls++
			r.stats.MaxBatch = max(r.stats.MaxBatch, len(idx))
		}
		if fd.slots < depth && r.s.Queued() > 0 {
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
			again, gaveUp := r.s.Lost(i)
			if gaveUp {
				err := fmt.Errorf("%w: item %d, after %d of them: %w", ErrKilledWorker, i, r.s.LostRuns(i), o.exited)
				fails = append(fails, pmapFailure[Out]{i: i, err: err})
			}
			if again {
				r.stats.Requeued++
				requeued = true
			}
		}
	} else {
		for k, i := range o.idx {
			if err := o.errs[k]; err != nil {
				if attempt, ok := r.s.Fail(i); ok {
					fails = append(fails, pmapFailure[Out]{i: i, err: err, attempt: attempt, retry: true})
				}
				continue
			}
			if r.s.Succeed(i) {
				r.out[i] = o.vals[k]
				r.stats.ByWorker[pid]++
				succeeded++
			}
		}
		if !fd.local || r.cfg.local {
			r.s.Observe(sched.Sample{Items: len(o.idx), Exec: o.exec, Over: o.over, InBytes: o.inB, OutBytes: o.outB})
		}
	}
	if requeued || r.s.Left() == 0 {
		// Only the dispatcher and Pmap wait for changes: a feeder goes on by itself.
		r.changedLocked()
	}
	r.mu.Unlock()
	if r.prog != nil && succeeded > 0 {
		r.prog.Done(pid, succeeded)
	}
	if len(fails) == 0 {
		return
	}
	for k := range fails {
		r.decide(&fails[k])
	}
	if recovered := r.apply(fails); r.prog != nil && recovered > 0 {
		r.prog.Done(pid, recovered)
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
	now := time.Now()
	for _, fl := range fails {
		switch {
		case fl.fatal != nil:
			r.failLocked(fl.fatal)
			return recovered
		case fl.again:
			// A delayed retry holds no worker: the scheduler queues the item again once
			// the timer tells it the time has come.
			if r.s.Retry(fl.i, now, fl.delay) {
				r.stats.Retries++
			}
		case fl.hasVal:
			if r.s.Succeed(fl.i) {
				r.out[fl.i] = fl.val
				recovered++
			}
		}
	}
	r.armRetryLocked()
	return recovered
}

// armRetryLocked sets the retry timer for the scheduler's next wake-up, if an item waits.
func (r *pmapRun[In, Out]) armRetryLocked() {
	at, ok := r.s.Wake()
	if !ok {
		return
	}
	if r.retry == nil {
		r.retry = time.AfterFunc(time.Until(at), r.retryDue)
		return
	}
	r.retry.Reset(time.Until(at))
}

// retryDue queues the items whose retry delay has ended.
func (r *pmapRun[In, Out]) retryDue() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.ctx.Err() != nil || r.s.Left() == 0 {
		return
	}
	if r.s.Tick(time.Now()) > 0 {
		r.changedLocked()
	}
	r.armRetryLocked()
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
