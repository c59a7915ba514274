package disttest

import (
	"sync"
	"syscall"
	"testing"

	"github.com/godist/dist"
)

// Freeze stops worker pid's process (SIGSTOP): it holds its connections open and answers
// nothing, as a machine that hangs. Thaw resumes it; the test's end resumes it too, so that
// the cluster's Close can end it.
func Freeze(t testing.TB, c *dist.Cluster, pid int) {
	t.Helper()
	info, ok := c.ProcInfo(pid)
	if !ok {
		t.Fatalf("disttest: no live worker %d", pid)
	}
	if err := syscall.Kill(info.OSPid, syscall.SIGSTOP); err != nil {
		t.Fatalf("disttest: freeze worker %d: %v", pid, err)
	}
	t.Cleanup(func() {
		syscall.Kill(info.OSPid, syscall.SIGCONT)
		frozen.Delete(pid)
	})
	frozen.Store(pid, info.OSPid)
}

// Thaw resumes a worker stopped by Freeze.
func Thaw(t testing.TB, pid int) {
	t.Helper()
	v, ok := frozen.LoadAndDelete(pid)
	if !ok {
		t.Fatalf("disttest: worker %d is not frozen", pid)
	}
	if err := syscall.Kill(v.(int), syscall.SIGCONT); err != nil {
		t.Fatalf("disttest: thaw worker %d: %v", pid, err)
	}
}

// frozen maps the pids of frozen workers to their OS pids.
var frozen sync.Map
