package dist_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

var (
	// takeThenWho takes one value from a channel, then says where it ran: a call that stays
	// busy until the test lets it go.
	takeThenWho = dist.NewFunc("test.ws.takethenwho", func(ctx context.Context, ch *dist.RemoteChannel[int]) (int, error) {
		if _, err := ch.Take(ctx); err != nil {
			return 0, err
		}
		return dist.Current(ctx).MyID(), nil
	})
	// exclusive fails if another call of it is running in the same process.
	exclusive = dist.NewFunc("test.ws.exclusive", func(ctx context.Context, _ int) (int, error) {
		if n := exclusiveRunning.Add(1); n != 1 {
			exclusiveRunning.Add(-1)
			return 0, fmt.Errorf("%d calls at once on worker %d", n, dist.Current(ctx).MyID())
		}
		defer exclusiveRunning.Add(-1)
		time.Sleep(2 * time.Millisecond)
		return dist.Current(ctx).MyID(), nil
	})
	exclusiveRunning atomic.Int32
)

func TestWorkerSetRoundRobin(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 3)
	ws := dist.NewWorkerSet(c, []int{4, 2}, dist.RoundRobin)
	defer ws.Close()
	var got []int
	for range 3 {
		id, err := dist.WorkerSetCall(ctx, ws, whoami, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, id)
		f := dist.WorkerSetGo(ctx, ws, whoami, struct{}{})
		if id, err = f.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
		if f.Where() != id {
			t.Errorf("round-robin future: Where = %d, ran on %d", f.Where(), id)
		}
		got = append(got, id)
	}
	if !slices.Equal(got, []int{4, 2, 4, 2, 4, 2}) {
		t.Fatalf("calls went to %v", got)
	}
}

func TestWorkerSetFirstFreeQueuesUntilAWorkerFrees(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	ws := dist.NewWorkerSet(c, nil, dist.FirstFree)
	defer ws.Close()
	if got := ws.Free(); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("Free = %v", got)
	}
	gate2, _ := dist.NewRemoteChannel[int](ctx, c, 1, 1)
	gate3, _ := dist.NewRemoteChannel[int](ctx, c, 1, 1)
	busy2 := dist.WorkerSetGo(ctx, ws, takeThenWho, gate2)
	disttest.Eventually(t, 10*time.Second, "a first busy worker", func() bool { return len(ws.Free()) == 1 })
	busy3 := dist.WorkerSetGo(ctx, ws, takeThenWho, gate3)
	disttest.Eventually(t, 10*time.Second, "both workers busy", func() bool { return len(ws.Free()) == 0 })
	queued := dist.WorkerSetGo(ctx, ws, whoami, struct{}{})
	disttest.Eventually(t, 10*time.Second, "the third call to queue", func() bool { return ws.Waiting() == 1 })
	if queued.Ready() {
		t.Fatal("the queued call ran while every worker was busy")
	}
	// Free the worker that took the second call: the queued call must go there.
	if err := gate3.Put(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if id, err := busy3.Fetch(ctx); err != nil || id != 3 {
		t.Fatalf("second call: %d, %v", id, err)
	}
	if id, err := queued.Fetch(ctx); err != nil || id != 3 {
		t.Fatalf("queued call ran on %d, %v; want 3, the worker that freed up", id, err)
	}
	if err := gate2.Put(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if id, err := busy2.Fetch(ctx); err != nil || id != 2 {
		t.Fatalf("first call: %d, %v", id, err)
	}
	disttest.Eventually(t, 10*time.Second, "both workers free", func() bool { return len(ws.Free()) == 2 && ws.Waiting() == 0 })
}

func TestWorkerSetFirstFreeNeverDoublesUp(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	ws := dist.NewWorkerSet(c, nil, dist.FirstFree)
	defer ws.Close()
	futs := make([]*dist.Future[int], 60)
	for i := range futs {
		futs[i] = dist.WorkerSetGo(ctx, ws, exclusive, i)
	}
	ran := map[int]int{}
	for _, f := range futs {
		id, err := f.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ran[id]++
	}
	if ran[2] == 0 || ran[3] == 0 || ran[2]+ran[3] != len(futs) {
		t.Fatalf("calls per worker: %v", ran)
	}
}

func TestWorkerSetErrorsAndPanicsKeepWorkersFree(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	// One member: a leaked worker would make the next call wait forever.
	ws := dist.NewWorkerSet(c, []int{3}, dist.FirstFree)
	defer ws.Close()
	for i := range 3 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var re *dist.RemoteError
		if _, err := dist.WorkerSetCall(cctx, ws, boom, "kaboom"); !errors.As(err, &re) || re.Pid != 3 {
			t.Fatalf("panic %d: %v", i, err)
		}
		if _, err := dist.WorkerSetCall(cctx, ws, fail, "nope"); !errors.As(err, &re) {
			t.Fatalf("error %d: %v", i, err)
		}
		if err := dist.WorkerSetGo(cctx, ws, boom, "async kaboom").Wait(cctx); !errors.As(err, &re) {
			t.Fatalf("async panic %d: %v", i, err)
		}
		cancel()
	}
	if v, err := dist.WorkerSetCall(ctx, ws, square, 9); err != nil || v != 81 {
		t.Fatalf("after failures: %v, %v", v, err)
	}
	if got := ws.Free(); !slices.Equal(got, []int{3}) {
		t.Fatalf("Free after failures = %v", got)
	}
}

