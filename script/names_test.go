package script_test

import (
	"reflect"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestUserNamesDoNotClash defines, as globals of the user's code, the names the package could
// plausibly use inside a namespace (sow, V, godist, bound), and checks that assigning values
// received from the wire still works on the driver and on a worker.
func TestUserNamesDoNotClash(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	pids := []int{1, 2}
	// This process's namespace outlives the test: the user's reap must not hide the builtin
	// from later tests.
	t.Cleanup(func() { script.Clear(ctx, c, []int{1}) })
	if err := script.Everywhere(ctx, c, `
var sow = "mine"
var V = 7
var godist = []int{1}
type bound struct{ N int }
func reap() string { return "my reap" }
`); err != nil {
		t.Fatal(err)
	}
	if err := script.SowValue(ctx, c, pids, "x", 1.5); err != nil {
		t.Fatalf("SowValue of a name: %v", err)
	}
	if err := script.SowValue(ctx, c, pids, "xs", []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := script.SowValue(ctx, c, pids, "xs[1]", 20); err != nil {
		t.Fatalf("SowValue of an element: %v", err)
	}
	if err := script.SowValue(ctx, c, pids, "xs[0:1]", []int{10}); err != nil {
		t.Fatalf("SowValue of a range: %v", err)
	}
	if err := script.Sow(ctx, c, pids, "y", "V * myid()"); err != nil {
		t.Fatalf("Sow: %v", err)
	}
	if err := script.SowValue(ctx, c, pids, "sow", "assigned"); err != nil {
		t.Fatalf("SowValue to the user's own sow: %v", err)
	}
	for expr, want := range map[string]map[int]any{
		"x":             {1: 1.5, 2: 1.5},
		"xs":            {1: []int{10, 20, 3}, 2: []int{10, 20, 3}},
		"y":             {1: 7, 2: 14},
		"sow":           {1: "assigned", 2: "assigned"},
		"reap()":        {1: "my reap", 2: "my reap"},
		"godist[0] + V": {1: 8, 2: 8},
	} {
		got, err := script.Reap(ctx, c, pids, expr)
		if err != nil {
			t.Fatalf("Reap %s: %v", expr, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Reap %s = %v, want %v", expr, got, want)
		}
	}
}

// TestNoValue checks that code ending in a call of a function without results, or in a
// statement, has no value (nil) in Eval and EvalLocal, is an error in Reap, and that a result of
// type *any is still a value; and that sending Eval's results back with SowValue works.
func TestNoValue(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	pids := []int{1, 2}
	if err := script.Everywhere(ctx, c, `
var hits int
func touch() { hits++ }
type T struct{ N int }
func (t *T) Bump() { t.N++ }
var tv T
func ptr() *any { p := new(any); *p = 5; return p }
func nilptr() *any { return new(any) }
`); err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{
		"touch()", "(touch())", "tv.Bump()", "func() {}()", "sort.Ints(nil)", "delete(map[int]int{}, 1)",
		"x := 1; touch()", "for i := 0; i < 2; i++ { touch() }", "if hits > 0 { hits++ }",
		"var ch = make(chan int, 1); ch <- 1", "touch();",
	} {
		got, err := script.Eval(ctx, c, pids, code)
		if err != nil {
			t.Fatalf("Eval %q: %v", code, err)
		}
		if want := map[int]any{1: nil, 2: nil}; !reflect.DeepEqual(got, want) {
			t.Errorf("Eval %q = %#v, want no values", code, got)
		}
		v, err := script.EvalLocal(ctx, code)
		if err != nil || v != nil {
			t.Errorf("EvalLocal %q = %#v, %v; want nil, nil", code, v, err)
		}
		if _, err := script.Reap(ctx, c, []int{2}, code); err == nil {
			t.Errorf("Reap %q: no error for code without a value", code)
		}
		// The REPL's pattern: whatever came back is sown again.
		if err := script.SowValue(ctx, c, pids, "back", got[2]); err != nil {
			t.Fatalf("SowValue of Eval %q's result: %v", code, err)
		}
		if err := script.SowValue(ctx, c, pids, "again", 3); err != nil {
			t.Fatalf("SowValue after Eval %q: %v", code, err)
		}
	}
	// Values still are values: a result of type *any (nil inside or not), an assignment.
	v, err := script.EvalLocal(ctx, "ptr()")
	if p, ok := v.(*any); err != nil || !ok || *p != 5 {
		t.Errorf("EvalLocal ptr() = %#v, %v", v, err)
	}
	v, err = script.EvalLocal(ctx, "nilptr()")
	if p, ok := v.(*any); err != nil || !ok || p == nil || *p != nil {
		t.Errorf("EvalLocal nilptr() = %#v, %v", v, err)
	}
	// Whether a call has a value follows the callee's definition.
	for _, step := range []struct {
		code string
		want any
	}{
		{"func later() {}", nil}, {"later()", nil},
		{"func later() int { return 3 }", nil}, {"later()", 3},
		{"var fv = func() {}", nil}, {"fv()", nil},
		{"fv := func() string { return \"s\" }; fv()", "s"}, {"fv()", "s"},
	} {
		got, err := script.Eval(ctx, c, pids, step.code)
		if want := map[int]any{1: step.want, 2: step.want}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Eval %q = %#v, %v; want %v", step.code, got, err, step.want)
		}
	}
	got, err := script.Eval(ctx, c, pids, "y := 2 * myid()")
	if want := map[int]any{1: 2, 2: 4}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Eval y := 2 * myid() = %v, %v; want %v", got, err, want)
	}
}
