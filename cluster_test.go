package dist_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestProcessesAndPids(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 2)
	if c.MyID() != 1 {
		t.Fatalf("driver pid = %d", c.MyID())
	}
	if got := c.Procs(); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("Procs = %v", got)
	}
	if got := c.Workers(); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("Workers = %v", got)
	}
	added, err := c.AddProcs(ctx, nil, 2)
	if err != nil || !slices.Equal(added, []int{4, 5}) {
		t.Fatalf("AddProcs = %v, %v", added, err)
	}
	info3, _ := c.ProcInfo(3)
	if err := c.RmProcs(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if disttest.Alive(info3.OSPid) {
		t.Fatalf("worker 3 (os pid %d) alive after RmProcs", info3.OSPid)
	}
	if got := c.Workers(); !slices.Equal(got, []int{2, 4, 5}) {
		t.Fatalf("Workers after RmProcs = %v", got)
	}
	// pids are never reused
	added, err = c.AddProcs(ctx, nil, 1)
	if err != nil || !slices.Equal(added, []int{6}) {
		t.Fatalf("AddProcs after RmProcs = %v, %v", added, err)
	}
	if _, err := square.Call(ctx, c, 3, 2); !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("call to removed worker: %v", err)
	}
	// every live worker answers, and knows its pid
	for _, pid := range c.Workers() {
		if id, err := whoami.Call(ctx, c, pid, struct{}{}); err != nil || id != pid {
			t.Fatalf("whoami on %d = %d, %v", pid, id, err)
		}
	}
	// a worker sees the same membership
	disttest.Eventually(t, 5*time.Second, "worker 6 to see procs [1 2 4 5 6]", func() bool {
		got, err := procsOf.Call(ctx, c, 6, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		return slices.Equal(got, []int{1, 2, 4, 5, 6})
	})
}

func TestOutputForwarding(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, out := disttest.Start(t, 2)
	if _, err := echoLine.Call(ctx, c, 3, "hello from three"); err != nil {
		t.Fatal(err)
	}
	if !out.WaitFor("From worker 3: hello from three", 5*time.Second) {
		t.Fatalf("output not forwarded; got %q", out.String())
	}
}

func TestCallShapes(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)

	f := square.Go(ctx, c, 3, 12)
	if f.Where() != 3 {
		t.Fatalf("Where = %d", f.Where())
	}
	v, err := f.Fetch(ctx)
	if err != nil || v != 144 {
		t.Fatalf("Go/Fetch = %v, %v", v, err)
	}
	if !f.Ready() {
		t.Fatal("fetched future not ready")
	}
	if v, err := f.Fetch(ctx); err != nil || v != 144 {
		t.Fatalf("cached Fetch = %v, %v", v, err)
	}

	if err := echoLine.Do(ctx, c, 2, "do"); err != nil {
		t.Fatal(err)
	}

	all, err := whoami.Everywhere(ctx, c, struct{}{})
	if err != nil || len(all) != 3 || all[1] != 1 || all[2] != 2 || all[3] != 3 {
		t.Fatalf("Everywhere = %v, %v", all, err)
	}

	// Any goes round robin over the workers.
	seen := map[int]int{}
	for range 6 {
		id, err := whoami.Call(ctx, c, dist.Any, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		seen[id]++
	}
	if seen[2] != 3 || seen[3] != 3 {
		t.Fatalf("Any distribution = %v", seen)
	}

	r, err := c.CallByName(ctx, 2, "test.square", 11)
	if err != nil || r != uint64(121) {
		t.Fatalf("CallByName = %#v, %v", r, err)
	}
	if _, err := c.CallByName(ctx, 2, "no.such.func", 1); !errors.Is(err, dist.ErrUnknownFunc) {
		t.Fatalf("unknown func: %v", err)
	}
	if _, err := c.CallByName(ctx, 2, "test.square", "not an int"); !errors.Is(err, dist.ErrTypeMismatch) {
		t.Fatalf("type mismatch: %v", err)
	}

	// worker → worker, connection made on first use
	if r, err := relay.Call(ctx, c, 2, [2]int{3, 9}); err != nil || r != 81 {
		t.Fatalf("relay = %v, %v", r, err)
	}

	// numeric slices both ways
	xs, err := makeF64.Call(ctx, c, 2, 1<<20)
	if err != nil || len(xs) != 1<<20 || xs[12345] != 12345 {
		t.Fatalf("makeF64: len %d, %v", len(xs), err)
	}
	if s, err := sumF64.Call(ctx, c, 3, xs); err != nil || s != float64(1<<20)*float64(1<<20-1)/2 {
		t.Fatalf("sumF64 = %v, %v", s, err)
	}

	// a call to this process runs here
	if v, err := square.Call(ctx, c, 1, 5); err != nil || v != 25 {
		t.Fatalf("local call = %v, %v", v, err)
	}
	if v, err := square.Go(ctx, c, 1, 6).Fetch(ctx); err != nil || v != 36 {
		t.Fatalf("local Go = %v, %v", v, err)
	}
}

