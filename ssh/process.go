package ssh

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/launcher"
	"github.com/godist/dist/internal/lines"
)

// Lines the remote side prints before the launcher's hello.
const (
	pidPrefix = "godist-ssh-pid "
	noExe     = "godist-ssh-noexe"
	fwdReady  = "godist-ssh-forward-ready"
)

// killConfirmWait is how long a killed worker's host has to report its end before Done
// closes anyway: a host that cannot be reached any more never will.
const killConfirmWait = 10 * time.Second

// sessionEndWait is how long an ssh session whose workers have all ended has to end by itself
// (its launcher exits when told) before its client is killed.
const sessionEndWait = 5 * time.Second

// session is one ssh session to a machine, running a launcher (package internal/launcher)
// that starts that machine's workers of one Launch as its children.
type session struct {
	m     *Manager
	idx   int
	host  string
	cmd   *exec.Cmd
	procs []*Process // by the launcher's worker index; fixed before the session starts
	tail  lines.Tail // what ssh and the host said outside the protocol, for errors

	remotePid atomic.Int64 // the launcher's pid on the host
	done      chan struct{}
	waitErr   error // how ssh ended; set before done closes

	inMu     sync.Mutex
	stdin    io.WriteCloser
	inClosed bool

	mu   sync.Mutex
	live int // workers whose end has not been reported
}

// send writes one request line to the launcher; it fails once the session's input is closed.
func (s *session) send(line string) error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.inClosed {
		return errors.New("the host's ssh session has ended")
	}
	_, err := io.WriteString(s.stdin, line+"\n")
	return err
}

// closeStdin ends the launcher's input: it ends its workers, if any are left, and exits, and
// so the session ends. If it does not end within sessionEndWait (a host that cannot be
// reached), the ssh client is killed.
func (s *session) closeStdin() {
	s.inMu.Lock()
	already := s.inClosed
	s.inClosed = true
	if !already {
		s.stdin.Close()
	}
	s.inMu.Unlock()
	if already {
		return
	}
	go func() {
		t := time.NewTimer(sessionEndWait)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
			s.killClient()
		}
	}()
}

