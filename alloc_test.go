package dist_test

import (
	"context"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

var allocNoop = dist.NewFunc("test.allocnoop", func(ctx context.Context, _ struct{}) (struct{}, error) {
	return struct{}{}, nil
})

// TestGoAllocations holds the driver's side of a Go call to its budget: allocation counts
// are deterministic where timings are not. The count is process-wide, so it includes the
// reply's frame read by the connection's reader and the batch of releases that follows each
// reply here. (A Go call whose reply comes before its Wait saves the future's channel.)
func TestGoAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations of the whole process; the race detector's own would swamp them")
	}
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	for range 1000 { // connections, pools, the batcher's slices
		if err := allocNoop.Go(ctx, c, 2, struct{}{}).Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	const budget = 6 // 4 measured: the future, its channel, the reply frame, a release batch
	n := testing.AllocsPerRun(2000, func() {
		if err := allocNoop.Go(ctx, c, 2, struct{}{}).Wait(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.1f allocations per Go and Wait", n)
	if n > budget {
		t.Fatalf("%.1f allocations per Go and Wait, budget %d", n, budget)
	}
}

// TestPmapAllocations holds the driver's side of Pmap to its budget per item. Batched, an item
// costs its boxing into an interface for encoding (ints above 255 allocate) and a share of
// its batch; with batch size 1, every item is a call of its own.
func TestPmapAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations of the whole process; the race detector's own would swamp them")
	}
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	in := make([]int, 10000)
	for i := range in {
		in[i] = i
	}
	for _, c2 := range []struct {
		batch  int
		budget float64 // measured: 1.1 and 17.4
	}{{0, 2}, {1, 24}} {
		opts := []dist.PmapOption{dist.WithBatchSize(c2.batch)}
		if _, err := dist.Pmap(ctx, c, pmSquare, in, opts...); err != nil { // warm up
			t.Fatal(err)
		}
		n := testing.AllocsPerRun(3, func() {
			if _, err := dist.Pmap(ctx, c, pmSquare, in, opts...); err != nil {
				t.Fatal(err)
			}
		}) / float64(len(in))
		t.Logf("batch size %d: %.2f allocations per item", c2.batch, n)
		if n > c2.budget {
			t.Errorf("batch size %d: %.2f allocations per item, budget %.0f", c2.batch, n, c2.budget)
		}
	}
}
