package dist_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// envBusyDriver makes the test binary a driver whose workers run calls that ignore their
// context (runBusyDriver).
const envBusyDriver = "GODIST_TEST_BUSY_DRIVER"

// stubborn runs for ten minutes whatever its context says, as careless user code does.
var stubborn = dist.NewFunc("test.stubborn", func(ctx context.Context, _ struct{}) (struct{}, error) {
	fmt.Println("stubborn started")
	time.Sleep(10 * time.Minute)
	return struct{}{}, nil
})

// testExitGrace is the grace period of the busy driver's workers.
const testExitGrace = time.Second

// runBusyDriver starts 4 workers, has each run stubborn, prints their OS pids once every call
// has started, and waits to be killed.
func runBusyDriver() int {
	ctx := context.Background()
	out := &disttest.Output{}
	c, err := dist.Start(ctx, dist.WithWorkers(4), dist.WithExitGrace(testExitGrace), dist.WithOutput(out))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var pids []string
	for _, w := range c.Workers() {
		info, _ := c.ProcInfo(w)
		pids = append(pids, strconv.Itoa(info.OSPid))
		stubborn.Go(ctx, c, w, struct{}{})
	}
	for !(strings.Count(out.String(), "stubborn started") == 4) {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("workers", strings.Join(pids, " "))
	time.Sleep(10 * time.Minute) // the test kills us long before
	return 0
}

// TestBusyWorkersExitWhenDriverDies kills a driver whose workers run calls that ignore their
// cancellation: each worker cancels them and exits after its grace period, instead of living
// on until the call returns (Distributed.jl#198).
func TestBusyWorkersExitWhenDriverDies(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), envBusyDriver+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "workers ") {
		t.Fatalf("driver said %q, %v", line, err)
	}
	var pids []int
	for _, f := range strings.Fields(line)[1:] {
		p, _ := strconv.Atoi(f)
		pids = append(pids, p)
	}
	if len(pids) != 4 {
		t.Fatalf("worker pids %v", pids)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	defer func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}()
	// The calls run for ten minutes: a worker gone within this safety net gave up on them.
	disttest.Eventually(t, testExitGrace+time.Minute, "every busy worker to exit", func() bool {
		for _, p := range pids {
			if disttest.Alive(p) {
				return false
			}
		}
		return true
	})
}

// TestNoSuchProcess: a pid that never was in the cluster is "no such process", from the driver
// and from a worker, still an ErrProcessExited for code that handles leaving processes; one
// that left is "exited".
func TestNoSuchProcess(t *testing.T) {
	c, _ := disttest.Start(t, 2)
	ctx := ctxT(t, time.Minute)
	for _, via := range []int{1, 2} {
		var err error
		if via == 1 {
			_, err = square.Call(ctx, c, 99, 1)
		} else {
			_, err = relay.Call(ctx, c, 2, [2]int{99, 1})
		}
		var pe *dist.ProcessExitedError
		if !errors.Is(err, dist.ErrNoSuchProcess) || !errors.As(err, &pe) || pe.Pid != 99 || !strings.Contains(err.Error(), "no such process: 99") {
			t.Errorf("call to pid 99 via %d: %v", via, err)
		}
	}
	if err := c.RmProcs(ctx, 3); err != nil {
		t.Fatal(err)
	}
	_, err := relay.Call(ctx, c, 2, [2]int{3, 1})
	if !errors.Is(err, dist.ErrProcessExited) || errors.Is(err, dist.ErrNoSuchProcess) {
		t.Errorf("call to a removed worker: %v", err)
	}
	// The driver is process 1 in errors.
	_, err = relay.Call(ctx, c, 2, [2]int{1, 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fail.Call(ctx, c, 1, "nope")
	if err == nil || !strings.Contains(err.Error(), "on the driver (process 1)") {
		t.Errorf("error of the driver: %v", err)
	}
}
