package elastic_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/elastic"
)

// Environment of a test process started as an elastic worker.
const (
	envAddr    = "ELASTIC_TEST_DRIVER"
	envTimeout = "ELASTIC_TEST_TIMEOUT"
)

// TestMain: dist.Main first (local workers are this binary re-executed), then the elastic
// worker role, which a test asks for through the environment.
func TestMain(m *testing.M) {
	dist.Main()
	if addr := os.Getenv(envAddr); addr != "" {
		os.Unsetenv(envAddr)
		var opts []elastic.Option
		if d, err := time.ParseDuration(os.Getenv(envTimeout)); err == nil {
			opts = append(opts, elastic.WithConnectTimeout(d))
		}
		// SIGTERM makes the worker leave on its own, as a container being stopped does.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		err := elastic.Serve(ctx, addr, opts...)
		stop()
		switch {
		case errors.Is(err, context.Canceled):
			fmt.Println("serve: stopped")
			os.Exit(4)
		case err == nil:
			fmt.Println("serve: exit requested")
			os.Exit(0)
		case errors.Is(err, dist.ErrDriverLost):
			fmt.Println("serve: driver lost:", err)
			os.Exit(3)
		}
		fmt.Println("serve:", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

var (
	whoami = dist.NewFunc("elastictest.whoami", func(ctx context.Context, _ struct{}) (int, error) {
		return dist.Current(ctx).MyID(), nil
	})
	// relay calls whoami on another process from a worker: worker↔worker connections.
	relay = dist.NewFunc("elastictest.relay", func(ctx context.Context, to int) (int, error) {
		return whoami.Call(ctx, dist.Current(ctx), to, struct{}{})
	})
)

// worker is an elastic worker process started by the test, as a shell would.
type worker struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
	err  error
}

func startWorker(t *testing.T, addr, cookie string, env ...string) *worker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), envAddr+"="+addr, dist.EnvCookie+"="+cookie)
	cmd.Env = append(cmd.Env, env...)
	w := &worker{cmd: cmd, out: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	cmd.Stdout = lockedWriter{w.mu, w.out}
	cmd.Stderr = lockedWriter{w.mu, w.out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = cmd.Wait(); close(w.done) }()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			cmd.Process.Kill()
			<-w.done
			t.Errorf("elastic worker os pid %d still running at the end of the test; it said: %s", cmd.Process.Pid, w.output())
		}
	})
	return w
}

func (w *worker) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.String()
}