// killClient kills the local ssh client; the session ends and every worker still running
// there ends with it (its launcher's input ends).
func (s *session) killClient() {
	select {
	case <-s.done:
	default:
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Process is one worker started over ssh: a child of the launcher that the host's ssh session
// runs. Each worker is its own dist.Process: it ends, is killed and is interrupted alone,
// while the session carries the requests and reports. It implements dist.Process.
type Process struct {
	s         *session
	m         *Manager
	idx       int // the machine's index
	k         int // the worker's index in its session
	host      string
	network   string
	addr      string
	remotePid atomic.Int64
	tail      lines.Tail // the worker's last lines, for errors
	lines     lines.Forwarder

	ready     chan struct{} // closed at the handshake, or when the worker ended before it
	readyOnce sync.Once
	launchErr error // why the handshake is not usable; set before ready closes

	// Under s.mu.
	ended   bool  // its end was reported (or assumed)
	exitErr error // what Wait returns
	killT   *time.Timer

	done     chan struct{}
	doneOnce sync.Once

	mu      sync.Mutex
	fwd     *exec.Cmd     // the tunnel's ssh -L, if any
	fwdDone chan struct{} // closed when fwd has been reaped
}

// startSession runs one ssh session on machine i whose launcher starts n workers, and waits
// until each has printed its address, failed, or spec.Timeout has passed. It returns the
// workers that are ready and the errors of those that are not (one per distinct failure). If
// the session itself fails, err says why and no worker runs. If the executable is missing
// there it returns the host's system (GOOS, GOARCH) in missing and no error.
func (m *Manager) startSession(ctx context.Context, i, n int, spec dist.LaunchSpec) (ready []*Process, werrs []error, missing []string, err error) {
	if err := m.acquire(ctx); err != nil {
		return nil, nil, nil, m.hostErr(i, -1, "", fmt.Errorf("launch cancelled: %w", err))
	}
	defer m.release()
	t0 := time.Now()
	// The first line gives the shell's pid, which becomes the launcher's since each step
	// execs the next, and the host's address as sshd saw the connection arrive (the default
	// bind address). The executable is checked for in the same session, so that a launch
	// costs one ssh connection per host.
	exe := quote(m.exe)
	script := "echo " + pidPrefix + "$$ $SSH_CONNECTION; " +
		"if [ ! -f " + exe + " ] || [ ! -x " + exe + " ]; then echo " + noExe + " $(uname -s) $(uname -m); exit 0; fi; "
	if m.opt.Dir != "" {
		script += "cd " + quote(m.opt.Dir) + " || exit 1; "
	}
	// The workers' environment, less the variable that makes a worker: the launcher sets it
	// for its children only.
	script += "exec env"
	for _, e := range dist.WorkerEnv(m.opt.Env) {
		if !strings.HasPrefix(e, dist.EnvWorker+"=") {
			script += " " + quote(e)
		}
	}
	script += " " + launcher.Env + "=1 " + exe
	// Not tied to ctx: the workers outlive the launch.
	cmd := m.command(i, nil, script)
	s := &session{m: m, idx: i, host: m.machines[i].name(), cmd: cmd, done: make(chan struct{}), live: n}
	for k := range n {
		p := &Process{s: s, m: m, idx: i, k: k, host: s.host, ready: make(chan struct{}), done: make(chan struct{})}
		s.procs = append(s.procs, p)
	}
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, m.hostErr(i, -1, "", fmt.Errorf("starting ssh: %w", err))
	}
	for _, p := range s.procs {
		p.lines.SetLabel(fmt.Sprintf("From worker %s #%d (ssh pid %d)", p.host, p.k, cmd.Process.Pid))
	}
	m.mu.Lock()
	for _, p := range s.procs {
		m.procs[p] = struct{}{}
	}
	m.mu.Unlock()

	// Control lines, in order; an empty one says that stdout ended before the hello.
	ctl := make(chan string, 4)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.readStdout(stdout, ctl) }()
	go func() { defer wg.Done(); s.readStderr(stderr) }()
	go func() {
		wg.Wait() // the pipes must be drained before Wait closes them
		s.waitErr = cmd.Wait()
		s.ended()
	}()

	// fail ends the whole session before its launcher ran.
	fail := func(err error) ([]*Process, []error, []string, error) {
		if err != nil {
			s.killRemote() // ssh still runs: the program may be stuck where it reads no input
		}
		s.killClient()
		<-s.done
		for _, p := range s.procs {
			p.SetPid(0) // never joins: stop keeping its lines
		}
		code := -1
		var ee *exec.ExitError
		if err == nil && errors.As(s.waitErr, &ee) && ee.Exited() {
			code = ee.ExitCode()
		} else if err == nil {
			err = fmt.Errorf("ssh ended before the workers were ready: %v", s.waitErr)
		}
		return nil, nil, nil, &HostError{Host: s.host, ExitCode: code, Msg: sshSaid(s.tail.Join("\n")), Err: err}
	}
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for started := false; !started; {
		select {
		case line := <-ctl:
			f := strings.Fields(line)
			switch {
			case line == "":
				return fail(nil)
			case line == launcher.Hello:
				started = true
			case f[0] == strings.TrimSpace(pidPrefix):
				if len(f) < 2 {
					return fail(fmt.Errorf("the host printed %q instead of its shell's pid", line))
				}
				pid, _ := strconv.Atoi(f[1])
				s.remotePid.Store(int64(pid))
				seen := ""
				if len(f) >= 6 { // SSH_CONNECTION: client_ip client_port server_ip server_port
					seen = f[4]
				}
				ls := launcher.Spec{Workers: make([]dist.WorkerConfig, n)}
				for k := range n {
					cfg := spec.Config
					cfg.Network = "tcp"
					if cfg.Bind, err = m.bindFor(i, seen); err != nil {
						return fail(err)
					}
					ls.Workers[k] = cfg
				}
				b, err := json.Marshal(ls)
				if err != nil {
					return fail(err)
				}
				// The configurations (with the cookie) travel on the encrypted session, never
				// on a command line. A write error means ssh is gone already, which the end of
				// its output reports.
				s.send(string(b))
			case f[0] == noExe:
				select { // the script exits right after saying so
				case <-s.done:
				case <-timer.C:
					return fail(fmt.Errorf("no executable at %s, and the session did not end", m.exe))
				}
				for _, p := range s.procs {
					p.SetPid(0)
				}
				if len(f) < 3 {
					return nil, nil, nil, m.hostErr(i, -1, "", fmt.Errorf("no executable at %s", m.exe))
				}
				return nil, nil, []string{goos(f[1]), goarch(f[2])}, nil
			}
		case <-timer.C:
			return fail(fmt.Errorf("%s did not start as a launcher within %v (is it the driver's program, and does it call dist.Main first and link package ssh?)", m.exe, timeout))
		case <-ctx.Done():
			return fail(fmt.Errorf("launch cancelled: %w", ctx.Err()))
		}
	}
	m.logf(i, "ssh session up, starting workers", "workers", n, "launcher_pid", s.remotePid.Load(), "elapsed", time.Since(t0).Round(time.Millisecond))

	// Each worker's handshake, until the deadline.
	seen := map[string]bool{}
	failed := func(p *Process, err error) {
		p.Kill()
		p.SetPid(0)
		if !seen[err.Error()] { // the same failure of many workers is reported once
			seen[err.Error()] = true
			werrs = append(werrs, err)
		}
	}
	expired, cancelled := false, false
	for _, p := range s.procs {
		if !expired && !cancelled {
			select {
			case <-p.ready:
			case <-timer.C:
				expired = true
			case <-ctx.Done():
				cancelled = true
			}
		}
		select {
		case <-p.ready:
			if p.launchErr != nil {
				failed(p, p.launchErr)
			} else {
				ready = append(ready, p)
			}
			continue
		default:
		}
		if expired {
			failed(p, &HostError{Host: p.host, ExitCode: -1, Msg: sshSaid(p.tail.Join("\n")), Err: fmt.Errorf("the worker printed no address within %v", timeout)})
		} else {
			failed(p, &HostError{Host: p.host, ExitCode: -1, Err: fmt.Errorf("launch cancelled: %w", ctx.Err())})
		}
	}
	if m.opt.Tunnel {
		ready = m.tunnel(ctx, ready, t0.Add(timeout), failed)
	}
	m.logf(i, "workers ready", "ready", len(ready), "failed", n-len(ready), "elapsed", time.Since(t0).Round(time.Millisecond))
	return ready, werrs, nil, nil
}

