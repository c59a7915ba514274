// Package ssh starts godist workers on other machines through the system ssh binary, so
// that everything ssh is configured with (ssh_config, keys, agents, ProxyJump, known hosts)
// applies unchanged. It is the counterpart of Julia's SSHManager (addprocs with machine
// specifications).
//
// A launch opens one ssh session per host, all hosts at once (up to Options.MaxParallel). The
// session runs the worker executable on the host in a launcher role: it starts that host's
// workers as its children, relays each one's address, output and exit to the driver, and
// carries the driver's requests to kill or interrupt one of them. Each worker reads its
// configuration on standard input, listens on TCP at the host's bind address and prints that
// address, which the driver dials. Workers reach each other directly at those addresses, so
// hosts must reach each other's bind addresses (or the driver alone, with Options.Tunnel).
// Each worker is still its own dist.Process: it ends, is killed, is interrupted and is
// reported gone alone, and its output comes back as "From worker N: ...". When a host's
// session ends (the driver is done with it, the driver dies, or the host is lost), every
// worker it started ends.
//
// The program on every host must be the same binary as the driver's (the functions a
// cluster runs are those the binary registered, and the launcher is this package's): by
// default the manager runs the driver's own path on each host and copies its binary there
// first where it is missing.
//
// A program that spreads its work over two hosts (see ExampleNew for options):
//
//	func main() {
//		dist.Main() // a worker runs here and never returns
//		ctx := context.Background()
//		machines, err := ssh.ParseMachines(strings.NewReader("auto*node1\n2*alice@node2\n"))
//		...
//		m, err := ssh.New(machines, ssh.Options{})
//		...
//		c, err := dist.Start(ctx, dist.WithWorkers(0))
//		...
//		defer c.Close() // ends every worker, and so every ssh session
//		pids, err := ssh.AddProcs(ctx, c, m) // node1's CPU count + 2 workers
//		...
//	}
//
// Limits: hosts must run a POSIX shell and the driver's binary (a copy is only made to a host
// of the driver's operating system and architecture), which must call dist.Main first and
// link this package; the driver needs a non-interactive login (keys or an agent: a password
// prompt fails the launch); and every launch keeps one ssh client process per host on the
// driver's machine for as long as a worker it started runs (with Tunnel, one more per
// worker for its forward).
package ssh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godist/dist"
)

// Options configure a Manager. The zero value is ready to use.
type Options struct {
	// SSH is the ssh program (default "ssh", looked up in PATH).
	SSH string
	// Flags go on every ssh command line before the host, e.g. []string{"-F", configPath}
	// or []string{"-i", keyPath, "-o", "StrictHostKeyChecking=yes"}. An option given here
	// with -o wins over the manager's own -o settings (ssh keeps the first value it reads).
	Flags []string
	// MaxParallel bounds how many ssh sessions are being set up at once (launches, and the
	// probes and copies that precede them, and with Tunnel the forwards of one host); default
	// 10. A launch is one session per host, which counts until every worker it starts has
	// printed its address or failed.
	MaxParallel int
	// Dir is the workers' working directory on every host; empty: the login directory.
	Dir string
	// Env is added to the workers' environment on every host, as "NAME=value" entries. The
	// workers also get dist.WorkerEnv's additions: a GODEBUG of the host's own is replaced by
	// madvdontneed=0 unless Env sets GODEBUG (which is then kept, extended).
	Env []string
	// Exe is the path of the worker executable on the hosts; empty: the driver's own path
	// (os.Executable()).
	Exe string
	// NoCopy makes a host where Exe is missing fail instead of receiving a copy of the
	// driver's binary. A copy is only made to a host with the driver's operating system and
	// architecture; an existing file at Exe is never replaced nor compared.
	NoCopy bool
	// Tunnel makes the driver reach each worker through an ssh local forward (ssh -L, from a
	// unix socket in a private temporary directory here) instead of dialling its host: the
	// workers listen on their host's loopback, so only the ssh port needs to be open. Workers
	// on other hosts cannot reach a tunnelled worker, so worker-to-worker calls to it fail;
	// use it with calls from the driver (Pmap, pools, Reduce).
	Tunnel bool
	// KeepAlive is the interval of ssh's keep-alive probes (ServerAliveInterval); after 3
	// unanswered probes ssh gives up, and the host's workers are reported exited. Default
	// 2s, so a lost host is noticed within about 8s; negative leaves it to ssh's config.
	KeepAlive time.Duration
	// ConnectTimeout bounds ssh's connection to a host (ConnectTimeout); default 10s;
	// negative leaves it to ssh's config.
	ConnectTimeout time.Duration
	// Logger, if set, receives the progress of launches at level Info, per host: its session
	// is up (the launcher runs), and how many of its workers are ready. The cluster's
	// lifecycle events (dist.Starting, Started, Joined) follow each worker.
	Logger *slog.Logger
}

