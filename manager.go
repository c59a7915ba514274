package dist

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/godist/dist/internal/lines"
)

// EnvWorker is set in the environment of a process launched as a worker; Main reads it.
const EnvWorker = "GODIST_WORKER"

// WorkerEnv returns env with what a worker process needs added, for managers that launch
// workers: EnvWorker set, and GODEBUG's madvdontneed=0, unless env's GODEBUG already sets
// madvdontneed. That makes the Go runtime hand freed memory back with MADV_FREE instead of
// MADV_DONTNEED: the pages stay mapped until the kernel needs them, so a worker that receives
// one large array after another (each allocation freshly mapped memory otherwise, costing the
// kernel's page faults and zeroing) reuses them. Measured on a 2-core VM in 6 alternating
// runs each (godist bench send fetch), 256 MiB sends and fetches were 0.69-0.91x the raw
// socket with it, 0.24-0.90x without. The cost: RSS figures of workers fall only when memory
// is short. Later entries of env win, so a caller can still override either variable by
// appending.
func WorkerEnv(env []string) []string {
	out := append(slices.Clip(env), EnvWorker+"=1")
	godebug, had := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug, had = v, true
		}
	}
	for _, f := range strings.Split(godebug, ",") {
		if strings.HasPrefix(f, "madvdontneed=") {
			return out
		}
	}
	if had && godebug != "" {
		godebug += ","
	}
	return append(out, "GODEBUG="+godebug+"madvdontneed=0")
}

// EnvCookie, when set, is the cluster cookie Start uses if no WithCookie option is given.
const EnvCookie = "GODIST_COOKIE"

// handshakePrefix starts the one line a worker prints on stdout once it listens.
const handshakePrefix = "godist-worker"

// WorkerConfig is what a launched worker is told, as one JSON line on its standard input. A
// worker exits when its standard input ends, so a driver that dies takes its workers with it.
type WorkerConfig struct {
	Cookie string `json:"cookie"`
	// Network is "unix" or "tcp": how the worker listens.
	Network string `json:"network"`
	// Bind is, for "unix", the directory the socket is made in, or, starting with '@', the
	// prefix of a name in Linux's abstract socket namespace (the local manager's choice: no
	// file is made, none is left behind); for "tcp", the host:port to listen on (port 0 for
	// any).
	Bind string `json:"bind"`
	// ConnectTimeout is how long the worker waits for the driver to connect before it exits.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// PortMin and PortMax, when PortMin is not 0, are the range a "tcp" worker whose Bind
	// asks for port 0 takes its port from (a firewall opened for that range only).
	PortMin int `json:"port_min,omitempty"`
	PortMax int `json:"port_max,omitempty"`
	// TLS, when set, makes the worker's TCP connections mutual TLS with these files, which
	// must exist on the worker's host (see WithTLS).
	TLS TLSFiles `json:"tls,omitzero"`
	// DialTimeout bounds the worker's own connections to other workers (WithConnectTimeout);
	// 0 for the default.
	DialTimeout time.Duration `json:"dial_timeout,omitempty"`
	// HeartbeatInterval and HeartbeatTimeout are the worker's checks of its driver
	// (WithHeartbeat); interval 0 for the defaults, negative to disable.
	HeartbeatInterval time.Duration `json:"heartbeat_interval,omitempty"`
	HeartbeatTimeout  time.Duration `json:"heartbeat_timeout,omitempty"`
	// ExitGrace is how long the worker, once it must stop (its driver is gone or asked it to
	// exit), waits for the calls it was running to end after cancelling them (WithExitGrace);
	// 0 for the default.
	ExitGrace time.Duration `json:"exit_grace,omitempty"`
	// RecvBudget and RecvStall are the worker's WithRecvBudget; 0 for the defaults.
	RecvBudget int64         `json:"recv_budget,omitempty"`
	RecvStall  time.Duration `json:"recv_stall,omitempty"`
}