// tunnel opens each ready worker's forward, in parallel, and returns those whose forward is up.
// At most MaxParallel forwards are set up at once, as for sessions (sshd drops connections
// beyond its MaxStartups).
func (m *Manager) tunnel(ctx context.Context, ps []*Process, deadline time.Time, failed func(*Process, error)) []*Process {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	errs := make([]error, len(ps))
	sem := make(chan struct{}, cap(m.sem))
	var wg sync.WaitGroup
	for j, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := p.forward(ctx); err != nil {
				errs[j] = &HostError{Host: p.host, ExitCode: -1, Err: err}
			}
		}()
	}
	wg.Wait()
	var ok []*Process
	for j, p := range ps {
		if errs[j] != nil {
			failed(p, errs[j])
		} else {
			ok = append(ok, p)
		}
	}
	return ok
}

func (s *session) readStdout(r io.Reader, ctl chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	started, sawPid, sawNoExe := false, false, false
	for sc.Scan() {
		line := sc.Text()
		if !started {
			// At most one of each goes to ctl, so that it never fills.
			switch {
			case line == launcher.Hello:
				started = true
				ctl <- line
				continue
			case !sawPid && strings.HasPrefix(line, pidPrefix):
				sawPid = true
				ctl <- line
				continue
			case !sawNoExe && strings.HasPrefix(line, noExe+" "):
				sawNoExe = true
				ctl <- line
				continue
			}
			s.tail.Add(line) // a login script's chatter, or a program that is no launcher
			continue
		}
		k, tag, rest, ok := launcher.Parse(line)
		if !ok || k >= len(s.procs) {
			s.tail.Add(line)
			continue
		}
		s.procs[k].handle(tag, rest)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the launcher
	if !started {
		ctl <- ""
	}
}

func (s *session) readStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s.tail.Add(sc.Text())
	}
	io.Copy(io.Discard, r)
}

