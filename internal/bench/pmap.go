package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist"
)

// Functions the Pmap figures run on workers.
var (
	pmapNoop = dist.NewFunc("bench.pmap.noop", func(ctx context.Context, i int) (int, error) { return i, nil })
	pmapSpin = dist.NewFunc("bench.pmap.spin", func(ctx context.Context, n int) (uint64, error) { return spin(n), nil })
)

// spin is a CPU-bound loop of n steps (a linear congruential generator, whose result is
// returned so that the compiler cannot drop it).
func spin(n int) uint64 {
	x := uint64(n)
	for range n {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

// PmapFigures measures Pmap on c, whose workers must be idle, and reports each figure with
// emit (baseline names are those of Run's raw baselines, or empty):
//
//   - pmap.overhead_us_per_item: wall time per item of a Pmap of 100,000 no-op items with
//     automatic batching (20,000 when quick);
//   - pmap.overhead_us_per_item_batch1: the same with batch size 1, over 20,000 items (2,000);
//   - pmap.speedup: time per item in this process, serially, over time per item of a Pmap
//     on all workers, for CPU-bound items of about 1 ms each (a busy loop calibrated here):
//     the median of 7 rounds of 200 serial items and a Pmap of 1,000 (1 round of 40 and 200
//     when quick);
//   - raw.threads_speedup, its baseline: the same ratio for 400 items (80) spread over as
//     many goroutines of this process as there are workers, measured in the same rounds. It
//     is what this machine allows; Pmap cannot beat it.
func PmapFigures(ctx context.Context, c *dist.Cluster, quick bool, emit func(name string, value float64, unit, baseline string)) error {
	nAuto, nOne, nSpin, rounds := 100_000, 20_000, 1_000, 7
	if quick {
		nAuto, nOne, nSpin, rounds = 20_000, 2_000, 200, 1
	}
	overhead := func(n int, opts ...dist.PmapOption) (float64, error) {
		in := make([]int, n)
		for i := range in {
			in[i] = i
		}
		// Warm up: connections, code paths, and the batch size estimate of a first run.
		if _, err := dist.Pmap(ctx, c, pmapNoop, in[:min(n, 2000)], opts...); err != nil {
			return 0, err
		}
		best := time.Duration(1<<63 - 1)
		for range 3 {
			t := time.Now()
			out, err := dist.Pmap(ctx, c, pmapNoop, in, opts...)
			if err != nil {
				return 0, err
			}
			if len(out) != n || out[n-1] != n-1 {
				return 0, fmt.Errorf("pmap of %d no-ops returned %d results", n, len(out))
			}
			best = min(best, time.Since(t))
		}
		return us(best) / float64(n), nil
	}
	v, err := overhead(nAuto)
	if err != nil {
		return fmt.Errorf("pmap.overhead_us_per_item: %w", err)
	}
	emit("pmap.overhead_us_per_item", v, "us", "")
	v, err = overhead(nOne, dist.WithBatchSize(1))
	if err != nil {
		return fmt.Errorf("pmap.overhead_us_per_item_batch1: %w", err)
	}
	emit("pmap.overhead_us_per_item_batch1", v, "us", "")

	// The machine may be shared, and its speed varies by a factor of two from one second to
	// the next here: serial and parallel runs alternate in short rounds, and the figure is
	// the median of the rounds' ratios of time per item.
	steps := calibrateSpin(time.Millisecond)
	in := make([]int, nSpin)
	for i := range in {
		in[i] = steps
	}
	if _, err := dist.Pmap(ctx, c, pmapSpin, in[:min(nSpin, 50)]); err != nil {
		return fmt.Errorf("pmap.speedup: %w", err)
	}
	nSerial := nSpin / 5
	var ratios, ceilings []float64
	for range rounds {
		t := time.Now()
		var sink uint64
		for _, n := range in[:nSerial] {
			sink += spin(n)
		}
		serial := time.Since(t).Seconds() / float64(nSerial)
		t = time.Now()
		sink += spinThreads(in[:2*nSerial], len(c.Workers()))
		threads := time.Since(t).Seconds() / float64(2*nSerial)
		ceilings = append(ceilings, serial/threads)
		t = time.Now()
		out, err := dist.Pmap(ctx, c, pmapSpin, in)
		if err != nil {
			return fmt.Errorf("pmap.speedup: %w", err)
		}
		parallel := time.Since(t).Seconds() / float64(nSpin)
		if len(out) != nSpin || out[0] != spin(steps) || sink == 0 {
			return fmt.Errorf("pmap.speedup: wrong results")
		}
		ratios = append(ratios, serial/parallel)
	}
	emit("raw.threads_speedup", median(ceilings), "x", "")
	emit("pmap.speedup", median(ratios), "x", "raw.threads_speedup")
	return nil
}

// spinThreads runs the items on k goroutines of this process, each taking the next item as
// it finishes one, and returns the sum of the results. It is the machine's own ceiling for
// pmap.speedup: virtual CPUs that share a physical core, or a host that lowers the clock
// when both are busy, give less than k times one thread's speed, whatever Pmap does.
func spinThreads(in []int, k int) uint64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	sums := make([]uint64, k)
	for g := range k {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(in) {
					return
				}
				sums[g] += spin(in[i])
			}
		})
	}
	wg.Wait()
	var s uint64
	for _, v := range sums {
		s += v
	}
	return s
}

// calibrateSpin returns the number of spin steps that take about d here: the fastest of a
// few trials, so that a trial slowed by a neighbour does not inflate it.
func calibrateSpin(d time.Duration) int {
	const probe = 1 << 20
	best := time.Duration(1<<63 - 1)
	var sink uint64
	for range 5 {
		t := time.Now()
		sink += spin(probe)
		best = min(best, time.Since(t))
	}
	// Kept alive so that the compiler cannot drop the loop being timed.
	runtime.KeepAlive(sink)
	return max(1, int(float64(probe)*float64(d)/float64(max(best, 1))))
}