// LaunchSpec is what a Manager is asked to start.
type LaunchSpec struct {
	Count  int          // how many workers
	Config WorkerConfig // sent to each worker; managers for other hosts adjust Network and Bind
	// Timeout bounds how long each worker may take to print its address.
	Timeout time.Duration
}

// A Manager starts worker processes: this binary re-executed locally, or on other machines
// through SSH, Slurm or MPI. It is Julia's ClusterManager, split in two: Manager.Launch is
// launch, and the Process values it returns are manage (kill, interrupt) for each worker.
//
// # Writing a manager
//
// Launch is called by Cluster.AddProcs with spec.Count workers to start. For each worker:
//
//  1. Start the driver's binary (os.Executable, copied to the host if need be) with EnvWorker
//     set in its environment, and its standard input and output connected to this process
//     (an ssh session, srun and mpirun all forward them). dist.Main in that process sees
//     EnvWorker and becomes a worker.
//  2. Give it spec.Config (adjusted: Network "tcp" and a Bind address on its host for another
//     machine) as one JSON line on its standard input. It listens and prints one line,
//     "godist-worker VERSION NETWORK ADDRESS", on its standard output; everything else it
//     prints is its output, which the cluster forwards as "From worker N: ...".
//  3. Return a Process whose Addr is that network and address.
//
// StartCmd does 2 and 3 for an exec.Cmd, with spec.Timeout, clear errors (naming where, with
// what the worker printed) and output forwarding: a manager usually only builds the command
// (ssh host exe, srun ... exe) and calls StartCmd. The cluster then connects to each address,
// proves the cookie (spec.Config.Cookie; it never crosses the wire in clear), and gives the
// worker its pid (Process.SetPid). A worker exits when its standard input ends, so a
// Process whose command dies (the ssh session, srun) takes its worker with it.
//
// Workers that cannot be given a standard input (the ranks of an MPI job, a container started
// by an orchestrator) call ServeWorker themselves and announce their address some other way;
// the driver joins each with Cluster.AddProcess (package elastic does both sides).
//
// Launch should start workers in parallel where it can, return once every worker has printed
// its address or failed, and obey ctx. On error it returns the processes that did start with
// an error naming each failure ("h2: ssh exited 255: Permission denied (publickey)"), and kills
// none of them: the cluster joins those and reports the rest.
//
// # Lifecycle
//
// After the join the cluster owns each Process: it calls Interrupt for Cluster.Interrupt,
// Kill when the worker must end at once (it did not exit when asked, its connection broke, the
// join failed), and watches Wait (or a Done() <-chan struct{} method, if the Process has one)
// to learn that the worker ended. What Wait returns sets the reason subscribers see
// (SubscribeLifecycle): nil is a clean exit, an error wrapping ErrConnectionLost a lost
// connection (return that when the transport to the process broke and its fate is unknown),
// any other error a crash. A Process may also implement SetOutput(OutputFunc) to receive the
// function that forwards its worker's output.
type Manager interface {
	// Launch starts spec.Count workers and returns one Process for each that printed its
	// address. On error it returns the processes that did start, and kills none of them; the
	// cluster decides.
	Launch(ctx context.Context, spec LaunchSpec) ([]Process, error)
}

// Process is one launched worker, as its manager controls it. Its methods must be safe for
// concurrent use; Kill and Interrupt may be called after the process ended and then do
// nothing.
type Process interface {
	// Addr is where the worker listens, as its handshake line said.
	Addr() (network, address string)
	// SetPid is called once the worker has joined as pid, so that its output is labelled; pid
	// 0 means it never joined (it is being killed).
	SetPid(pid int)
	// Kill ends the worker at once (Julia's manage(:finalize) with force). For a remote
	// worker, ending the command that carries it (the ssh session) is enough: the worker
	// exits when its standard input ends.
	Kill() error
	// Interrupt asks the worker to stop what it is doing (SIGINT where it applies; Julia's
	// manage(:interrupt)).
	Interrupt() error
	// Wait blocks until the process has ended and returns why (nil: it exited successfully;
	// see Manager for ErrConnectionLost); it may be called many times and concurrently.
	Wait() error
}