// handle takes one line the launcher said about this worker.
func (p *Process) handle(tag, rest string) {
	switch tag {
	case launcher.TagPid:
		n, _ := strconv.Atoi(rest)
		p.remotePid.Store(int64(n))
		p.lines.SetLabel(fmt.Sprintf("From worker %s (pid %d there)", p.host, n))
	case launcher.TagHS:
		f := strings.Fields(rest)
		p.s.mu.Lock()
		if p.ended {
			// Too late (the launch gave up on it): the worker is being killed.
		} else if len(f) != 4 || f[1] != strconv.Itoa(dist.ProtocolVersion) || f[2] != "tcp" {
			p.launchErr = &HostError{Host: p.host, ExitCode: -1, Err: fmt.Errorf("the worker printed a handshake this driver does not understand: %q (is %s the same program as the driver?)", rest, p.m.exe)}
		} else {
			p.network, p.addr = f[2], f[3]
		}
		p.s.mu.Unlock()
		p.readyOnce.Do(func() { close(p.ready) })
	case launcher.TagOut, launcher.TagErr:
		p.tail.Add(rest)
		p.lines.Line(rest)
	case launcher.TagExit:
		code, how := launcher.ParseExit(rest)
		var err error
		if code != 0 {
			err = &HostError{Host: p.host, ExitCode: -1, Msg: sshSaid(p.tail.Join("\n")),
				Err: fmt.Errorf("worker (pid %d there) ended: %s", p.RemotePid(), how)}
		}
		p.end(err)
	case launcher.TagFail:
		p.end(&HostError{Host: p.host, ExitCode: -1, Err: fmt.Errorf("starting the worker: %s", rest)})
	}
}

// end records that the worker ended with err (nil: a clean exit) unless an end was recorded
// already. The last worker of a session ends the session; its Done closes once the session
// has, so that nothing of the session is left when the last worker is reported gone.
func (p *Process) end(err error) {
	s := p.s
	s.mu.Lock()
	if p.ended {
		s.mu.Unlock()
		return
	}
	p.ended, p.exitErr = true, err
	if p.killT != nil {
		p.killT.Stop()
	}
	s.live--
	last := s.live == 0
	if p.launchErr == nil && p.addr == "" {
		p.launchErr = err
		if he := (*HostError)(nil); errors.As(err, &he) && strings.HasPrefix(he.Err.Error(), "worker (pid") {
			p.launchErr = &HostError{Host: p.host, ExitCode: -1, Msg: he.Msg, Err: fmt.Errorf("the worker exited before it was ready (%v)", he.Err)}
		} else if err == nil {
			p.launchErr = &HostError{Host: p.host, ExitCode: -1, Msg: sshSaid(p.tail.Join("\n")), Err: errors.New("the worker exited before it was ready (exit status 0)")}
		}
	}
	s.mu.Unlock()
	p.readyOnce.Do(func() { close(p.ready) })
	if last {
		s.closeStdin()
		return
	}
	p.finish()
}

