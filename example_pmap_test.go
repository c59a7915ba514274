package dist_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/godist/dist"
)

// collatzSteps counts the steps of the Collatz sequence from n down to 1: an item whose cost
// varies a lot from one n to the next, which is what dynamic load balancing is for.
var collatzSteps = dist.NewFunc("example.collatz", func(ctx context.Context, n int) (int, error) {
	steps := 0
	for ; n != 1; steps++ {
		if n%2 == 0 {
			n /= 2
		} else {
			n = 3*n + 1
		}
	}
	return steps, nil
})

func ExamplePmap() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithOutput(io.Discard))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	in := make([]int, 10_000)
	for i := range in {
		in[i] = i + 1
	}
	// pmap(collatz, 1:10000): results come back in the order of the input, whichever worker
	// ran each item. Small items travel in batches; WithRetry and WithOnError handle failures.
	steps, err := dist.Pmap(ctx, c, collatzSteps, in,
		dist.WithRetry(2, dist.ExponentialBackoff(10*time.Millisecond, time.Second), nil))
	if err != nil {
		fmt.Println(err)
		return
	}
	longest := 0
	for i, s := range steps {
		if s > steps[longest] {
			longest = i
		}
	}
	fmt.Println("steps for 1..6:", steps[:6])
	fmt.Printf("longest below 10000: %d, %d steps\n", in[longest], steps[longest])
	// Output:
	// steps for 1..6: [0 1 7 2 5 8]
	// longest below 10000: 6171, 261 steps
}

// windowNorm returns the Euclidean norm of a window of a large shared vector.
var windowNorm = dist.NewFunc("example.windownorm", func(ctx context.Context, w window) (float64, error) {
	xs, err := w.Data.Get(ctx) // fetched once per worker, then cached there
	if err != nil {
		return 0, err
	}
	s := 0.0
	for _, x := range xs[w.Lo:w.Hi] {
		s += x * x
	}
	return math.Sqrt(s), nil
})

type window struct {
	Data   *dist.Shared[[]float64]
	Lo, Hi int
}

func ExampleShare() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithOutput(io.Discard))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	xs := make([]float64, 1<<20) // 8 MiB, used by every item
	for i := range xs {
		xs[i] = 1
	}
	data, err := dist.Share(ctx, c, xs)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer data.Release()
	var items []window
	for lo := 0; lo < len(xs); lo += 1 << 16 {
		items = append(items, window{Data: data, Lo: lo, Hi: lo + 1<<16})
	}
	norms, err := dist.Pmap(ctx, c, windowNorm, items, dist.WithBatchSize(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(norms), "windows, norm of each:", norms[0])
	fmt.Println("array sent at most once per worker:", data.Fetches() <= 2)
	// Output:
	// 16 windows, norm of each: 256
	// array sent at most once per worker: true
}
