package dist_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// runTestDriver starts a cluster of two workers, prints their OS pids and waits to be killed.
func runTestDriver() int {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var pids []string
	for _, w := range c.Workers() {
		info, _ := c.ProcInfo(w)
		pids = append(pids, strconv.Itoa(info.OSPid))
	}
	fmt.Println("workers", strings.Join(pids, " "))
	time.Sleep(time.Minute) // the test kills us long before
	return 0
}

func TestWorkersExitWhenDriverDies(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	// The killed driver cannot remove its socket directory: give it one the test removes.
	cmd.Env = append(os.Environ(), "GODIST_TEST_DRIVER=1", "TMPDIR="+t.TempDir())
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
	if len(pids) != 2 {
		t.Fatalf("worker pids %v", pids)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range pids {
		for disttest.Alive(p) {
			if time.Now().After(deadline) {
				syscall.Kill(p, syscall.SIGKILL)
				t.Fatalf("worker os pid %d outlived its driver", p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestWorkerExitsWhenNoDriverConnects(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), dist.EnvWorker+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	cfg, _ := json.Marshal(dist.WorkerConfig{Cookie: "c", Network: "unix", Bind: t.TempDir(), ConnectTimeout: 300 * time.Millisecond})
	stdin.Write(append(cfg, '\n'))
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.HasPrefix(line, "godist-worker ") {
		t.Fatalf("handshake line %q", line)
	}
	go io.Copy(io.Discard, stdout)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("worker exit: %v", err)
		}
		if !strings.Contains(stderr.String(), "no driver connected") {
			t.Fatalf("worker said %q", stderr.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("worker did not exit without a driver")
	}
}

// cmdManager launches an arbitrary command as a "worker", to test how the driver copes with
// processes that never become workers.
type cmdManager struct{ argv []string }

func (m cmdManager) Launch(ctx context.Context, spec dist.LaunchSpec) ([]dist.Process, error) {
	p, err := dist.StartCmd(ctx, exec.Command(m.argv[0], m.argv[1:]...), spec, "testhost")
	if err != nil {
		return nil, err
	}
	return []dist.Process{p}, nil
}

func TestDriverGivesUpOnWorkerNeverReady(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 0)
	start := time.Now()
	_, err := c.AddProcs(ctx, cmdManager{[]string{"sleep", "30"}}, 1, dist.WithLaunchTimeout(300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "printed no address within") || !strings.Contains(err.Error(), "testhost") {
		t.Fatalf("silent worker: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("gave up after %v", time.Since(start))
	}
	_, err = c.AddProcs(ctx, cmdManager{[]string{"sh", "-c", "echo cannot start here >&2; exit 3"}}, 1)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "cannot start here") {
		t.Fatalf("failing worker: %v", err)
	}
	_, err = c.AddProcs(ctx, cmdManager{[]string{"sh", "-c", "echo godist-worker 99 unix /nowhere; sleep 30"}}, 1)
	if err == nil || !strings.Contains(err.Error(), "does not understand") {
		t.Fatalf("foreign worker: %v", err)
	}
	if n := c.NWorkers(); n != 0 {
		t.Fatalf("%d workers after failed launches", n)
	}
}

func TestTCPWorkers(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 1)
	pids, err := c.AddProcs(ctx, nil, 2, dist.WithNetwork("tcp", "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		info, _ := c.ProcInfo(pid)
		if info.Network != "tcp" || !strings.HasPrefix(info.Addr, "127.0.0.1:") {
			t.Fatalf("worker %d listens on %s %s", pid, info.Network, info.Addr)
		}
	}
	// driver→tcp worker, tcp worker→tcp worker, tcp worker→unix worker
	if v, err := square.Call(ctx, c, pids[0], 6); err != nil || v != 36 {
		t.Fatalf("call over tcp: %v, %v", v, err)
	}
	if v, err := relay.Call(ctx, c, pids[0], [2]int{pids[1], 7}); err != nil || v != 49 {
		t.Fatalf("tcp↔tcp relay: %v, %v", v, err)
	}
	if v, err := relay.Call(ctx, c, pids[1], [2]int{2, 8}); err != nil || v != 64 {
		t.Fatalf("tcp→unix relay: %v, %v", v, err)
	}
	if _, err := c.AddProcs(ctx, nil, 1, dist.WithNetwork("carrier-pigeon", "")); err == nil {
		t.Fatal("unknown network accepted")
	}
}
