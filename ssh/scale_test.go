package ssh_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/ssh"
)

// exitWith makes the worker exit with the given status, just after it has answered.
var exitWith = dist.NewFunc("sshtest.exit", func(ctx context.Context, code int) (int, error) {
	go func() {
		time.Sleep(20 * time.Millisecond)
		os.Exit(code)
	}()
	return os.Getpid(), nil
})

// procsWith returns the live processes whose environment holds entry ("NAME=value"): the
// hosts share this machine's process table, so their launchers and workers are seen here.
func procsWith(t *testing.T, entry string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	want := []byte(entry)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue // gone meanwhile
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, want) && disttest.Alive(pid) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// sshChildren returns how many ssh client processes this process has as children.
func sshChildren(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		j := strings.IndexByte(s, '(')
		if i < 0 || j < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state, ppid, ...
		if s[j+1:i] == "ssh" && len(f) > 1 && f[1] == me && f[0] != "Z" {
			n++
		}
	}
	return n
}

// marker returns an environment entry unique to this test run, to find its processes by.
func marker(t *testing.T) string {
	return fmt.Sprintf("SSHTEST_RUN=%s-%d-%d", t.Name(), os.Getpid(), time.Now().UnixNano())
}

// processOf returns the manager's process of worker pid.
func processOf(t *testing.T, c *dist.Cluster, m *ssh.Manager, pid int) *ssh.Process {
	t.Helper()
	info, ok := c.ProcInfo(pid)
	if !ok {
		t.Fatalf("worker %d unknown", pid)
	}
	for _, p := range m.Processes() {
		if p.RemotePid() == info.OSPid && p.Host() == info.Host {
			return p
		}
	}
	t.Fatalf("no ssh process for worker %d (pid %d on %s)", pid, info.OSPid, info.Host)
	return nil
}

// exits records the Exited events of a cluster.
type exits struct {
	mu  sync.Mutex
	err map[int]error
	why map[int]dist.ExitReason
}

func watchExits(c *dist.Cluster) (*exits, func()) {
	x := &exits{err: map[int]error{}, why: map[int]dist.ExitReason{}}
	unsub := c.Subscribe(func(e dist.Event) {
		if e.Kind == dist.Exited {
			x.mu.Lock()
			x.err[e.Pid], x.why[e.Pid] = e.Cause, e.Reason
			x.mu.Unlock()
		}
	})
	return x, unsub
}

func (x *exits) pids() []int {
	x.mu.Lock()
	defer x.mu.Unlock()
	var ps []int
	for p := range x.err {
		ps = append(ps, p)
	}
	return ps
}

func TestThreeHundredWorkersOnThreeHosts(t *testing.T) {
	h := needHosts(t)
	if testing.Short() {
		t.Skip("300 workers over ssh: skipped with -short")
	}
	const n = 300
	mark := marker(t)
	per := map[string]int{}
	for _, name := range h.names[:3] {
		per[name] = n / 3
	}
	m, err := ssh.New(machines(t, per, h.names[:3]...), ssh.Options{Flags: []string{"-F", h.config}, Env: []string{mark}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, n)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if got := len(c.Workers()); got != n {
		t.Fatalf("%d workers, want %d", got, n)
	}
	perHost := map[string]int{}
	for _, hn := range hostsOf(t, c) {
		perHost[hn]++
	}
	for _, name := range h.names[:3] {
		if perHost[name] != n/3 {
			t.Errorf("workers per host %v, want %d on each of %v", perHost, n/3, h.names[:3])
		}
	}
	// One launcher per host with its workers there; one ssh client per host here.
	if got := len(procsWith(t, mark)); got != n+3 {
		t.Errorf("%d processes of this run on the hosts, want %d workers and 3 launchers", got, n)
	}
	if got := sshChildren(t); got != 3 {
		t.Errorf("%d ssh clients, want 3 (one per host)", got)
	}
	res, err := noop.Everywhere(ctx, c, 0)
	if err != nil || len(res) != n+1 {
		t.Fatalf("Everywhere: %d results, %v; want %d", len(res), err, n+1)
	}

	// Killing one worker ends it alone, and only it is reported.
	x, unsub := watchExits(c)
	defer unsub()
	victim := c.Workers()[n/2]
	info, _ := c.ProcInfo(victim)
	p := processOf(t, c, m, victim)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := disttest.WaitGone(c, victim, 30*time.Second); err != nil {
		t.Fatalf("worker %d still a member after Kill: %v", victim, err)
	}
	disttest.Eventually(t, 10*time.Second, "the killed worker to be gone from its host", func() bool { return !disttest.Alive(info.OSPid) })
	disttest.Eventually(t, 10*time.Second, "an Exited event for the killed worker", func() bool { return len(x.pids()) > 0 })
	var he *ssh.HostError
	if err := p.Wait(); !errors.As(err, &he) || he.Host != info.Host || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Wait of the killed worker: %v, want a *HostError naming %s and saying it was killed", err, info.Host)
	}
	res, err = noop.Everywhere(ctx, c, 0)
	if err != nil || len(res) != n {
		t.Errorf("Everywhere after the kill: %d results, %v; want %d", len(res), err, n)
	}
	if got := x.pids(); len(got) != 1 || got[0] != victim {
		t.Errorf("workers reported exited: %v, want only %d", got, victim)
	}
	if got := len(procsWith(t, mark)); got != n-1+3 {
		t.Errorf("%d processes of this run on the hosts after the kill, want %d", got, n-1+3)
	}

	// Close leaves nothing running, on the hosts or here.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if left := procsWith(t, mark); len(left) > 0 {
		t.Errorf("after Close, %d processes of this run are left on the hosts: %v", len(left), left)
	}
	if got := sshChildren(t); got != 0 {
		t.Errorf("after Close, %d ssh clients are left", got)
	}
	if got := len(m.Processes()); got != 0 {
		t.Errorf("after Close, the manager has %d processes", got)
	}
}

