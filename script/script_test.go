package script_test

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestReadmeIntro is the first example of ClusterUtils' README: reap an assignment, reap an
// expression over it, sow a value computed on the caller, reap it back.
func TestReadmeIntro(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)
	got, err := script.Reap(ctx, c, []int{2}, "x := myid()")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[int]any{2: 2}) {
		t.Fatalf("reap x := myid() = %v", got)
	}
	got, err = script.Reap(ctx, c, []int{2}, "math.Sqrt(float64(x))")
	if err != nil {
		t.Fatal(err)
	}
	if v := got[2].(float64); math.Abs(v-math.Sqrt2) > 1e-12 {
		t.Fatalf("sqrt(x) = %v", v)
	}
	// sow(2, :y, myid()): the value is computed here (pid 1) and sent.
	if err := script.SowValue(ctx, c, []int{2}, "y", c.MyID()); err != nil {
		t.Fatal(err)
	}
	got, err = script.Reap(ctx, c, []int{2}, "y")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[int]any{2: 1}) {
		t.Fatalf("reap y = %v", got)
	}
}

func TestErrorsNamePidAndPosition(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)
	cases := []struct {
		code, kind string
		line, col  int
		msg        string
	}{
		{"1 +", script.KindParse, 1, 0, ""},
		{"y := 1 + \"a\"", script.KindCompile, 1, 6, "mismatched types"},
		{"var m map[string]int\n", script.KindCompile, 0, 0, ""}, // placeholder, replaced below
		{"s := []int{1}\n_ = s[5]", script.KindPanic, 1, 0, "index out of range"},
		{`panic("boom")`, script.KindPanic, 1, 1, "boom"},
		{"\n\nz := nope", script.KindCompile, 3, 1, "undefined"},
	}
	cases[2] = struct {
		code, kind string
		line, col  int
		msg        string
	}{"func f() { var m map[string]int; m[\"a\"] = 1 }\n", "", 0, 0, ""}
	for _, tc := range cases {
		_, err := script.Eval(ctx, c, []int{3}, tc.code)
		if tc.kind == "" {
			if err != nil {
				t.Fatalf("%q: %v", tc.code, err)
			}
			continue
		}
		var ee *script.EvalError
		if !errors.As(err, &ee) || !errors.Is(err, script.ErrEval) {
			t.Fatalf("%q: err = %v (%T), want an *EvalError", tc.code, err, err)
		}
		if ee.Pid != 3 || ee.Kind != tc.kind || !strings.Contains(ee.Msg, tc.msg) {
			t.Errorf("%q: %+v", tc.code, *ee)
		}
		if tc.line > 0 && ee.Line != tc.line {
			t.Errorf("%q: line %d, want %d (%v)", tc.code, ee.Line, tc.line, err)
		}
		if tc.col > 0 && ee.Col != tc.col {
			t.Errorf("%q: col %d, want %d (%v)", tc.code, ee.Col, tc.col, err)
		}
		if !strings.Contains(err.Error(), "pid 3") {
			t.Errorf("%q: %v does not name the pid", tc.code, err)
		}
		t.Logf("%q -> %v", tc.code, err)
	}
	// A runtime error inside a function declared earlier.
	_, err := script.Eval(ctx, c, []int{3}, "f()")
	var ee *script.EvalError
	if !errors.As(err, &ee) || ee.Kind != script.KindPanic || !strings.Contains(ee.Msg, "nil map") || !strings.Contains(ee.Msg, "in f") || ee.Line != 1 || ee.Col != 1 {
		t.Fatalf("f(): %v", err)
	}
	t.Logf("f() -> %v", err)
	// The worker and its namespace live on.
	got, err := script.Reap(ctx, c, []int{3}, "myid() * 10")
	if err != nil || got[3] != 30 {
		t.Fatalf("after errors: %v %v", got, err)
	}
}

func evalOK(t *testing.T, ctx context.Context, c *dist.Cluster, pids []int, code string) error {
	t.Helper()
	_, err := script.Eval(ctx, c, pids, code)
	return err
}

// A compiled function that interpreted code calls by name (script_test.square): only its
// registration matters.
var _ = dist.NewFunc("script_test.square", func(ctx context.Context, x int) (int, error) { return x * x, nil })

