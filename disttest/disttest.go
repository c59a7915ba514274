// Package disttest runs real clusters inside tests: workers are the test binary re-executed,
// so the test's TestMain must call dist.Main first.
//
//	func TestMain(m *testing.M) {
//		dist.Main()
//		os.Exit(m.Run())
//	}
//
// Start registers a cleanup that closes the cluster and fails the test if a worker process
// or a goroutine outlives it.
//
// It is also the project's test harness, which users' tests may use too:
//   - Need (and Missing) for the rule on real components: a test that needs sshd hosts,
//     Slurm, mpirun, tmux, chromium... skips with what is missing and how to set it up, and
//     fails instead under CI=true, where scripts/setup.sh must have set everything up;
//   - Hosts for the test hosts in network namespaces;
//   - Barrier to wait until a remote function has started, instead of sleeping;
//   - Eventually to wait for a condition, failing the test with what it waited for;
//   - Kill, WaitGone and Alive for dying workers, Links for cut or dark links, TLS for
//     certificates.
package disttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
)

// Output collects the forwarded output of a cluster's workers; safe for concurrent use.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// WaitFor waits up to d for s to appear in the output and reports whether it did.
func (o *Output) WaitFor(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if strings.Contains(o.String(), s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Start starts a cluster of n local workers whose output goes to the returned Output. When the
// test ends the cluster is closed, and the test fails if any worker process is still alive or
// goroutines started during the test are still running.
func Start(t testing.TB, n int, opts ...dist.Option) (*dist.Cluster, *Output) {
	t.Helper()
	before := runtime.NumGoroutine()
	out := &Output{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts = append([]dist.Option{dist.WithWorkers(n), dist.WithOutput(out), dist.WithLaunchTimeout(30 * time.Second)}, opts...)
	c, err := dist.Start(ctx, opts...)
	if err != nil {
		t.Fatalf("disttest: start: %v", err)
	}
	var osPids []int
	track := func() {
		for _, pid := range c.Workers() {
			if info, ok := c.ProcInfo(pid); ok {
				osPids = append(osPids, info.OSPid)
			}
		}
	}
	track()
	t.Cleanup(func() {
		track() // workers added during the test
		if err := c.Close(); err != nil {
			t.Errorf("disttest: close: %v", err)
		}
		for _, p := range osPids {
			if Alive(p) {
				t.Errorf("disttest: worker os pid %d still alive after Close", p)
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		if err := CheckGoroutines(before, 5*time.Second); err != nil {
			t.Error(err)
		}
	})
	return c, out
}

// Alive reports whether an operating-system process exists and is not a zombie.
func Alive(osPid int) bool {
	if err := syscall.Kill(osPid, 0); err != nil {
		return false
	}
	// A zombie still answers kill(0); it has exited for every purpose here.
	var st [512]byte
	fd, err := syscall.Open(fmt.Sprintf("/proc/%d/stat", osPid), syscall.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	n, _ := syscall.Read(fd, st[:])
	s := string(st[:max(n, 0)])
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// CheckGoroutines waits up to d for the number of goroutines to fall to at most want and
// returns an error listing the survivors if it does not.
func CheckGoroutines(want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("disttest: %d goroutines running, want at most %d:\n%s", n, want, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill sends SIGKILL to worker pid's process and returns its OS pid.
func Kill(t testing.TB, c *dist.Cluster, pid int) int {
	t.Helper()
	info, ok := c.ProcInfo(pid)
	if !ok {
		t.Fatalf("disttest: no live worker %d", pid)
	}
	if err := syscall.Kill(info.OSPid, syscall.SIGKILL); err != nil {
		t.Fatalf("disttest: kill worker %d: %v", pid, err)
	}
	return info.OSPid
}

// WaitGone waits up to d until pid is no longer among c.Procs().
func WaitGone(c *dist.Cluster, pid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		gone := true
		for _, p := range c.Procs() {
			if p == pid {
				gone = false
			}
		}
		if gone {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("disttest: process still a member")
}

// Eventually polls cond every few milliseconds for up to d and fails the test, naming what,
// if cond never holds.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("disttest: timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