type localManager struct{}

// localWorkers counts the live workers this process started on its own host.
var localWorkers atomic.Int64

// WorkerProcs returns the GOMAXPROCS a worker should get when n workers share this host: 1
// once they outnumber its processors, else 0 (Go's default: every processor). Managers that
// start several workers on a host apply it unless the environment sets GOMAXPROCS already
// (the local manager, and the launcher the ssh and slurm managers run on each host).
//
// Each Go process otherwise keeps a thread per processor ready, and with 1,000 workers on 2
// cores their idle threads' wake-ups and the scheduler's spinning for work dominated: a
// 1,000-worker start took 229 s with the default and 66 s with GOMAXPROCS=1 (one run,
// before membership was O(N)). Up to one worker per processor the default stays, so that a
// worker's own goroutines may use every core while the others are idle.
func WorkerProcs(n int) int {
	if n > runtime.NumCPU() {
		return 1
	}
	return 0
}

// LocalManager returns the manager that runs workers as child processes of this one: the same
// binary (os.Executable) re-executed with EnvWorker set, listening on unix sockets.
func LocalManager() Manager { return localManager{} }

func (localManager) Launch(ctx context.Context, spec LaunchSpec) ([]Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("dist: local manager: %w", err)
	}
	type res struct {
		p   Process
		err error
	}
	ch := make(chan res, spec.Count)
	env := WorkerEnv(os.Environ())
	if procs := WorkerProcs(int(localWorkers.Load()) + spec.Count); procs > 0 && os.Getenv("GOMAXPROCS") == "" {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", procs))
	}
	for i := 0; i < spec.Count; i++ {
		go func() {
			cmd := exec.Command(exe)
			cmd.Env = env
			p, err := StartCmd(ctx, cmd, spec, "local")
			if err == nil {
				localWorkers.Add(1)
				go func() {
					<-p.Done()
					localWorkers.Add(-1)
				}()
			}
			ch <- res{p, err}
		}()
	}
	var procs []Process
	var errs []error
	for i := 0; i < spec.Count; i++ {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		procs = append(procs, r.p)
	}
	return procs, errors.Join(errs...)
}

// OutputFunc receives each line a worker writes on stdout or stderr. The cluster sets it;
// StartCmd uses it.
type OutputFunc func(label, line string)

// CmdProcess is a worker started from an exec.Cmd by StartCmd.
type CmdProcess struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	where   string
	network string
	addr    string
	done    chan struct{}
	waitErr error

	lines lines.Forwarder // holds lines printed before the worker joined
	wg    sync.WaitGroup
}

