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
	"github.com/godist/dist/internal/lines"
)

// Lines the remote side prints before the worker's own handshake.
const (
	pidPrefix   = "godist-ssh-pid "
	noExe       = "godist-ssh-noexe"
	fwdReady    = "godist-ssh-forward-ready"
	handshakeHd = "godist-worker "
)

// Process is one worker started over ssh: a local ssh client whose session runs the worker.
// It implements dist.Process.
type Process struct {
	m         *Manager
	idx       int
	host      string
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	network   string
	addr      string
	remotePid atomic.Int64
	done      chan struct{}
	waitErr   error
	tail      lines.Tail

	lines lines.Forwarder // holds lines printed before the worker joined

	mu      sync.Mutex
	fwd     *exec.Cmd     // the tunnel's ssh -L, if any
	fwdDone chan struct{} // closed when fwd has been reaped
}

// start launches one worker on machine i and waits for its address. A host that lacks the
// executable gets a copy of this binary, and the launch is tried once more. A connection
// that sshd dropped before the key exchange (what sshd does to connections beyond its
// MaxStartups while many workers start at once) is tried again, up to 3 times in all.
func (m *Manager) start(ctx context.Context, i int, spec dist.LaunchSpec) (*Process, error) {
	copied := false
	for attempt := 1; ; attempt++ {
		p, missing, err := m.startOnce(ctx, i, spec)
		switch {
		case missing != nil && !copied:
			if err := m.copyExe(ctx, i, missing[0], missing[1]); err != nil {
				return nil, err
			}
			copied = true
		case missing != nil:
			return nil, m.hostErr(i, -1, "", fmt.Errorf("%s is still missing after it was copied there", m.exe))
		case err != nil && attempt < 3 && droppedBySSHD(err):
			select {
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			case <-ctx.Done():
				return nil, err
			}
		default:
			return p, err
		}
	}
}

// droppedBySSHD reports whether err is ssh's failure when the server closed the connection
// before the key exchange, as sshd does to unauthenticated connections beyond MaxStartups.
func droppedBySSHD(err error) bool {
	var he *HostError
	return errors.As(err, &he) && he.ExitCode == 255 && strings.Contains(he.Msg, "kex_exchange_identification")
}

