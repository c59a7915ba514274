package dist_test

import (
	"context"
	"testing"
	"time"

	"github.com/godist/dist"
)

func TestSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Log(c.Procs(), c.Workers())
	for _, pid := range c.Workers() {
		got, err := square.Call(ctx, c, pid, 7)
		if err != nil || got != 49 {
			t.Fatalf("square on %d = %v, %v", pid, got, err)
		}
		id, err := whoami.Call(ctx, c, pid, struct{}{})
		if err != nil || id != pid {
			t.Fatalf("whoami on %d = %v, %v", pid, id, err)
		}
	}
	f := square.Go(ctx, c, 2, 9)
	v, err := f.Fetch(ctx)
	t.Log(v, err)
	r, err := relay.Call(ctx, c, 2, [2]int{3, 5})
	t.Log("relay", r, err)
	_, err = boom.Call(ctx, c, 3, "kaboom")
	t.Log(err)
	xs, err := makeF64.Call(ctx, c, 2, 1000)
	t.Log(len(xs), err)
	s, err := sumF64.Call(ctx, c, 3, xs)
	t.Log(s, err)
}