// StartCmd starts cmd as a worker: it sends spec.Config on the command's standard input,
// waits up to spec.Timeout for the handshake line on its standard output, and then forwards
// every other line of stdout and stderr to the cluster's output. where names the host for
// error messages. On any failure the process is killed and reaped.
func StartCmd(ctx context.Context, cmd *exec.Cmd, spec LaunchSpec, where string) (*CmdProcess, error) {
	p := &CmdProcess{cmd: cmd, where: where, done: make(chan struct{})}
	cfg, err := json.Marshal(spec.Config)
	if err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.WaitDelay = 2 * time.Second // a grandchild holding our pipes must not hang Wait
	// Local workers get their own process group so that a terminal's ^C reaches only the
	// driver, which then stops them in order.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("dist: %s: starting worker: %w", where, err)
	}
	p.lines.SetLabel(fmt.Sprintf("From worker %s(os pid %d)", whereLabel(where), cmd.Process.Pid))
	addr := make(chan string, 1)
	noAddr := make(chan struct{}) // stdout ended without a handshake line
	var tail lines.Tail
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.readStdout(stdout, addr, noAddr, &tail) }()
	go func() { defer p.wg.Done(); p.forward(stderr, &tail) }()
	go func() {
		p.wg.Wait() // the pipes must be drained before Wait closes them
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	fail := func(why string) (*CmdProcess, error) {
		p.Kill()
		<-p.done
		if strings.Contains(why, "%v") {
			why = fmt.Sprintf(why, p.waitErr)
		}
		msg := fmt.Sprintf("dist: %s: worker %s", where, why)
		if t := tail.Join(" | "); t != "" {
			msg += "; it said: " + t
		}
		return nil, errors.New(msg)
	}
	if _, err := p.stdin.Write(append(cfg, '\n')); err != nil {
		// Most likely it exited already: say that, with what it printed.
		return fail(fmt.Sprintf("exited before it was ready (%%v; writing its config: %v)", err))
	}
	timer := time.NewTimer(spec.Timeout)
	defer timer.Stop()
	select {
	case line := <-addr:
		f := strings.Fields(line)
		if len(f) != 4 || f[1] != fmt.Sprint(protocolVersion) {
			return fail(fmt.Sprintf("printed a handshake line this driver does not understand: %q", line))
		}
		p.network, p.addr = f[2], f[3]
		return p, nil
	case <-noAddr:
		return fail("exited before it was ready (%v)")
	case <-timer.C:
		return fail(fmt.Sprintf("printed no address within %v", spec.Timeout))
	case <-ctx.Done():
		return fail(fmt.Sprintf("launch cancelled: %v", ctx.Err()))
	}
}

func whereLabel(where string) string {
	if where == "local" || where == "" {
		return ""
	}
	return where + " "
}

func (p *CmdProcess) readStdout(r io.Reader, addr chan<- string, noAddr chan<- struct{}, tail *lines.Tail) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !found && strings.HasPrefix(line, handshakePrefix+" ") {
			found = true
			addr <- line
			continue
		}
		p.emit(line, tail)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the worker
	if !found {
		close(noAddr)
	}
}

func (p *CmdProcess) forward(r io.Reader, tail *lines.Tail) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.emit(sc.Text(), tail)
	}
	io.Copy(io.Discard, r)
}

// emit forwards a line of the worker's output, or keeps it until the worker has joined so
// that it is labelled with the pid users know the worker by. It never waits for the join:
// the reader of stdout is also the one that must see the handshake, which a worker that
// prints first (in a package's init, say) sends after such lines.
func (p *CmdProcess) emit(line string, tail *lines.Tail) {
	tail.Add(line)
	p.lines.Line(line)
}

// SetOutput sets where the worker's lines go. The cluster calls it before SetPid.
func (p *CmdProcess) SetOutput(f OutputFunc) { p.lines.SetOutput(f) }

// Addr implements Process.
func (p *CmdProcess) Addr() (string, string) { return p.network, p.addr }

// SetPid implements Process; pid 0 means the worker never joined. The lines the worker printed
// until now are forwarded, labelled with pid (with its OS pid for 0).
func (p *CmdProcess) SetPid(pid int) { p.lines.Join(pid) }

// Kill implements Process.
func (p *CmdProcess) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	// The whole process group: a worker's own children (or a shell's) must not outlive it
	// holding our pipes.
	if attr := p.cmd.SysProcAttr; attr != nil && attr.Setpgid {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Interrupt implements Process.
func (p *CmdProcess) Interrupt() error { return p.cmd.Process.Signal(os.Interrupt) }

// Wait implements Process.
func (p *CmdProcess) Wait() error {
	<-p.done
	return p.waitErr
}

// Done is closed when the process has ended.
func (p *CmdProcess) Done() <-chan struct{} { return p.done }

// CloseStdin closes the worker's standard input, which tells it that the driver is gone.
func (p *CmdProcess) CloseStdin() error { return p.stdin.Close() }
