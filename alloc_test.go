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
