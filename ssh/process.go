package ssh

import (
	"bufio"
	"bytes"
	"context"
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
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/launcher"
)

// Lines the remote side prints before the launcher's hello.
const (
	pidPrefix = "godist-ssh-pid "
	noExe     = "godist-ssh-noexe"
	fwdReady  = "godist-ssh-forward-ready"
)

// Process is one worker started over ssh: a child of the launcher that its host's ssh
// session runs (see the package documentation). Each worker is its own dist.Process: it
// ends, is killed and is interrupted alone, while the session carries the requests and
// reports. It implements dist.Process.
type Process struct {
	w    *launcher.Worker
	m    *Manager
	idx  int // the machine's index
	host string

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
	host := m.machines[i].name()
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

	procs := make([]*Process, n)
	s := launcher.New(m.command(i, nil, script), n, launcher.Options{
		Where: host,
		Control: func(line string) bool {
			return strings.HasPrefix(line, pidPrefix) || strings.HasPrefix(line, noExe+" ")
		},
		Err: func(code int, msg string, cause error) error {
			return &HostError{Host: host, ExitCode: code, Msg: sshSaid(msg), Err: cause}
		},
		Lost: func(waitErr error, msg string, running bool) error { return lostErr(host, waitErr, msg, running) },
		OnEnd: func(w *launcher.Worker) {
			p := procs[w.Index()]
			p.stopForward()
			m.mu.Lock()
			delete(m.procs, p)
			m.mu.Unlock()
		},
	})
	// Before the session starts: a worker may end (OnEnd) as soon as it has.
	m.mu.Lock()
	for k, w := range s.Workers() {
		procs[k] = &Process{w: w, m: m, idx: i, host: host}
		m.procs[procs[k]] = struct{}{}
	}
	m.mu.Unlock()
	if err := s.Start(); err != nil {
		m.mu.Lock()
		for _, p := range procs {
			delete(m.procs, p)
		}
		m.mu.Unlock()
		return nil, nil, nil, err
	}

	var remotePid int
	// fail ends the whole session before its launcher ran.
	fail := func(cause error) ([]*Process, []error, []string, error) {
		if cause != nil {
			// ssh still runs: the program may be stuck where it reads no input.
			m.killRemote(i, remotePid, s.Done())
		}
		return nil, nil, nil, s.Fail(cause)
	}
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	deadline := t0.Add(timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for started := false; !started; {
		select {
		case line := <-s.Control():
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
				remotePid, _ = strconv.Atoi(f[1])
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
				// The configurations (with the cookie) travel on the encrypted session, never
				// on a command line. A write error means ssh is gone already, which the end of
				// its output reports.
				s.SendSpec(ls)
			case f[0] == noExe:
				select { // the script exits right after saying so
				case <-s.Done():
				case <-timer.C:
					return fail(fmt.Errorf("no executable at %s, and the session did not end", m.exe))
				}
				for _, p := range procs {
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
	m.logf(i, "ssh session up, starting workers", "workers", n, "launcher_pid", remotePid, "elapsed", time.Since(t0).Round(time.Millisecond))

	ws, werrs := s.AwaitReady(ctx, deadline, timeout)
	for _, w := range ws {
		ready = append(ready, procs[w.Index()])
	}
	if m.opt.Tunnel {
		ready = m.tunnel(ctx, ready, deadline, func(p *Process, err error) {
			p.Kill()
			p.SetPid(0)
			werrs = append(werrs, err)
		})
	}
	m.logf(i, "workers ready", "ready", len(ready), "failed", n-len(ready), "elapsed", time.Since(t0).Round(time.Millisecond))
	return ready, werrs, nil, nil
}

// tunnel opens each ready worker's forward, in parallel, and returns those whose forward is
// up. At most MaxParallel forwards are set up at once, as for sessions (sshd drops
// connections beyond its MaxStartups).
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
	seen := map[string]bool{}
	for j, p := range ps {
		switch {
		case errs[j] == nil:
			ok = append(ok, p)
		case seen[errs[j].Error()]:
			p.Kill()
			p.SetPid(0)
		default:
			seen[errs[j].Error()] = true
			failed(p, errs[j])
		}
	}
	return ok
}

// lostErr is the end of a worker whose session ended without its launcher reporting it.
func lostErr(host string, waitErr error, msg string, running bool) error {
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) && ee.Exited() {
		he := &HostError{Host: host, ExitCode: ee.ExitCode(), Msg: sshSaid(msg)}
		if ee.ExitCode() == 255 && running {
			// ssh's own failure once the worker ran is its connection's (keep-alives
			// unanswered, a reset): the worker's fate is unknown. With LogLevel ERROR,
			// common in scripts, ssh does not say so itself.
			he.Err = dist.ErrConnectionLost
		} else if ee.ExitCode() == 0 {
			he.ExitCode, he.Err = -1, errors.New("the host's launcher ended without reporting the worker's end")
		}
		return he
	}
	if waitErr != nil {
		return &HostError{Host: host, ExitCode: -1, Msg: sshSaid(msg), Err: fmt.Errorf("ssh ended: %w", waitErr)}
	}
	return &HostError{Host: host, ExitCode: -1, Err: errors.New("the host's launcher ended without reporting the worker's end")}
}

// killRemote kills process pid on machine i through a new ssh session (at most 5s, best
// effort), unless done (its session's end) is closed. Killing the local ssh client ends a
// launcher through its standard input, which a program stuck before it reads it (in a
// package's init, say) never reads.
func (m *Manager) killRemote(i, pid int, done <-chan struct{}) {
	if pid <= 0 {
		return
	}
	select {
	case <-done:
		return // the session ended with the program: its pid may be another's by now
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Not bounded by MaxParallel: the caller holds a slot already.
	m.runWith(ctx, i, "kill -KILL "+strconv.Itoa(pid)+" 2>/dev/null", nil, false)
}

// SetOutput sets where the worker's output lines go; the cluster calls it before SetPid.
func (p *Process) SetOutput(f dist.OutputFunc) { p.w.SetOutput(f) }

// SetPid implements dist.Process: the worker joined as pid (0: it never will), and the lines
// it printed so far are forwarded.
func (p *Process) SetPid(pid int) { p.w.SetPid(pid) }

// Addr implements dist.Process: where the driver reaches the worker (with Tunnel, the local
// end of its forward).
func (p *Process) Addr() (network, address string) { return p.w.Addr() }

// Host returns the worker's machine as given: [user@]host[:port].
func (p *Process) Host() string { return p.host }

// RemotePid returns the worker's process id on its host, or 0 if it is not known.
func (p *Process) RemotePid() int { return p.w.RemotePid() }

// Done is closed when the worker has ended (as its host reported, or with its ssh session).
func (p *Process) Done() <-chan struct{} { return p.w.Done() }

// Wait implements dist.Process: it waits for the worker to end and returns nil if it exited
// with status 0, or a *HostError that says how it ended: the worker's status (ExitCode -1,
// the status in Err), or its session's end (ExitCode is ssh's, and Err wraps
// dist.ErrConnectionLost when ssh lost the host while the worker ran). It may be called many
// times.
func (p *Process) Wait() error { return p.w.Wait() }

// Kill implements dist.Process. The worker's launcher kills it (and its process group) with
// SIGKILL; the other workers of the host run on. It does not wait: Done and Wait tell when
// the worker has ended. A host that does not report the end within 10s (it cannot be
// reached) is taken to have lost the worker: Done closes, and Wait returns an error wrapping
// dist.ErrConnectionLost; such a worker lives on until its host notices its lost ssh session.
func (p *Process) Kill() error {
	p.stopForward()
	return p.w.Kill()
}

// Interrupt implements dist.Process: the worker's launcher sends it SIGINT on its host, as
// the local manager signals a local worker. A worker whose code catches SIGINT
// (signal.Notify) sees it; any other Go program dies of it.
func (p *Process) Interrupt() error { return p.w.Interrupt() }

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
		p.w.SetAddr("unix", sock)
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