// startOnce runs one ssh session for a worker on machine i. If the executable is missing
// there it returns the host's system (GOOS, GOARCH) in missing and no error.
func (m *Manager) startOnce(ctx context.Context, i int, spec dist.LaunchSpec) (_ *Process, missing []string, _ error) {
	if err := m.acquire(ctx); err != nil {
		return nil, nil, m.hostErr(i, -1, "", fmt.Errorf("launch cancelled: %w", err))
	}
	defer m.release()
	// The first line gives the shell's pid, which becomes the worker's since each step execs
	// the next (Interrupt signals it), and the host's address as sshd saw the connection
	// arrive (the default bind address). The executable is checked for in the same session,
	// so that a launch costs one ssh connection.
	exe := quote(m.exe)
	script := "echo " + pidPrefix + "$$ $SSH_CONNECTION; " +
		"if [ ! -f " + exe + " ] || [ ! -x " + exe + " ]; then echo " + noExe + " $(uname -s) $(uname -m); exit 0; fi; "
	if m.opt.Dir != "" {
		script += "cd " + quote(m.opt.Dir) + " || exit 1; "
	}
	script += "exec env"
	for _, e := range dist.WorkerEnv(m.opt.Env) {
		script += " " + quote(e)
	}
	script += " " + exe
	// Not tied to ctx: the worker outlives the launch.
	cmd := m.command(i, nil, script)
	p := &Process{m: m, idx: i, host: m.machines[i].name(), cmd: cmd, done: make(chan struct{})}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, m.hostErr(i, -1, "", fmt.Errorf("starting ssh: %w", err))
	}
	p.lines.SetLabel(fmt.Sprintf("From worker %s (ssh pid %d)", p.host, cmd.Process.Pid))
	m.mu.Lock()
	m.procs[p] = struct{}{}
	m.mu.Unlock()

	// Control lines, in order; an empty one says that stdout ended before the handshake.
	ctl := make(chan string, 4)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.readStdout(stdout, ctl) }()
	go func() { defer wg.Done(); p.readStderr(stderr) }()
	go func() {
		wg.Wait() // the pipes must be drained before Wait closes them
		p.waitErr = cmd.Wait()
		p.stopForward()
		m.mu.Lock()
		delete(m.procs, p)
		m.mu.Unlock()
		close(p.done)
	}()

	fail := func(err error) (*Process, []string, error) {
		if err != nil {
			p.killRemote() // ssh still runs: the worker may be stuck where it reads no input
		}
		p.Kill()
		<-p.done
		p.SetPid(0) // the worker never joins: stop keeping its lines
		code := -1
		var ee *exec.ExitError
		if err == nil && errors.As(p.waitErr, &ee) && ee.Exited() {
			code = ee.ExitCode()
		} else if err == nil {
			err = fmt.Errorf("ssh ended before the worker was ready: %v", p.waitErr)
		}
		return nil, nil, &HostError{Host: p.host, ExitCode: code, Msg: sshSaid(p.tail.Join("\n")), Err: err}
	}
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for p.addr == "" {
		select {
		case line := <-ctl:
			f := strings.Fields(line)
			switch {
			case line == "":
				return fail(nil)
			case f[0] == strings.TrimSpace(pidPrefix):
				if len(f) < 2 {
					return fail(fmt.Errorf("the host printed %q instead of its shell's pid", line))
				}
				n, _ := strconv.Atoi(f[1])
				p.remotePid.Store(int64(n))
				seen := ""
				if len(f) >= 6 { // SSH_CONNECTION: client_ip client_port server_ip server_port
					seen = f[4]
				}
				cfg := spec.Config
				cfg.Network = "tcp"
				if cfg.Bind, err = m.bindFor(i, seen); err != nil {
					return fail(err)
				}
				b, err := json.Marshal(cfg)
				if err != nil {
					return fail(err)
				}
				// The configuration (with the cookie) travels on the encrypted session,
				// never on a command line. A write error means ssh is gone already, which
				// the end of its output reports.
				p.stdin.Write(append(b, '\n'))
			case f[0] == noExe:
				select { // the script exits right after saying so
				case <-p.done:
				case <-timer.C:
					return fail(fmt.Errorf("no executable at %s, and the session did not end", m.exe))
				}
				p.SetPid(0)
				if len(f) < 3 {
					return nil, nil, m.hostErr(i, -1, "", fmt.Errorf("no executable at %s", m.exe))
				}
				return nil, []string{goos(f[1]), goarch(f[2])}, nil
			default: // the worker's handshake
				if len(f) != 4 || f[1] != strconv.Itoa(dist.ProtocolVersion) || f[2] != "tcp" {
					return fail(fmt.Errorf("the worker printed a handshake this driver does not understand: %q (is %s the same program as the driver?)", line, m.exe))
				}
				p.network, p.addr = f[2], f[3]
			}
		case <-timer.C:
			return fail(fmt.Errorf("the worker printed no address within %v", timeout))
		case <-ctx.Done():
			return fail(fmt.Errorf("launch cancelled: %w", ctx.Err()))
		}
	}
	p.lines.SetLabel(fmt.Sprintf("From worker %s (pid %d there)", p.host, p.RemotePid()))
	if m.opt.Tunnel {
		if err := p.forward(ctx, timer.C); err != nil {
			return fail(err)
		}
	}
	return p, nil, nil
}

func (p *Process) readStdout(r io.Reader, ctl chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found, sawPid, sawNoExe := false, false, false
	for sc.Scan() {
		line := sc.Text()
		if !found {
			// At most one of each goes to ctl, so that it never fills.
			switch {
			case strings.HasPrefix(line, handshakeHd):
				found = true
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
			p.tail.Add(line)
		}
		p.emit(line)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the worker
	if !found {
		ctl <- ""
	}
}

func (p *Process) readStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.tail.Add(sc.Text())
		p.emit(sc.Text())
	}
	io.Copy(io.Discard, r)
}

// emit forwards a line of the worker's output, or keeps it until the worker has joined so
// that it is labelled with the pid users know the worker by. It never blocks the readers on
// the cluster: a worker that prints before its handshake must not stall its own launch.
func (p *Process) emit(line string) { p.lines.Line(line) }

