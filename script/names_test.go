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
