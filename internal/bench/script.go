package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/script"
)

// ScriptFigures measures reap.p50_us: the median time of script.Reap of a small global (an
// int) from one worker, i.e. a remote call that evaluates an expression in the worker's
// interpreter namespace and sends its value back typed. It is emitted with the raw unix-socket
// round trip as its baseline, like call.p50_us, which is the same round trip without the
// interpreter. The first Reap creates the worker's namespace and is not counted.
func ScriptFigures(ctx context.Context, c *dist.Cluster, quick bool, emit func(name string, value float64, unit, baseline string)) error {
	n := 5000
	if quick {
		n = 500
	}
	pid := c.Workers()[0]
	if err := script.SowValue(ctx, c, []int{pid}, "benchx", 42); err != nil {
		return err
	}
	for range n / 10 { // warm up: namespace, connections, caches
		if _, err := script.Reap(ctx, c, []int{pid}, "benchx"); err != nil {
			return err
		}
	}
	lat := make([]float64, 0, n)
	for range n {
		t := time.Now()
		got, err := script.Reap(ctx, c, []int{pid}, "benchx")
		if err != nil {
			return err
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e3)
		if got[pid] != 42 {
			return fmt.Errorf("reap of benchx = %v, want 42", got[pid])
		}
	}
	sort.Float64s(lat)
	emit("reap.p50_us", pct(lat, 50), "us", "raw.unix.pingpong_p50_us")
	return script.Clear(ctx, c, []int{pid}, "benchx")
}
