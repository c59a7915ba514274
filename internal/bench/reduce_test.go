package bench_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/internal/bench"
)

// TestReduceFigures checks that the reduce figures come out, in order, positive, and with the
// serial time as the baseline of the distributed one. The numbers are asserted nowhere.
func TestReduceFigures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _ := disttest.Start(t, 2)
	type fig struct {
		name, unit, baseline string
		value                float64
	}
	var got []fig
	err := bench.ReduceFigures(ctx, c, true, func(name string, value float64, unit, baseline string) {
		got = append(got, fig{name, unit, baseline, value})
	})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(got))
	for i, f := range got {
		names[i] = f.name
		if f.value <= 0 || f.unit != "ms" {
			t.Errorf("%s = %v %s", f.name, f.value, f.unit)
		}
		t.Logf("%s %v %s (quick: sum of 1..1e7)", f.name, f.value, f.unit)
	}
	if !slices.Equal(names, []string{"reduce.serial_sum_1e8_ms", "reduce.sum_1e8_ms"}) {
		t.Fatalf("figures %v", names)
	}
	if got[0].baseline != "" || got[1].baseline != "reduce.serial_sum_1e8_ms" {
		t.Fatalf("baselines %q, %q", got[0].baseline, got[1].baseline)
	}
}