func TestFuturePassedToAnotherWorker(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	slow := sleep.Go(ctx, c, 2, 50*time.Millisecond)
	_ = slow
	f := square.Go(ctx, c, 2, 7)
	// 3 fetches from 2 a future this process created
	got, err := fetchFuture.Call(ctx, c, 3, f)
	if err != nil || got != 49 {
		t.Fatalf("fetch on 3 = %v, %v", got, err)
	}
	// a ready future travels with its value
	f2 := square.Go(ctx, c, 3, 8)
	if _, err := f2.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := fetchFuture.Call(ctx, c, 2, f2); err != nil || got != 64 {
		t.Fatalf("ready future on 2 = %v, %v", got, err)
	}
	// an unready one, fetched on the owner itself
	f3 := square.Go(ctx, c, 2, 9)
	if got, err := fetchFuture.Call(ctx, c, 2, f3); err != nil || got != 81 {
		t.Fatalf("future fetched on its owner = %v, %v", got, err)
	}
}

func TestReceivedFutureReady(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	// Not ready anywhere: Ready says no without asking, ReadyCtx asks and says no, and a
	// question under an ended context fails instead of waiting.
	slow := sleep.Go(ctx, c, 2, time.Hour)
	r, err := readiness.Call(ctx, c, 3, readinessQuery{F: slow})
	if err != nil || r.Before || r.Asked || r.After || r.EndedErr == "" {
		t.Fatalf("unready future on 3: %+v, %v", r, err)
	}
	if !strings.Contains(r.EndedErr, "canceled") {
		t.Errorf("ReadyCtx under an ended context: %q, want the context's error", r.EndedErr)
	}
	// Sent before it is ready, then ready at its owner: ReadyCtx learns it from the owner,
	// and Ready remembers.
	soon := sleep.Go(ctx, c, 2, 50*time.Millisecond)
	r, err = readiness.Call(ctx, c, 3, readinessQuery{F: soon, Poll: true})
	if err != nil || !r.Asked || !r.After {
		t.Fatalf("future on 3 ready at its owner: %+v, %v", r, err)
	}
}

func TestErrors(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)

	_, err := boom.Call(ctx, c, 2, "kaboom")
	var re *dist.RemoteError
	if !errors.As(err, &re) || re.Pid != 2 || re.Func != "test.boom" || !strings.Contains(re.Msg, "kaboom") || !strings.Contains(re.Stack, "goroutine") {
		t.Fatalf("panic: %#v", err)
	}
	// the worker lives on
	if v, err := square.Call(ctx, c, 2, 3); err != nil || v != 9 {
		t.Fatalf("after panic: %v, %v", v, err)
	}
	_, err = fail.Call(ctx, c, 3, "nope")
	if !errors.As(err, &re) || re.Pid != 3 || re.Msg != "nope" {
		t.Fatalf("returned error: %#v", err)
	}
	// an error from a future
	if _, err := boom.Go(ctx, c, 3, "later").Fetch(ctx); !errors.As(err, &re) || re.Pid != 3 {
		t.Fatalf("future error: %v", err)
	}
	// errors.Is across two hops: 2 calls 3, which is dead
	disttest.Kill(t, c, 3)
	if err := disttest.WaitGone(c, 3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	_, err = relay.Call(ctx, c, 2, [2]int{3, 1})
	var pe *dist.ProcessExitedError
	if !errors.Is(err, dist.ErrProcessExited) || !errors.As(err, &pe) || pe.Pid != 3 {
		t.Fatalf("relay to dead worker: %v", err)
	}
}