// Manager is a dist.Manager that starts workers over ssh on a list of machines. Its methods
// are safe for concurrent use.
type Manager struct {
	machines []Machine
	opt      Options
	ssh      string
	exe      string // path on the hosts
	self     string // this binary, for copies
	sem      chan struct{}

	mu      sync.Mutex
	hosts   map[int]*hostInfo   // by machine index; filled by probes
	ports   map[int]int         // by machine index: how many fixed ports were handed out
	copying map[int]*sync.Mutex // by machine index: held while this binary is copied there
	copied  map[int]bool
	procs   map[*Process]struct{}
}

// hostInfo is what a probe learned about a machine (probes are only needed for Auto counts).
type hostInfo struct {
	goos   string
	goarch string
	cpus   int
	hasExe bool
}

// New returns a manager for machines. Start workers with dist.Start(ctx,
// dist.WithManager(m), dist.WithWorkers(n)), c.AddProcs(ctx, m, n) or AddProcs(ctx, c, m);
// see Launch for how workers are spread over the machines.
func New(machines []Machine, opt Options) (*Manager, error) {
	if len(machines) == 0 {
		return nil, errors.New("ssh: no machines")
	}
	for _, mc := range machines {
		if mc.Host == "" {
			return nil, fmt.Errorf("ssh: machine %q has no host", mc.String())
		}
		if mc.Count <= 0 && mc.Count != Auto {
			return nil, fmt.Errorf("ssh: machine %s: count %d is neither positive nor Auto", mc.name(), mc.Count)
		}
	}
	m := &Manager{
		machines: append([]Machine(nil), machines...),
		opt:      opt,
		ssh:      opt.SSH,
		exe:      opt.Exe,
		hosts:    make(map[int]*hostInfo),
		ports:    make(map[int]int),
		copying:  make(map[int]*sync.Mutex),
		copied:   make(map[int]bool),
		procs:    make(map[*Process]struct{}),
	}
	if m.ssh == "" {
		m.ssh = "ssh"
	}
	if p, err := exec.LookPath(m.ssh); err == nil {
		m.ssh = p
	} else {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("ssh: finding this program: %w", err)
	}
	m.self = self
	if m.exe == "" {
		m.exe = self
	}
	n := opt.MaxParallel
	if n <= 0 {
		n = 10
	}
	m.sem = make(chan struct{}, n)
	return m, nil
}

// AddProcs starts on c every worker m's machines ask for (their counts, Auto resolved) and
// returns their pids, like c.AddProcs: if some hosts fail, it returns the pids of the workers
// that joined and an error naming each failed host once (errors.As finds a *HostError). A host with an Auto count
// that cannot be asked for its CPU count fails the whole call before any worker starts.
func AddProcs(ctx context.Context, c *dist.Cluster, m *Manager, opts ...dist.Option) ([]int, error) {
	n, err := m.Count(ctx)
	if err != nil {
		return nil, err
	}
	return c.AddProcs(ctx, m, n, opts...)
}

// Count returns how many workers the machines ask for, asking hosts with an Auto count
// for their CPU count. Hosts that cannot be asked make it fail.
func (m *Manager) Count(ctx context.Context) (int, error) {
	infos, errs := m.probe(ctx, m.allIndexes(func(mc Machine) bool { return mc.Count == Auto }))
	if len(errs) > 0 {
		var all []error
		for _, i := range m.allIndexes(func(Machine) bool { return true }) {
			if errs[i] != nil {
				all = append(all, errs[i])
			}
		}
		return 0, errors.Join(all...)
	}
	n := 0
	for i, mc := range m.machines {
		if mc.Count == Auto {
			n += infos[i].cpus
		} else {
			n += mc.Count
		}
	}
	return n, nil
}

