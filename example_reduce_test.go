package dist_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/godist/dist"
)

// countHeads flips one coin per integer of its range and returns the number of heads: the body
// of the manual's `@distributed (+) for i = 1:200000000 Int(rand(Bool)) end`. It runs on a
// worker and reduces its own chunk there; only the count crosses the wire. The generator is
// seeded from the range, so a chunk rerun after a worker's exit flips the same coins.
var countHeads = dist.NewFunc("example.countheads", func(ctx context.Context, r dist.Range) (int64, error) {
	rng := rand.New(rand.NewPCG(uint64(r.Lo), uint64(r.Hi)))
	var heads int64
	var bits uint64
	for i := r.Lo; i < r.Hi; i++ {
		if (i-r.Lo)%64 == 0 {
			if (i-r.Lo)%(1<<22) == 0 && ctx.Err() != nil {
				return 0, ctx.Err() // cancelled: stop flipping
			}
			bits = rng.Uint64() // 64 fair coins, one per iteration: a draw per flip costs 4×
		}
		heads += int64(bits & 1)
		bits >>= 1
	}
	return heads, nil
})

func ExampleReduce() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithOutput(io.Discard))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	const n = 200_000_000
	heads, err := dist.Reduce(ctx, c, 1, n+1, countHeads, func(a, b int64) int64 { return a + b })
	if err != nil {
		fmt.Println(err)
		return
	}
	frac := float64(heads) / n
	fmt.Println("heads within 1% of half:", math.Abs(frac-0.5) < 0.005)
	// Output: heads within 1% of half: true
}
