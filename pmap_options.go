package dist

import (
	"time"
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
	progress Progress
	stats    *PmapStats
	lost     int // WithAllowedFailures; 0 for the default
}

// WithAllowedFailures sets how many workers may die while running one item before the item
// fails with an error matching ErrKilledWorker (default 3; Dask's allowed-failures): an item
// that kills whatever runs it must not take the whole cluster down, one worker after another
// (with WithRestart, without end). Before that, an item whose worker died runs again
// elsewhere without counting as a failed run. k < 1 means 1.
func WithAllowedFailures(k int) PmapOption { return func(c *pmapConfig) { c.lost = max(k, 1) } }

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

// WithProgress makes Pmap report its progress to p: p.Begin when the run starts, then the
// items each process finished as they do, and End when Pmap returns. ProgressSummary(w)
// writes one summary line per run; package progress draws bars on a terminal
// (dist.WithProgress(progress.Bars(os.Stderr))). A nil p reports nothing.
func WithProgress(p Progress) PmapOption { return func(c *pmapConfig) { c.progress = p } }

// WithStats makes Pmap fill s with how the run went when it returns, successful or not.
func WithStats(s *PmapStats) PmapOption { return func(c *pmapConfig) { c.stats = s } }
