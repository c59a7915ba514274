// Package launcher is the far end of a launch that starts many workers on one host through one
// session (an ssh session): the driver's own binary, run on the host with Env set, becomes a
// launcher instead of running its main. It starts the host's workers as its children, relays
// each one's handshake line, output and exit on its standard output tagged with the worker's
// index, obeys requests to kill or interrupt one worker, and ends all of them when its
// standard input ends (the session is gone, or the driver is done with it).
//
// It exists so that a launch costs one session per host rather than one per worker, and so
// that the driver's machine keeps one client process per host rather than one per worker
// (issue 18: 300 workers over ssh took 48 s, one session after another, and held 300 ssh
// clients; under Slurm each worker was a job step of its own). Run is the launcher's side;
// Session and Worker are the driver's (packages ssh and slurm build on them).
//
// # Protocol
//
// Every line is text ending in '\n'. The launcher first prints Hello. It then reads one JSON
// line, a Spec, and starts len(Spec.Workers) workers. From then on it prints, for worker K
// (0-based, in Spec order), lines "K TAG REST" with TAG one of:
//
//	pid N       the worker runs as process N on the host
//	hs LINE     the worker's handshake line ("godist-worker VERSION NETWORK ADDRESS")
//	out LINE    a line the worker wrote on standard output
//	err LINE    a line the worker wrote on standard error
//	exit C S    the worker ended: C is its exit code (-1 if a signal ended it), S how it ended
//	fail MSG    the worker could not be started
//
// and reads requests "kill K" (SIGKILL to the worker's process group) and "int K" (SIGINT to
// the worker). When its standard input ends it closes every worker's standard input (a worker
// exits when its own ends), kills those still running after Grace, waits for all of them and
// exits.
package launcher

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godist/dist"
)

// Env, set to "1" in a process's environment (and dist.EnvWorker not set), makes dist.Main run
// the process as a launcher; the binary must link this package (package ssh does).
const Env = "GODIST_LAUNCHER"

// Hello is the first line a launcher prints, with the protocol version; the driver knows by it
// that the program on the host started as a launcher.
const Hello = "godist-launcher 1"

// Grace is how long a launcher whose input ended waits for its workers to exit on their own
// before it kills them.
const Grace = 3 * time.Second

// Spec is what a launcher is told to start: one worker per entry, each given its entry as its
// configuration line.
type Spec struct {
	Workers []dist.WorkerConfig `json:"workers"`
}

// handshakePrefix starts the line a worker prints once it listens (dist.Main's handshake).
const handshakePrefix = "godist-worker "

// Message tags, as in the package documentation.
const (
	TagPid  = "pid"
	TagHS   = "hs"
	TagOut  = "out"
	TagErr  = "err"
	TagExit = "exit"
	TagFail = "fail"
)

// Parse splits a launcher's line "K TAG REST". ok is false for a line that is not one.
func Parse(line string) (k int, tag, rest string, ok bool) {
	ks, after, ok1 := strings.Cut(line, " ")
	tag, rest, _ = strings.Cut(after, " ")
	k, err := strconv.Atoi(ks)
	if !ok1 || err != nil || k < 0 || tag == "" {
		return 0, "", "", false
	}
	return k, tag, rest, true
}

// ParseExit splits the REST of an exit line into the exit code and how the worker ended.
func ParseExit(rest string) (code int, how string) {
	cs, how, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(cs)
	if err != nil {
		code = -1
	}
	return code, how
}

func init() { dist.OnMain(launcherMain) }

func launcherMain() {
	if os.Getenv(Env) == "" {
		return
	}
	os.Unsetenv(Env) // the workers are workers, not launchers
	os.Exit(Run(os.Stdin, os.Stdout))
}

