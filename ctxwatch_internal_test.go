package dist

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestCtxWatch(t *testing.T) {
	var w ctxWatch
	ctx, cancel := context.WithCancel(context.Background())
	var fired atomic.Int32
	d1, k1 := w.add(ctx, func() { fired.Add(1) })
	d2, k2 := w.add(ctx, func() { fired.Add(10) })
	if len(w.sets) != 1 {
		t.Fatalf("%d sets for one context", len(w.sets))
	}
	w.remove(d1, k1) // its call finished
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for fired.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	w.mu.Lock()
	n := len(w.sets)
	w.mu.Unlock()
	if fired.Load() != 10 || n != 0 {
		t.Fatalf("fired %d, sets left %d", fired.Load(), n)
	}
	w.remove(d2, k2) // after firing: harmless
	// A context that can never end is not watched.
	if d, k := w.add(context.Background(), func() {}); d != nil || k != 0 {
		t.Fatal("watched context.Background")
	}
	// A set whose calls all finished lets go of its context.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	d3, k3 := w.add(ctx2, func() { t.Error("fired after remove") })
	w.remove(d3, k3)
	if len(w.sets) != 0 {
		t.Fatal("empty set kept")
	}
	cancel2()
}
