package script_test

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestReadmeSowReap is the README's sow/reap section: values computed remotely, a global
// defined by an expression of myid(), slices and keys as targets, and stitch.
func TestReadmeSowReap(t *testing.T) {
	c, _ := disttest.Start(t, 3)
	ctx := ctxT(t)
	pids := []int{2, 3, 4}

	// sow(3, :bob, pi^2); @fetchfrom 3 bob
	if err := script.SowValue(ctx, c, []int{3}, "bob", math.Pi*math.Pi); err != nil {
		t.Fatal(err)
	}
	bob, err := script.EvalAt(ctx, c, 3, "bob")
	if err != nil || bob != math.Pi*math.Pi {
		t.Fatalf("bob = %v, %v", bob, err)
	}
	// sow([2,3,4], :morebob, :(100 + myid())); reap([2,3,4], :morebob)
	if err := script.Sow(ctx, c, pids, "morebob", "100 + myid()"); err != nil {
		t.Fatal(err)
	}
	got, err := script.Reap(ctx, c, pids, "morebob")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[int]any{2: 102, 3: 103, 4: 104}; !reflect.DeepEqual(got, want) {
		t.Fatalf("morebob = %v, want %v", got, want)
	}

	// sow(pids, :bar, :(randn(4,4))); sow(pids, :(bar[1:2,:]), 0)
	if err := script.Sow(ctx, c, pids, "bar", `func() [][]float64 {
		b := make([][]float64, 4)
		for i := range b {
			b[i] = []float64{rand.NormFloat64(), rand.NormFloat64(), rand.NormFloat64(), rand.NormFloat64()}
		}
		return b
	}()`); err != nil {
		t.Fatal(err)
	}
	if err := script.Sow(ctx, c, pids, "bar[0:2]", "0"); err != nil {
		t.Fatal(err)
	}
	got, err = script.Reap(ctx, c, pids, "bar")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		bar, ok := got[p].([][]float64)
		if !ok || len(bar) != 4 {
			t.Fatalf("bar on %d = %#v", p, got[p])
		}
		for i, row := range bar {
			for _, x := range row {
				if (i < 2) != (x == 0) {
					t.Fatalf("bar on %d = %v: rows 0,1 should be zero, the others not", p, bar)
				}
			}
		}
	}

	// sow(pids, :somedict, :(Dict(:buzz=>randn(2,2), :badger=>"hello")))
	// sow(pids, :(somedict[:buzz][:,:]), pi); reap(pids, :(somedict[:buzz]))
	if err := script.Sow(ctx, c, pids, "somedict", `map[string]any{
		"buzz":   [][]float64{{rand.NormFloat64(), rand.NormFloat64()}, {rand.NormFloat64(), rand.NormFloat64()}},
		"badger": "hello",
	}`); err != nil {
		t.Fatal(err)
	}
	if err := script.Sow(ctx, c, pids, `somedict["buzz"].([][]float64)[:]`, "math.Pi"); err != nil {
		t.Fatal(err)
	}
	got, err = script.Reap(ctx, c, pids, `somedict["buzz"]`)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float64{{math.Pi, math.Pi}, {math.Pi, math.Pi}}
	if !reflect.DeepEqual(got[pids[0]], want) {
		t.Fatalf("somedict[buzz] = %#v", got[pids[0]])
	}
	got, err = script.Reap(ctx, c, pids, `somedict["badger"]`)
	if err != nil || got[4] != "hello" {
		t.Fatalf("badger = %v, %v", got, err)
	}

	// A typed map with a slice value: the Go way of the same thing.
	if err := script.SowValue(ctx, c, pids, "typed", map[string][][]float64{"buzz": {{1, 2}, {3, 4}}}); err != nil {
		t.Fatal(err)
	}
	if err := script.Sow(ctx, c, pids, `typed["buzz"][1]`, "[]float64{7, 8}"); err != nil {
		t.Fatal(err)
	}
	if err := script.Sow(ctx, c, pids, `typed["buzz"][0][1]`, "9"); err != nil { // int → float64
		t.Fatal(err)
	}
	if err := script.SowValue(ctx, c, pids, `typed["new"]`, [][]float64{{5}}); err != nil {
		t.Fatal(err)
	}
	got, err = script.Reap(ctx, c, pids, "typed")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string][][]float64{"buzz": {{1, 9}, {7, 8}}, "new": {{5}}}; !reflect.DeepEqual(got[2], want) {
		t.Fatalf("typed = %#v", got[2])
	}

	// sow(pids, :x, :(myid()^2*randn(3))); stitch(pids, :x)
	if err := script.Sow(ctx, c, pids, "x", "[]float64{float64(myid()), float64(myid()*myid()), -1}"); err != nil {
		t.Fatal(err)
	}
	st, err := script.Stitch(ctx, c, []int{4, 2, 3}, "x")
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{2, 4, -1, 3, 9, -1, 4, 16, -1}; !reflect.DeepEqual(st, want) {
		t.Fatalf("stitch = %v, want %v", st, want)
	}
	st, err = script.Stitch(ctx, c, pids, "myid()")
	if err != nil || !reflect.DeepEqual(st, []int{2, 3, 4}) {
		t.Fatalf("stitch of scalars = %v, %v", st, err)
	}
}

