package script_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

// TestNotebookHelpers covers the notebook's helpers: memstats, remote_vars (whos), runat,
// everywhereelse, plus Everywhere and Clear.
func TestNotebookHelpers(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)

	// @everywhereelse mat11 = …: only the workers get it.
	if err := script.EverywhereElse(ctx, c, "mat := make([]float64, 1<<20)\nmat[0] = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := script.EvalAt(ctx, c, 1, "mat"); err == nil {
		t.Fatal("EverywhereElse defined mat on the caller")
	}
	// @runat 3 lunch = "sandwich"
	if err := script.RunAt(ctx, c, 3, `lunch := "sandwich"`); err != nil {
		t.Fatal(err)
	}
	// Everywhere defines a function in every namespace, the caller's included.
	if err := script.Everywhere(ctx, c, "func twice(x int) int { return 2 * x }"); err != nil {
		t.Fatal(err)
	}
	got, err := script.Reap(ctx, c, []int{1, 2, 3}, "twice(myid())")
	if err != nil || got[1] != 2 || got[2] != 4 || got[3] != 6 {
		t.Fatalf("twice = %v, %v", got, err)
	}

	vars, err := script.Vars(ctx, c, []int{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	find := func(pid int, name string) *script.VarInfo {
		for i, v := range vars[pid] {
			if v.Name == name {
				return &vars[pid][i]
			}
		}
		return nil
	}
	if m := find(2, "mat"); m == nil || m.Type != "[]float64" || m.Bytes < 8<<20 {
		t.Fatalf("vars on 2: %+v", vars[2])
	}
	if l := find(3, "lunch"); l == nil || l.Type != "string" || find(2, "lunch") != nil {
		t.Fatalf("vars: %+v", vars)
	}
	if !slices.IsSortedFunc(vars[3], func(a, b script.VarInfo) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	}) {
		t.Fatalf("vars not sorted: %+v", vars[3])
	}

	stats, err := script.MemStats(ctx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 3 || stats[0].Pid != 1 || stats[2].Pid != 3 {
		t.Fatalf("memstats: %+v", stats)
	}
	host, _ := os.Hostname()
	for _, s := range stats {
		if s.RSS <= 0 || s.OSPid <= 0 || s.Host != host || s.CPU < 0 {
			t.Fatalf("memstats: %+v", s)
		}
		t.Logf("pid %d (os %d): rss %d KiB, cpu %v (%.1f%%)", s.Pid, s.OSPid, s.RSS>>10, s.CPU, s.CPUPct)
	}
	if stats[1].RSS < stats[2].RSS {
		// pid 2 holds 8 MiB more than pid 3 (both have namespaces).
		t.Logf("note: rss of 2 (%d) below rss of 3 (%d)", stats[1].RSS, stats[2].RSS)
	}

	// Clear a name: its value is dropped, the name stays.
	if err := script.Clear(ctx, c, []int{2}, "mat"); err != nil {
		t.Fatal(err)
	}
	if v, err := script.EvalAt(ctx, c, 2, "len(mat)"); err != nil || v != 0 {
		t.Fatalf("len(mat) after Clear = %v, %v", v, err)
	}
	// Clear everything: the namespace starts over.
	if err := script.Clear(ctx, c, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := script.EvalAt(ctx, c, 3, "lunch"); err == nil {
		t.Fatal("lunch survived Clear")
	}
	if v, err := script.EvalAt(ctx, c, 3, "twice(2)"); err == nil {
		t.Fatalf("twice survived Clear: %v", v)
	}
	if v, err := script.EvalAt(ctx, c, 3, "myid()"); err != nil || v != 3 {
		t.Fatalf("after Clear: %v, %v", v, err)
	}
}

// TestCancel: cancelling the caller's context stops the interpreted loop on the worker, and the
// namespace serves the next evaluation.
func TestCancel(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := script.Eval(short, c, []int{2}, "n := 0\nfor { n++ }")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	// The loop stopped: the namespace is free again, and n stopped growing.
	v1, err := script.EvalAt(ctx, c, 2, "n")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	v2, err := script.EvalAt(ctx, c, 2, "n")
	if err != nil || v1 != v2 || v1.(int) == 0 {
		t.Fatalf("n = %v then %v (%v): the loop still runs or never ran", v1, v2, err)
	}
}

// TestUnsafeIsOff: os, os/exec and syscall are absent unless unsafe evaluation is allowed.
func TestUnsafeIsOff(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	for _, code := range []string{`import "os/exec"`, `os.Getpid()`, `import "syscall"`, `import "unsafe"`} {
		if _, err := script.Eval(ctx, c, []int{2}, code); !errors.Is(err, script.ErrEval) {
			t.Errorf("%s: err = %v, want an evaluation error", code, err)
		}
	}
}

// TestCallRegistered: compiled functions registered with dist.NewFunc are callable by name.
func TestCallRegistered(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)
	got, err := script.Reap(ctx, c, []int{2, 3}, `call("script_test.square", myid() + 1)`)
	if err != nil {
		t.Fatal(err)
	}
	if got[2] != 9 || got[3] != 16 {
		t.Fatalf("call = %v", got)
	}
	v, err := script.EvalAt(ctx, c, 2, `callat(3, "script_test.square", 5)`)
	if err != nil || v != 25 {
		t.Fatalf("callat = %v, %v", v, err)
	}
	_, err = script.EvalAt(ctx, c, 2, `call("no.such.func", 1)`)
	if !errors.Is(err, script.ErrEval) {
		t.Fatalf("unknown function: %v", err)
	}
	t.Log(err)
}

// TestUnsafeAllowed: with GODIST_SCRIPT_UNSAFE=1 in the environment of the workers, os and
// os/exec are there; os.Exit still cannot end the worker.
func TestUnsafeAllowed(t *testing.T) {
	t.Setenv(script.EnvUnsafe, "1") // inherited by the local workers started below
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	info, _ := c.ProcInfo(2)
	v, err := script.EvalAt(ctx, c, 2, "os.Getpid()")
	if err != nil || v != info.OSPid {
		t.Fatalf("os.Getpid() = %v, %v; want %d", v, err, info.OSPid)
	}
	_, err = script.EvalAt(ctx, c, 2, "import \"os/exec\"\n")
	if err != nil {
		t.Fatalf("import os/exec: %v", err)
	}
	if v, err := script.EvalAt(ctx, c, 2, "import \"unsafe\"\n"); err != nil {
		t.Fatalf("import unsafe: %v, %v", v, err)
	}
	if v, err := script.EvalAt(ctx, c, 2, "int(unsafe.Sizeof(int64(0)))"); err != nil || v != 8 {
		t.Fatalf("unsafe.Sizeof: %v, %v", v, err)
	}
	_, err = script.EvalAt(ctx, c, 2, "os.Exit(3)")
	if !errors.Is(err, script.ErrEval) {
		t.Fatalf("os.Exit: %v", err)
	}
	if v, err := script.EvalAt(ctx, c, 2, "myid()"); err != nil || v != 2 {
		t.Fatalf("after os.Exit: %v, %v", v, err)
	}
}

// TestWorkerDeath: a worker killed under a Reap fails its part with ErrProcessExited; the
// others' values arrive.
func TestWorkerDeath(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t)
	if err := script.Sow(ctx, c, []int{2, 3}, "v", "myid()"); err != nil {
		t.Fatal(err)
	}
	disttest.Kill(t, c, 2)
	if err := disttest.WaitGone(c, 2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := script.Reap(ctx, c, []int{2, 3}, "v")
	if !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("err = %v, want ErrProcessExited", err)
	}
	if got[3] != 3 {
		t.Fatalf("got %v", got)
	}
}

// TestStdinIsNotTheWorkers: a worker's stdin is its control channel; code reading stdin gets
// EOF and the worker stays in the cluster.
func TestStdinIsNotTheWorkers(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	v, err := script.EvalAt(ctx, c, 2, "var s string\n_, err := fmt.Scanln(&s)\nerr != nil")
	if err != nil || v != true {
		t.Fatalf("Scanln: %v, %v", v, err)
	}
	time.Sleep(100 * time.Millisecond)
	if v, err := script.EvalAt(ctx, c, 2, "myid()"); err != nil || v != 2 {
		t.Fatalf("after Scanln: %v, %v", v, err)
	}
}
