// Package pi estimates π by Monte Carlo on every worker of a cluster: each worker draws its
// share of random points, and the driver adds up the hits. It is the README's main job.
package pi

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/godist/dist"
)

// Hits counts, of n random points in the unit square drawn with seed, those inside the
// quarter circle.
var Hits = dist.NewFunc("examples/pi.hits", func(ctx context.Context, a Args) (int64, error) {
	rng := rand.New(rand.NewPCG(a.Seed, uint64(dist.Current(ctx).MyID())))
	var in int64
	for i := int64(0); i < a.N; i++ {
		if i%(1<<20) == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		x, y := rng.Float64(), rng.Float64()
		if x*x+y*y <= 1 {
			in++
		}
	}
	return in, nil
})

// Args is one worker's share of the work.
type Args struct {
	N    int64
	Seed uint64
}

// Run estimates π with -n points (default 200 million) spread over c's workers and prints the
// estimate, the time taken, and each worker's share.
func Run(ctx context.Context, c *dist.Cluster, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("pi", flag.ContinueOnError)
	n := fs.Int64("n", 200_000_000, "number of random points")
	seed := fs.Uint64("seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	workers := c.Workers()
	start := time.Now()
	futs := make(map[int]*dist.Future[int64], len(workers))
	per := *n / int64(len(workers))
	for i, pid := range workers {
		share := per
		if i == len(workers)-1 {
			share = *n - per*int64(len(workers)-1)
		}
		futs[pid] = Hits.Go(ctx, c, pid, Args{N: share, Seed: *seed})
	}
	var hits int64
	for _, pid := range workers {
		h, err := futs[pid].Fetch(ctx)
		if err != nil {
			return err
		}
		hits += h
	}
	elapsed := time.Since(start)
	est := 4 * float64(hits) / float64(*n)
	fmt.Fprintf(w, "π ≈ %.6f from %d points on %d workers %v in %v (%.0f Mpoints/s)\n",
		est, *n, len(workers), workers, elapsed.Round(time.Millisecond), float64(*n)/elapsed.Seconds()/1e6)
	return nil
}
