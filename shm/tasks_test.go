package shm_test

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/shm"
)

// svarFill is the PTools README's server-task function: with (offset, ntasks) it writes its
// pid into every ntasks-th element of svar1 from offset, marks its row of svar2, and counts its
// calls in task-local storage.
var svarFill = dist.NewFunc("shmtest.svarFill", func(ctx context.Context, args []int) ([2]int, error) {
	t := shm.CurrentTask(ctx)
	svar1, err := shm.TaskArray[int32](t, "svar1")
	if err != nil {
		return [2]int{}, err
	}
	svar2, err := shm.TaskArray[uint8](t, "svar2")
	if err != nil {
		return [2]int{}, err
	}
	offset, ntasks := args[0], args[1]
	me := dist.Current(ctx).MyID()
	d := svar1.Data()
	for x := offset; x < len(d); x += ntasks {
		d[x] = int32(me)
	}
	for j := range 100 {
		svar2.Set(uint8(t.Index+1), t.Index, j)
	}
	calls, _ := t.Store["calls"].(int)
	t.Store["calls"] = calls + 1
	return [2]int{t.Index, calls + 1}, nil
})

func TestServerTasksSeed(t *testing.T) {
	c, _ := start(t, 3)
	ctx := ctxT(t)
	h, err := shm.StartTasks(ctx, c, shm.Seg[int32]("svar1", 64*1024), shm.Seg[uint8]("svar2", 100, 100))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop(ctx)
	ntasks := h.Count()
	if ntasks != 3 || !slices.Equal(h.Pids(), []int{2, 3, 4}) {
		t.Fatalf("count %d, pids %v", ntasks, h.Pids())
	}
	offsets, ntl := make([]int, ntasks), make([]int, ntasks)
	for i := range ntasks {
		offsets[i], ntl[i] = i, ntasks
	}
	for round := 1; round <= 2; round++ {
		resp, err := shm.PmapTasks(ctx, h, svarFill, offsets, ntl)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range resp {
			if r != [2]int{i, round} {
				t.Fatalf("round %d: task %d answered %v", round, i, r)
			}
		}
	}
	svar1, err := shm.As[int32](h.Array("svar1"))
	if err != nil {
		t.Fatal(err)
	}
	for x, v := range svar1.Data() {
		if v != int32(h.Pids()[x%ntasks]) {
			t.Fatalf("svar1[%d] = %d", x, v)
		}
	}
	t.Logf("svar1[1:6] = %v", svar1.Data()[:6])
	svar2, _ := shm.As[uint8](h.Array("svar2"))
	if svar2.At(2, 99) != 3 || svar2.At(3, 0) != 0 {
		t.Fatalf("svar2 rows: %d %d", svar2.At(2, 99), svar2.At(3, 0))
	}
	if _, err := shm.PmapTasks(ctx, h, svarFill, offsets[:2], ntl); err == nil {
		t.Fatal("a short list was accepted")
	}
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := shm.PmapTasks(ctx, h, svarFill, offsets, ntl); err == nil {
		t.Fatal("a call after Stop succeeded")
	}
	disttest.Eventually(t, 10*time.Second, "segments freed", func() bool {
		return shm.Owned() == 0 && shm.Mapped() == 0 && memfdMaps(os.Getpid()) == 0
	})
	for _, p := range h.Pids() {
		if v, err := counts.Call(ctx, c, p, struct{}{}); err != nil || v != [3]int{} {
			t.Errorf("process %d after Stop: %v, %v", p, v, err)
		}
	}
}

