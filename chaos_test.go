package dist_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// The chaos suite: processes killed, frozen and cut off at awkward moments. Each test checks
// that what was asked still completes, or fails naming the process, and that the cluster's
// account of its members stays true; nothing waits on the clock but safety nets.

// slowSquare squares after a pause, so that a Pmap keeps items in flight on every worker.
var slowSquare = dist.NewFunc("test.chaos.slowsquare", func(ctx context.Context, x int) (int, error) {
	select {
	case <-time.After(5 * time.Millisecond):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return x * x, nil
})

// TestTwoWorkersKilledAtOnce kills two of four workers together in the middle of a Pmap: it
// completes on the others, every item once, and both deaths are reported.
func TestTwoWorkersKilledAtOnce(t *testing.T) {
	var log eventLog
	c, _ := disttest.Start(t, 4)
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	in := make([]int, 400)
	for i := range in {
		in[i] = i
	}
	prog := &doneBy{n: map[int]int{}}
	done := make(chan error, 1)
	var out []int
	go func() {
		var err error
		out, err = dist.Pmap(ctx, c, slowSquare, in, dist.WithBatchSize(1), dist.WithProgress(prog))
		done <- err
	}()
	// Killed once the Pmap is under way on every worker.
	disttest.Eventually(t, time.Minute, "items done on every worker", func() bool { return prog.workers() == 4 })
	a, b := c.Workers()[0], c.Workers()[1]
	disttest.Kill(t, c, a)
	disttest.Kill(t, c, b)
	if err := <-done; err != nil {
		t.Fatalf("Pmap: %v", err)
	}
	for i, v := range out {
		if v != i*i {
			t.Fatalf("item %d: %d", i, v)
		}
	}
	for _, pid := range []int{a, b} {
		log.wait(t, "the exit of a killed worker", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == pid })
	}
	if got := c.NWorkers(); got != 2 {
		t.Errorf("%d workers left, want 2", got)
	}
}

// doneBy is a dist.Progress that counts the items done by each process.
type doneBy struct {
	mu sync.Mutex
	n  map[int]int
}

func (d *doneBy) Begin(string, int) dist.ProgressRun { return d }

func (d *doneBy) Done(pid, n int) {
	d.mu.Lock()
	d.n[pid] += n
	d.mu.Unlock()
}

func (d *doneBy) End(error) {}

// workers returns how many processes have done items.
func (d *doneBy) workers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.n)
}

// TestKillDuringAddProcs kills one of the workers AddProcs is starting, as soon as it is
// seen listening: AddProcs returns, and its account (pids joined, the error) matches the
// processes that live.
func TestKillDuringAddProcs(t *testing.T) {
	var log eventLog
	c, _ := disttest.Start(t, 0)
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	killed := make(chan struct{})
	defer c.SubscribeLifecycle(func(e dist.Event) {
		if e.Kind == dist.Started {
			select {
			case <-killed:
			default:
				close(killed)
				// The first worker seen listening: its OS pid is in neither event nor
				// membership yet, so find it among this process's children by address.
				killListening(t, e.Addr)
			}
		}
	})()
	pids, err := c.AddProcs(ctx, nil, 4)
	t.Logf("AddProcs: %v, %v", pids, err)
	for _, p := range pids {
		if _, err := square.Call(ctx, c, p, 2); err != nil && !errors.Is(err, dist.ErrProcessExited) {
			t.Errorf("worker %d: %v", p, err)
		}
	}
	disttest.Eventually(t, time.Minute, "the membership to match the living", func() bool {
		alive := 0
		for _, p := range c.Workers() {
			if info, ok := c.ProcInfo(p); ok && disttest.Alive(info.OSPid) {
				alive++
			}
		}
		return alive == c.NWorkers() && c.NWorkers() >= 3
	})
}