// finish closes Done, once.
func (p *Process) finish() {
	p.doneOnce.Do(func() {
		p.stopForward()
		p.m.mu.Lock()
		delete(p.m.procs, p)
		p.m.mu.Unlock()
		close(p.done)
	})
}

// ended runs once ssh has been reaped: every worker whose end the launcher did not report
// ended with the session.
func (s *session) ended() {
	s.inMu.Lock()
	s.inClosed = true
	s.inMu.Unlock()
	for _, p := range s.procs {
		s.mu.Lock()
		if !p.ended {
			p.ended, p.exitErr = true, s.lostErr(p)
			s.live--
			if p.killT != nil {
				p.killT.Stop()
			}
		}
		if p.launchErr == nil && p.addr == "" {
			p.launchErr = p.exitErr
		}
		s.mu.Unlock()
		p.readyOnce.Do(func() { close(p.ready) })
	}
	for _, p := range s.procs {
		p.finish()
	}
	close(s.done)
}

// lostErr is the end of a worker whose session ended without reporting it.
func (s *session) lostErr(p *Process) error {
	var ee *exec.ExitError
	if errors.As(s.waitErr, &ee) && ee.Exited() {
		he := &HostError{Host: s.host, ExitCode: ee.ExitCode(), Msg: sshSaid(s.tail.Join("\n"))}
		if ee.ExitCode() == 255 && p.addr != "" {
			// ssh's own failure once the worker ran is its connection's (keep-alives
			// unanswered, a reset): the worker's fate is unknown. With LogLevel ERROR,
			// common in scripts, ssh does not say so itself.
			he.Err = dist.ErrConnectionLost
		} else if ee.ExitCode() == 0 {
			he.ExitCode, he.Err = -1, errors.New("the host's launcher ended without reporting the worker's end")
		}
		return he
	}
	if s.waitErr != nil {
		return &HostError{Host: s.host, ExitCode: -1, Msg: sshSaid(s.tail.Join("\n")), Err: fmt.Errorf("ssh ended: %w", s.waitErr)}
	}
	return &HostError{Host: s.host, ExitCode: -1, Err: errors.New("the host's launcher ended without reporting the worker's end")}
}

// killRemote kills the launcher on its host through a new ssh session (at most 5s, best
// effort). Killing the local ssh client ends a launcher through its standard input, which a
// program stuck before it reads it (in a package's init, say) never reads.
func (s *session) killRemote() {
	pid := s.remotePid.Load()
	if pid <= 0 {
		return
	}
	select {
	case <-s.done:
		return // the session ended with the program: its pid may be another's by now
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Not bounded by MaxParallel: the caller holds a slot already.
	s.m.runWith(ctx, s.idx, "kill -KILL "+strconv.FormatInt(pid, 10)+" 2>/dev/null", nil, false)
}

// SetOutput sets where the worker's output lines go; the cluster calls it before SetPid.
func (p *Process) SetOutput(f dist.OutputFunc) { p.lines.SetOutput(f) }

// SetPid implements dist.Process: the worker joined as pid (0: it never will), and the lines
// it printed so far are forwarded.
func (p *Process) SetPid(pid int) { p.lines.Join(pid) }

// Addr implements dist.Process: where the driver reaches the worker (with Tunnel, the local
// end of its forward).
func (p *Process) Addr() (network, address string) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return p.network, p.addr
}

// Host returns the worker's machine as given: [user@]host[:port].
func (p *Process) Host() string { return p.host }

// RemotePid returns the worker's process id on its host, or 0 if it is not known.
func (p *Process) RemotePid() int { return int(p.remotePid.Load()) }

// Done is closed when the worker has ended (as its host reported, or with its ssh session).
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait implements dist.Process: it waits for the worker to end and returns nil if it exited
// with status 0, or a *HostError that says how it ended: the worker's status (ExitCode -1,
// the status in Err), or its session's end (ExitCode is ssh's, and Err wraps
// dist.ErrConnectionLost when ssh lost the host while the worker ran). It may be called many
// times.
func (p *Process) Wait() error {
	<-p.done
	return p.exitErr
}

