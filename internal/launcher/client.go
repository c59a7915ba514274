package launcher

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/lines"
)

// KillConfirmWait is how long a killed worker's launcher has to report its end before the
// worker is taken to be lost: a host that cannot be reached any more never will.
const KillConfirmWait = 10 * time.Second

// sessionEndWait is how long a session whose workers have all ended has to end by itself (its
// launcher exits when its input ends) before its command is killed.
const sessionEndWait = 5 * time.Second

// Options say how a Session names its host and makes its errors.
type Options struct {
	// Where names the session's host in the labels of its workers' lines before they join.
	Where string
	// Control, if set, reports whether a line the command printed before the launcher's hello
	// is one the caller wants (it then goes to Session.Control); other such lines are kept
	// for error messages.
	Control func(line string) bool
	// Err makes the session's errors: code is the command's exit code or -1, msg the last
	// lines it or the worker printed (joined by "\n"), cause what went wrong. Required.
	Err func(code int, msg string, cause error) error
	// Lost returns a worker's end when the command ended without the launcher reporting it:
	// waitErr is how the command ended, msg its last lines, running whether the worker had
	// printed its address. Required.
	Lost func(waitErr error, msg string, running bool) error
	// OnEnd, if set, runs once for each worker when it has ended, before its Done closes.
	OnEnd func(w *Worker)
}

// Session is the driver's end of one launcher: a command (an ssh session, an srun step)
// whose standard streams reach a launcher on a host. Each of its workers is a Worker, a
// dist.Process of its own. The session ends when its last worker has: its input is closed,
// the launcher exits, and the command with it.
type Session struct {
	cmd     *exec.Cmd
	o       Options
	workers []*Worker
	tail    lines.Tail
	ctl     chan string
	done    chan struct{}
	waitErr error // how the command ended; set before done closes

	inMu     sync.Mutex
	stdin    io.WriteCloser
	inClosed bool

	mu   sync.Mutex
	live int // workers whose end has not been recorded
}

// New returns a session for n workers through cmd, which must reach a launcher; Start starts
// it. Its Workers exist from now on, so that a caller can wrap them before any of them ends.
func New(cmd *exec.Cmd, n int, o Options) *Session {
	s := &Session{cmd: cmd, o: o, ctl: make(chan string, 16), done: make(chan struct{}), live: n}
	for k := range n {
		w := &Worker{s: s, k: k, ready: make(chan struct{}), done: make(chan struct{})}
		s.workers = append(s.workers, w)
	}
	return s
}

// Start starts the session's command. The caller then reads Control until Hello, sends the
// Spec (SendSpec) and waits for the workers (AwaitReady). The command is not tied to any
// context: the workers outlive the launch. It should run in its own process group
// (SysProcAttr.Setpgid), which Kill kills. Start is called once; after an error the session
// is unused.
func (s *Session) Start() error {
	cmd, o := s.cmd, s.o
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return o.Err(-1, "", fmt.Errorf("starting %s: %w", cmd.Path, err))
	}
	for _, w := range s.workers {
		w.lines.SetLabel(fmt.Sprintf("From worker %s #%d (client pid %d)", o.Where, w.k, cmd.Process.Pid))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.readStdout(stdout) }()
	go func() { defer wg.Done(); s.readStderr(stderr) }()
	go func() {
		wg.Wait() // the pipes must be drained before Wait closes them
		s.waitErr = cmd.Wait()
		s.ended()
	}()
	return nil
}

// Workers returns the session's workers, by their index in the Spec.
func (s *Session) Workers() []*Worker { return s.workers }

// Control delivers, in order, the lines before the launcher's hello that Options.Control
// wanted, then Hello itself; an empty line says that the command's output ended before it.
// At most 15 lines are delivered before Hello; later ones are dropped.
func (s *Session) Control() <-chan string { return s.ctl }

// Done is closed once the command has ended and every worker's end has been recorded.
func (s *Session) Done() <-chan struct{} { return s.done }

// WaitErr returns how the command ended, once Done is closed.
func (s *Session) WaitErr() error { return s.waitErr }

// Tail returns the last lines the command printed outside the protocol, joined by "\n".
func (s *Session) Tail() string { return s.tail.Join("\n") }

// Pid returns the local command's process id.
func (s *Session) Pid() int { return s.cmd.Process.Pid }

// Send writes one request line to the launcher; it fails once the session's input is closed.
func (s *Session) Send(line string) error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.inClosed {
		return errors.New("the launcher's session has ended")
	}
	_, err := io.WriteString(s.stdin, line+"\n")
	return err
}

