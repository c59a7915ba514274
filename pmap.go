package dist

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
)

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
// never more than 8 times the items answered so far (so a wrong early estimate costs
// little), never more than a quarter of a worker's fair share of the items still queued (so
// the end of the run stays balanced) unless that is less work than a round trip (smaller
// batches would only add calls: with many workers, they were most of the run), and never
// more than 4 MiB of encoded items or 16 MiB of expected results. Two batches or more are in
// flight to each worker, so that it never waits for the next one; but batches of 50 ms or
// more go one at a time, so that no item waits in a busy worker's queue while another worker
// is free.
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
