package shm_test

import (
	"context"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/shm"
)

// workerHostsCached asks, from a worker, for the driver's host (which a worker's membership
// does not record) and says how many hostnames the worker's cache then holds.
var workerHostsCached = dist.NewFunc("shmtest.hostsCached", func(ctx context.Context, _ struct{}) (int, error) {
	c := dist.Current(ctx)
	if _, err := shm.Hosts(ctx, c, 1); err != nil {
		return 0, err
	}
	return shm.HostsCached(c), nil
})

// TestHostCacheDroppedOnClose: the hostnames Hosts remembers for a cluster go when it closes,
// so that the cache does not keep closed clusters alive.
func TestHostCacheDroppedOnClose(t *testing.T) {
	c, _ := start(t, 1)
	ctx := ctxT(t)
	// Where the cache is filled for real: a worker asking for the driver's host.
	if n, err := workerHostsCached.Call(ctx, c, 2, struct{}{}); err != nil || n != 1 {
		t.Fatalf("worker's cache holds %d hostnames (%v), want 1", n, err)
	}
	// In the driver every host is recorded; fill the cache as Hosts does and check it is used.
	shm.RememberHost(c, 99, "elsewhere")
	if hs, err := shm.Hosts(ctx, c, 99); err != nil || hs[99] != "elsewhere" {
		t.Fatalf("hosts %v, %v", hs, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 5*time.Second, "the closed cluster's hostnames dropped", func() bool {
		return shm.HostsCached(c) == 0
	})
	shm.RememberHost(c, 100, "late")
	if n := shm.HostsCached(c); n != 0 {
		t.Fatalf("a closed cluster's hostname was remembered (%d)", n)
	}
}