// TestServerTasksAlone: with no workers the task runs in the caller.
func TestServerTasksAlone(t *testing.T) {
	c, _ := start(t, 0)
	ctx := ctxT(t)
	h, err := shm.StartTasks(ctx, c, shm.Seg[int32]("svar1", 10), shm.Seg[uint8]("svar2", 100, 100))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := shm.PmapTasks(ctx, h, svarFill, []int{0}, []int{1})
	if err != nil || resp[0] != [2]int{0, 1} {
		t.Fatalf("%v, %v", resp, err)
	}
	a, _ := shm.As[int32](h.Array("svar1"))
	if a.At(9) != 1 {
		t.Fatalf("svar1 %v", a.Data())
	}
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestServerTasksEndWithCluster: tasks whose Stop is forgotten end with the cluster. Without
// workers the task runs in the caller, whose process outlives Close: its goroutine and its
// mappings, and the caller's own, must not.
func TestServerTasksEndWithCluster(t *testing.T) {
	before := runtime.NumGoroutine()
	c, _ := start(t, 0)
	ctx := ctxT(t)
	h, err := shm.StartTasks(ctx, c, shm.Seg[int32]("svar1", 10), shm.Seg[uint8]("svar2", 100, 100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shm.PmapTasks(ctx, h, svarFill, []int{0}, []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 10*time.Second, "segments unmapped after Close", func() bool {
		runtime.GC()
		return shm.Owned() == 0 && shm.Mapped() == 0 && memfdMaps(os.Getpid()) == 0
	})
	if err := disttest.CheckGoroutines(before, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := shm.PmapTasks(ctx, h, svarFill, []int{0}, []int{1}); err == nil {
		t.Fatal("a call after Close succeeded")
	}
	if err := h.Stop(ctx); err != nil {
		t.Fatalf("Stop after Close: %v", err)
	}
}

// blockEntered counts the calls of blockUntilDone in this process.
var blockEntered atomic.Int32

// blockUntilDone stands for a long call: it returns when its caller gives up.
var blockUntilDone = dist.NewFunc("shmtest.blockUntilDone", func(ctx context.Context, _ []any) (int, error) {
	blockEntered.Add(1)
	<-ctx.Done()
	return 0, ctx.Err()
})

var blockCount = dist.NewFunc("shmtest.blockCount", func(ctx context.Context, _ struct{}) (int32, error) {
	return blockEntered.Load(), nil
})

// TestPmapTasksBadArgument: when the arguments of a task other than the first cannot be
// encoded, PmapTasks fails without leaving the calls of the earlier tasks running.
func TestPmapTasksBadArgument(t *testing.T) {
	c, _ := start(t, 2)
	ctx := ctxT(t)
	h, err := shm.StartTasks(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop(ctx)
	before := runtime.NumGoroutine()
	_, err = shm.PmapTasks(ctx, h, blockUntilDone, []any{"fine", make(chan int)})
	if err == nil || !strings.Contains(err.Error(), "arguments of task 1") {
		t.Fatalf("error %v, want one about the arguments of task 1", err)
	}
	if err := disttest.CheckGoroutines(before, 2*time.Second); err != nil {
		t.Fatalf("a call outlived PmapTasks: %v", err)
	}
	for _, p := range h.Pids() {
		if n, err := blockCount.Call(ctx, c, p, struct{}{}); err != nil || n != 0 {
			t.Fatalf("process %d ran %d calls (%v)", p, n, err)
		}
	}
}

// slowEntered counts the calls of slowCall that have started in this process.
var slowEntered atomic.Int32

var slowCall = dist.NewFunc("shmtest.slowCall", func(ctx context.Context, _ []int) (int, error) {
	slowEntered.Add(1)
	time.Sleep(time.Second)
	return 1, nil
})

// TestStopWithCallQueued: Stop while a call runs and another waits for the task. The running
// call ends normally; the waiting one fails, saying the task stopped, and never runs (it used
// to run after Stop, which then waited for it too).
func TestStopWithCallQueued(t *testing.T) {
	c, _ := start(t, 0)
	ctx := ctxT(t)
	h, err := shm.StartTasks(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	slowEntered.Store(0)
	errs := make(chan error, 2)
	go func() {
		_, err := shm.PmapTasks(ctx, h, slowCall, []int{0})
		errs <- err
	}()
	disttest.Eventually(t, 10*time.Second, "the first call running", func() bool { return slowEntered.Load() == 1 })
	go func() {
		_, err := shm.PmapTasks(ctx, h, slowCall, []int{0})
		errs <- err
	}()
	time.Sleep(100 * time.Millisecond) // the second call now waits for the task
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var failed []error
	for range 2 {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if slowEntered.Load() != 1 || len(failed) != 1 || !strings.Contains(failed[0].Error(), "stopped") || strings.Contains(failed[0].Error(), "panic") {
		t.Fatalf("%d calls ran; errors %v, want one saying the task stopped", slowEntered.Load(), failed)
	}
}