// TestSowRebinds: a name is redefined with the new value's type, as Julia rebinds a global.
func TestSowRebinds(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	for _, v := range []any{3, "three", []int{3}, 3.5} {
		if err := script.SowValue(ctx, c, []int{2}, "v", v); err != nil {
			t.Fatal(err)
		}
		got, err := script.EvalAt(ctx, c, 2, "v")
		if err != nil || !reflect.DeepEqual(got, v) {
			t.Fatalf("v = %#v, %v; want %#v", got, err, v)
		}
	}
	// Bad targets are errors, and leave the worker serving.
	for _, target := range []string{"1 +", "x[", "undefinedThing[0]"} {
		if err := script.Sow(ctx, c, []int{2}, target, "1"); err == nil {
			t.Errorf("target %q: no error", target)
		}
	}
	if err := script.Sow(ctx, c, []int{2}, "v[0:1]", "1"); err == nil {
		t.Error("slice target of a float64: no error")
	}
}

// TestInterpreterTypesCross: values of types defined by interpreted code come back as values of
// the same structure; values that cannot cross are a KindValue error naming the type.
func TestInterpreterTypesCross(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	if err := script.Everywhere(ctx, c, "type P struct { Name string; Xs []float64; Meta map[string]any; hidden int }"); err != nil {
		t.Fatal(err)
	}
	v, err := script.EvalAt(ctx, c, 2, `P{Name: "p", Xs: []float64{1, 2}, Meta: map[string]any{"n": 1, "v": []int{3}}, hidden: 4}`)
	if err != nil {
		t.Fatal(err)
	}
	rv := reflect.ValueOf(v)
	// yaegi exports an unexported field of an interpreted type as X<name>, so it travels too.
	if rv.Kind() != reflect.Struct || rv.NumField() != 4 || rv.FieldByName("Name").Interface() != "p" ||
		rv.FieldByName("Xhidden").Interface() != 4 ||
		!reflect.DeepEqual(rv.FieldByName("Xs").Interface(), []float64{1, 2}) ||
		!reflect.DeepEqual(rv.FieldByName("Meta").Interface(), map[string]any{"n": 1, "v": []int{3}}) {
		t.Fatalf("P = %#v", v)
	}
	// Sent back, it assigns to a variable of the interpreted type.
	if err := script.SowValue(ctx, c, []int{2}, "q", v); err != nil {
		t.Fatal(err)
	}
	if n, err := script.EvalAt(ctx, c, 2, "q.Name + fmt.Sprint(len(q.Xs))"); err != nil || n != "p2" {
		t.Fatalf("q: %v, %v", n, err)
	}
	for _, code := range []string{"func(x int) int { return x }", "make(chan int)", "complex(1, 2)"} {
		_, err := script.EvalAt(ctx, c, 2, code)
		var ee *script.EvalError
		if !errors.As(err, &ee) || ee.Kind != script.KindValue || ee.Pid != 2 {
			t.Errorf("%s: %v", code, err)
		} else {
			t.Logf("%s: %v", code, err)
		}
		if err := script.RunAt(ctx, c, 2, code); err != nil {
			t.Errorf("RunAt(%s): %v", code, err)
		}
	}
	// Locally, any value is fine.
	f, err := script.EvalLocal(ctx, "func(x int) int { return 2 * x }")
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := f.(func(int) int); !ok || g(4) != 8 {
		t.Fatalf("EvalLocal func = %#v", f)
	}
}

// TestBulkValues: numeric slices travel as raw bytes both ways, and neither side aliases the
// other's memory, also when the caller is one of the pids.
func TestBulkValues(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	v := make([]float64, 1<<18)
	for i := range v {
		v[i] = float64(i) * 0.5
	}
	if err := script.SowValue(ctx, c, []int{1, 2}, "bulk", v); err != nil {
		t.Fatal(err)
	}
	v[7] = -1 // the namespaces hold copies
	got, err := script.Reap(ctx, c, []int{1, 2}, "bulk")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{1, 2} {
		b, ok := got[p].([]float64)
		if !ok || len(b) != len(v) || b[7] != 3.5 || b[len(b)-1] != float64(len(b)-1)*0.5 {
			t.Fatalf("bulk on %d: %T len %d", p, got[p], len(b))
		}
	}
	got[1].([]float64)[8] = -2 // the reaped value is a copy too
	again, err := script.Reap(ctx, c, []int{1}, "bulk[8]")
	if err != nil || again[1] != 4.0 {
		t.Fatalf("bulk[8] = %v, %v", again, err)
	}
	for _, code := range []string{"[]int32{-1, 2}", "[]byte(\"abc\")", "[]uint64{}", "[]float32(nil)"} {
		got, err := script.Reap(ctx, c, []int{2}, code)
		if err != nil {
			t.Fatalf("%s: %v", code, err)
		}
		t.Logf("%s -> %#v", code, got[2])
	}
}
