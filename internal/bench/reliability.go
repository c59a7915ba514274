package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/wire"
)

// envOrphanDriver makes a process that links this package a driver whose 4 workers run calls
// that ignore their context (orphanDriver); the orphan figure kills it.
const envOrphanDriver = "GODIST_BENCH_ORPHAN_DRIVER"

// orphanGrace is the exit grace period of the orphan figure's workers.
const orphanGrace = time.Second

// heapNow returns this process's live heap, for the receive budget figure.
var heapNow = dist.NewFunc("bench.heap", func(ctx context.Context, _ struct{}) (uint64, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, nil
})

var stubborn = dist.NewFunc("bench.stubborn", func(ctx context.Context, _ struct{}) (struct{}, error) {
	fmt.Println("stubborn started")
	time.Sleep(10 * time.Minute)
	return struct{}{}, nil
})

func init() {
	dist.OnMain(func() {
		if os.Getenv(envOrphanDriver) == "" {
			return
		}
		os.Unsetenv(envOrphanDriver)
		os.Exit(orphanDriver())
	})
}

// orphanDriver starts 4 workers, has each run stubborn, prints their OS pids once all calls
// run, and waits to be killed.
func orphanDriver() int {
	ctx := context.Background()
	started := make(chan struct{}, 4)
	out := lineFunc(func(line string) {
		if strings.Contains(line, "stubborn started") {
			started <- struct{}{}
		}
	})
	c, err := dist.Start(ctx, dist.WithWorkers(4), dist.WithExitGrace(orphanGrace), dist.WithOutput(out))
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
	for range 4 {
		<-started
	}
	fmt.Println("workers", strings.Join(pids, " "))
	time.Sleep(10 * time.Minute)
	return 0
}

// lineFunc is an io.Writer that calls f with each line written.
type lineFunc func(string)

func (f lineFunc) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		f(l)
	}
	return len(p), nil
}

// ReliabilityFigures reports, with emit:
//
//   - reliability.orphan_exit_ms: from the SIGKILL of a driver to the last of its 4 workers
//     gone, while each runs a call that ignores its context (the workers' grace period is
//     1 s: the target is at most the grace period plus 1 s);
//   - reliability.recv_budget_peak_mib: the peak heap of a worker (sampled every 20 ms for
//     2 s) while 16 authenticated connections announce 2 GiB raw parts each and send
//     nothing more, beside the receive budget (WithRecvBudget's default) in MiB;
//   - reliability.restart_ms: from the SIGKILL of a worker of a cluster started WithRestart
//     to its replacement answering a call (the median of 5).
func ReliabilityFigures(ctx context.Context, quick bool, emit func(name string, value float64, unit, baseline string)) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envOrphanDriver+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "workers ") {
		return fmt.Errorf("orphan driver said %q: %v", line, err)
	}
	var pids []int
	for _, f := range strings.Fields(line)[1:] {
		p, _ := strconv.Atoi(f)
		pids = append(pids, p)
	}
	t := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	for _, p := range pids {
		for syscall.Kill(p, 0) == nil && !zombie(p) {
			if time.Since(t) > time.Minute {
				return fmt.Errorf("orphan worker %d still running a minute after its driver died", p)
			}
			time.Sleep(time.Millisecond)
		}
	}
	emit("reliability.orphan_exit_ms", float64(time.Since(t).Microseconds())/1e3, "ms", "")
	if err := recvBudgetFigure(ctx, emit); err != nil {
		return err
	}

	joined := make(chan int, 16)
	c, err := dist.Start(ctx, dist.WithWorkers(2), dist.WithOutput(os.Stderr),
		dist.WithRestart(dist.RestartPolicy{Max: 100, Backoff: time.Millisecond}))
	if err != nil {
		return err
	}
	defer c.Close()
	defer c.SubscribeLifecycle(func(e dist.Event) {
		if e.Kind == dist.Joined && e.Replaces != 0 {
			joined <- e.Pid
		}
	})()
	n := 5
	if quick {
		n = 2
	}
	var times []float64
	pid := c.Workers()[0]
	for range n {
		info, ok := c.ProcInfo(pid)
		if !ok {
			return fmt.Errorf("worker %d gone", pid)
		}
		t := time.Now()
		syscall.Kill(info.OSPid, syscall.SIGKILL)
		select {
		case pid = <-joined:
		case <-time.After(time.Minute):
			return fmt.Errorf("no replacement for worker %d within a minute", pid)
		}
		if _, err := noop.Call(ctx, c, pid, struct{}{}); err != nil {
			return err
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
	}
	emit("reliability.restart_ms", median(times), "ms", "")
	return nil
}

// zombie reports whether a process has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// recvBudgetFigure measures reliability.recv_budget_peak_mib (see ReliabilityFigures).
func recvBudgetFigure(ctx context.Context, emit func(name string, value float64, unit, baseline string)) error {
	c, err := dist.Start(ctx, dist.WithWorkers(1), dist.WithOutput(os.Stderr))
	if err != nil {
		return err
	}
	defer c.Close()
	pid := c.Workers()[0]
	info, _ := c.ProcInfo(pid)
	var conns []net.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for range 16 {
		nc, err := net.Dial(info.Network, info.Addr)
		if err != nil {
			return err
		}
		conns = append(conns, nc)
		if err := wire.Dial(nc, []byte(c.Cookie()), 10*time.Second); err != nil {
			return err
		}
		var h [wire.HeaderSize]byte
		wire.PutHeader(h[:], wire.Header{Kind: wire.KindRequest, Raw: wire.RawBytes, RawLen: 2 << 30, ID: 1})
		if _, err := nc.Write(h[:]); err != nil {
			return err
		}
	}
	var peak uint64
	for range 100 {
		v, err := heapNow.Call(ctx, c, pid, struct{}{})
		if err != nil {
			return err
		}
		peak = max(peak, v)
		time.Sleep(20 * time.Millisecond)
	}
	budget := float64(wire.DefaultLimits.MaxRaw+wire.DefaultLimits.MaxCBOR) / (1 << 20)
	emit("reliability.recv_budget_mib", budget, "MiB", "")
	emit("reliability.recv_budget_peak_mib", float64(peak)/(1<<20), "MiB", "reliability.recv_budget_mib")
	return nil
}