// Run is the launcher: it speaks the protocol on in and out and returns the exit code. The
// workers are this program (os.Executable), run with dist.EnvWorker set.
func Run(in io.Reader, out io.Writer) int {
	w := &writer{b: bufio.NewWriter(out)}
	w.line(Hello)
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "godist launcher: %v\n", err)
		return 1
	}
	r := bufio.NewReader(in)
	first, err := r.ReadBytes('\n')
	if err != nil {
		return 0 // nothing asked: the driver went away first
	}
	var spec Spec
	if err := json.Unmarshal(first, &spec); err != nil {
		fmt.Fprintf(os.Stderr, "godist launcher: bad spec line: %v\n", err)
		return 1
	}
	env := append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, dist.EnvWorker+"=")
	}), dist.EnvWorker+"=1")
	if procs := dist.WorkerProcs(len(spec.Workers)); procs > 0 && os.Getenv("GOMAXPROCS") == "" {
		env = append(env, fmt.Sprintf("GOMAXPROCS=%d", procs))
	}

	ws := make([]*child, len(spec.Workers))
	var wg sync.WaitGroup
	for k, cfg := range spec.Workers {
		c := &child{k: k, w: w}
		ws[k] = c
		if err := c.start(exe, env, cfg, &wg); err != nil {
			w.line(fmt.Sprintf("%d %s %v", k, TagFail, err))
		}
	}

	// Requests until the input ends.
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		verb, ks, _ := strings.Cut(sc.Text(), " ")
		k, err := strconv.Atoi(ks)
		if err != nil || k < 0 || k >= len(ws) {
			continue
		}
		switch verb {
		case "kill":
			ws[k].signal(syscall.SIGKILL, true)
		case "int":
			ws[k].signal(syscall.SIGINT, false)
		}
	}

	// The session is over: every worker ends, politely first.
	for _, c := range ws {
		c.closeStdin()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(Grace):
		for _, c := range ws {
			c.signal(syscall.SIGKILL, true)
		}
		<-allDone
	}
	return 0
}

// writer serialises the launcher's lines; each is flushed at once, since the driver waits on
// handshakes and exits.
type writer struct {
	mu sync.Mutex
	b  *bufio.Writer
}

func (w *writer) line(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.WriteString(s)
	w.b.WriteByte('\n')
	w.b.Flush() // an error means the driver is gone: the input's end says so
}

// child is one worker of the launcher.
type child struct {
	k int
	w *writer

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ended bool // reaped: its pid may be another process's now
}

func (c *child) start(exe string, env []string, cfg dist.WorkerConfig, wg *sync.WaitGroup) error {
	line, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	cmd := exec.Command(exe)
	cmd.Env = env
	// Its own process group, so that a kill takes whatever the worker started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the pipes must not hang Wait
	stdin, err := cmd.StdinPipe()
	if err != nil {
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
		return err
	}
	c.mu.Lock()
	c.cmd, c.stdin = cmd, stdin
	c.mu.Unlock()
	c.w.line(fmt.Sprintf("%d %s %d", c.k, TagPid, cmd.Process.Pid))
	// A worker that died at once fails this write; its exit line says why.
	stdin.Write(append(line, '\n'))
	wg.Add(1)
	go func() {
		defer wg.Done()
		var rd sync.WaitGroup
		rd.Add(2)
		go func() { defer rd.Done(); c.relay(stdout, true) }()
		go func() { defer rd.Done(); c.relay(stderr, false) }()
		rd.Wait() // the pipes must be drained before Wait closes them
		err := cmd.Wait()
		c.mu.Lock()
		c.ended = true
		c.mu.Unlock()
		code := cmd.ProcessState.ExitCode()
		how := cmd.ProcessState.String()
		if err != nil && cmd.ProcessState == nil {
			how = err.Error()
		}
		c.w.line(fmt.Sprintf("%d %s %d %s", c.k, TagExit, code, how))
	}()
	return nil
}

// relay forwards the lines of one of the worker's streams, the handshake tagged apart.
func (c *child) relay(r io.Reader, stdout bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	tag := TagErr
	if stdout {
		tag = TagOut
	}
	found := !stdout
	prefix := strconv.Itoa(c.k) + " "
	for sc.Scan() {
		line := sc.Text()
		if !found && strings.HasPrefix(line, handshakePrefix) {
			found = true
			c.w.line(prefix + TagHS + " " + line)
			continue
		}
		c.w.line(prefix + tag + " " + line)
	}
	io.Copy(io.Discard, r) // a line too long for the scanner must not block the worker
}

func (c *child) signal(sig syscall.Signal, group bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.ended {
		return
	}
	pid := c.cmd.Process.Pid
	if group {
		syscall.Kill(-pid, sig)
	}
	syscall.Kill(pid, sig)
}

func (c *child) closeStdin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stdin != nil {
		c.stdin.Close()
	}
}
