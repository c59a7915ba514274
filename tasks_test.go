package dist

// The scheduler's own tests are in internal/sched. This file is in package dist for
// joinTaskErrs; the multi-process tests below use a small harness of their own, because
// disttest imports dist.

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestJoinTaskErrs(t *testing.T) {
	boom, bang := errors.New("boom"), errors.New("bang")
	if err := joinTaskErrs([]error{boom}); err != boom {
		t.Fatalf("one error: %v, want it as it is", err)
	}
	if err := joinTaskErrs([]error{boom, bang}); !errors.Is(err, boom) || !errors.Is(err, bang) || err.Error() != "boom\nbang" {
		t.Fatalf("two errors: %v", err)
	}
	if err := joinTaskErrs(nil); err != nil {
		t.Fatalf("none: %v", err)
	}
}

// Multi-process tests.

var (
	taskEcho = NewFunc("test.tasks.echo", func(ctx context.Context, s string) (string, error) { return s, nil })
	taskWho  = NewFunc("test.tasks.who", func(ctx context.Context, _ struct{}) (int, error) {
		return Current(ctx).MyID(), nil
	})
	taskPanic = NewFunc("test.tasks.panic", func(ctx context.Context, msg string) (int, error) { panic(msg) })
	// taskHold puts its pid on chs[0], then waits for a value on chs[1] and returns its pid.
	taskHold = NewFunc("test.tasks.hold", func(ctx context.Context, chs [2]*RemoteChannel[int]) (int, error) {
		me := Current(ctx).MyID()
		if err := chs[0].Put(ctx, me); err != nil {
			return 0, err
		}
		if _, err := chs[1].Take(ctx); err != nil {
			return 0, err
		}
		return me, nil
	})
)

// startTaskCluster starts n workers and, at cleanup, closes the cluster and checks that no
// goroutine is left (disttest.Start's checks, which this package cannot import).
func startTaskCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, WithWorkers(n), WithOutput(io.Discard), WithLaunchTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines left, want %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return c
}

func taskTestCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// taskRecorder collects callback results in the order they arrive.
type taskRecorder[T any] struct {
	mu  sync.Mutex
	got []T
}

func (r *taskRecorder[T]) add(_ *Task, v T, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.got = append(r.got, v)
	}
}

