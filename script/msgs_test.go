package script_test

import (
	"reflect"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestReadmeMessages is the README's message passing section: a MessageDict sown to every
// worker, each worker writing its own slot, an all-to-all swap, and a collection on the caller.
func TestReadmeMessages(t *testing.T) {
	c, _ := disttest.Start(t, 4)
	ctx := ctxT(t)
	remotes := c.Workers()

	msgmaster := script.MessageDict{}
	for _, k := range remotes {
		msgmaster[k] = 0
	}
	if err := script.SowValue(ctx, c, remotes, "somemsg", msgmaster); err != nil {
		t.Fatal(err)
	}
	// isdefined(:somemsg) on the caller: false.
	if _, err := script.EvalAt(ctx, c, 1, "somemsg"); err == nil {
		t.Fatal("somemsg is defined on the driver")
	}
	// [@spawnat k somemsg[k] = 2k for k in remotes]
	for _, k := range remotes {
		if err := script.RunAt(ctx, c, k, "somemsg[myid()] = 2 * myid()"); err != nil {
			t.Fatal(err)
		}
	}
	first, err := script.EvalAt(ctx, c, remotes[0], "somemsg")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]any{}
	for _, k := range remotes {
		want[k] = 0
	}
	want[remotes[0]] = 2 * remotes[0]
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("before the swap, somemsg on %d = %v, want %v", remotes[0], first, want)
	}

	if err := script.SwapMsgs(ctx, c, remotes, "somemsg"); err != nil {
		t.Fatal(err)
	}
	all := map[int]any{}
	for _, k := range remotes {
		all[k] = 2 * k
	}
	got, err := script.Reap(ctx, c, remotes, "somemsg")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range remotes {
		if !reflect.DeepEqual(got[k], all) {
			t.Errorf("after the swap, somemsg on %d = %v, want %v", k, got[k], all)
		}
	}

	// Timeit 100 swapmsgs(workers(), :somemsg)
	mean, err := script.Timeit(20, func() error { return script.SwapMsgs(ctx, c, c.Workers(), "somemsg") })
	if err != nil || mean <= 0 {
		t.Fatalf("timeit: %v, %v", mean, err)
	}
	t.Logf("swapmsgs among %d workers: %v per swap", len(remotes), mean)

	col, err := script.CollectMsgs(ctx, c, "somemsg", remotes)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(map[int]any(col), all) {
		t.Fatalf("collectmsgs = %v, want %v", col, all)
	}

	// Messages of any wire type, in a typed map defined by code.
	if err := script.Everywhere(ctx, c, "vecs := map[int][]float64{}"); err != nil {
		t.Fatal(err)
	}
	if err := evalOK(t, ctx, c, remotes, "me := myid()\nvecs[me] = []float64{float64(me), 0.5}"); err != nil {
		t.Fatal(err)
	}
	if err := script.SwapMsgs(ctx, c, remotes, "vecs"); err != nil {
		t.Fatal(err)
	}
	v, err := script.EvalAt(ctx, c, remotes[len(remotes)-1], "vecs")
	if err != nil {
		t.Fatal(err)
	}
	wantVecs := map[int][]float64{}
	for _, k := range remotes {
		wantVecs[k] = []float64{float64(k), 0.5}
	}
	if !reflect.DeepEqual(v, wantVecs) {
		t.Fatalf("vecs = %v", v)
	}

	// A process without its own slot cannot swap.
	if err := script.SowValue(ctx, c, remotes, "empty", script.MessageDict{}); err != nil {
		t.Fatal(err)
	}
	if err := script.SwapMsgs(ctx, c, remotes, "empty"); err == nil {
		t.Fatal("swap of a dict without own slots: no error")
	}
}
