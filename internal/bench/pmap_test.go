package bench_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/bench"
)

// TestPmapFigures checks that the Pmap figures are produced and positive; their values are
// asserted nowhere (see godist bench).
func TestPmapFigures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithOutput(os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string]float64{}
	err = bench.PmapFigures(ctx, c, true, func(name string, v float64, unit, baseline string) {
		t.Logf("%s %.2f %s", name, v, unit)
		got[name] = v
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pmap.overhead_us_per_item", "pmap.overhead_us_per_item_batch1", "pmap.speedup", "raw.threads_speedup"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v", name, got[name])
		}
	}
}
