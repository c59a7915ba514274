package disttest

import (
	"context"
	"testing"

	"github.com/godist/dist"
)

// Barrier lets a test wait until code running elsewhere, a remote function on a worker or a
// goroutine here, has reached a point (typically: it has started and now waits), instead of
// sleeping and hoping it got there. The code calls Arrive; the test calls Wait.
//
// A *Barrier may be passed in the argument of a remote function: it is a remote channel on
// the process that made it. A nil *Barrier ignores Arrive, so a function can take one that
// only some callers wait on.
type Barrier struct {
	// Ch carries the pid of each arrival. It is exported only so that a Barrier travels in
	// the arguments of remote functions.
	Ch *dist.RemoteChannel[int]
}

// barrierSize is how many arrivals may wait before Arrive blocks until Wait takes them.
const barrierSize = 1024

// NewBarrier returns a Barrier hosted on this process of c. It is closed when the test ends.
func NewBarrier(t testing.TB, c *dist.Cluster) *Barrier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := dist.NewRemoteChannel[int](ctx, c, c.MyID(), barrierSize)
	if err != nil {
		t.Fatalf("disttest: barrier: %v", err)
	}
	t.Cleanup(func() { ch.Close(context.Background()) })
	return &Barrier{Ch: ch}
}

// Arrive records that the caller has reached the point the test waits for. The test's Wait may
// return before Arrive does: whatever the test does next (cancelling the caller's context, say)
// may already happen during Arrive, and the caller must treat it as if it came after.
func (b *Barrier) Arrive(ctx context.Context) error {
	if b == nil || b.Ch == nil {
		return nil
	}
	pid := 0
	if c := dist.Current(ctx); c != nil {
		pid = c.MyID()
	}
	return b.Ch.Put(ctx, pid)
}

// Wait waits for n arrivals (beyond those an earlier Wait took) and returns their pids in the
// order they came. It fails the test if ctx ends first.
func (b *Barrier) Wait(ctx context.Context, t testing.TB, n int) []int {
	t.Helper()
	pids := make([]int, 0, n)
	for range n {
		pid, err := b.Ch.Take(ctx)
		if err != nil {
			t.Fatalf("disttest: waiting for arrival %d of %d at a barrier: %v", len(pids)+1, n, err)
		}
		pids = append(pids, pid)
	}
	return pids
}
