package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/ssh"
)

func TestParseMachine(t *testing.T) {
	cases := []struct {
		spec string
		want ssh.Machine
	}{
		{"h2", ssh.Machine{Host: "h2", Count: 1}},
		{"alice@h2:2222", ssh.Machine{User: "alice", Host: "h2", Port: 2222, Count: 1}},
		{"h2 10.0.0.2", ssh.Machine{Host: "h2", BindAddr: "10.0.0.2", Count: 1}},
		{"bob@10.1.2.3:22 10.0.0.2:9000", ssh.Machine{User: "bob", Host: "10.1.2.3", Port: 22, BindAddr: "10.0.0.2", BindPort: 9000, Count: 1}},
		{"[fe80::1]:2200 [fd00::2]:7000", ssh.Machine{Host: "fe80::1", Port: 2200, BindAddr: "fd00::2", BindPort: 7000, Count: 1}},
		{"fd00::5", ssh.Machine{Host: "fd00::5", Count: 1}},
	}
	for _, c := range cases {
		got, err := ssh.ParseMachine(c.spec, 1)
		if err != nil {
			t.Errorf("ParseMachine(%q): %v", c.spec, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseMachine(%q) = %+v, want %+v", c.spec, got, c.want)
		}
		back, err := ssh.ParseMachine(got.String(), 1)
		if err != nil || back != got {
			t.Errorf("ParseMachine(%q.String() = %q) = %+v, %v", c.spec, got.String(), back, err)
		}
	}
	for _, bad := range []string{"", "a b c", "@h2", "h2:0", "h2:99999", "h2:x", "h2 10.0.0.1:-1"} {
		if _, err := ssh.ParseMachine(bad, 1); err == nil {
			t.Errorf("ParseMachine(%q) accepted", bad)
		}
	}
	if _, err := ssh.ParseMachine("h2", 0); err == nil {
		t.Error("count 0 accepted")
	}
	if m, err := ssh.ParseMachine("h2", ssh.Auto); err != nil || m.Count != ssh.Auto {
		t.Errorf("Auto: %+v, %v", m, err)
	}
}

func TestParseMachines(t *testing.T) {
	file := `# workers
4*alice@node1:2222 10.0.0.1:9000
auto*node2

node3
`
	ms, err := ssh.ParseMachines(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []ssh.Machine{
		{User: "alice", Host: "node1", Port: 2222, BindAddr: "10.0.0.1", BindPort: 9000, Count: 4},
		{Host: "node2", Count: ssh.Auto},
		{Host: "node3", Count: 1},
	}
	if !slices.Equal(ms, want) {
		t.Errorf("ParseMachines = %+v, want %+v", ms, want)
	}
	for _, bad := range []string{"0*node1", "x*node1", "4*", "node1 a b"} {
		if _, err := ssh.ParseMachines(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseMachines(%q): %v, want an error naming line 1", bad, err)
		}
	}
}

func machines(t *testing.T, specs map[string]int, order ...string) []ssh.Machine {
	t.Helper()
	var ms []ssh.Machine
	for _, s := range order {
		m, err := ssh.ParseMachine(s, specs[s])
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

// start starts a cluster of n workers over ssh with m; it is closed when the test ends, and
// the test fails if any worker outlives it.
func start(t *testing.T, m *ssh.Manager, n int) (*dist.Cluster, *disttest.Output) {
	t.Helper()
	return disttest.Start(t, n, dist.WithManager(m))
}

// hostsOf returns each worker's host as the cluster knows it.
func hostsOf(t *testing.T, c *dist.Cluster) map[int]string {
	t.Helper()
	hs := map[int]string{}
	for _, pid := range c.Workers() {
		info, ok := c.ProcInfo(pid)
		if !ok {
			t.Fatalf("worker %d unknown", pid)
		}
		hs[pid] = info.Host
	}
	return hs
}

func TestPmapAndPeerCallsAcrossHosts(t *testing.T) {
	h := needHosts(t)
	ms := machines(t, map[string]int{h.names[0]: ssh.Auto, h.names[1]: 1, h.names[2]: 1}, h.names[:3]...)
	m, err := ssh.New(ms, ssh.Options{Flags: []string{"-F", h.config}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := m.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("Count = %d, want the CPUs of %s plus 2", n, h.names[0])
	}
	c, out := start(t, m, n)
	hosts := hostsOf(t, c)
	if len(hosts) != n {
		t.Fatalf("%d workers, want %d", len(hosts), n)
	}
	perHost := map[string]int{}
	for _, hn := range hosts {
		perHost[hn]++
	}
	if perHost[h.names[0]] != n-2 || perHost[h.names[1]] != 1 || perHost[h.names[2]] != 1 {
		t.Errorf("workers per host %v, want %s:%d %s:1 %s:1", perHost, h.names[0], n-2, h.names[1], h.names[2])
	}
	for pid := range hosts {
		info, _ := c.ProcInfo(pid)
		if info.Network != "tcp" || !slices.ContainsFunc(h.addrs, func(a string) bool { return strings.HasPrefix(info.Addr, a+":") }) {
			t.Errorf("worker %d listens on %s %s, want one of the hosts' addresses %v", pid, info.Network, info.Addr, h.addrs)
		}
	}

	// A Pmap whose results are the hostnames of the workers that computed them.
	in := make([]int, 60)
	res, err := dist.Pmap(ctx, c, slowHostname, in, dist.WithBatchSize(1))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range res {
		seen[r] = true
	}
	for _, name := range h.names[:3] {
		if !seen[name] {
			t.Errorf("Pmap results %v never name host %s", seen, name)
		}
	}

	// Worker-to-worker calls between every pair of workers on different hosts.
	for a, ha := range hosts {
		for b, hb := range hosts {
			if ha == hb {
				continue
			}
			got, err := pairHost.Call(ctx, c, a, b)
			if err != nil {
				t.Fatalf("worker %d (%s) calling worker %d (%s): %v", a, ha, b, hb, err)
			}
			if got != [2]string{ha, hb} {
				t.Errorf("worker %d calling %d: hosts %v, want [%s %s]", a, b, got, ha, hb)
			}
		}
	}

	// Worker output comes back labelled with the worker's pid.
	pid := c.Workers()[0]
	if _, err := c.CallByName(ctx, pid, "sshtest.hostname", 0); err != nil {
		t.Fatal(err)
	}
	_ = out
}

func TestInterruptReachesRemoteWorker(t *testing.T) {
	h := needHosts(t)
	m, err := ssh.New(machines(t, map[string]int{h.names[1]: 1}, h.names[1]), ssh.Options{Flags: []string{"-F", h.config}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pid := c.Workers()[0]
	osPid, err := armSigint.Call(ctx, c, pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	procs := m.Processes()
	if len(procs) != 1 {
		t.Fatalf("manager has %d processes, want 1", len(procs))
	}
	p := procs[0]
	if p.RemotePid() != osPid || p.Host() != h.names[1] {
		t.Fatalf("process says pid %d on %s; the worker is pid %d on %s", p.RemotePid(), p.Host(), osPid, h.names[1])
	}
	started := disttest.NewBarrier(t, c)
	f := awaitSigint.Go(ctx, c, pid, started)
	started.Wait(ctx, t, 1)
	if f.Ready() {
		v, err := f.Fetch(ctx)
		t.Fatalf("awaitSigint returned before the interrupt: %q, %v", v, err)
	}
	// Through the cluster, as a user would: Cluster.Interrupt calls Process.Interrupt.
	if err := c.Interrupt(ctx, pid); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	got, err := f.Fetch(fctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "interrupt on " + h.names[1]; got != want {
		t.Errorf("the worker said %q, want %q", got, want)
	}
	// It caught the signal and still serves.
	if hn, err := hostname.Call(ctx, c, pid, 0); err != nil || hn != h.names[1] {
		t.Errorf("after the interrupt: %q, %v", hn, err)
	}

	// Kill ends the ssh client; the session closes and the worker on the host exits.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := disttest.WaitGone(c, pid, 10*time.Second); err != nil {
		t.Errorf("worker %d still a member after Kill: %v", pid, err)
	}
	// The hosts share this machine's process table, so the worker's pid there is visible here.
	disttest.Eventually(t, 10*time.Second, "the killed worker to exit on its host", func() bool { return !disttest.Alive(osPid) })
	var he *ssh.HostError
	if err := p.Wait(); !errors.As(err, &he) || he.Host != h.names[1] {
		t.Errorf("Wait after Kill: %v, want a *HostError naming %s", err, h.names[1])
	}
}

func TestCopiesBinaryToHostThatLacksIt(t *testing.T) {
	h := needHosts(t)
	// The hosts share this machine's filesystem: a path that does not exist yet is missing
	// on every host.
	exe := filepath.Join(t.TempDir(), "not", "yet", "worker")
	m, err := ssh.New(machines(t, map[string]int{h.names[2]: 2}, h.names[2]), ssh.Options{Flags: []string{"-F", h.config}, Exe: exe})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	paths, err := exePath.Everywhere(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	for pid, p := range paths {
		if pid != 1 && p != exe {
			t.Errorf("worker %d runs %s, want the copy at %s", pid, p, exe)
		}
	}
	self, _ := os.Executable()
	a, _ := os.Stat(self)
	b, err := os.Stat(exe)
	if err != nil || a.Size() != b.Size() || b.Mode().Perm()&0o100 == 0 {
		t.Errorf("copy: %v, %v (want %d bytes, executable)", b, err, a.Size())
	}
	leftovers, _ := filepath.Glob(exe + ".godist-copy.*")
	if len(leftovers) > 0 {
		t.Errorf("temporary copies left: %v", leftovers)
	}

	// With copying off, the same missing path is an error that names the host.
	m2, err := ssh.New(machines(t, map[string]int{h.names[1]: 1}, h.names[1]),
		ssh.Options{Flags: []string{"-F", h.config}, Exe: exe + "-absent", NoCopy: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.AddProcs(ctx, m2, 1)
	var he *ssh.HostError
	if !errors.As(err, &he) || he.Host != h.names[1] || !strings.Contains(err.Error(), h.names[1]+": no executable at "+exe+"-absent") {
		t.Errorf("AddProcs with a missing executable and no copy: %v", err)
	}
}

func TestDirEnvAndBindPorts(t *testing.T) {
	h := needHosts(t)
	dir := t.TempDir()
	port, err := freePortPair()
	if err != nil {
		t.Fatal(err)
	}
	spec := fmt.Sprintf("%s %s:%d", h.names[2], h.addrs[2], port)
	m, err := ssh.New(machines(t, map[string]int{spec: 2}, spec), ssh.Options{
		Flags: []string{"-F", h.config},
		Dir:   dir,
		Env:   []string{"GODIST_TEST_VAR=it's here"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var addrs []string
	for _, pid := range c.Workers() {
		info, _ := c.ProcInfo(pid)
		addrs = append(addrs, info.Addr)
		got, err := whereAmI.Call(ctx, c, pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got != [2]string{dir, "it's here"} {
			t.Errorf("worker %d runs in %q with GODIST_TEST_VAR=%q, want %q and %q", pid, got[0], got[1], dir, "it's here")
		}
	}
	sort.Strings(addrs)
	want := []string{fmt.Sprintf("%s:%d", h.addrs[2], port), fmt.Sprintf("%s:%d", h.addrs[2], port+1)}
	if !slices.Equal(addrs, want) {
		t.Errorf("workers listen on %v, want %v", addrs, want)
	}
}

// freePortPair returns a port p such that p and p+1 were free a moment ago (in this
// namespace; the hosts' namespaces run nothing else).
func freePortPair() (int, error) {
	for range 20 {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := a.Addr().(*net.TCPAddr).Port
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		a.Close()
		if err == nil {
			b.Close()
			return p, nil
		}
	}
	return 0, errors.New("no two consecutive free ports")
}

func TestTunnel(t *testing.T) {
	h := needHosts(t)
	m, err := ssh.New(machines(t, map[string]int{h.names[0]: 1, h.names[2]: 1}, h.names[0], h.names[2]),
		ssh.Options{Flags: []string{"-F", h.config}, Tunnel: true})
	if err != nil {
		t.Fatal(err)
	}
	var socks []string
	t.Cleanup(func() { // after the cluster's Close
		for _, s := range socks {
			if _, err := os.Stat(filepath.Dir(s)); !os.IsNotExist(err) {
				t.Errorf("tunnel directory %s left behind: %v", filepath.Dir(s), err)
			}
		}
	})
	c, _ := start(t, m, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, pid := range c.Workers() {
		// The driver reaches the worker at a local port; the worker listens on its host's
		// loopback, which this (root) network namespace cannot reach but through ssh.
		info, _ := c.ProcInfo(pid)
		if info.Network != "unix" || !strings.HasPrefix(info.Addr, os.TempDir()) {
			t.Errorf("worker %d reached at %s %s, want the tunnel's socket", pid, info.Network, info.Addr)
		}
		socks = append(socks, info.Addr)
	}
	res, err := dist.Pmap(ctx, c, hostname, make([]int, 20), dist.WithBatchSize(1))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range res {
		seen[r] = true
	}
	if !seen[h.names[0]] || !seen[h.names[2]] {
		t.Errorf("Pmap through tunnels ran on %v, want %s and %s", seen, h.names[0], h.names[2])
	}
}

// wrongKeyConfig writes an ssh_config for host (at addr) that offers a key the hosts do not
// accept.
func wrongKeyConfig(t *testing.T, h testHosts, host, addr string) string {
	dir := t.TempDir()
	key := filepath.Join(dir, "stranger")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	cfg := filepath.Join(dir, "config")
	text := fmt.Sprintf("Host %s\n  HostName %s\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n"+
		"  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n", host, addr, key, h.known)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestFailuresNameHostAndCause(t *testing.T) {
	h := needHosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg := wrongKeyConfig(t, h, h.names[1], h.addrs[1])
	m, err := ssh.New(machines(t, map[string]int{h.names[1]: 1}, h.names[1]), ssh.Options{Flags: []string{"-F", cfg}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Count(ctx) // a fixed count needs no ssh
	if err != nil {
		t.Fatal(err)
	}
	c, _ := disttest.Start(t, 0)
	_, err = c.AddProcs(ctx, m, 1)
	want := h.names[1] + ": ssh exited 255: Permission denied (publickey)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("wrong key: %v\nwant it to say %q", err, want)
	}
	var he *ssh.HostError
	if !errors.As(err, &he) || he.ExitCode != 255 {
		t.Errorf("wrong key: %#v is not a *HostError with exit code 255", err)
	}

	// A good host and an unknown one: the good one's worker joins, the other is named.
	bad := "no-such-host.invalid"
	m2, err := ssh.New(machines(t, map[string]int{h.names[0]: 1, bad: 1}, h.names[0], bad), ssh.Options{Flags: []string{"-F", h.config}})
	if err != nil {
		t.Fatal(err)
	}
	pids, err := c.AddProcs(ctx, m2, 2)
	if len(pids) != 1 {
		t.Errorf("joined %v, want the one worker on %s", pids, h.names[0])
	}
	if err == nil || !strings.Contains(err.Error(), bad+": ssh exited 255: ssh: Could not resolve hostname "+bad) {
		t.Errorf("unknown host: %v", err)
	}
	if err != nil && strings.Count(err.Error(), bad+": ssh exited") != 1 {
		t.Errorf("the unknown host is reported more than once: %v", err)
	}

	// An Auto count needs the host: asking a host we cannot log in to fails, naming it.
	m3, err := ssh.New(machines(t, map[string]int{h.names[1]: ssh.Auto}, h.names[1]), ssh.Options{Flags: []string{"-F", cfg}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m3.Count(ctx); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Count over a wrong key: %v", err)
	}
}

func TestLaunchTimeoutKillsTheStuckWorker(t *testing.T) {
	h := needHosts(t)
	// A "worker" that never prints its address and never reads its input.
	dir := t.TempDir()
	marker := fmt.Sprintf("%d.%d", 300+os.Getpid()%100, time.Now().UnixNano()%1000)
	exe := filepath.Join(dir, "stuck")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexec sleep "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := ssh.New(machines(t, map[string]int{h.names[1]: 1}, h.names[1]), ssh.Options{Flags: []string{"-F", h.config}, Exe: exe})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := disttest.Start(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	_, err = c.AddProcs(ctx, m, 1, dist.WithLaunchTimeout(2*time.Second))
	want := h.names[1] + ": " + exe + " did not start as a launcher within 2s"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("AddProcs with a worker that never answers: %v\nwant it to say %q", err, want)
	}
	if d := time.Since(t0); d > 15*time.Second {
		t.Errorf("the launch took %v to give up", d)
	}
	// The stuck process on the host was killed, not just its ssh client.
	disttest.Eventually(t, 10*time.Second, "the stuck worker to be gone from its host", func() bool {
		out, _ := exec.Command("pgrep", "-f", "sleep "+marker).Output()
		return len(strings.TrimSpace(string(out))) == 0
	})
}

func TestRetriesConnectionsDroppedBySSHD(t *testing.T) {
	h := needHosts(t)
	// An ssh that fails its first two runs the way ssh does when sshd drops a connection
	// beyond MaxStartups, then is the real ssh.
	dir := t.TempDir()
	real, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatal(err)
	}
	count := filepath.Join(dir, "count")
	wrapper := filepath.Join(dir, "ssh")
	script := fmt.Sprintf(`#!/bin/sh
echo x >> %[1]s
if [ "$(wc -l < %[1]s)" -le 2 ]; then
	echo "kex_exchange_identification: Connection closed by remote host" >&2
	echo "Connection closed by 10.0.0.1 port 22" >&2
	exit 255
fi
exec %[2]s "$@"
`, count, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := ssh.New(machines(t, map[string]int{h.names[0]: 1}, h.names[0]),
		ssh.Options{SSH: wrapper, Flags: []string{"-F", h.config}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 1)
	if len(c.Workers()) != 1 {
		t.Fatalf("workers %v", c.Workers())
	}
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "x"); n != 3 {
		t.Errorf("ssh ran %d times, want 3 (two dropped, one through)", n)
	}
}

func TestMaxParallel(t *testing.T) {
	h := needHosts(t)
	// An ssh wrapper that records, for each session, when it started and when its launcher
	// may have begun (after a pause); the pauses of sessions that run at once overlap.
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	wrapper := filepath.Join(dir, "ssh")
	real, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\nb=$(date +%%s.%%N)\nsleep 0.8\necho \"$b $(date +%%s.%%N)\" >> %s\nexec %s \"$@\"\n", log, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := ssh.New(machines(t, map[string]int{h.names[0]: 2, h.names[1]: 2, h.names[2]: 2}, h.names[:3]...),
		ssh.Options{SSH: wrapper, Flags: []string{"-F", h.config}, MaxParallel: 2})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 6)
	if len(c.Workers()) != 6 {
		t.Fatalf("%d workers, want 6", len(c.Workers()))
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ a, b float64 }
	var spans []span
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		a, _ := strconv.ParseFloat(f[0], 64)
		z, _ := strconv.ParseFloat(f[1], 64)
		spans = append(spans, span{a, z})
	}
	if len(spans) != 3 { // fixed counts and the executable in place: one session a host
		t.Fatalf("%d ssh sessions, want 3 (one per host): %q", len(spans), b)
	}
	most := 0
	for _, s := range spans {
		n := 0
		for _, o := range spans {
			if o.a <= s.a && s.a < o.b {
				n++
			}
		}
		most = max(most, n)
	}
	if most > 2 {
		t.Errorf("%d ssh sessions were being set up at once, want at most 2", most)
	}
	if most < 2 {
		t.Errorf("sessions never ran two at a time: the bound is not what limits them")
	}
}

func TestLostHost(t *testing.T) {
	h := needHosts(t)
	ms := machines(t, map[string]int{h.names[0]: 1, h.names[1]: 2, h.names[2]: 1}, h.names[:3]...)
	m, err := ssh.New(ms, ssh.Options{Flags: []string{"-F", h.config}, KeepAlive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := start(t, m, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hosts := hostsOf(t, c)
	var lost, kept []int
	for pid, hn := range hosts {
		if hn == h.names[1] {
			lost = append(lost, pid)
		} else {
			kept = append(kept, pid)
		}
	}
	sort.Ints(lost)
	sort.Ints(kept)
	if len(lost) != 2 || len(kept) != 2 {
		t.Fatalf("workers by host %v", hosts)
	}
	// Workers know each other before the host goes: a call between the kept ones and one
	// from a kept one to a lost one open their connections.
	for _, a := range kept {
		for _, b := range append(slices.Clone(kept), lost...) {
			if a != b {
				if _, err := pairHost.Call(ctx, c, a, b); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var mu sync.Mutex
	exited := map[int]error{}
	reasons := map[int]dist.ExitReason{}
	unsub := c.Subscribe(func(e dist.Event) {
		if e.Kind == dist.Exited {
			mu.Lock()
			exited[e.Pid] = e.Cause
			reasons[e.Pid] = e.Reason
			mu.Unlock()
		}
	})
	defer unsub()
	blocked := sleepFor.Go(ctx, c, lost[0], time.Minute)
	time.Sleep(100 * time.Millisecond)

	veth := h.prefix + h.names[1]
	if out, err := exec.Command("ip", "link", "set", veth, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s down: %v: %s", veth, err, out)
	}
	var orphans []int
	for _, pid := range lost {
		info, _ := c.ProcInfo(pid)
		orphans = append(orphans, info.OSPid)
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "set", veth, "up").Run()
		// With the link back, the host sees its sessions gone and the workers exit.
		for _, p := range orphans {
			disttest.Eventually(t, 40*time.Second, "the lost host's workers to exit once it is back", func() bool { return !disttest.Alive(p) })
		}
	})
	down := time.Now()

	// Bounded: 3 missed keep-alives of 1s, plus slack for a loaded machine.
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	_, err = blocked.Fetch(fctx)
	if !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("the call on the lost host ended with %v, want ErrProcessExited", err)
	}
	t.Logf("lost host noticed after %v: %v", time.Since(down).Round(time.Millisecond), err)
	defer func() {
		mu.Lock()
		t.Logf("Exited event of worker %d: %v", lost[0], exited[lost[0]])
		mu.Unlock()
	}()
	disttest.Eventually(t, 5*time.Second, "an Exited event for each lost worker", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, pid := range lost {
			if !errors.Is(exited[pid], dist.ErrProcessExited) {
				return false
			}
		}
		return true
	})
	mu.Lock()
	for _, pid := range lost {
		if reasons[pid] != dist.ExitLost || !errors.Is(exited[pid], dist.ErrConnectionLost) {
			t.Errorf("worker %d exited with reason %v (%v), want %v", pid, reasons[pid], exited[pid], dist.ExitLost)
		}
	}
	mu.Unlock()
	mu.Lock()
	for pid := range exited {
		if !slices.Contains(lost, pid) {
			t.Errorf("worker %d on a host that is still up exited: %v", pid, exited[pid])
		}
	}
	mu.Unlock()
	if got := c.Workers(); !slices.Equal(got, kept) {
		t.Errorf("workers after the loss %v, want %v", got, kept)
	}
	// The others work on: between themselves and in a Pmap.
	if got, err := pairHost.Call(ctx, c, kept[0], kept[1]); err != nil || got != [2]string{hosts[kept[0]], hosts[kept[1]]} {
		t.Errorf("worker-to-worker after the loss: %v, %v", got, err)
	}
	res, err := dist.Pmap(ctx, c, hostname, make([]int, 20))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r == h.names[1] {
			t.Errorf("Pmap ran on the lost host")
		}
	}
	if _, err := hostname.Call(ctx, c, lost[1], 0); !errors.Is(err, dist.ErrProcessExited) {
		t.Errorf("a call to a lost worker: %v, want ErrProcessExited", err)
	}
}
