package dist_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// Environment of the workers of the tests below: what a package's init prints in worker mode,
// and whether it then exits.
const (
	envInitPrint = "GODIST_TEST_INIT_PRINT"
	envInitExit  = "GODIST_TEST_INIT_EXIT"
)

// init plays a package whose initialisation prints, which in a worker comes before dist.Main
// has printed the handshake line.
func init() {
	msg := os.Getenv(envInitPrint)
	if msg == "" || os.Getenv(dist.EnvWorker) == "" {
		return
	}
	for i := 1; i <= 3; i++ {
		fmt.Printf("%s %d\n", msg, i)
	}
	fmt.Fprintf(os.Stderr, "%s on stderr\n", msg)
	if os.Getenv(envInitExit) != "" {
		os.Exit(3)
	}
}

func TestWorkerPrintsBeforeHandshake(t *testing.T) {
	t.Setenv(envInitPrint, "hello from a package init")
	ctx := ctxT(t, 60*time.Second)
	c, out := disttest.Start(t, 2, dist.WithLaunchTimeout(5*time.Second))
	for _, pid := range c.Workers() {
		if v, err := square.Call(ctx, c, pid, 4); err != nil || v != 16 {
			t.Fatalf("square on %d: %d, %v", pid, v, err)
		}
		// Kept until the worker joined, then shown labelled with its pid, stdout in order.
		last := -1
		for i := 1; i <= 3; i++ {
			line := fmt.Sprintf("From worker %d: hello from a package init %d\n", pid, i)
			if !out.WaitFor(line, 10*time.Second) {
				t.Fatalf("no %q in the output:\n%s", line, out)
			}
			at := strings.Index(out.String(), line)
			if at < last {
				t.Fatalf("worker %d's lines out of order:\n%s", pid, out)
			}
			last = at
		}
		line := fmt.Sprintf("From worker %d: hello from a package init on stderr\n", pid)
		if !out.WaitFor(line, 10*time.Second) {
			t.Fatalf("no %q in the output:\n%s", line, out)
		}
	}
	if strings.Contains(out.String(), "os pid") {
		t.Fatalf("lines labelled before the join:\n%s", out)
	}
	// A worker that joins later prints the same way.
	pids, err := c.AddProcs(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if line := fmt.Sprintf("From worker %d: hello from a package init 3\n", pids[0]); !out.WaitFor(line, 10*time.Second) {
		t.Fatalf("no %q in the output:\n%s", line, out)
	}
}

// A worker that prints and exits before its handshake fails the launch with what it said.
func TestWorkerPrintsAndExitsBeforeHandshake(t *testing.T) {
	t.Setenv(envInitPrint, "dying in a package init")
	t.Setenv(envInitExit, "1")
	ctx := ctxT(t, 60*time.Second)
	start := time.Now()
	c, err := dist.Start(ctx, dist.WithWorkers(1), dist.WithOutput(&disttest.Output{}), dist.WithLaunchTimeout(20*time.Second), dist.WithLogger(quietLogger()))
	if c != nil {
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "dying in a package init") {
		t.Fatalf("start with a worker that dies in init: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the failure took %v: the launch waited out its timeout", d)
	}
}

func TestWorkerEnv(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want string // the last GODEBUG entry, which wins
	}{
		{nil, "GODEBUG=madvdontneed=0"},
		{[]string{"GODEBUG="}, "GODEBUG=madvdontneed=0"},
		{[]string{"A=1", "GODEBUG=gctrace=1"}, "GODEBUG=gctrace=1,madvdontneed=0"},
		{[]string{"GODEBUG=madvdontneed=1"}, "GODEBUG=madvdontneed=1"},
		{[]string{"GODEBUG=x=1,madvdontneed=1,y=2"}, "GODEBUG=x=1,madvdontneed=1,y=2"},
	} {
		in := append([]string(nil), c.env...)
		got := dist.WorkerEnv(in)
		if !slices.Equal(in, c.env) {
			t.Fatalf("WorkerEnv(%q) changed its argument to %q", c.env, in)
		}
		last := ""
		for _, kv := range got {
			if strings.HasPrefix(kv, "GODEBUG=") {
				last = kv
			}
		}
		if last != c.want || !slices.Contains(got, dist.EnvWorker+"=1") {
			t.Errorf("WorkerEnv(%q) = %q, want GODEBUG %q and %s=1", c.env, got, c.want, dist.EnvWorker)
		}
	}
	// A local worker runs with it.
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	got, err := godebugOf.Call(ctx, c, 2, struct{}{})
	if err != nil || !strings.HasSuffix(got, "madvdontneed=0") && !strings.Contains(os.Getenv("GODEBUG"), "madvdontneed=") {
		t.Fatalf("a local worker's GODEBUG: %q, %v", got, err)
	}
}
