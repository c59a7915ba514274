package ssh_test

import (
	"context"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/ssh"
)

// hostsSeen is a dist.Progress that records which workers have done items.
type hostsSeen struct {
	mu  sync.Mutex
	pid map[int]bool
}

func (h *hostsSeen) Begin(string, int) dist.ProgressRun { return h }

func (h *hostsSeen) Done(pid, n int) {
	h.mu.Lock()
	h.pid[pid] = true
	h.mu.Unlock()
}

func (h *hostsSeen) End(error) {}

func (h *hostsSeen) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pid)
}

// TestHostDownMidPmap takes a host's network link down in the middle of a Pmap over workers
// on three hosts: the Pmap completes on the other hosts with every item once, and the lost
// host's workers are reported lost.
func TestHostDownMidPmap(t *testing.T) {
	h := needHosts(t)
	ms := machines(t, map[string]int{h.names[0]: 2, h.names[1]: 2, h.names[2]: 2}, h.names[:3]...)
	m, err := ssh.New(ms, ssh.Options{Flags: []string{"-F", h.config}, KeepAlive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 6)
	var log struct {
		sync.Mutex
		lost map[int]bool
	}
	log.lost = map[int]bool{}
	defer c.SubscribeLifecycle(func(e dist.Event) {
		if e.Kind == dist.Exited && e.Reason == dist.ExitLost {
			log.Lock()
			log.lost[e.Pid] = true
			log.Unlock()
		}
	})()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hosts := hostsOf(t, c)
	var down []int
	for pid, hn := range hosts {
		if hn == h.names[1] {
			down = append(down, pid)
		}
	}
	in := make([]int, 600)
	seen := &hostsSeen{pid: map[int]bool{}}
	done := make(chan error, 1)
	var out []string
	go func() {
		var err error
		out, err = dist.Pmap(ctx, c, slowHostname, in, dist.WithBatchSize(1), dist.WithProgress(seen))
		done <- err
	}()
	disttest.Eventually(t, time.Minute, "items done on every worker", func() bool { return seen.count() == 6 })
	var orphans []int
	for _, pid := range down {
		info, _ := c.ProcInfo(pid)
		orphans = append(orphans, info.OSPid)
	}
	veth := h.prefix + h.names[1]
	if b, err := exec.Command("ip", "link", "set", veth, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s down: %v: %s", veth, err, b)
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "set", veth, "up").Run()
		// With the link back, the host sees its session gone and its workers exit.
		for _, p := range orphans {
			disttest.Eventually(t, time.Minute, "the lost host's workers to exit once it is back", func() bool { return !disttest.Alive(p) })
		}
	})
	if err := <-done; err != nil {
		t.Fatalf("Pmap with a host down: %v", err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d results for %d items", len(out), len(in))
	}
	for i, r := range out {
		if r == "" {
			t.Fatalf("item %d has no result", i)
		}
	}
	disttest.Eventually(t, time.Minute, "the down host's workers reported lost", func() bool {
		log.Lock()
		defer log.Unlock()
		for _, pid := range down {
			if !log.lost[pid] {
				return false
			}
		}
		return true
	})
}