func TestWorkerSetCancelWhileWaiting(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	ws := dist.NewWorkerSet(c, nil, dist.FirstFree)
	defer ws.Close()
	gate, _ := dist.NewRemoteChannel[int](ctx, c, 1, 1)
	busy := dist.WorkerSetGo(ctx, ws, takeThenWho, gate)
	disttest.Eventually(t, 10*time.Second, "the worker to be busy", func() bool { return len(ws.Free()) == 0 })
	wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := dist.WorkerSetCall(wctx, ws, whoami, struct{}{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting call with an expired context: %v", err)
	}
	if n := ws.Waiting(); n != 0 {
		t.Fatalf("%d calls still waiting after their context ended", n)
	}
	gate.Put(ctx, 0)
	if _, err := busy.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 10*time.Second, "the worker to be free", func() bool { return slices.Equal(ws.Free(), []int{2}) })
}

func TestWorkerSetDropsDeadWorkers(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 3)
	ws := dist.NewWorkerSet(c, []int{2, 3}, dist.FirstFree)
	defer ws.Close()
	solo := dist.NewWorkerSet(c, []int{4}, dist.FirstFree)
	defer solo.Close()

	// A busy member dies: its call fails, a call waiting for it fails too, and it never
	// comes back as free.
	gate, _ := dist.NewRemoteChannel[int](ctx, c, 1, 1)
	busy := dist.WorkerSetGo(ctx, solo, takeThenWho, gate)
	disttest.Eventually(t, 10*time.Second, "worker 4 busy", func() bool { return len(solo.Free()) == 0 })
	waiting := dist.WorkerSetGo(ctx, solo, whoami, struct{}{})
	disttest.Eventually(t, 10*time.Second, "a call waiting for worker 4", func() bool { return solo.Waiting() == 1 })
	disttest.Kill(t, c, 4)
	if _, err := busy.Fetch(ctx); !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("call on the killed worker: %v", err)
	}
	if _, err := waiting.Fetch(ctx); !errors.Is(err, dist.ErrNoWorkers) {
		t.Fatalf("call waiting for the killed worker: %v", err)
	}
	if got := solo.Pids(); len(got) != 0 {
		t.Fatalf("solo set after its worker died: %v", got)
	}

	// An idle member dies: calls go to the survivor only.
	disttest.Kill(t, c, 3)
	disttest.Eventually(t, 10*time.Second, "worker 3 dropped", func() bool { return slices.Equal(ws.Pids(), []int{2}) })
	for range 4 {
		if id, err := dist.WorkerSetCall(ctx, ws, whoami, struct{}{}); err != nil || id != 2 {
			t.Fatalf("call after worker 3 died: %d, %v", id, err)
		}
	}
	if got := ws.Free(); !slices.Equal(got, []int{2}) {
		t.Fatalf("Free = %v", got)
	}
}

func TestWorkerSetFollowsJoinsAndCloses(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	ws := dist.NewWorkerSet(c, nil, dist.FirstFree)
	fixed := dist.NewWorkerSet(c, []int{2}, dist.FirstFree)
	defer fixed.Close()
	if _, err := c.AddProcs(ctx, nil, 1); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 10*time.Second, "the new worker to join the set", func() bool { return slices.Equal(ws.Pids(), []int{2, 3}) })
	if got := fixed.Pids(); !slices.Equal(got, []int{2}) {
		t.Fatalf("a set of given pids followed a join: %v", got)
	}
	// Hold both members, queue calls, then close: the waiting calls fail, the held ones finish.
	var wg sync.WaitGroup
	gate, _ := dist.NewRemoteChannel[int](ctx, c, 1, 2)
	held := []*dist.Future[int]{dist.WorkerSetGo(ctx, ws, takeThenWho, gate), dist.WorkerSetGo(ctx, ws, takeThenWho, gate)}
	disttest.Eventually(t, 10*time.Second, "both members busy", func() bool { return len(ws.Free()) == 0 })
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := dist.WorkerSetCall(ctx, ws, whoami, struct{}{})
			errs <- err
		}()
	}
	disttest.Eventually(t, 10*time.Second, "two waiting calls", func() bool { return ws.Waiting() == 2 })
	ws.Close()
	wg.Wait()
	for range 2 {
		if err := <-errs; !errors.Is(err, dist.ErrWorkerSetClosed) {
			t.Fatalf("waiting call at Close: %v", err)
		}
	}
	gate.Put(ctx, 0)
	gate.Put(ctx, 0)
	for _, f := range held {
		if _, err := f.Fetch(ctx); err != nil {
			t.Fatalf("running call at Close: %v", err)
		}
	}
	if _, err := dist.WorkerSetCall(ctx, ws, whoami, struct{}{}); !errors.Is(err, dist.ErrWorkerSetClosed) {
		t.Fatalf("call after Close: %v", err)
	}
}