// Kill implements dist.Process. It asks the worker's launcher to kill the worker (and its
// process group) with SIGKILL; the other workers of the host run on. It does not wait: Done
// and Wait tell when the worker has ended. A host that does not report the end within 10s
// (it cannot be reached) is taken to have lost the worker: Done closes, and Wait returns an
// error wrapping dist.ErrConnectionLost; such a worker lives on until its host notices its
// lost ssh session.
func (p *Process) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.stopForward()
	s := p.s
	s.mu.Lock()
	if p.ended || p.killT != nil {
		s.mu.Unlock()
		return nil
	}
	p.killT = time.AfterFunc(killConfirmWait, func() {
		p.end(&HostError{Host: p.host, ExitCode: -1,
			Err: fmt.Errorf("%w: killed, and the host did not report the worker's end within %v", dist.ErrConnectionLost, killConfirmWait)})
	})
	s.mu.Unlock()
	s.send("kill " + strconv.Itoa(p.k)) // a closed session ends the worker anyway
	return nil
}

// Interrupt implements dist.Process: the worker's launcher sends it SIGINT on its host, as the
// local manager signals a local worker. A worker whose code catches SIGINT (signal.Notify)
// sees it; any other Go program dies of it.
func (p *Process) Interrupt() error {
	select {
	case <-p.done:
		return &HostError{Host: p.host, ExitCode: -1, Err: errors.New("interrupt: the worker has exited")}
	default:
	}
	if err := p.s.send("int " + strconv.Itoa(p.k)); err != nil {
		return &HostError{Host: p.host, ExitCode: -1, Err: fmt.Errorf("interrupt: %w", err)}
	}
	return nil
}

// forward opens the tunnel: an ssh local forward from a unix socket in a private directory
// of this machine to the worker's port on its host's loopback. A socket path, unlike a
// local port, can be nobody else's: a worker on another host that is given this address
// cannot reach some unrelated process by it, only fail.
func (p *Process) forward(ctx context.Context) error {
	_, addr := p.Addr()
	_, rport, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "godist-ssh-")
	if err != nil {
		return fmt.Errorf("tunnel: %w", err)
	}
	sock := filepath.Join(dir, "w.sock")
	spec := sock + ":127.0.0.1:" + rport
	// LocalCommand runs once the forward listens: that line says it is ready.
	cmd := p.m.command(p.idx, []string{"-N", "-o", "ExitOnForwardFailure=yes",
		"-o", "PermitLocalCommand=yes", "-o", "LocalCommand=echo " + fwdReady, "-L", spec}, "")
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	var stderr safeBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("tunnel: starting ssh: %w", err)
	}
	fwdDone := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && sc.Text() == fwdReady {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		os.RemoveAll(dir)
		close(fwdDone)
	}()
	p.mu.Lock()
	p.fwd, p.fwdDone = cmd, fwdDone
	p.mu.Unlock()
	select {
	case ok := <-ready:
		if !ok {
			<-fwdDone
			return fmt.Errorf("tunnel: ssh -L %s failed: %s", spec, sshSaid(stderr.String()))
		}
		p.s.mu.Lock()
		p.network, p.addr = "unix", sock
		p.s.mu.Unlock()
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errors.New("tunnel: the forward was not ready in time")
		}
		return fmt.Errorf("launch cancelled: %w", ctx.Err())
	}
}

// stopForward kills the tunnel's ssh, if any, and waits until it has been reaped and its
// socket removed.
func (p *Process) stopForward() {
	p.mu.Lock()
	fwd, done := p.fwd, p.fwdDone
	p.mu.Unlock()
	if fwd == nil {
		return
	}
	syscall.Kill(-fwd.Process.Pid, syscall.SIGKILL)
	<-done
}

// safeBuffer is a bytes.Buffer that exec's copying goroutine and a reader may share.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