func TestKillWorkerMidCalls(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	started := disttest.NewBarrier(t, c)
	var futs []*dist.Future[struct{}]
	for range 50 {
		futs = append(futs, waitCancel.Go(ctx, c, 3, started))
	}
	done := make(chan error, 1)
	go func() { _, err := waitCancel.Call(ctx, c, 3, started); done <- err }()
	started.Wait(ctx, t, 51) // every call runs on 3
	start := time.Now()
	disttest.Kill(t, c, 3)
	for _, f := range futs {
		if _, err := f.Fetch(ctx); !errors.Is(err, dist.ErrProcessExited) {
			t.Fatalf("pending future: %v", err)
		}
	}
	if err := <-done; !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("pending call: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("failing pending calls took %v", d)
	}
	if err := disttest.WaitGone(c, 3, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := square.Call(ctx, c, 2, 4); err != nil || v != 16 {
		t.Fatalf("survivor: %v, %v", v, err)
	}
	if _, err := square.Call(ctx, c, 3, 4); !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("call to the dead: %v", err)
	}
}

func TestCancellationReachesRemote(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	started := disttest.NewBarrier(t, c)
	go func() { _, err := waitCancel.Call(cctx, c, 2, started); errc <- err }()
	started.Wait(ctx, t, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	// a Go whose context times out
	tctx, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := waitCancel.Go(tctx, c, 2, nil).Fetch(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed out Go: %v", err)
	}
	disttest.Eventually(t, 5*time.Second, "the remote to see 2 cancellations", func() bool {
		n, err := cancelCount.Call(ctx, c, 2, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		return n == 2
	})
}

// A one-way request (Do) has no caller waiting, but its handler still stops when the process
// that sent it is gone.
func TestOneWayHandlerCancelledWhenSenderDies(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	before, err := cancelCount.Call(ctx, c, 1, struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	started := disttest.NewBarrier(t, c)
	if _, err := doWaitOnDriver.Call(ctx, c, 2, started); err != nil {
		t.Fatal(err)
	}
	started.Wait(ctx, t, 1) // the driver's handler waits on its context now
	disttest.Kill(t, c, 2)
	disttest.Eventually(t, 5*time.Second, "the driver's handler to see its context end", func() bool {
		n, err := cancelCount.Call(ctx, c, 1, struct{}{})
		return err == nil && n == before+1
	})
}

func TestRemoteChannelSemantics(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	for _, host := range []int{1, 2} {
		rc, err := dist.NewRemoteChannel[string](ctx, c, host, 2)
		if err != nil {
			t.Fatal(err)
		}
		if rc.Where() != host {
			t.Fatalf("Where = %d", rc.Where())
		}
		if ok, _ := rc.Ready(ctx); ok {
			t.Fatal("empty channel ready")
		}
		rc.Put(ctx, "a")
		rc.Put(ctx, "b")
		// full: a third put blocks
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		if err := rc.Put(short, "c"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("put on full channel: %v", err)
		}
		cancel()
		if v, _ := rc.Fetch(ctx); v != "a" {
			t.Fatalf("Fetch = %q", v)
		}
		if v, _ := rc.Take(ctx); v != "a" {
			t.Fatalf("Take = %q", v)
		}
		if err := rc.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := rc.Put(ctx, "x"); !errors.Is(err, dist.ErrChannelClosed) {
			t.Fatalf("put after close: %v", err)
		}
		if v, err := rc.Take(ctx); v != "b" || err != nil {
			t.Fatalf("drain after close = %q, %v", v, err)
		}
		if _, err := rc.Take(ctx); !errors.Is(err, dist.ErrChannelClosed) {
			t.Fatalf("take on closed, drained: %v", err)
		}
		rc.Release()
	}
	// unbuffered: Put returns only once a taker has the value
	rc, err := dist.NewRemoteChannel[int](ctx, c, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	put := make(chan error, 1)
	go func() { put <- rc.Put(ctx, 42) }()
	select {
	case err := <-put:
		t.Fatalf("unbuffered put returned before take: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if v, err := rc.Take(ctx); v != 42 || err != nil {
		t.Fatalf("Take = %v, %v", v, err)
	}
	if err := <-put; err != nil {
		t.Fatal(err)
	}
}

func TestJobsAndResultsChannels(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	jobs, _ := dist.NewRemoteChannel[int](ctx, c, 1, 32)
	results, _ := dist.NewRemoteChannel[int](ctx, c, 1, 32)
	var futs []*dist.Future[int]
	for _, pid := range c.Workers() {
		futs = append(futs, jobWorker.Go(ctx, c, pid, [2]*dist.RemoteChannel[int]{jobs, results}))
	}
	const n = 200
	go func() {
		for i := 1; i <= n; i++ {
			jobs.Put(ctx, i)
		}
		jobs.Close(ctx)
	}()
	sum := 0
	for range n {
		v, err := results.Take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	if want := n * (n + 1) * (2*n + 1) / 6; sum != want {
		t.Fatalf("sum of squares = %d, want %d", sum, want)
	}
	total := 0
	for _, f := range futs {
		k, err := f.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += k
	}
	if total != n {
		t.Fatalf("workers did %d jobs, want %d", total, n)
	}
}

func TestRefCountingFreesValues(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	c, _ := disttest.Start(t, 1)
	base, err := stats.Call(ctx, c, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	const window = 1000
	futs := make([]*dist.Future[[]byte], 0, window)
	for i := range n {
		f := kib.Go(ctx, c, 2, i)
		if i%2 == 0 {
			if b, err := f.Fetch(ctx); err != nil || len(b) != 1024 || b[0] != byte(i) {
				t.Fatalf("fetch %d: %v", i, err)
			}
		}
		futs = append(futs, f)
		if len(futs) == window {
			for _, f := range futs {
				f.Wait(ctx)
				f.Release()
			}
			futs = futs[:0]
		}
	}
	for _, f := range futs {
		f.Wait(ctx)
		f.Release()
	}
	deadline := time.Now().Add(10 * time.Second)
	var after dist.Stats
	for {
		after, err = stats.Call(ctx, c, 2, true)
		if err != nil {
			t.Fatal(err)
		}
		if after.Refs == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("owner heap: %d KiB before, %d KiB after %d futures of 1 KiB; refs held %d", base.HeapAlloc>>10, after.HeapAlloc>>10, n, after.Refs)
	if after.Refs != 0 {
		t.Fatalf("owner still holds %d values", after.Refs)
	}
	// 100,000 KiB were made; near the baseline means within a few MiB.
	if after.HeapAlloc > base.HeapAlloc+8<<20 {
		t.Fatalf("owner heap grew from %d to %d bytes", base.HeapAlloc, after.HeapAlloc)
	}
}

func TestUnreachableFutureIsReleased(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	// Futures never fetched nor released: only the cleanup can give them back.
	for i := range 200 {
		sleep.Go(ctx, c, 2, time.Duration(i%2)*time.Millisecond)
	}
	disttest.Eventually(t, 10*time.Second, "the owner to free the values of unreachable futures", func() bool {
		runtime.GC()
		st, err := stats.Call(ctx, c, 2, false)
		if err != nil {
			t.Fatal(err)
		}
		return st.Refs == 0
	})
}

func TestMembershipEvents(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	events := make(chan dist.Event, 16)
	unsub := c.Subscribe(func(e dist.Event) { events <- e })
	defer unsub()
	pids, err := c.AddProcs(ctx, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]dist.EventKind{}
	for range 2 {
		e := <-events
		got[e.Pid] = e.Kind
	}
	if got[pids[0]] != dist.Joined || got[pids[1]] != dist.Joined {
		t.Fatalf("join events %v", got)
	}
	c.RmProcs(ctx, pids[0])
	if e := <-events; e.Kind != dist.Exited || e.Pid != pids[0] || e.Cause != nil {
		t.Fatalf("RmProcs event %+v", e)
	}
	disttest.Kill(t, c, pids[1])
	select {
	case e := <-events:
		if e.Kind != dist.Exited || e.Pid != pids[1] || !errors.Is(e.Cause, dist.ErrProcessExited) {
			t.Fatalf("crash event %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for a killed worker")
	}
}