// SetOutput sets where the worker's output lines go; the cluster calls it before SetPid.
func (p *Process) SetOutput(f dist.OutputFunc) { p.lines.SetOutput(f) }

// SetPid implements dist.Process: the worker joined as pid (0: it never will), and the lines
// it printed so far are forwarded.
func (p *Process) SetPid(pid int) { p.lines.Join(pid) }

// Addr implements dist.Process: where the driver reaches the worker (with Tunnel, the local
// end of its forward).
func (p *Process) Addr() (network, address string) { return p.network, p.addr }

// Host returns the worker's machine as given: [user@]host[:port].
func (p *Process) Host() string { return p.host }

// RemotePid returns the worker's process id on its host, or 0 if it never said.
func (p *Process) RemotePid() int { return int(p.remotePid.Load()) }

// Done is closed when the worker's ssh session has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait implements dist.Process: it waits for the ssh session to end and returns how ssh
// exited. It may be called many times.
func (p *Process) Wait() error {
	<-p.done
	if ee := (*exec.ExitError)(nil); errors.As(p.waitErr, &ee) && ee.Exited() {
		he := &HostError{Host: p.host, ExitCode: ee.ExitCode(), Msg: sshSaid(p.tail.Join("\n"))}
		if ee.ExitCode() == 255 && p.addr != "" {
			// ssh's own failure once the worker ran is its connection's (keep-alives
			// unanswered, a reset): the worker's fate is unknown. With LogLevel ERROR,
			// common in scripts, ssh does not say so itself.
			he.Err = dist.ErrConnectionLost
		}
		return he
	}
	if p.waitErr != nil {
		return &HostError{Host: p.host, ExitCode: -1, Err: fmt.Errorf("ssh ended: %w", p.waitErr)}
	}
	return nil
}

// Kill implements dist.Process. It kills the local ssh client: its session closes, and the
// worker, whose standard input ends, exits. A worker on a host that cannot be reached any
// more lives on until the host notices the lost connection. Kill does not wait: it returns nil
// at once, and Done and Wait tell when the session has ended.
func (p *Process) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.stopForward()
	return nil
}

// Interrupt implements dist.Process: it sends SIGINT to the worker on its host, through a
// new ssh session (at most 15s), as the local manager signals a local worker. A worker whose
// code catches SIGINT (signal.Notify) sees it; any other Go program dies of it.
func (p *Process) Interrupt() error {
	pid := p.RemotePid()
	if pid <= 0 {
		return &HostError{Host: p.host, ExitCode: -1, Err: errors.New("interrupt: the worker's pid on its host is unknown")}
	}
	select {
	case <-p.done:
		return &HostError{Host: p.host, ExitCode: -1, Err: errors.New("interrupt: the worker has exited")}
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := p.m.run(ctx, p.idx, "kill -INT "+strconv.Itoa(pid), nil)
	return err
}

// killRemote kills the worker on its host through a new ssh session (at most 5s, best
// effort). Killing the local ssh client ends a worker through its standard input, which a
// worker stuck before its handshake (in a package's init, say) never reads.
func (p *Process) killRemote() {
	pid := p.RemotePid()
	if pid <= 0 {
		return
	}
	select {
	case <-p.done:
		return // the session ended with the worker: its pid may be another's by now
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Not bounded by MaxParallel: the caller holds a slot already.
	p.m.runWith(ctx, p.idx, "kill -KILL "+strconv.Itoa(pid)+" 2>/dev/null", nil, false)
}

// forward opens the tunnel: an ssh local forward from a unix socket in a private directory
// of this machine to the worker's port on its host's loopback. A socket path, unlike a
// local port, can be nobody else's: a worker on another host that is given this address
// cannot reach some unrelated process by it, only fail.
func (p *Process) forward(ctx context.Context, deadline <-chan time.Time) error {
	_, rport, err := net.SplitHostPort(p.addr)
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
		p.network, p.addr = "unix", sock
		return nil
	case <-deadline:
		return errors.New("tunnel: the forward was not ready in time")
	case <-ctx.Done():
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