// Processes returns the workers this manager started that have not ended yet.
func (m *Manager) Processes() []*Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := make([]*Process, 0, len(m.procs))
	for p := range m.procs {
		ps = append(ps, p)
	}
	return ps
}

func (m *Manager) allIndexes(keep func(Machine) bool) []int {
	var idx []int
	for i, mc := range m.machines {
		if keep(mc) {
			idx = append(idx, i)
		}
	}
	return idx
}

// Launch implements dist.Manager. It spreads spec.Count workers over the machines round
// robin, each up to its count (Auto: its CPU count, asked over ssh first); workers beyond the
// machines' total continue round robin over all of them. Each host gets one ssh session,
// started in parallel with the others', whose launcher starts all of that host's workers; the
// session also learns the host's address (for the bind address) and finds out whether the
// executable is there; where it is not, this binary is copied there and the session is tried
// again. Every failure names its host and cause, e.g. "h2: ssh exited 255: Permission denied
// (publickey)", and is a *HostError; a failure shared by many workers of a host is reported
// once.
func (m *Manager) Launch(ctx context.Context, spec dist.LaunchSpec) ([]dist.Process, error) {
	if spec.Count <= 0 {
		return nil, nil
	}
	infos, perrs := m.probe(ctx, m.allIndexes(func(mc Machine) bool { return mc.Count == Auto }))
	failed := make(map[int]bool)
	var errs []error
	for i := range m.machines {
		if err := perrs[i]; err != nil {
			failed[i] = true
			errs = append(errs, err)
		}
	}
	place := placement(m.machines, infos, spec.Count)
	// A probed host known to lack the executable gets it before any launch.
	for i, hi := range infos {
		if !hi.hasExe && slices.Contains(place, i) {
			if err := m.copyExe(ctx, i, hi.goos, hi.goarch); err != nil {
				failed[i] = true
				errs = append(errs, err)
			}
		}
	}

	perHost := make(map[int]int)
	for _, i := range place {
		perHost[i]++
	}
	type result struct {
		ready []*Process
		errs  []error
	}
	results := make(chan result, len(perHost))
	launched := 0
	for i, n := range perHost {
		if failed[i] {
			continue // its error is reported once, above
		}
		launched++
		go func() {
			ready, errs := m.startHost(ctx, i, n, spec)
			results <- result{ready, errs}
		}()
	}
	var procs []dist.Process
	for range launched {
		r := <-results
		errs = append(errs, r.errs...)
		for _, p := range r.ready {
			procs = append(procs, p)
		}
	}
	return procs, errors.Join(errs...)
}

// startHost starts n workers on machine i through one ssh session. A host that lacks the
// executable gets a copy of this binary, and the session is tried once more. A connection
// that sshd dropped before the key exchange (what sshd does to connections beyond its
// MaxStartups when many sessions start at once) is tried again, up to 3 times in all.
func (m *Manager) startHost(ctx context.Context, i, n int, spec dist.LaunchSpec) ([]*Process, []error) {
	copied := false
	for attempt := 1; ; attempt++ {
		ready, werrs, missing, err := m.startSession(ctx, i, n, spec)
		switch {
		case missing != nil && !copied:
			if err := m.copyExe(ctx, i, missing[0], missing[1]); err != nil {
				return nil, []error{err}
			}
			copied = true
		case missing != nil:
			return nil, []error{m.hostErr(i, -1, "", fmt.Errorf("%s is still missing after it was copied there", m.exe))}
		case err != nil && attempt < 3 && droppedBySSHD(err):
			select {
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			case <-ctx.Done():
				return nil, []error{err}
			}
		case err != nil:
			return nil, []error{err}
		default:
			return ready, werrs
		}
	}
}

// droppedBySSHD reports whether err is ssh's failure when the server closed the connection
// before the key exchange, as sshd does to unauthenticated connections beyond MaxStartups.
func droppedBySSHD(err error) bool {
	var he *HostError
	return errors.As(err, &he) && he.ExitCode == 255 && strings.Contains(he.Msg, "kex_exchange_identification")
}

// logf logs progress about machine i, if Options.Logger is set.
func (m *Manager) logf(i int, msg string, args ...any) {
	if m.opt.Logger != nil {
		m.opt.Logger.Info("ssh: "+msg, append([]any{"host", m.machines[i].name()}, args...)...)
	}
}

