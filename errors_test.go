package dist_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// hop calls itself along path, from each process to the next, and square on the last: the
// error of a refused call travels back through every process on the way. It is registered
// in init, as a variable that refers to itself cannot be initialised in its declaration.
var hop *dist.Func[[]int, int]

func init() {
	hop = dist.NewFunc("test.errors.hop", func(ctx context.Context, path []int) (int, error) {
		c := dist.Current(ctx)
		if len(path) == 1 {
			return square.Call(ctx, c, path[0], 3)
		}
		return hop.Call(ctx, c, path[0], path[1:])
	})
}

func TestTopologyErrorAcrossHops(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2, dist.WithTopology(dist.MasterWorker()))
	for _, tc := range []struct {
		path   []int
		origin int // where the refused call was made
	}{
		{[]int{2, 3}, 2},       // driver → 2, whose call to 3 is refused
		{[]int{2, 1, 3, 2}, 3}, // driver → 2 → driver → 3, whose call to 2 is refused
	} {
		_, err := hop.Call(ctx, c, tc.path[0], tc.path[1:])
		if !errors.Is(err, dist.ErrTopology) {
			t.Fatalf("path %v: %v does not match ErrTopology", tc.path, err)
		}
		var re *dist.RemoteError
		if !errors.As(err, &re) || re.Pid != tc.origin || !strings.Contains(err.Error(), "master-worker") {
			t.Fatalf("path %v: %#v", tc.path, err)
		}
		if errors.Is(err, dist.ErrTypeMismatch) || errors.Is(err, dist.ErrProcessExited) {
			t.Fatalf("path %v: %v matches another sentinel", tc.path, err)
		}
	}
	// Allowed paths still work.
	if v, err := hop.Call(ctx, c, 2, []int{1, 3}); err != nil || v != 9 {
		t.Fatalf("2 → 1 → 3: %d, %v", v, err)
	}
}
