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
	d1, k1 := w.add(ctx, watchFunc(func(error) { fired.Add(1) }))
	d2, k2 := w.add(ctx, watchFunc(func(error) { fired.Add(10) }))
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
	if d, k := w.add(context.Background(), watchFunc(func(error) {})); d != nil || k != 0 {
		t.Fatal("watched context.Background")
	}
	// The set whose calls all finished last is kept for the next call with its context; the
	// one before lets go of its context.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	d3, k3 := w.add(ctx2, watchFunc(func(error) { t.Error("fired after remove") }))
	w.remove(d3, k3)
	d3, k3 = w.add(ctx2, watchFunc(func(error) { t.Error("fired after remove") }))
	w.remove(d3, k3)
	if len(w.sets) != 1 || w.idle != ctx2.Done() {
		t.Fatalf("%d sets, idle %v: want ctx2's set kept", len(w.sets), w.idle)
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	d4, k4 := w.add(ctx3, watchFunc(func(error) { t.Error("fired after remove") }))
	w.remove(d4, k4)
	w.mu.Lock()
	_, has2 := w.sets[ctx2.Done()]
	n = len(w.sets)
	w.mu.Unlock()
	if has2 || n != 1 {
		t.Fatalf("after ctx3's set emptied: %d sets, ctx2's kept %v", n, has2)
	}
	cancel2() // its AfterFunc is gone: nothing fires
	cancel3() // the kept set's context ends: the set goes
	deadline = time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		n, idle := len(w.sets), w.idle
		w.mu.Unlock()
		if n == 0 && idle == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sets left after the kept context ended", n)
		}
		time.Sleep(time.Millisecond)
	}
}