// SendSpec sends the launcher what to start: one configuration per worker, in index order.
func (s *Session) SendSpec(spec Spec) error {
	if len(spec.Workers) != len(s.workers) {
		return fmt.Errorf("launcher: spec for %d workers, session for %d", len(spec.Workers), len(s.workers))
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return s.Send(string(b))
}

// Kill kills the local command (its process group if it has one); the session ends, and
// every worker still running there ends with it (its launcher's input ends).
func (s *Session) Kill() {
	select {
	case <-s.done:
		return
	default:
	}
	if a := s.cmd.SysProcAttr; a != nil && a.Setpgid {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	s.cmd.Process.Kill()
}

// Fail ends a session whose launcher has not started (or not answered): it kills the
// command, waits for it, and returns the session's error, with the command's exit code when
// cause is nil (the command ended by itself).
func (s *Session) Fail(cause error) error {
	s.Kill()
	<-s.done
	for _, w := range s.workers {
		w.SetPid(0) // never joins: stop keeping its lines
	}
	code := -1
	var ee *exec.ExitError
	if cause == nil && errors.As(s.waitErr, &ee) && ee.Exited() {
		code = ee.ExitCode()
	} else if cause == nil {
		cause = fmt.Errorf("the command ended before the workers were ready: %v", s.waitErr)
	}
	return s.o.Err(code, s.Tail(), cause)
}

// AwaitReady waits until each worker has printed its address or failed, or until deadline
// or ctx ends, and returns the ready workers and the errors of the others (each distinct
// failure once). Workers that are not ready are killed. timeout is the launch's timeout,
// for messages.
func (s *Session) AwaitReady(ctx context.Context, deadline time.Time, timeout time.Duration) (ready []*Worker, errs []error) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	seen := map[string]bool{}
	failed := func(w *Worker, err error) {
		w.Kill()
		w.SetPid(0)
		if !seen[err.Error()] { // the same failure of many workers is reported once
			seen[err.Error()] = true
			errs = append(errs, err)
		}
	}
	expired, cancelled := false, false
	for _, w := range s.workers {
		if !expired && !cancelled {
			select {
			case <-w.ready:
			case <-timer.C:
				expired = true
			case <-ctx.Done():
				cancelled = true
			}
		}
		select {
		case <-w.ready:
			if w.launchErr != nil {
				failed(w, w.launchErr)
			} else {
				ready = append(ready, w)
			}
			continue
		default:
		}
		if expired {
			failed(w, s.o.Err(-1, w.tail.Join("\n"), fmt.Errorf("the worker printed no address within %v", timeout)))
		} else {
			failed(w, s.o.Err(-1, "", fmt.Errorf("launch cancelled: %w", ctx.Err())))
		}
	}
	return ready, errs
}

func (s *Session) readStdout(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	started, sent := false, 0
	for sc.Scan() {
		line := sc.Text()
		if !started {
			switch {
			case line == Hello:
				started = true
				s.ctl <- line
			case s.o.Control != nil && sent < cap(s.ctl)-1 && s.o.Control(line):
				sent++ // one slot is kept for Hello or the end, so that ctl never fills
				s.ctl <- line
			default:
				s.tail.Add(line) // a login script's chatter, or a program that is no launcher
			}
			continue
		}
		k, tag, rest, ok := Parse(line)
		if !ok || k >= len(s.workers) {
			s.tail.Add(line)
			continue
		}
		s.workers[k].handle(tag, rest)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the launcher
	if !started {
		s.ctl <- ""
	}
}

func (s *Session) readStderr(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s.tail.Add(sc.Text())
	}
	io.Copy(io.Discard, r)
}

// closeStdin ends the launcher's input: it ends its workers, if any are left, and exits, and
// so the session ends. If it does not end within sessionEndWait (a host that cannot be
// reached), the command is killed.
func (s *Session) closeStdin() {
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
			s.Kill()
		}
	}()
}

// ended runs once the command has been reaped: every worker whose end the launcher did not
// report ended with the session.
func (s *Session) ended() {
	s.inMu.Lock()
	s.inClosed = true
	s.inMu.Unlock()
	for _, w := range s.workers {
		s.mu.Lock()
		if !w.ended {
			w.ended, w.exitErr = true, s.o.Lost(s.waitErr, s.Tail(), w.addr != "")
			s.live--
			if w.killT != nil {
				w.killT.Stop()
			}
		}
		if w.launchErr == nil && w.addr == "" {
			w.launchErr = w.exitErr
		}
		s.mu.Unlock()
		w.readyOnce.Do(func() { close(w.ready) })
	}
	for _, w := range s.workers {
		w.finish()
	}
	close(s.done)
}

// Worker is one worker of a Session: a child of the launcher. It implements dist.Process.
type Worker struct {
	s         *Session
	k         int
	remotePid atomic.Int64
	tail      lines.Tail // the worker's last lines, for errors
	lines     lines.Forwarder

	ready     chan struct{} // closed at the handshake, or when the worker ended before it
	readyOnce sync.Once

	// Under s.mu.
	network, addr string
	launchErr     error // why the handshake is not usable; set before ready closes
	ended         bool  // its end was recorded
	exitErr       error // what Wait returns
	killT         *time.Timer

	done     chan struct{}
	doneOnce sync.Once
}