func TestWorkerOfAHostEndsAlone(t *testing.T) {
	h := needHosts(t)
	m, err := ssh.New(machines(t, map[string]int{h.names[0]: 3}, h.names[0]), ssh.Options{Flags: []string{"-F", h.config}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	x, unsub := watchExits(c)
	defer unsub()
	ws := c.Workers()
	p := processOf(t, c, m, ws[1])
	if _, err := exitWith.Call(ctx, c, ws[1], 3); err != nil {
		t.Fatal(err)
	}
	if err := disttest.WaitGone(c, ws[1], 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var he *ssh.HostError
	if err := p.Wait(); !errors.As(err, &he) || he.Host != h.names[0] || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Wait: %v, want a *HostError naming %s with exit status 3", err, h.names[0])
	}
	disttest.Eventually(t, 10*time.Second, "the Exited event", func() bool { return len(x.pids()) > 0 })
	x.mu.Lock()
	if got := x.why[ws[1]]; got != dist.ExitCrash {
		t.Errorf("exit reason %v (%v), want %v", got, x.err[ws[1]], dist.ExitCrash)
	}
	x.mu.Unlock()
	for _, pid := range []int{ws[0], ws[2]} {
		if hn, err := hostname.Call(ctx, c, pid, 0); err != nil || hn != h.names[0] {
			t.Errorf("worker %d after its neighbour exited: %q, %v", pid, hn, err)
		}
	}
	if got := x.pids(); len(got) != 1 {
		t.Errorf("workers reported exited: %v, want only %d", got, ws[1])
	}
	if got := len(m.Processes()); got != 2 {
		t.Errorf("the manager has %d processes, want 2", got)
	}
}

func TestWorkerHandshakeTimeout(t *testing.T) {
	h := needHosts(t)
	mark := marker(t)
	m, err := ssh.New(machines(t, map[string]int{h.names[1]: 2}, h.names[1]),
		ssh.Options{Flags: []string{"-F", h.config}, Env: []string{mark, envHang + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := disttest.Start(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.AddProcs(ctx, m, 2, dist.WithLaunchTimeout(2*time.Second))
	want := h.names[1] + ": the worker printed no address within 2s"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("AddProcs with workers that never answer: %v\nwant it to say %q", err, want)
	}
	if strings.Count(err.Error(), want) != 1 {
		t.Errorf("the same failure of two workers is reported more than once: %v", err)
	}
	// The stuck workers were killed on the host, and their launcher ended with them.
	disttest.Eventually(t, 15*time.Second, "the stuck workers and their launcher to be gone", func() bool {
		return len(procsWith(t, mark)) == 0
	})
	disttest.Eventually(t, 10*time.Second, "the host's ssh client to end", func() bool { return sshChildren(t) == 0 })
}