// placement returns the machine index of each of n workers.
func placement(machines []Machine, infos map[int]*hostInfo, n int) []int {
	caps := make([]int, len(machines))
	for i, mc := range machines {
		caps[i] = mc.Count
		if mc.Count == Auto {
			caps[i] = 1 // a host that could not be asked is tried once, to report why
			if hi := infos[i]; hi != nil {
				caps[i] = hi.cpus
			}
		}
	}
	out := make([]int, 0, n)
	took := make([]int, len(machines))
	for len(out) < n {
		progress := false
		for i := range machines {
			if len(out) < n && took[i] < caps[i] {
				out = append(out, i)
				took[i]++
				progress = true
			}
		}
		if !progress { // every machine is full: oversubscribe evenly
			for i := range machines {
				if len(out) < n {
					out = append(out, i)
				}
			}
		}
	}
	return out
}

// bindFor is the address a new worker on machine i listens on; seen is the host's address
// as its sshd saw the connection arrive (from SSH_CONNECTION), used when no bind address was
// given.
func (m *Manager) bindFor(i int, seen string) (string, error) {
	if m.opt.Tunnel {
		return "127.0.0.1:0", nil
	}
	mc := m.machines[i]
	addr := mc.BindAddr
	if addr == "" {
		addr = seen
	}
	if addr == "" {
		return "", errors.New("SSH_CONNECTION is not set on the host, so its address is unknown: give the machine a bind address")
	}
	port := 0
	if mc.BindPort != 0 {
		m.mu.Lock()
		port = mc.BindPort + m.ports[i]
		m.ports[i]++
		m.mu.Unlock()
	}
	return net.JoinHostPort(addr, strconv.Itoa(port)), nil
}

// acquire takes one of the MaxParallel slots for setting up an ssh session.
func (m *Manager) acquire(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Manager) release() { <-m.sem }

// baseArgs are the ssh arguments every session to machine i starts with, up to the host.
func (m *Manager) baseArgs(i int) []string {
	a := append([]string(nil), m.opt.Flags...)
	// Never prompt (a prompt would hang a launch); never a terminal (the worker's streams
	// carry its protocol); no X11 forwarding.
	a = append(a, "-T", "-x", "-o", "BatchMode=yes")
	if d := m.opt.KeepAlive; d >= 0 {
		if d == 0 {
			d = 2 * time.Second
		}
		a = append(a, "-o", "ServerAliveInterval="+seconds(d), "-o", "ServerAliveCountMax=3")
	}
	if d := m.opt.ConnectTimeout; d >= 0 {
		if d == 0 {
			d = 10 * time.Second
		}
		a = append(a, "-o", "ConnectTimeout="+seconds(d))
	}
	return a
}

func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}

