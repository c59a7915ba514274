package dist_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// has reports whether an event matching match was logged.
func (l *eventLog) has(match func(dist.Event) bool) bool {
	for _, e := range l.events() {
		if match(e) {
			return true
		}
	}
	return false
}

// count returns how many logged events match.
func (l *eventLog) count(match func(dist.Event) bool) int {
	n := 0
	for _, e := range l.events() {
		if match(e) {
			n++
		}
	}
	return n
}

// TestRestartReplacesCrashedWorker kills workers of a cluster that replaces them: each is
// replaced by a new worker with a new pid that answers calls, subscribers see the Restarting
// event and the Joined naming the replaced pid, and once a worker's replacements are used up
// it stays gone.
func TestRestartReplacesCrashedWorker(t *testing.T) {
	log := &eventLog{}
	c, _ := disttest.Start(t, 2, dist.WithRestart(dist.RestartPolicy{Max: 2, Backoff: 10 * time.Millisecond}))
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	pid := 2
	for round := 1; round <= 2; round++ {
		disttest.Kill(t, c, pid)
		next := log.wait(t, fmt.Sprintf("a replacement of worker %d", pid), func(e dist.Event) bool {
			return e.Kind == dist.Joined && e.Replaces == pid
		}).Pid
		if !log.has(func(e dist.Event) bool { return e.Kind == dist.Restarting && e.Pid == pid }) {
			t.Errorf("round %d: no Restarting event for %d", round, pid)
		}
		if v, err := square.Call(ctx, c, next, 5); err != nil || v != 25 {
			t.Fatalf("round %d: the replacement %d: %v, %v", round, next, v, err)
		}
		if got := c.NWorkers(); got != 2 {
			t.Fatalf("round %d: %d workers, want 2", round, got)
		}
		pid = next
	}
	// The third death of the same slot is past Max: nobody replaces it.
	disttest.Kill(t, c, pid)
	disttest.Eventually(t, time.Minute, "the last worker of the slot gone", func() bool { return c.NWorkers() == 1 })
	if _, err := c.AddProcs(ctx, nil, 1); err != nil { // time for a wrong replacement to show
		t.Fatal(err)
	}
	if log.has(func(e dist.Event) bool { return e.Kind == dist.Restarting && e.Pid == pid }) {
		t.Errorf("worker %d replaced beyond the policy's Max", pid)
	}
	// The worker never killed was never replaced.
	if log.has(func(e dist.Event) bool { return e.Replaces == 3 }) {
		t.Error("worker 3 replaced without dying")
	}
}

// killer exits its worker on the item it is told, as a bug that crashes the process would.
var killer = dist.NewFunc("test.killer", func(ctx context.Context, a [2]int) (int, error) {
	if a[0] == a[1] {
		os.Exit(3)
	}
	return a[0], nil
})

// TestKilledWorker runs a Pmap with an item that kills every worker it runs on, in a cluster
// that replaces its workers: the item fails with ErrKilledWorker after the allowed number of
// deaths, instead of killing workers without end.
func TestKilledWorker(t *testing.T) {
	log := &eventLog{}
	c, _ := disttest.Start(t, 2, dist.WithRestart(dist.RestartPolicy{Max: 10, Backoff: 10 * time.Millisecond}))
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	in := make([][2]int, 20)
	for i := range in {
		in[i] = [2]int{i, 7}
	}
	_, err := dist.Pmap(ctx, c, killer, in, dist.WithBatchSize(1), dist.WithAllowedFailures(2))
	if !errors.Is(err, dist.ErrKilledWorker) || !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("Pmap: %v, want ErrKilledWorker", err)
	}
	crashed := func() int {
		return log.count(func(e dist.Event) bool { return e.Kind == dist.Exited && e.Reason == dist.ExitCrash })
	}
	disttest.Eventually(t, time.Minute, "two crashes reported", func() bool { return crashed() >= 2 })
	// Replacements of both joined: nothing else crashed meanwhile.
	disttest.Eventually(t, time.Minute, "two replacements", func() bool {
		return log.count(func(e dist.Event) bool { return e.Kind == dist.Joined && e.Replaces != 0 }) == 2
	})
	if n := crashed(); n != 2 {
		t.Errorf("%d workers crashed, want 2 (the allowed failures)", n)
	}
}

// TestKilledWorkerTask queues a task that kills every worker it runs on, in a cluster that
// replaces its workers: the task fails with ErrKilledWorker after three deaths; a task after
// it runs.
func TestKilledWorkerTask(t *testing.T) {
	c, _ := disttest.Start(t, 2, dist.WithRestart(dist.RestartPolicy{Max: 10, Backoff: 10 * time.Millisecond}))
	ctx := ctxT(t, 2*time.Minute)
	q := dist.NewTaskQueue(c, nil)
	defer q.Close()
	errs := [2]chan error{make(chan error, 1), make(chan error, 1)}
	for k, a := range [][2]int{{7, 7}, {1, 7}} {
		task := dist.NewTask(killer, a, dist.TargetAny(), func(_ *dist.Task, _ int, err error) { errs[k] <- err })
		if err := q.Enqueue(task); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errs[0]; !errors.Is(err, dist.ErrKilledWorker) || !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("the killing task: %v, want ErrKilledWorker", err)
	}
	if err := <-errs[1]; err != nil {
		t.Fatalf("the other task: %v", err)
	}
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
