// Package pi estimates π by Monte Carlo with Reduce, Julia's @distributed (+) for: the range of
// sample indices is split into one contiguous chunk per worker, each worker counts the hits of
// its chunk, and the driver adds the counts. It is the README's main job.
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

// Hits counts, of the random points numbered r.Lo to r.Hi-1, those inside the quarter circle.
// Each chunk seeds its generator from its own bounds, so a run is reproducible however the
// range is split.
var Hits = dist.NewFunc("examples/pi.hits", func(ctx context.Context, r dist.Range) (int64, error) {
	rng := rand.New(rand.NewPCG(uint64(r.Lo), uint64(r.Hi)))
	var in int64
	for i := r.Lo; i < r.Hi; i++ {
		if (i-r.Lo)%(1<<20) == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		x, y := rng.Float64(), rng.Float64()
		if x*x+y*y <= 1 {
			in++
		}
	}
	return in, nil
})

// Run estimates π with -n points (default 200 million) over c's workers and prints the
// estimate and the time taken.
func Run(ctx context.Context, c *dist.Cluster, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("pi", flag.ContinueOnError)
	n := fs.Int("n", 200_000_000, "number of random points")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	hits, err := dist.Reduce(ctx, c, 0, *n, Hits, func(a, b int64) int64 { return a + b })
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Fprintf(w, "π ≈ %.6f from %d points on %d workers %v in %v (%.0f Mpoints/s)\n",
		4*float64(hits)/float64(*n), *n, len(c.Workers()), c.Workers(), elapsed.Round(time.Millisecond), float64(*n)/elapsed.Seconds()/1e6)
	return nil
}