// exit waits for the worker to exit and returns its exit code.
func (w *worker) exit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(d):
		t.Fatalf("elastic worker did not exit within %v; it said: %s", d, w.output())
	}
	var ee *exec.ExitError
	if errors.As(w.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// joined waits until the cluster has n workers and returns the ones not in before.
func joined(t *testing.T, c *dist.Cluster, n int, before []int) []int {
	t.Helper()
	disttest.Eventually(t, 30*time.Second, fmt.Sprintf("%d workers", n), func() bool { return c.NWorkers() >= n })
	var added []int
	for _, pid := range c.Workers() {
		if !slices.Contains(before, pid) {
			added = append(added, pid)
		}
	}
	return added
}

func TestJoinOverTCP(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	c, _ := disttest.Start(t, 1)
	ln, err := elastic.Listen(ctx, c, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !strings.HasPrefix(ln.Addr(), "127.0.0.1:") || strings.HasSuffix(ln.Addr(), ":0") {
		t.Fatalf("listener address %q", ln.Addr())
	}
	events := make(chan dist.Event, 16)
	defer c.Subscribe(func(e dist.Event) { events <- e })()

	w1 := startWorker(t, ln.Addr(), c.Cookie())
	w2 := startWorker(t, ln.Addr(), c.Cookie())
	added := joined(t, c, 3, []int{2})
	if len(added) != 2 {
		t.Fatalf("elastic workers %v (all: %v)", added, c.Workers())
	}
	for _, pid := range added {
		info, ok := c.ProcInfo(pid)
		if !ok || info.Network != "tcp" || !strings.HasPrefix(info.Addr, "127.0.0.1:") {
			t.Fatalf("worker %d: %+v", pid, info)
		}
		if id, err := whoami.Call(ctx, c, pid, struct{}{}); err != nil || id != pid {
			t.Fatalf("whoami on %d: %d, %v", pid, id, err)
		}
	}
	// worker↔worker in every direction: elastic→local, local→elastic, elastic→elastic
	for _, pair := range [][2]int{{added[0], 2}, {2, added[1]}, {added[1], added[0]}} {
		if id, err := relay.Call(ctx, c, pair[0], pair[1]); err != nil || id != pair[1] {
			t.Fatalf("relay %d→%d: %d, %v", pair[0], pair[1], id, err)
		}
	}
	// They are in the default pool: Pmap reaches them.
	got, err := dist.Pmap(ctx, c, whoami, make([]struct{}, 60), dist.WithBatchSize(1))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, id := range got {
		seen[id] = true
	}
	if !seen[added[0]] && !seen[added[1]] {
		t.Fatalf("Pmap ran on %v, never on elastic workers %v", seen, added)
	}
	joins := 0
	for len(events) > 0 {
		if e := <-events; e.Kind == dist.Joined && slices.Contains(added, e.Pid) {
			joins++
		}
	}
	if joins != 2 {
		t.Fatalf("%d Joined events for elastic workers", joins)
	}

	// RmProcs asks politely: the worker's Serve returns nil.
	if err := c.RmProcs(ctx, added[0]); err != nil {
		t.Fatal(err)
	}
	ws := []*worker{w1, w2}
	exited := -1
	select {
	case <-w1.done:
		exited = 0
	case <-w2.done:
		exited = 1
	case <-time.After(10 * time.Second):
		t.Fatal("no elastic worker exited after RmProcs")
	}
	if code := ws[exited].exit(t, time.Second); code != 0 || !strings.Contains(ws[exited].output(), "exit requested") {
		t.Fatalf("removed worker: exit code %d, said %q", code, ws[exited].output())
	}
	// The listener's Close leaves joined workers in the cluster.
	ln.Close()
	if id, err := whoami.Call(ctx, c, added[1], struct{}{}); err != nil || id != added[1] {
		t.Fatalf("after listener Close: %d, %v", id, err)
	}
	// Cluster Close stops the other one.
	c.Close()
	if code := ws[1-exited].exit(t, 10*time.Second); code != 0 {
		t.Fatalf("worker after Close: exit code %d, said %q", code, ws[1-exited].output())
	}
}

func TestJoinOverUnixSocket(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0)
	sock := filepath.Join(t.TempDir(), "driver.sock")
	ln, err := elastic.Listen(ctx, c, "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr() != "unix:"+sock {
		t.Fatalf("Addr = %q", ln.Addr())
	}
	w := startWorker(t, ln.Addr(), c.Cookie())
	added := joined(t, c, 1, nil)
	info, _ := c.ProcInfo(added[0])
	if info.Network != "unix" || filepath.Dir(info.Addr) != filepath.Dir(sock) {
		t.Fatalf("worker listens on %s %s", info.Network, info.Addr)
	}
	// A worker that dies is removed, with a cause.
	gone := make(chan dist.Event, 4)
	defer c.Subscribe(func(e dist.Event) {
		if e.Kind == dist.Exited {
			gone <- e
		}
	})()
	w.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case e := <-gone:
		if e.Pid != added[0] || e.Reason != dist.ExitCrash || !errors.Is(e.Cause, dist.ErrProcessExited) {
			t.Fatalf("exit event %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("killed elastic worker not removed")
	}
	w.exit(t, 5*time.Second)
	if n := c.NWorkers(); n != 0 {
		t.Fatalf("%d workers after the elastic one died", n)
	}

	// One that leaves on its own, stopped as a container is, exits cleanly.
	w = startWorker(t, ln.Addr(), c.Cookie())
	added = joined(t, c, 1, nil)
	w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case e := <-gone:
		if e.Pid != added[0] || e.Reason != dist.ExitClean || !errors.Is(e.Cause, dist.ErrProcessExited) {
			t.Fatalf("exit event %+v (%v)", e, e.Cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stopped elastic worker not removed")
	}
	if code := w.exit(t, 5*time.Second); code != 4 {
		t.Fatalf("stopped worker: exit %d, said %q", code, w.output())
	}
}

func TestWrongCookieRefused(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0, dist.WithLogger(quietLogger()))
	ln, err := elastic.Listen(ctx, c, "127.0.0.1:0", elastic.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w := startWorker(t, ln.Addr(), "not-"+c.Cookie())
	if code := w.exit(t, 10*time.Second); code != 2 || !strings.Contains(w.output(), "cookie") {
		t.Fatalf("worker with a wrong cookie: exit %d, said %q", code, w.output())
	}
	if n := c.NWorkers(); n != 0 {
		t.Fatalf("%d workers joined with a wrong cookie", n)
	}
	// A stranger speaking something else is dropped; the listener still works after it.
	nc, err := net.Dial("tcp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	for {
		if _, err := nc.Read(buf); err != nil {
			break
		}
	}
	nc.Close()
	w = startWorker(t, ln.Addr(), c.Cookie())
	joined(t, c, 1, nil)
	c.Close()
	w.exit(t, 10*time.Second)
}

// A worker may start before its driver: it keeps trying until its connect timeout.
func TestWorkerBeforeDriver(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	cookie := "early-bird"
	w := startWorker(t, addr, cookie)
	time.Sleep(300 * time.Millisecond)
	c, _ := disttest.Start(t, 0, dist.WithCookie(cookie))
	ln, err := elastic.Listen(ctx, c, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	added := joined(t, c, 1, nil)
	if id, err := whoami.Call(ctx, c, added[0], struct{}{}); err != nil || id != added[0] {
		t.Fatalf("whoami: %d, %v", id, err)
	}
	c.Close()
	w.exit(t, 10*time.Second)
}

// With no driver at all, the worker gives up after its connect timeout and says where it
// tried.
func TestNoDriver(t *testing.T) {
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := probe.Addr().String()
	probe.Close()
	start := time.Now()
	w := startWorker(t, addr, "x", envTimeout+"=700ms")
	code := w.exit(t, 10*time.Second)
	if code != 2 || !strings.Contains(w.output(), "could not reach the driver at tcp "+addr) {
		t.Fatalf("exit %d, said %q", code, w.output())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

// The driver's process dying takes its elastic workers with it.
func TestWorkersLeaveWithDriver(t *testing.T) {
	if os.Getenv("ELASTIC_TEST_ROLE") == "driver" {
		return // only run in the parent
	}
	ctx := ctxT(t, 60*time.Second)
	// A driver in a child process: this test binary, running TestDriverProcess.
	cmd := exec.Command(os.Args[0], "-test.run", "^TestDriverProcess$")
	cmd.Env = append(os.Environ(), "ELASTIC_TEST_ROLE=driver", "TMPDIR="+t.TempDir())
	var out bytes.Buffer
	mu := &sync.Mutex{}
	cmd.Stdout = lockedWriter{mu, &out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var addr string
	disttest.Eventually(t, 30*time.Second, "the driver's address", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "listening "); ok {
				addr = a
				return true
			}
		}
		return false
	})
	w := startWorker(t, addr, "driver-in-a-child")
	disttest.Eventually(t, 30*time.Second, "the worker to join", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(out.String(), "joined ")
	})
	_ = ctx
	cmd.Process.Kill()
	code := w.exit(t, 10*time.Second)
	t.Logf("driver at %s; worker said %q", addr, w.output())
	if code != 3 {
		t.Fatalf("worker after its driver died: exit %d, said %q", code, w.output())
	}
}

// TestDriverProcess is the driver of TestWorkersLeaveWithDriver, in its own process.
func TestDriverProcess(t *testing.T) {
	if os.Getenv("ELASTIC_TEST_ROLE") != "driver" {
		t.Skip("run by TestWorkersLeaveWithDriver")
	}
	ctx := ctxT(t, 60*time.Second)
	c, err := dist.Start(ctx, dist.WithWorkers(0), dist.WithCookie("driver-in-a-child"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := elastic.Listen(ctx, c, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Subscribe(func(e dist.Event) {
		if e.Kind == dist.Joined {
			fmt.Printf("joined %d\n", e.Pid)
		}
	})
	fmt.Printf("listening %s\n", ln.Addr())
	time.Sleep(50 * time.Second) // killed long before
}

// A worker the cluster has counted stays when the listener closes right then, before its
// admission has finished: its control connection is its Process's, not the listener's.
// (mpi closes rank 0's listener as soon as the last rank is counted.)
func TestCloseRightAfterJoin(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0)
	ln, err := elastic.Listen(ctx, c, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{})
	var once sync.Once
	// Subscribers run inside the join: Close runs while the worker is being admitted.
	unsub := c.Subscribe(func(e dist.Event) {
		if e.Kind != dist.Joined {
			return
		}
		once.Do(func() {
			go func() { ln.Close(); close(closed) }()
			// Until the listener is closed, and a little more for it to close connections.
			for {
				nc, err := net.Dial("tcp", ln.Addr())
				if err != nil {
					break
				}
				nc.Close()
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
		})
	})
	defer unsub()
	gone := make(chan dist.Event, 1)
	defer c.Subscribe(func(e dist.Event) {
		if e.Kind == dist.Exited {
			select {
			case gone <- e:
			default:
			}
		}
	})()
	w := startWorker(t, ln.Addr(), c.Cookie())
	added := joined(t, c, 1, nil)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("listener Close did not return")
	}
	// Long enough for a cut control connection to be noticed on both sides.
	select {
	case e := <-gone:
		t.Fatalf("worker left after the listener closed: %+v (it said %q)", e, w.output())
	case <-w.done:
		t.Fatalf("worker exited after the listener closed: %q", w.output())
	case <-time.After(time.Second):
	}
	if id, err := whoami.Call(ctx, c, added[0], struct{}{}); err != nil || id != added[0] {
		t.Fatalf("whoami after the listener closed: %d, %v", id, err)
	}
	c.Close()
	if code := w.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("worker after Close: exit %d, said %q", code, w.output())
	}
}
