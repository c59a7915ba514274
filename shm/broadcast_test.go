package shm_test

import (
	"context"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/godist/dist"
	"github.com/godist/dist/shm"
)

// setRow is the seed's sow(reps, :(foo[1,:]), pi): fill row i of the array bound to name.
var setRow = dist.NewFunc("shmtest.setRow", func(ctx context.Context, r rowReq) (struct{}, error) {
	a, err := shm.LookupArray[float32](r.Name)
	if err != nil {
		return struct{}{}, err
	}
	for j := range a.Dims()[1] {
		a.Set(r.V, r.Row, j)
	}
	return struct{}{}, nil
})

// rows is the seed's reap(someworkers, :(foo[1:2,:])): rows [0, n) of the array bound to name.
var rows = dist.NewFunc("shmtest.rows", func(ctx context.Context, r rowReq) ([][]float32, error) {
	a, err := shm.LookupArray[float32](r.Name)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, r.Row)
	for i := range out {
		for j := range a.Dims()[1] {
			out[i] = append(out[i], a.At(i, j))
		}
	}
	return out, nil
})

var names = dist.NewFunc("shmtest.names", func(ctx context.Context, _ struct{}) ([]string, error) {
	return shm.Names(), nil
})

type rowReq struct {
	Name string
	Row  int
	V    float32
}

func TestTopologyLocal(t *testing.T) {
	c, _ := start(t, 3)
	ctx := ctxT(t)
	host, _ := os.Hostname()
	all, err := shm.DescribePids(ctx, c, shm.Query{Select: shm.All})
	if err != nil || len(all) != 1 || !slices.Equal(all[1], []int{1, 2, 3, 4}) {
		t.Fatalf("all: %v, %v", all, err)
	}
	if remote, err := shm.DescribePids(ctx, c, shm.Query{}); err != nil || len(remote) != 0 {
		t.Fatalf("remote (default): %v, %v", remote, err)
	}
	if local, err := shm.DescribePids(ctx, c, shm.Query{Select: shm.Local, Pids: []int{3, 4}}); err != nil || !slices.Equal(local[3], []int{3, 4}) || len(local) != 1 {
		t.Fatalf("local of 3,4: %v, %v", local, err)
	}
	if none, err := shm.DescribePids(ctx, c, shm.Query{Select: shm.All, HostFilter: func(h string) bool { return h != host }}); err != nil || len(none) != 0 {
		t.Fatalf("filtered out: %v, %v", none, err)
	}
	if lp, err := shm.LocalPids(ctx, c); err != nil || !slices.Equal(lp, []int{1, 2, 3, 4}) {
		t.Fatalf("local pids %v, %v", lp, err)
	}
	inv := shm.InvTopology(all)
	for _, p := range []int{1, 2, 3, 4} {
		if inv[p] != 1 {
			t.Fatalf("inverse topology %v", inv)
		}
	}
	// From a worker, the driver's host is asked for.
	hs, err := workerHosts.Call(ctx, c, 3, struct{}{})
	if err != nil || len(hs) != 4 || hs[1] != host {
		t.Fatalf("hosts seen by worker 3: %v, %v", hs, err)
	}
}

var workerHosts = dist.NewFunc("shmtest.hosts", func(ctx context.Context, _ struct{}) (map[int]string, error) {
	return shm.Hosts(ctx, dist.Current(ctx))
})

// TestBroadcastSharedSeed is ClusterUtils' broadcast_shared example on one host: the same matrix
// bound as "foo" in every process of each host, row 1 set to π through the representatives,
// and rows 1:2 read by other workers.
func TestBroadcastSharedSeed(t *testing.T) {
	c, _ := start(t, 3)
	ctx := ctxT(t)
	topo, err := shm.DescribePids(ctx, c, shm.Query{Select: shm.All})
	if err != nil {
		t.Fatal(err)
	}
	reps := topo.Reps()
	value := make([]float32, 16)
	for i := range value {
		value[i] = float32(i) / 16
	}
	arrs, err := shm.BroadcastShared(ctx, c, topo, value, []int{4, 4}, "foo")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range arrs {
		defer a.Release()
	}
	for _, p := range c.Procs() {
		ns, err := names.Call(ctx, c, p, struct{}{})
		if err != nil || !slices.Contains(ns, "foo") {
			t.Fatalf("names on %d: %v, %v", p, ns, err)
		}
	}
	if _, err := setRow.On(ctx, c, reps, rowReq{Name: "foo", Row: 0, V: math.Pi}); err != nil {
		t.Fatal(err)
	}
	var some []int
	for _, r := range reps {
		some = append(some, r+1)
	}
	got, err := rows.On(ctx, c, some, rowReq{Name: "foo", Row: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range some {
		r := got[p]
		if len(r) != 2 || r[0][0] != math.Pi || r[0][3] != math.Pi || r[1][0] != value[1] || r[1][3] != value[1+3*4] {
			t.Fatalf("worker %d reads rows %v", p, r)
		}
	}
	t.Logf("worker %d: foo[1:2,:] = %v", some[0], got[some[0]])
	if err := shm.UnbindShared(ctx, c, topo, "foo"); err != nil {
		t.Fatal(err)
	}
	if _, ok := shm.Lookup("foo"); ok {
		t.Fatal("foo still bound in the driver")
	}
	if ns, err := names.Call(ctx, c, 2, struct{}{}); err != nil || len(ns) != 0 {
		t.Fatalf("names on 2 after unbind: %v, %v", ns, err)
	}
}
