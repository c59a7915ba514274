// Package sweep is a parameter sweep with dist.Pmap: the Lyapunov exponent λ of the logistic
// map x ↦ r·x·(1−x) for many values of r, one item per value, handed out to the workers as
// they free up, with a progress bar. λ < 0 means the orbit settles into a cycle, λ > 0 means
// chaos; the sweep finds where chaos begins (r ≈ 3.5699, the Feigenbaum point) and the widest
// window of order inside the chaos (the period-3 window at r ≈ 3.8284).
package sweep

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/progress"
)

// Point is one item of the sweep: a value of r and how many iterations to average over.
type Point struct {
	_     struct{} `cbor:",toarray"`
	R     float64
	Iters int
}

// transient is how many iterations are dropped before averaging, so that λ describes where
// the orbit ends up rather than where it starts.
const transient = 1000

// Lyapunov returns the Lyapunov exponent of the logistic map at p.R: the average over p.Iters
// iterations of ln|f′(x)| = ln|r·(1−2x)|, after a transient. It is a pure function of p, so a
// point rerun after a worker's exit gives the same value.
var Lyapunov = dist.NewFunc("examples/sweep.lyapunov", func(ctx context.Context, p Point) (float64, error) {
	if p.Iters < 1 {
		return 0, fmt.Errorf("sweep: %d iterations", p.Iters)
	}
	x := 0.5 + 1e-3 // not 0.5 itself: f′(0.5) = 0 would make ln|f′| −∞ at r = 4
	for range transient {
		x = p.R * x * (1 - x)
	}
	sum := 0.0
	for i := range p.Iters {
		if i%(1<<16) == 0 && ctx.Err() != nil {
			return 0, ctx.Err()
		}
		x = p.R * x * (1 - x)
		// A superstable cycle passes through x = 0.5 exactly; floor the log rather than
		// let one −∞ swamp the average.
		sum += math.Log(max(math.Abs(p.R*(1-2*x)), 1e-300))
	}
	return sum / float64(p.Iters), nil
})

// chaos is the λ above which a point counts as chaotic: finite averages hover just around 0
// at the bifurcations, where the true λ is 0.
const chaos = 1e-3

// Run sweeps -n values of r evenly over [-from, -to) with -iters iterations each, using Pmap
// over all of c's workers (with a progress bar on w when -progress), and prints what it found:
// where chaos begins, the widest window of order inside it, the share of chaotic values, and
// a strip chart of λ(r).
func Run(ctx context.Context, c *dist.Cluster, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(w)
	n := fs.Int("n", 2000, "number of values of r")
	from := fs.Float64("from", 2.8, "smallest r")
	to := fs.Float64("to", 4.0, "largest r (excluded)")
	iters := fs.Int("iters", 50_000, "iterations averaged per value of r")
	bars := fs.Bool("progress", true, "show a progress bar (a summary line when w is not a terminal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 2 || !(*from < *to) || *from < 0 || *to > 4 {
		return fmt.Errorf("sweep: want -n ≥ 2 and 0 ≤ -from < -to ≤ 4, got %d, %g, %g", *n, *from, *to)
	}
	points := make([]Point, *n)
	step := (*to - *from) / float64(*n)
	for i := range points {
		points[i] = Point{R: *from + float64(i)*step, Iters: *iters}
	}
	fmt.Fprintf(w, "sweep: Lyapunov exponent of the logistic map at %d values of r in [%g, %g), %d iterations each\n",
		*n, *from, *to, *iters)
	var stats dist.PmapStats
	opts := []dist.PmapOption{dist.WithStats(&stats)}
	if *bars {
		opts = append(opts, dist.WithProgress(progress.Bars(w)))
	}
	start := time.Now()
	lambdas, err := dist.Pmap(ctx, c, Lyapunov, points, opts...)
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	elapsed := time.Since(start)
	fmt.Fprintf(w, "%d points on %d workers in %v (%.0f points/s; %s)\n",
		*n, len(stats.ByWorker), elapsed.Round(time.Millisecond), float64(*n)/elapsed.Seconds(), shares(stats.ByWorker))
	report(w, points, lambdas)
	return nil
}

// shares says how many points each worker did, by pid.
func shares(by map[int]int) string {
	pids := make([]int, 0, len(by))
	for p := range by {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	parts := make([]string, len(pids))
	for i, p := range pids {
		parts[i] = fmt.Sprintf("worker %d: %d", p, by[p])
	}
	return strings.Join(parts, ", ")
}

// report prints the findings of a sweep.
func report(w io.Writer, points []Point, lambdas []float64) {
	onset := slices.IndexFunc(lambdas, func(l float64) bool { return l > chaos })
	if onset < 0 {
		fmt.Fprintln(w, "no chaos in this range: every orbit settles into a cycle")
	} else {
		if onset == 0 {
			fmt.Fprintf(w, "chaos from the start of the range (λ = %.4f)\n", lambdas[0])
		} else {
			fmt.Fprintf(w, "chaos begins at r ≈ %.4f (λ = %.4f)\n", points[onset].R, lambdas[onset])
		}
		// The widest run of order (λ ≤ chaos) after the onset.
		bestLo, bestLen := -1, 0
		for i := onset; i < len(lambdas); {
			if lambdas[i] > chaos {
				i++
				continue
			}
			j := i
			for j < len(lambdas) && lambdas[j] <= chaos {
				j++
			}
			if j < len(lambdas) && j-i > bestLen { // a window is closed by chaos on both sides
				bestLo, bestLen = i, j-i
			}
			i = j
		}
		if bestLo >= 0 {
			fmt.Fprintf(w, "widest window of order inside the chaos: r ≈ %.4f to %.4f\n",
				points[bestLo].R, points[bestLo+bestLen-1].R)
		}
		chaotic := 0
		for _, l := range lambdas {
			if l > chaos {
				chaotic++
			}
		}
		fmt.Fprintf(w, "chaotic: %.1f%% of the values of r\n", 100*float64(chaotic)/float64(len(lambdas)))
	}
	fmt.Fprintf(w, "λ(r), r from %.4g to %.4g (· order, ▁…█ chaos up to λ = ln 2):\n%s\n",
		points[0].R, points[len(points)-1].R, strip(lambdas, 64))
}

// strip draws λ as one line of cols characters, each the mean of its share of the values.
func strip(lambdas []float64, cols int) string {
	cols = min(cols, len(lambdas))
	levels := []rune("▁▂▃▄▅▆▇█")
	var b strings.Builder
	for c := range cols {
		lo, hi := c*len(lambdas)/cols, (c+1)*len(lambdas)/cols
		sum := 0.0
		for _, l := range lambdas[lo:hi] {
			sum += l
		}
		mean := sum / float64(hi-lo)
		if mean <= chaos {
			b.WriteRune('·')
			continue
		}
		k := int(mean / math.Ln2 * float64(len(levels)))
		b.WriteRune(levels[min(max(k, 0), len(levels)-1)])
	}
	return b.String()
}
