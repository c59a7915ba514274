package shm_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/shm"
	"golang.org/x/sys/unix"
)

// forkFill writes i+1 over child i's chunk of the array bound as "A" and returns 10*i; child 1
// dies by SIGKILL and child 2 fails.
var forkFill = dist.NewFunc("shmtest.forkFill", func(ctx context.Context, i int) (int, error) {
	a, err := shm.LookupArray[int64]("A")
	if err != nil {
		return 0, err
	}
	r := shm.Chunk(a.Len(), 4)[i]
	a.Fill(int64(i+1), r)
	switch i {
	case 1:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case 2:
		return 0, errors.New("child 2 fails")
	}
	return 10 * i, nil
})

var forkSleep = dist.NewFunc("shmtest.forkSleep", func(ctx context.Context, i int) (int, error) {
	time.Sleep(time.Minute)
	return i, nil
})

// noChildren fails if this process has children, zombies included.
func noChildren(t *testing.T) {
	t.Helper()
	var ws unix.WaitStatus
	pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
	if !errors.Is(err, unix.ECHILD) {
		t.Errorf("a child is left (wait4: pid %d, %v)", pid, err)
	}
}

func TestFork(t *testing.T) {
	c, _ := start(t, 0)
	ctx := ctxT(t)
	a, err := shm.NewSharedArray[int64](ctx, c, []int{16})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if err := shm.Bind("A", a.Array); err != nil {
		t.Fatal(err)
	}
	defer shm.Unbind("A")
	emptyTmp(t)
	outs, err := shm.Fork(ctx, 4, forkFill)
	noChildren(t)
	if !slices.Equal(outs, []int{0, 0, 0, 30}) {
		t.Errorf("results %v", outs)
	}
	var fe *shm.ForkError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v, want ForkErrors", err)
	}
	failed := map[int]string{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if errors.As(e, &fe) {
			failed[fe.Index] = fe.Err.Error()
		}
	}
	if len(failed) != 2 || failed[2] == "" || failed[1] == "" {
		t.Fatalf("failures %v", failed)
	}
	t.Logf("errors: %v", err)
	// Every child wrote before it ended, the killed one included.
	want := []int64{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4}
	if !slices.Equal(a.Data(), want) {
		t.Fatalf("parent sees %v", a.Data())
	}
}

// emptyTmp points TMPDIR at a fresh directory and, at the end of the test, checks that nothing
// was left in it (a killed child's files included).
func emptyTmp(t *testing.T) {
	d := t.TempDir()
	t.Setenv("TMPDIR", d)
	t.Cleanup(func() {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("left in TMPDIR: %v", ents)
		}
	})
}

func TestForkCancel(t *testing.T) {
	emptyTmp(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := shm.Fork(ctx, 3, forkSleep)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
	noChildren(t)
}

type forkOut struct {
	Name string
	Xs   []float64
	M    map[string]int
}

var forkStruct = dist.NewFunc("shmtest.forkStruct", func(ctx context.Context, i int) (forkOut, error) {
	return forkOut{Name: "child", Xs: []float64{float64(i), 0.5}, M: map[string]int{"i": i}}, nil
})

// TestForkResults: structured results survive the trip back from the children, in order.
func TestForkResults(t *testing.T) {
	outs, err := shm.Fork(ctxT(t), 3, forkStruct)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if o.Name != "child" || !slices.Equal(o.Xs, []float64{float64(i), 0.5}) || o.M["i"] != i {
			t.Fatalf("result %d: %+v", i, o)
		}
	}
	noChildren(t)
}