// command returns an ssh command for machine i with the extra options, running script with
// sh there (none if script is empty). The script goes through sh -c so that the user's login
// shell, whatever it is, only has to run one single-quoted word; scripts are one line, since
// csh refuses a newline inside quotes.
func (m *Manager) command(i int, extra []string, script string) *exec.Cmd {
	args := m.baseArgs(i)
	args = append(args, extra...)
	args = append(args, m.machines[i].sshArgs()...)
	if script != "" {
		args = append(args, "exec sh -c "+quote(script))
	}
	cmd := exec.Command(m.ssh, args...)
	// Own process group: a terminal's ^C reaches the driver, which stops workers in order,
	// and not the ssh clients, which would drop them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// run runs script on machine i and returns its standard output; a failure is a *HostError
// with what ssh or the script said on standard error.
func (m *Manager) run(ctx context.Context, i int, script string, stdin *os.File) ([]byte, error) {
	return m.runWith(ctx, i, script, stdin, true)
}

// runWith is run, taking one of the MaxParallel slots if bounded.
func (m *Manager) runWith(ctx context.Context, i int, script string, stdin *os.File, bounded bool) ([]byte, error) {
	if bounded {
		if err := m.acquire(ctx); err != nil {
			return nil, m.hostErr(i, -1, "", err)
		}
		defer m.release()
	}
	c := m.command(i, nil, script)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.SysProcAttr, cmd.WaitDelay = c.SysProcAttr, c.WaitDelay
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, m.hostErr(i, -1, "", ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return nil, m.hostErr(i, ee.ExitCode(), stderr.String(), nil)
	}
	return nil, m.hostErr(i, -1, stderr.String(), err)
}

// probe asks each machine in idx that has not been asked yet about itself, in parallel. It
// returns what is known of every machine, and an error for each that failed.
func (m *Manager) probe(ctx context.Context, idx []int) (map[int]*hostInfo, map[int]error) {
	infos := make(map[int]*hostInfo)
	errs := make(map[int]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, i := range idx {
		m.mu.Lock()
		hi := m.hosts[i]
		m.mu.Unlock()
		if hi != nil {
			infos[i] = hi
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			hi, err := m.probeOne(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[i] = err
				return
			}
			infos[i] = hi
			m.mu.Lock()
			m.hosts[i] = hi
			m.mu.Unlock()
		}()
	}
	wg.Wait()
	return infos, errs
}

func (m *Manager) probeOne(ctx context.Context, i int) (*hostInfo, error) {
	exe := quote(m.exe)
	script := `echo "godist-probe os $(uname -s)"; ` +
		`echo "godist-probe arch $(uname -m)"; ` +
		`echo "godist-probe cpus $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"; ` +
		`if [ -f ` + exe + ` ] && [ -x ` + exe + ` ]; then echo "godist-probe exe 1"; else echo "godist-probe exe 0"; fi`
	out, err := m.run(ctx, i, script, nil)
	if err != nil {
		return nil, err
	}
	hi := &hostInfo{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "godist-probe" {
			continue // a login script's chatter
		}
		switch f[1] {
		case "os":
			if len(f) >= 3 {
				hi.goos = goos(f[2])
			}
		case "arch":
			if len(f) >= 3 {
				hi.goarch = goarch(f[2])
			}
		case "cpus":
			if len(f) >= 3 {
				hi.cpus, _ = strconv.Atoi(f[2])
			}
		case "exe":
			hi.hasExe = len(f) >= 3 && f[2] == "1"
		}
	}
	if hi.cpus <= 0 {
		return nil, m.hostErr(i, -1, "", fmt.Errorf("could not learn the host's CPU count from %q", out))
	}
	return hi, nil
}

// copyExe copies this binary to machine i, whose system is goos/goarch, unless that was done
// already; concurrent launches that found it missing wait for one copy.
func (m *Manager) copyExe(ctx context.Context, i int, hostOS, hostArch string) error {
	m.mu.Lock()
	mu := m.copying[i]
	if mu == nil {
		mu = new(sync.Mutex)
		m.copying[i] = mu
	}
	m.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	m.mu.Lock()
	done := m.copied[i]
	m.mu.Unlock()
	if done {
		return nil
	}
	if m.opt.NoCopy {
		return m.hostErr(i, -1, "", fmt.Errorf("no executable at %s (copying is off)", m.exe))
	}
	if hostOS != runtime.GOOS || hostArch != runtime.GOARCH {
		return m.hostErr(i, -1, "", fmt.Errorf("no executable at %s, and this binary (%s/%s) cannot run on a %s/%s host",
			m.exe, runtime.GOOS, runtime.GOARCH, hostOS, hostArch))
	}
	f, err := os.Open(m.self)
	if err != nil {
		return m.hostErr(i, -1, "", fmt.Errorf("copying this binary: %w", err))
	}
	defer f.Close()
	// Written under a temporary name and renamed, so that a worker never runs a partial copy
	// and concurrent copies from several drivers do not clash.
	exe := quote(m.exe)
	tmp := quote(m.exe+".godist-copy.") + "$$"
	script := `set -e; mkdir -p ` + quote(path.Dir(m.exe)) + `; cat > ` + tmp + `; chmod 755 ` + tmp + `; mv -f ` + tmp + ` ` + exe
	if _, err := m.run(ctx, i, script, f); err != nil {
		return err
	}
	m.mu.Lock()
	m.copied[i] = true
	m.mu.Unlock()
	return nil
}

// quote makes s one word for a POSIX shell.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func goos(uname string) string {
	switch strings.ToLower(uname) {
	case "linux":
		return "linux"
	case "darwin":
		return "darwin"
	case "freebsd":
		return "freebsd"
	case "openbsd":
		return "openbsd"
	case "netbsd":
		return "netbsd"
	}
	return strings.ToLower(uname)
}

func goarch(uname string) string {
	switch uname {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	case "i386", "i486", "i586", "i686":
		return "386"
	case "armv6l", "armv7l":
		return "arm"
	case "ppc64le", "s390x", "riscv64", "loong64":
		return uname
	}
	return uname
}
