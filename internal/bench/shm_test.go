package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/bench"
)

// TestShmFigures checks that the shared-memory figures are produced with positive values and
// the memcpy baseline named; their size is for godist bench to report.
func TestShmFigures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := dist.Start(ctx, dist.WithWorkers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string][2]any{}
	err = bench.ShmFigures(ctx, c, true, func(name string, v float64, unit, baseline string) {
		got[name] = [2]any{v, baseline}
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, base := range map[string]string{"shm.create_256mib_ms": "", "shm.fetch_mb_per_s": "raw.memcpy_mb_per_s"} {
		f, ok := got[name]
		if !ok || f[0].(float64) <= 0 || f[1].(string) != base {
			t.Errorf("%s: %v", name, f)
		}
	}
}
