package main

import (
	"context"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestMain makes the test binary usable as a worker: the bridge tests start clusters whose
// workers are this binary re-executed. It removes the godist binary the REPL tests built.
func TestMain(m *testing.M) {
	dist.Main()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// TestBridge calls reap, sowat, stitch, spawnat, everywhereelse, swapmsgs and collectmsgs from
// interpreted code on the driver, and checks that the values come back with the types a script
// expects (int, not uint64; []float64, not []any), as they are used in a script's main.
func TestBridge(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := loadPrelude(ctx, c, nil); err != nil {
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
	check(`reap([]int{2}, "-myid()")`, map[int]any{2: -2})
	check(`fetchfrom(3, "math.Sqrt(4)")`, 2.0)
	check(`fetchfrom(2, "\"hello\"")`, "hello")
	eval(`sowat(workers(), "v", "[]float64{float64(myid()), 0.5}")`)
	check(`fetchfrom(2, "v")`, []float64{2, 0.5})
	check(`stitch(workers(), "v")`, []float64{2, 0.5, 3, 0.5})
	check(`fetchfrom(3, "[][]float64{{1, 2}, {3, 4}}")`, [][]float64{{1, 2}, {3, 4}})
	check(`fetchfrom(3, "[]string{\"a\", \"b\"}")`, []string{"a", "b"})
	check(`fetchfrom(2, "map[string]int{\"a\": 1}")`, map[any]any{"a": 1})
	// A script's main sums what it reaps: the values must assert to int.
	check(`func() int { t := 0; for _, n := range reap(workers(), "myid()") { t += n.(int) }; return t }()`, 5)

	// README's message passing, from code.
	eval(`everywhereelse("somemsg := map[int]any{2: 0, 3: 0}")`)
	eval("for _, k := range workers() { spawnat(k, fmt.Sprintf(\"somemsg[%d] = %d\", k, 2*k)) }")
	eval(`swapmsgs(workers(), "somemsg")`)
	check(`fetchfrom(2, "somemsg")`, map[any]any{2: 4, 3: 6})
	check(`collectmsgs("somemsg", workers())`, map[int]any{2: 4, 3: 6})

	// Errors come back as errors of the evaluation, naming what failed; the driver's own pid
	// is refused rather than waited for (its namespace runs the caller).
	for code, want := range map[string]string{
		`reap([]int{2}, "undefinedThing")`: "undefined: undefinedThing",
		`reap([]int{1}, "1")`:              "pid 1 is this process",
		`sowat([]int{2}, "x[", "1")`:       "target",
		`fetchfrom(99, "1")`:               "99",
	} {
		_, err := script.EvalLocal(ctx, code)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", code, err, want)
		}
	}
	// The namespace is still usable after those failures.
	check(`reap([]int{3}, "myid()")`, map[int]any{3: 3})
}