// TestMapReduceMatchesLocal checks the numbers of Example_mapReduce against the same
// generators run here, and that worker output is forwarded.
func TestMapReduceMatchesLocal(t *testing.T) {
	c, out := disttest.Start(t, 3)
	ctx := ctxT(t)
	vecs, err := script.Reap(ctx, c, []int{2, 3, 4}, `func() []float64 {
		r := rand.New(rand.NewSource(int64(myid())))
		v := make([]float64, 5)
		for i := range v {
			x := r.Float64()
			v[i] = x * x
		}
		fmt.Println("squares from", myid())
		return v
	}()`)
	if err != nil {
		t.Fatal(err)
	}
	for pid, v := range vecs {
		r := rand.New(rand.NewSource(int64(pid)))
		for i, x := range v.([]float64) {
			y := r.Float64()
			if x != y*y {
				t.Fatalf("pid %d element %d = %v, want %v", pid, i, x, y*y)
			}
		}
	}
	for _, p := range []string{"2", "3", "4"} {
		if !out.WaitFor("From worker "+p+": squares from "+p, 10*time.Second) {
			t.Fatalf("no output of worker %s in %q", p, out.String())
		}
	}
}

func TestBuiltins(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)
	got, err := script.Reap(ctx, c, []int{1, 3}, "[]int{myid(), nprocs(), nworkers(), len(procs()), workers()[0]}")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[1], []int{1, 3, 2, 3, 2}) || !reflect.DeepEqual(got[3], []int{3, 3, 2, 3, 2}) {
		t.Fatalf("builtins: %v", got)
	}
	v, err := script.EvalAt(ctx, c, 2, `slices.Contains(funcs(), "script_test.square")`)
	if err == nil {
		t.Logf("slices available: %v", v)
	}
	v, err = script.EvalAt(ctx, c, 2, `n := 0
for _, f := range funcs() {
	if f == "script_test.square" {
		n++
	}
}
n`)
	if err != nil || v != 1 {
		t.Fatalf("funcs(): %v, %v", v, err)
	}
}

// TestRangeOverInt: Go 1.22's range over an integer, which yaegi 0.16 cannot compile, works
// through a rewrite.
func TestRangeOverInt(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	cases := map[string]any{
		"n := 0\nfor i := range 5 {\n\tn += i\n}\nn":                                        10,
		"k := 0\nfor range myid() + 1 { k++ }\nk":                                           3,
		"func tri(n int) int {\n\ts := 0\n\tfor i := range n + 1 { s += i }\n\treturn s\n}": nil,
		"tri(4)": 10,
		"sum := 0\nfor _, x := range []int{4, 5} { sum += x }\nsum": 9,
	}
	for _, code := range []string{
		"n := 0\nfor i := range 5 {\n\tn += i\n}\nn",
		"k := 0\nfor range myid() + 1 { k++ }\nk",
		"func tri(n int) int {\n\ts := 0\n\tfor i := range n + 1 { s += i }\n\treturn s\n}",
		"tri(4)",
		"sum := 0\nfor _, x := range []int{4, 5} { sum += x }\nsum",
	} {
		v, err := script.EvalAt(ctx, c, 2, code)
		if err != nil || v != cases[code] {
			t.Errorf("%q = %v, %v; want %v", code, v, err, cases[code])
		}
	}
}

// TestManyProcesses evaluates on enough processes for the evaluation to travel over dist's
// tree: every process gets the code once, values come back by pid, and the error is that of
// the lowest pid that failed.
func TestManyProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("30 interpreter workers: not in -short runs")
	}
	c, _ := disttest.Start(t, 30)
	ctx := ctxT(t)
	if err := script.Everywhere(ctx, c, "x := myid() * 2"); err != nil {
		t.Fatal(err)
	}
	got, err := script.Reap(ctx, c, c.Procs(), "x")
	if err != nil || len(got) != 31 {
		t.Fatalf("reap: %d values, %v", len(got), err)
	}
	for pid, v := range got {
		if v != pid*2 {
			t.Fatalf("x on %d is %v", pid, v)
		}
	}
	_, err = script.Eval(ctx, c, c.Procs(), "if myid() >= 20 {\n\tpanic(\"boom\")\n}")
	var ee *script.EvalError
	if !errors.As(err, &ee) || ee.Pid != 20 || ee.Kind != script.KindPanic || !strings.Contains(ee.Msg, "boom") {
		t.Fatalf("error %v, want the panic of process 20", err)
	}
}
