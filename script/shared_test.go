package script_test

import (
	"context"
	"math"
	"reflect"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
	"github.com/godist/dist/shm"
)

// TestReadmeBroadcastShared is the README's broadcast_shared section on one host: a 4×4 float32
// array shared by every process is a global of each namespace under its name, a flat
// column-major []float32 over the shared memory. Writes through one process's namespace are seen
// by the others.
func TestReadmeBroadcastShared(t *testing.T) {
	c, _ := disttest.Start(t, 3)
	ctx := ctxT(t)
	topo, err := shm.DescribePids(ctx, c, shm.Query{Select: shm.All})
	if err != nil {
		t.Fatal(err)
	}
	reps := topo.Reps()
	if len(reps) != 1 {
		t.Fatalf("topology %v: want one host", topo)
	}
	init := make([]float32, 16)
	for i := range init {
		init[i] = float32(i) / 16
	}
	arrays, err := shm.BroadcastShared(ctx, c, topo, init, []int{4, 4}, "foo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		shm.UnbindShared(context.Background(), c, topo, "foo")
		for _, a := range arrays {
			a.Release()
		}
	})

	// sow(reps, :(foo[:,1]), :(map(Float32, pi))): the first column (column-major).
	if err := script.Sow(ctx, c, []int{2}, "foo[0:4]", "float32(math.Pi)"); err != nil {
		t.Fatal(err)
	}
	// workerslices = reap(someworkers, :(foo[1:2,:])): seen from the other processes.
	got, err := script.Reap(ctx, c, []int{1, 3, 4}, "foo[0:8]")
	if err != nil {
		t.Fatal(err)
	}
	pi := float32(math.Pi)
	want := []float32{pi, pi, pi, pi, init[4], init[5], init[6], init[7]}
	for pid, v := range got {
		if !reflect.DeepEqual(v, want) {
			t.Fatalf("foo[0:8] on %d = %v, want %v", pid, v, want)
		}
	}
	// Julia's foo[1,:] (a row) through code: element (0, j) is foo[j*4].
	if err := script.RunAt(ctx, c, 3, "for j := 0; j < 4; j++ { foo[j*4] = -1 }"); err != nil {
		t.Fatal(err)
	}
	row, err := script.EvalAt(ctx, c, 4, "[]float32{foo[0], foo[4], foo[8], foo[12]}")
	if err != nil || !reflect.DeepEqual(row, []float32{-1, -1, -1, -1}) {
		t.Fatalf("row 0 = %v, %v", row, err)
	}
	if d := arrays[reps[0]].Data(); d[4] != -1 || d[1] != pi {
		t.Fatalf("the driver's handle sees %v", d)
	}
	// The handle itself.
	h, err := script.EvalAt(ctx, c, 2, `fmt.Sprintf("%T", shared("foo"))`)
	if err != nil || h != "*shm.Array" {
		t.Fatalf("shared(foo) = %v, %v", h, err)
	}
	// Unbound: the global becomes an empty slice, never a view of unmapped memory.
	if err := shm.UnbindShared(ctx, c, topo, "foo"); err != nil {
		t.Fatal(err)
	}
	if n, err := script.EvalAt(ctx, c, 3, "len(foo)"); err != nil || n != 0 {
		t.Fatalf("len(foo) after unbinding = %v, %v", n, err)
	}
}
