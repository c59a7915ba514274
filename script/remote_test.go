package script_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestBuiltinsReachOtherProcesses calls reap, fetchfrom, sow, sowvalue, stitch, spawnat,
// everywhereelse, swapmsgs and collectmsgs from interpreted code, on the driver and on a
// worker, and checks that values come back with their types (int, typed slices and maps,
// structs), as they do through the Go API.
func TestBuiltinsReachOtherProcesses(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)
	// Other tests' definitions in this process's namespace (a user's own reap) go.
	if err := script.Clear(ctx, c, []int{1}); err != nil {
		t.Fatal(err)
	}
	eval := func(code string) any {
		t.Helper()
		v, err := script.EvalLocal(ctx, code)
		if err != nil {
			t.Fatalf("%s: %v", code, err)
		}
		return v
	}
	check := func(code string, want any) {
		t.Helper()
		if got := eval(code); !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", code, got, want)
		}
	}
	check(`reap(workers(), "myid() * 10")`, map[int]any{2: 20, 3: 30})
	check(`fetchfrom(3, "math.Sqrt(4)")`, 2.0)
	check(`fetchfrom(2, "func() {}()")`, nil)
	check(`func() int { t := 0; for _, n := range reap(workers(), "myid()") { t += n.(int) }; return t }()`, 5)
	eval(`sow(workers(), "v", "[]float64{float64(myid()), 0.5}")`)
	check(`fetchfrom(2, "v")`, []float64{2, 0.5})
	check(`stitch(workers(), "v")`, []float64{2, 0.5, 3, 0.5})
	eval(`sowvalue(workers(), "v[1]", 7)`)
	check(`stitch(workers(), "v")`, []float64{2, 7, 3, 7})
	eval(`sowvalue([]int{3}, "nested", map[string]map[string][]int{"a": {"b": {1, 2}}})`)
	check(`fetchfrom(3, "nested")`, map[string]map[string][]int{"a": {"b": {1, 2}}})
	check(`fetchfrom(3, "nested").(map[string]map[string][]int)["a"]["b"][1]`, 2)

	// A struct defined by code on a worker comes back as a struct with the same fields.
	eval(`everywhereelse("type P struct { X int; Name string }; var p = P{X: myid(), Name: \"w\"}")`)
	got := eval(`fetchfrom(2, "p")`)
	if rv := reflect.ValueOf(got); rv.Kind() != reflect.Struct || rv.FieldByName("X").Interface() != 2 ||
		rv.FieldByName("Name").Interface() != "w" {
		t.Errorf("fetchfrom(2, \"p\") = %#v, want a struct {X: 2, Name: w}", got)
	}

	// The README's message passing, from code.
	eval(`everywhereelse("somemsg := map[int]any{2: 0, 3: 0}")`)
	eval("for _, k := range workers() { spawnat(k, fmt.Sprintf(\"somemsg[%d] = %d\", k, 2*k)) }")
	eval(`swapmsgs(workers(), "somemsg")`)
	check(`fetchfrom(2, "somemsg")`, map[int]any{2: 4, 3: 6})
	check(`collectmsgs("somemsg", workers())`, map[int]any{2: 4, 3: 6})

	// A worker's code reaches another worker.
	check(`fetchfrom(2, "fetchfrom(3, \"myid() * 100\")")`, 300)
	check(`fetchfrom(2, "reap([]int{3}, \"v\")[3]")`, []float64{3, 7})

	// The caller's own pid fails at once (its namespace runs the caller), on the driver and on
	// a worker; failures are errors of the evaluation, and the namespace lives on.
	for code, want := range map[string]string{
		`reap(procs(), "1")`:                  "pid 1 is this process",
		`fetchfrom(1, "1")`:                   "pid 1 is this process",
		`sow([]int{1}, "x", "1")`:             "pid 1 is this process",
		`fetchfrom(2, "fetchfrom(2, \"1\")")`: "pid 2 is this process",
		`reap([]int{2}, "undefinedThing")`:    "undefined: undefinedThing",
		`sow([]int{2}, "x[", "1")`:            "target",
		`fetchfrom(99, "1")`:                  "99",
	} {
		_, err := script.EvalLocal(ctx, code)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", code, err, want)
		}
		if strings.HasPrefix(want, "pid ") && !strings.Contains(err.Error(), "namespace is busy running the calling code") {
			t.Errorf("%s: error %v, want ErrSelf's", code, err)
		}
		if !errors.Is(err, script.ErrEval) {
			t.Errorf("%s: error %v is not an evaluation error", code, err)
		}
	}
	check(`reap([]int{3}, "myid()")`, map[int]any{3: 3})
}