// killListening kills the child of this process that listens at addr ("network address").
func killListening(t *testing.T, addr string) {
	t.Helper()
	_, a, _ := strings.Cut(addr, " ")
	name := strings.TrimPrefix(a, "@")
	// An abstract socket's name ends with the OS pid of its owner ("…-w1234").
	if i := strings.LastIndex(name, "-w"); i >= 0 {
		if pid, err := strconv.Atoi(name[i+2:]); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
	t.Fatalf("cannot tell the OS pid from address %q", addr)
}

// TestKillDuringRmProcs kills a worker while RmProcs is stopping it: RmProcs returns, and the
// worker's exit is reported once.
func TestKillDuringRmProcs(t *testing.T) {
	var log eventLog
	c, _ := disttest.Start(t, 3)
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	pid := c.Workers()[0]
	info, _ := c.ProcInfo(pid)
	defer c.SubscribeLifecycle(func(e dist.Event) {
		if e.Kind == dist.Exiting && e.Pid == pid {
			syscall.Kill(info.OSPid, syscall.SIGKILL)
		}
	})()
	if err := c.RmProcs(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(c.Workers(), pid) {
		t.Fatalf("worker %d still a member", pid)
	}
	exits := 0
	for _, e := range log.events() {
		if e.Kind == dist.Exited && e.Pid == pid {
			exits++
		}
	}
	if exits != 1 {
		t.Errorf("%d Exited events for %d, want 1", exits, pid)
	}
	if _, err := square.Everywhere(ctx, c, 3); err != nil {
		t.Fatal(err)
	}
}

// TestFrozenWorkerReportedLost stops a worker over TCP (SIGSTOP): the heartbeat reports it
// lost and the driver kills it; a Pmap running meanwhile completes on the other worker.
func TestFrozenWorkerReportedLost(t *testing.T) {
	var log eventLog
	c, _ := disttest.Start(t, 0, dist.WithHeartbeat(50*time.Millisecond, 500*time.Millisecond), dist.WithLogger(quietLogger()))
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	pids, err := c.AddProcs(ctx, nil, 2, dist.WithNetwork("tcp", "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := c.ProcInfo(pids[0])
	disttest.Freeze(t, c, pids[0])
	in := make([]int, 50)
	out, err := dist.Pmap(ctx, c, square, in)
	if err != nil || len(out) != len(in) {
		t.Fatalf("Pmap beside a frozen worker: %v", err)
	}
	ex := log.wait(t, "the frozen worker lost", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == pids[0] })
	if ex.Reason != dist.ExitLost || !errors.Is(ex.Cause, dist.ErrConnectionLost) {
		t.Fatalf("frozen worker: %+v", ex)
	}
	disttest.Eventually(t, time.Minute, "the lost worker killed", func() bool { return !disttest.Alive(info.OSPid) })
}

// TestPartitionMidPmap cuts a worker off from everybody (its links go dark, it lives) in the
// middle of a Pmap: the heartbeat reports it lost, the Pmap completes on the others with
// every item once, and healing the partition brings back no ghost.
func TestPartitionMidPmap(t *testing.T) {
	var log eventLog
	c, _ := disttest.Start(t, 0, dist.WithHeartbeat(50*time.Millisecond, 500*time.Millisecond), dist.WithLogger(quietLogger()))
	defer c.SubscribeLifecycle(log.add)()
	ctx := ctxT(t, 2*time.Minute)
	m := disttest.NewLinks(t)
	pids, err := c.AddProcs(ctx, m, 3)
	if err != nil {
		t.Fatal(err)
	}
	in := make([]int, 300)
	for i := range in {
		in[i] = i
	}
	prog := &doneBy{n: map[int]int{}}
	done := make(chan error, 1)
	var out []int
	go func() {
		var err error
		out, err = dist.Pmap(ctx, c, slowSquare, in, dist.WithBatchSize(1), dist.WithProgress(prog))
		done <- err
	}()
	disttest.Eventually(t, time.Minute, "items done on every worker", func() bool { return prog.workers() == 3 })
	victim := pids[1]
	m.Partition(t, victim)
	if err := <-done; err != nil {
		t.Fatalf("Pmap: %v", err)
	}
	for i, v := range out {
		if v != i*i {
			t.Fatalf("item %d: %d", i, v)
		}
	}
	ex := log.wait(t, "the cut-off worker lost", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == victim })
	if ex.Reason != dist.ExitLost {
		t.Fatalf("cut-off worker: %+v", ex)
	}
	m.Heal(t, victim)
	if slices.Contains(c.Workers(), victim) {
		t.Fatalf("worker %d back after the heal", victim)
	}
	if res, err := square.Everywhere(ctx, c, 4); err != nil || len(res) != 3 {
		t.Fatalf("Everywhere after the heal: %v, %v", res, err)
	}
}
