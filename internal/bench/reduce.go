package bench

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/godist/dist"
)

// reduceSum is the body of the distributed sum: each worker adds up its chunk.
var reduceSum = dist.NewFunc("bench.reduce.sum", func(ctx context.Context, r dist.Range) (int64, error) {
	return sumRange(ctx, r)
})

// sumRange adds up the integers of r, checking ctx between blocks so that a cancelled run
// stops within a millisecond or so without slowing the loop itself.
func sumRange(ctx context.Context, r dist.Range) (int64, error) {
	var s int64
	for lo := r.Lo; lo < r.Hi; lo += 1 << 20 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		hi := min(lo+1<<20, r.Hi)
		for i := lo; i < hi; i++ {
			s += int64(i)
		}
	}
	return s, nil
}

// ReduceFigures measures the sum of 1..1e8 twice: serially in the driver, emitted first as
// reduce.serial_sum_1e8_ms, and with dist.Reduce over all of c's workers, emitted as
// reduce.sum_1e8_ms with the serial time as its baseline. Each is the best of three runs, so
// that a noisy neighbour inflates neither. With quick, the range is 1..1e7 and each is run
// once (the names stay: quick runs are for tests). A wrong sum is an error.
func ReduceFigures(ctx context.Context, c *dist.Cluster, quick bool, emit func(name string, value float64, unit, baseline string)) error {
	n, reps := int64(100_000_000), 3
	if quick {
		n, reps = 10_000_000, 1
	}
	want := n * (n + 1) / 2
	r := dist.Range{Lo: 1, Hi: int(n) + 1}
	best := func(run func() (int64, error)) (float64, error) {
		b := math.Inf(1)
		for range reps {
			t := time.Now()
			got, err := run()
			if err != nil {
				return 0, err
			}
			if got != want {
				return 0, fmt.Errorf("sum of 1..%d = %d, want %d", n, got, want)
			}
			b = min(b, float64(time.Since(t).Microseconds())/1e3)
		}
		return b, nil
	}
	serial, err := best(func() (int64, error) { return sumRange(ctx, r) })
	if err != nil {
		return fmt.Errorf("bench reduce: serial: %w", err)
	}
	emit("reduce.serial_sum_1e8_ms", serial, "ms", "")
	// One untimed run, so that the first chunk's connection set-up is not measured.
	if _, err := dist.Reduce(ctx, c, 1, 1000, reduceSum, addInt64); err != nil {
		return fmt.Errorf("bench reduce: warm-up: %w", err)
	}
	par, err := best(func() (int64, error) { return dist.Reduce(ctx, c, r.Lo, r.Hi, reduceSum, addInt64) })
	if err != nil {
		return fmt.Errorf("bench reduce: %w", err)
	}
	emit("reduce.sum_1e8_ms", par, "ms", "reduce.serial_sum_1e8_ms")
	return nil
}

func addInt64(a, b int64) int64 { return a + b }
