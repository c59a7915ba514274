package dist_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

var (
	// mirror returns xs reversed, so that a reply equal to the argument proves nothing.
	mirror = dist.NewFunc("test.mirror", func(ctx context.Context, xs []float64) ([]float64, error) {
		slices.Reverse(xs)
		return xs, nil
	})
	sink = dist.NewFunc("test.sink", func(ctx context.Context, xs []float64) (int, error) { return len(xs), nil })
	// mirrorVia has worker pid mirror xs: a transfer between two workers.
	mirrorVia = dist.NewFunc("test.mirrorvia", func(ctx context.Context, a struct {
		Pid int
		Xs  []float64
	}) ([]float64, error) {
		return mirror.Call(ctx, dist.Current(ctx), a.Pid, a.Xs)
	})
)

func ramp(n int, seed float64) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(i) + seed
	}
	return xs
}

func checkMirrored(t *testing.T, got, sent []float64) {
	t.Helper()
	want := slices.Clone(sent)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%d values came back, not the %d sent reversed", len(got), len(sent))
	}
}

// Large numeric slices between processes of one host go through shared memory after the
// first one, in both directions and between workers, and arrive whole.
func TestLargeSlicesThroughSharedMemory(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	if s := c.Stats(); s.ShmOut != 0 || s.ShmIn != 0 {
		t.Fatalf("shared memory in use before any large slice: %+v", s)
	}
	sizes := []int{1 << 17, 3<<17 + 5, 4 << 20, 1<<17 - 1}
	for round := range 3 {
		for i, n := range sizes {
			xs := ramp(n, float64(round*10+i))
			got, err := mirror.Call(ctx, c, 2, xs)
			if err != nil {
				t.Fatal(err)
			}
			checkMirrored(t, got, ramp(n, float64(round*10+i)))
		}
	}
	s := c.Stats()
	if s.ShmOut != 1 || s.ShmIn != 1 {
		t.Fatalf("driver: %d connections send and %d receive through shared memory, want 1 and 1", s.ShmOut, s.ShmIn)
	}
	ws, err := stats.Call(ctx, c, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if ws.ShmOut != 1 || ws.ShmIn != 1 {
		t.Fatalf("worker 2: %d connections send and %d receive through shared memory, want 1 and 1", ws.ShmOut, ws.ShmIn)
	}
	// Worker 2 to worker 3, on the connection the two make between themselves.
	for round := range 3 {
		xs := ramp(2<<20, float64(round))
		got, err := mirrorVia.Call(ctx, c, 2, struct {
			Pid int
			Xs  []float64
		}{3, xs})
		if err != nil {
			t.Fatal(err)
		}
		checkMirrored(t, got, ramp(2<<20, float64(round)))
	}
	if ws, err = stats.Call(ctx, c, 3, false); err != nil {
		t.Fatal(err)
	}
	if ws.ShmIn < 1 || ws.ShmOut < 1 {
		t.Fatalf("worker 3: %d connections send and %d receive through shared memory, want 1 and 1 (with worker 2)", ws.ShmOut, ws.ShmIn)
	}
}

// A worker killed while large slices stream to it through shared memory fails the call in
// flight with ErrProcessExited, promptly, and the driver goes on.
func TestKillWorkerMidSharedMemoryTransfer(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	xs := ramp(8<<20, 0) // 64 MiB: each transfer takes several milliseconds
	if _, err := sink.Call(ctx, c, 3, xs); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		for {
			if _, err := sink.Call(ctx, c, 3, xs); err != nil {
				errc <- err
				return
			}
		}
	}()
	<-started
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	disttest.Kill(t, c, 3)
	select {
	case err := <-errc:
		if !errors.Is(err, dist.ErrProcessExited) {
			t.Fatalf("call in flight failed with %v, want ErrProcessExited", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call in flight still waits for a dead worker")
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("failing the call in flight took %v", d)
	}
	got, err := mirror.Call(ctx, c, 2, ramp(1<<20, 1))
	if err != nil {
		t.Fatal(err)
	}
	checkMirrored(t, got, ramp(1<<20, 1))
}
