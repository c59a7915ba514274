package dist_test

import (
	"context"
	"errors"
	"fmt"
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

// sample is a struct with numeric slices, as users pass them.
type sample struct {
	Name   string
	Values []float64
	Counts []int32
	Meta   *struct{ Weights []float32 }
}

var (
	// rescale returns s with every value doubled and its name marked.
	rescale = dist.NewFunc("test.rescale", func(ctx context.Context, s sample) (sample, error) {
		for i := range s.Values {
			s.Values[i] *= 2
		}
		s.Name += "!"
		return s, nil
	})
	// makeSample makes a sample of n values on the worker.
	makeSample = dist.NewFunc("test.makesample", func(ctx context.Context, n int) (sample, error) {
		s := sample{Name: fmt.Sprint(n), Values: ramp(n, 0.5), Counts: make([]int32, n/2), Meta: &struct{ Weights []float32 }{make([]float32, 100)}}
		s.Counts[len(s.Counts)-1] = int32(n)
		return s, nil
	})
)

func checkSample(t *testing.T, s sample, n int) {
	t.Helper()
	if s.Name != fmt.Sprint(n) || !slices.Equal(s.Values, ramp(n, 0.5)) || len(s.Counts) != n/2 || s.Counts[n/2-1] != int32(n) || s.Meta == nil || len(s.Meta.Weights) != 100 {
		t.Fatalf("sample of %d came back wrong: name %q, %d values, %d counts", n, s.Name, len(s.Values), len(s.Counts))
	}
}

// Numeric slices inside structs travel out of band, as top-level ones do: through calls,
// futures, remote channels and Pmap, beyond what CBOR arrays would allow (4M elements).
func TestStructsWithLargeSlices(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	const big = 5 << 20 // 40 MiB of float64
	s, err := makeSample.Call(ctx, c, 2, big)
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, s, big)
	r, err := rescale.Call(ctx, c, 2, s)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != s.Name+"!" || r.Values[big-1] != 2*s.Values[big-1] || len(r.Counts) != big/2 {
		t.Fatalf("rescaled sample: %q, %d values", r.Name, len(r.Values))
	}
	f := makeSample.Go(ctx, c, 3, 1000)
	fs, err := f.Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, fs, 1000)
	ch, err := dist.NewRemoteChannel[sample](ctx, c, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Release()
	if err := ch.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	got, err := ch.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSample(t, got, big)
	ns := []int{1000, 2000, 70000, 3}
	outs, err := dist.Pmap(ctx, c, makeSample, ns)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range ns {
		if n > 3 {
			checkSample(t, outs[i], n)
		}
	}
	if outs[3].Name != "3" || len(outs[3].Values) != 3 {
		t.Fatalf("small sample: %+v", outs[3])
	}
	// Structs as Pmap's arguments too.
	scaled, err := dist.Pmap(ctx, c, rescale, outs)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range ns {
		if scaled[i].Name != fmt.Sprint(n)+"!" || len(scaled[i].Values) != n || scaled[i].Values[n-1] != 2*(float64(n-1)+0.5) {
			t.Fatalf("Pmap over samples: item %d came back as %q with %d values", i, scaled[i].Name, len(scaled[i].Values))
		}
	}
}