func (r *taskRecorder[T]) list() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func taskEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestTaskQueueRunsByPriorityWhilePaused(t *testing.T) {
	ctx := taskTestCtx(t, 30*time.Second)
	c := startTaskCluster(t, 1)
	q := NewTaskQueue(c, nil)
	defer q.Close()
	var rec taskRecorder[string]
	task := func(s string) *Task { return NewTask(taskEcho, s, TargetAny(), rec.add) }
	q.Pause()
	for _, x := range []struct {
		prio float64
		name string
	}{{3, "3a"}, {math.Inf(1), "new-a"}, {1, "1"}, {3, "3b"}, {math.Inf(1), "new-b"}, {2, "2"}} {
		if err := q.EnqueueAt(x.prio, task(x.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Enqueue(task("new-c")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // a paused feeder must not take anything
	if q.Len() != 7 || len(rec.list()) != 0 {
		t.Fatalf("paused queue ran tasks: len %d, ran %v", q.Len(), rec.list())
	}
	q.Resume()
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"1", "2", "3a", "3b", "new-a", "new-b", "new-c"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
}

func TestTaskQueueSetPrioritiesWhileWorkerBusy(t *testing.T) {
	ctx := taskTestCtx(t, 30*time.Second)
	c := startTaskCluster(t, 1)
	q := NewTaskQueue(c, nil)
	defer q.Close()
	started, _ := NewRemoteChannel[int](ctx, c, 1, 1)
	release, _ := NewRemoteChannel[int](ctx, c, 1, 1)
	hold := NewTask(taskHold, [2]*RemoteChannel[int]{started, release}, TargetAny(), nil)
	if err := q.Enqueue(hold); err != nil {
		t.Fatal(err)
	}
	if _, err := started.Take(ctx); err != nil { // the only worker is now busy
		t.Fatal(err)
	}
	var rec taskRecorder[string]
	names := []string{"e", "b", "d", "a", "c"}
	for _, n := range names {
		if err := q.Enqueue(NewTask(taskEcho, n, TargetAny(), rec.add)); err != nil {
			t.Fatal(err)
		}
	}
	// Alphabetical order, from the data; "c" ties with "b" and came later.
	q.SetPriorities(func(t *Task, cur float64) float64 {
		p := float64(t.Data().(string)[0] - 'a')
		if t.Data() == "c" {
			p = 1
		}
		return p
	})
	if p, ok := q.Priority(q.Queued()[0]); !ok || p != 0 {
		t.Fatalf("first queued priority %v, %v", p, ok)
	}
	if err := release.Put(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("ran %v", got)
	}
	if err := hold.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTaskQueueTargets(t *testing.T) {
	ctx := taskTestCtx(t, 30*time.Second)
	c := startTaskCluster(t, 2)
	q := NewTaskQueue(c, nil)
	defer q.Close()
	host, _ := os.Hostname()

	var on3, onHost, onAll taskRecorder[int]
	t3 := NewTask(taskWho, struct{}{}, TargetPids(3), on3.add)
	th := NewTask(taskWho, struct{}{}, TargetHosts(host), onHost.add)
	ta := NewTask(taskWho, struct{}{}, TargetAll(), onAll.add)
	lost := NewTask(taskWho, struct{}{}, TargetHosts("no-such-host.invalid"), nil)
	if err := q.Enqueue(t3, th, ta, lost); err != nil {
		t.Fatal(err)
	}
	for _, tk := range []*Task{t3, th, ta} {
		if err := tk.Wait(ctx); err != nil {
			t.Fatalf("%v: %v", tk, err)
		}
	}
	if got := on3.list(); !slices.Equal(got, []int{3}) {
		t.Errorf("pid-targeted task ran on %v", got)
	}
	if got := onHost.list(); len(got) != 1 {
		t.Errorf("host-targeted task ran on %v", got)
	}
	if got := onAll.list(); len(got) != 2 || !slices.Contains(got, 2) || !slices.Contains(got, 3) {
		t.Errorf("all-workers task ran on %v", got)
	}
	// The task for a host with no worker stays queued, and can be dequeued.
	time.Sleep(20 * time.Millisecond)
	if q.Len() != 1 || q.Queued()[0] != lost {
		t.Fatalf("queue %v", q.Queued())
	}
	select {
	case <-lost.Done():
		t.Fatal("task for an unknown host is done")
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := q.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a task no worker can take: %v", err)
	}
	if got := q.DequeueFunc(func(t *Task) bool { return t.Target().String() == "hosts no-such-host.invalid" }); len(got) != 1 || got[0] != lost {
		t.Fatalf("DequeueFunc = %v", got)
	}
	if err := lost.Wait(ctx); !errors.Is(err, ErrTaskDequeued) {
		t.Fatalf("dequeued task: %v", err)
	}
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// A task for a process the queue does not feed is refused.
	if err := q.Enqueue(NewTask(taskWho, struct{}{}, TargetPids(1), nil)); !errors.Is(err, ErrNoWorkers) {
		t.Fatalf("task for the driver: %v", err)
	}
	if err := q.Enqueue(t3); err == nil {
		t.Fatal("a task that ran was queued again")
	}
}

func TestTaskQueueExecute(t *testing.T) {
	ctx := taskTestCtx(t, 30*time.Second)
	c := startTaskCluster(t, 2)
	q := NewTaskQueue(c, []int{3, 1})
	defer q.Close()
	q.Pause() // Execute does not go through the feeders
	var rec taskRecorder[int]
	if err := q.Execute(ctx, NewTask(taskWho, struct{}{}, TargetPids(3), rec.add)); err != nil {
		t.Fatal(err)
	}
	var re *RemoteError
	called := false
	boom := NewTask(taskPanic, "task kaboom", TargetPids(3), func(_ *Task, _ int, err error) { called = err != nil })
	if err := q.Execute(ctx, boom); !errors.As(err, &re) || re.Pid != 3 || !called {
		t.Fatalf("Execute of a panicking task: %v (callback saw the error: %v)", err, called)
	}
	if err := q.Execute(ctx, NewTask(taskWho, struct{}{}, TargetAll(), rec.add)); err != nil {
		t.Fatal(err)
	}
	got := rec.list()
	slices.Sort(got[1:])
	if !slices.Equal(got, []int{3, 1, 3}) {
		t.Fatalf("executed on %v", got)
	}
	if err := q.Execute(ctx, boom); err == nil {
		t.Fatal("a task was executed twice")
	}
	if err := q.Execute(ctx, NewTask(taskWho, struct{}{}, TargetPids(2), nil)); !errors.Is(err, ErrNoWorkers) {
		t.Fatalf("Execute on a process the queue does not feed: %v", err)
	}
}

func TestTaskQueueWorkerDies(t *testing.T) {
	ctx := taskTestCtx(t, 30*time.Second)
	c := startTaskCluster(t, 2)
	q := NewTaskQueue(c, nil)
	defer q.Close()
	started, _ := NewRemoteChannel[int](ctx, c, 1, 2)
	releaseHold, _ := NewRemoteChannel[int](ctx, c, 1, 2)
	releaseBusy, _ := NewRemoteChannel[int](ctx, c, 1, 1)
	var rec taskRecorder[int]
	calls := 0
	hold := NewTask(taskHold, [2]*RemoteChannel[int]{started, releaseHold}, TargetAny(), func(tk *Task, pid int, err error) {
		calls++
		rec.add(tk, pid, err)
	})
	if err := q.Enqueue(hold); err != nil {
		t.Fatal(err)
	}
	victim, err := started.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	survivor := 5 - victim
	// Hold the survivor too, so that a task only the victim may run stays queued.
	busy := NewTask(taskHold, [2]*RemoteChannel[int]{started, releaseBusy}, TargetPids(survivor), nil)
	pinned := NewTask(taskWho, struct{}{}, TargetPids(victim), nil)
	if err := q.Enqueue(busy, pinned); err != nil {
		t.Fatal(err)
	}
	if _, err := started.Take(ctx); err != nil {
		t.Fatal(err)
	}
	info, _ := c.ProcInfo(victim)
	if p, _ := os.FindProcess(info.OSPid); p.Kill() != nil {
		t.Fatal("kill failed")
	}
	if err := pinned.Wait(ctx); !errors.Is(err, ErrProcessExited) {
		t.Fatalf("task pinned to the dead worker: %v", err)
	}
	// The held task goes back to the queue and reruns on the survivor once it is free.
	releaseBusy.Put(ctx, 0)
	if err := busy.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if pid, err := started.Take(ctx); err != nil || pid != survivor {
		t.Fatalf("rerun started on %d, %v", pid, err)
	}
	// Two values: should the dead worker's Take still be pending here, it may swallow one.
	releaseHold.Put(ctx, 0)
	releaseHold.Put(ctx, 0)
	if err := hold.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); calls != 1 || !slices.Equal(got, []int{survivor}) {
		t.Fatalf("callback called %d times with %v", calls, got)
	}
	taskEventually(t, "the dead worker to leave the queue", func() bool { return slices.Equal(q.Pids(), []int{survivor}) })
}

func TestTaskQueueClose(t *testing.T) {
	ctx := taskTestCtx(t, 30*time.Second)
	c := startTaskCluster(t, 1)
	q := NewTaskQueue(c, nil)
	started, _ := NewRemoteChannel[int](ctx, c, 1, 1)
	never, _ := NewRemoteChannel[int](ctx, c, 1, 1)
	var sawErr error
	running := NewTask(taskHold, [2]*RemoteChannel[int]{started, never}, TargetAny(), func(_ *Task, _ int, err error) { sawErr = err })
	queued := NewTask(taskEcho, "x", TargetAny(), nil)
	if err := q.Enqueue(running, queued); err != nil {
		t.Fatal(err)
	}
	if _, err := started.Take(ctx); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q.Close()
	if err := queued.Wait(ctx); !errors.Is(err, ErrTaskQueueClosed) {
		t.Fatalf("queued task at Close: %v", err)
	}
	if err := running.Wait(ctx); !errors.Is(err, context.Canceled) || !errors.Is(sawErr, context.Canceled) {
		t.Fatalf("running task at Close: %v (callback: %v)", err, sawErr)
	}
	if err := q.Enqueue(NewTask(taskEcho, "y", TargetAny(), nil)); !errors.Is(err, ErrTaskQueueClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
}