// handle takes one line the launcher said about this worker.
func (w *Worker) handle(tag, rest string) {
	s := w.s
	switch tag {
	case TagPid:
		n, _ := strconv.Atoi(rest)
		w.remotePid.Store(int64(n))
		w.lines.SetLabel(fmt.Sprintf("From worker %s (pid %d there)", s.o.Where, n))
	case TagHS:
		f := strings.Fields(rest)
		s.mu.Lock()
		if w.ended {
			// Too late (the launch gave up on it): the worker is being killed.
		} else if len(f) != 4 || f[1] != strconv.Itoa(dist.ProtocolVersion) || f[2] != "tcp" {
			w.launchErr = s.o.Err(-1, "", fmt.Errorf("the worker printed a handshake this driver does not understand: %q (is it the same program as the driver?)", rest))
		} else {
			w.network, w.addr = f[2], f[3]
		}
		s.mu.Unlock()
		w.readyOnce.Do(func() { close(w.ready) })
	case TagOut, TagErr:
		w.tail.Add(rest)
		w.lines.Line(rest)
	case TagExit:
		code, how := ParseExit(rest)
		var err error
		if code != 0 {
			err = s.o.Err(-1, w.tail.Join("\n"), fmt.Errorf("worker (pid %d there) ended: %s", w.RemotePid(), how))
		}
		w.end(err, how)
	case TagFail:
		w.end(s.o.Err(-1, "", fmt.Errorf("starting the worker: %s", rest)), "")
	}
}

// end records that the worker ended with err (nil: a clean exit; how: its status) unless an
// end was recorded already. The last worker of a session ends the session; its Done closes
// once the session has, so that nothing of the session is left when the last worker is
// reported gone.
func (w *Worker) end(err error, how string) {
	s := w.s
	s.mu.Lock()
	if w.ended {
		s.mu.Unlock()
		return
	}
	w.ended, w.exitErr = true, err
	if w.killT != nil {
		w.killT.Stop()
	}
	s.live--
	last := s.live == 0
	if w.launchErr == nil && w.addr == "" {
		w.launchErr = err
		if how != "" {
			w.launchErr = s.o.Err(-1, w.tail.Join("\n"), fmt.Errorf("the worker exited before it was ready (%s)", how))
		}
	}
	s.mu.Unlock()
	w.readyOnce.Do(func() { close(w.ready) })
	if last {
		s.closeStdin()
		return
	}
	w.finish()
}

// finish closes Done, once.
func (w *Worker) finish() {
	w.doneOnce.Do(func() {
		if w.s.o.OnEnd != nil {
			w.s.o.OnEnd(w)
		}
		close(w.done)
	})
}

// Index returns the worker's index in its session's Spec.
func (w *Worker) Index() int { return w.k }

// SetOutput sets where the worker's output lines go; the cluster calls it before SetPid.
func (w *Worker) SetOutput(f dist.OutputFunc) { w.lines.SetOutput(f) }

// SetPid implements dist.Process: the worker joined as pid (0: it never will), and the lines
// it printed so far are forwarded.
func (w *Worker) SetPid(pid int) { w.lines.Join(pid) }

// Addr implements dist.Process: where the worker said it listens, or what SetAddr set.
func (w *Worker) Addr() (network, address string) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.network, w.addr
}

// SetAddr replaces where the driver reaches the worker (a tunnel's local end).
func (w *Worker) SetAddr(network, address string) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.network, w.addr = network, address
}

// RemotePid returns the worker's process id on its host, or 0 if it is not known yet.
func (w *Worker) RemotePid() int { return int(w.remotePid.Load()) }

// Done is closed when the worker has ended (as its launcher reported, or with its session).
func (w *Worker) Done() <-chan struct{} { return w.done }

// Wait implements dist.Process: it waits for the worker to end and returns nil if it exited
// with status 0, else the session's error for how it ended (Options.Err, Options.Lost). It
// may be called many times.
func (w *Worker) Wait() error {
	<-w.done
	return w.exitErr
}

// Kill implements dist.Process: the launcher kills the worker (and its process group) with
// SIGKILL; the session's other workers run on. It does not wait. A launcher that does not
// report the end within KillConfirmWait (its host cannot be reached) leaves the worker taken
// as lost: Done closes and Wait returns an error wrapping dist.ErrConnectionLost.
func (w *Worker) Kill() error {
	select {
	case <-w.done:
		return nil
	default:
	}
	s := w.s
	s.mu.Lock()
	if w.ended || w.killT != nil {
		s.mu.Unlock()
		return nil
	}
	w.killT = time.AfterFunc(KillConfirmWait, func() {
		w.end(s.o.Err(-1, "", fmt.Errorf("%w: killed, and the launcher did not report the worker's end within %v", dist.ErrConnectionLost, KillConfirmWait)), "")
	})
	s.mu.Unlock()
	s.Send("kill " + strconv.Itoa(w.k)) // a closed session ends the worker anyway
	return nil
}

// Interrupt implements dist.Process: the launcher sends the worker SIGINT. A worker whose code
// catches SIGINT (signal.Notify) sees it; any other Go program dies of it.
func (w *Worker) Interrupt() error {
	select {
	case <-w.done:
		return w.s.o.Err(-1, "", errors.New("interrupt: the worker has exited"))
	default:
	}
	if err := w.s.Send("int " + strconv.Itoa(w.k)); err != nil {
		return w.s.o.Err(-1, "", fmt.Errorf("interrupt: %w", err))
	}
	return nil
}
