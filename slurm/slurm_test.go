package slurm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/slurm"
)

// envInner makes the test binary, started by sbatch, the driver of a cluster inside that job.
const envInner = "GODIST_SLURM_TEST_INNER"

// envOrphan makes the test binary a driver that requests an allocation, starts workers, says
// so and waits to be killed.
const envOrphan = "GODIST_SLURM_TEST_ORPHAN"

// TestMain makes the test binary usable as a worker (srun runs it with dist.EnvWorker set) and
// as the driver a batch job runs. The driver check comes after dist.Main so that workers,
// which inherit the environment, never take it.
func TestMain(m *testing.M) {
	dist.Main()
	if os.Getenv(envInner) != "" {
		os.Unsetenv(envInner)
		os.Exit(innerDriver())
	}
	if os.Getenv(envOrphan) != "" {
		os.Unsetenv(envOrphan)
		os.Exit(orphanDriver())
	}
	os.Exit(m.Run())
}

var square = dist.NewFunc("slurmtest.square", func(ctx context.Context, x int) (int, error) {
	return x * x, nil
})

// placement is where a worker runs, as Slurm told it.
type placement struct {
	Job, Step, Node string
	OSPid           int
}

var where = dist.NewFunc("slurmtest.where", func(ctx context.Context, _ struct{}) (placement, error) {
	return placement{
		Job:   os.Getenv("SLURM_JOB_ID"),
		Step:  os.Getenv("SLURM_STEP_ID"),
		Node:  os.Getenv("SLURMD_NODENAME"),
		OSPid: os.Getpid(),
	}, nil
})

// relay calls square on another worker from a worker: worker↔worker TCP between steps.
var relay = dist.NewFunc("slurmtest.relay", func(ctx context.Context, to int) (int, error) {
	return square.Call(ctx, dist.Current(ctx), to, to)
})

// needSlurm skips without a running Slurm (fails with CI=true). It uses the one-node cluster
// of scripts/slurm.sh when SLURM_CONF is not set.
func needSlurm(t *testing.T) {
	t.Helper()
	conf := os.Getenv("SLURM_CONF")
	if conf == "" {
		conf = "/run/godist/slurm/slurm.conf"
	}
	needCluster(t, conf, "scripts/slurm.sh")
}

// needCluster skips unless the Slurm cluster of config file conf, which setup brings up, is
// usable (fails with CI=true), and points the Slurm commands at it.
func needCluster(t *testing.T, conf, setup string) {
	t.Helper()
	missing := func(why string) {
		t.Helper()
		disttest.Missing(t, "Slurm is not available ("+why+"); run "+setup+" as root")
	}
	for _, tool := range []string{"srun", "salloc", "sbatch", "squeue", "scancel", "scontrol"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool + " not found")
		}
	}
	if _, err := os.Stat(conf); err != nil {
		missing("no " + conf)
	}
	t.Setenv("SLURM_CONF", conf)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sinfo", "--noheader", "--format=%T").CombinedOutput()
	if err != nil {
		missing(fmt.Sprintf("sinfo: %v: %s", err, strings.TrimSpace(string(out))))
	}
	// "idle*" is a node that does not respond; down, drained and failed nodes take no jobs.
	st := strings.TrimSpace(string(out))
	if st == "" || strings.ContainsAny(st, "*~#") || strings.Contains(st, "down") ||
		strings.Contains(st, "drain") || strings.Contains(st, "fail") || strings.Contains(st, "unk") {
		missing("no usable node: sinfo says " + strings.ReplaceAll(st, "\n", ", "))
	}
	if slurm.InAllocation() {
		t.Fatalf("the tests must not run inside a Slurm job (SLURM_JOB_ID=%s)", os.Getenv("SLURM_JOB_ID"))
	}
}

// squeue lists job (or step, with steps) ids, one per line.
func squeue(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("squeue", append([]string{"--noheader", "--format=%i"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("squeue %v: %v: %s", args, err, out)
	}
	return strings.Fields(string(out))
}

// exits records the pids the cluster reported gone, with the reason.
type exits struct {
	mu  sync.Mutex
	got map[int]error
}

func watch(c *dist.Cluster) (*exits, func()) {
	e := &exits{got: make(map[int]error)}
	stop := c.Subscribe(func(ev dist.Event) {
		if ev.Kind == dist.Exited {
			e.mu.Lock()
			e.got[ev.Pid] = ev.Cause
			e.mu.Unlock()
		}
	})
	return e, stop
}

func (e *exits) has(pids ...int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range pids {
		if _, ok := e.got[p]; !ok {
			return false
		}
	}
	return true
}

// checkCluster checks that the cluster has n workers, each a step of job, and that calls work:
// a Pmap across the workers and a worker↔worker call. It returns the workers' nodes by pid.
func checkCluster(ctx context.Context, c *dist.Cluster, job string, n int) (map[int]string, error) {
	nodes, err := checkWorkers(ctx, c, job, n)
	if err != nil {
		return nil, err
	}
	in := make([]int, 200)
	for i := range in {
		in[i] = i
	}
	out, err := dist.Pmap(ctx, c, square, in)
	if err != nil {
		return nil, fmt.Errorf("pmap: %w", err)
	}
	for i, v := range out {
		if v != i*i {
			return nil, fmt.Errorf("pmap: out[%d] = %d", i, v)
		}
	}
	ws := c.Workers()
	for _, to := range ws[1:] {
		got, err := relay.Call(ctx, c, ws[0], to)
		if err != nil || got != to*to {
			return nil, fmt.Errorf("worker %d -> worker %d: %d, %v", ws[0], to, got, err)
		}
	}
	return nodes, nil
}

func checkWorkers(ctx context.Context, c *dist.Cluster, job string, n int) (map[int]string, error) {
	ws := c.Workers()
	if c.NWorkers() != n {
		return nil, fmt.Errorf("workers %v, want %d", ws, n)
	}
	pl, err := where.On(ctx, c, ws, struct{}{})
	if err != nil {
		return nil, err
	}
	stepNode := map[string]string{} // a step runs on one node: the workers a launch put there
	nodes := map[int]string{}
	for pid, p := range pl {
		if p.Job != job || p.Step == "" || p.Node == "" {
			return nil, fmt.Errorf("worker %d runs as %+v, want a step of job %s", pid, p, job)
		}
		if n, ok := stepNode[p.Step]; ok && n != p.Node {
			return nil, fmt.Errorf("step %s has workers on %s and %s", p.Step, n, p.Node)
		}
		stepNode[p.Step] = p.Node
		info, ok := c.ProcInfo(pid)
		if !ok || info.OSPid != p.OSPid || info.Network != "tcp" {
			return nil, fmt.Errorf("worker %d: ProcInfo %+v, process says os pid %d", pid, info, p.OSPid)
		}
		nodes[pid] = p.Node
	}
	return nodes, nil
}

// Outside an allocation the manager requests one; cancelling that job ends the workers and the
// cluster reports them gone.
func TestOutsideAllocationScancel(t *testing.T) {
	needSlurm(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithTimeLimit(5*time.Minute), slurm.WithJobName("godist-test"))
	defer m.Close()
	out := &disttest.Output{}
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(2), dist.WithOutput(out),
		dist.WithLaunchTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	jobs := m.Jobs()
	if len(jobs) != 1 {
		t.Fatalf("manager holds jobs %v, want one", jobs)
	}
	job := jobs[0]
	if !slices.Contains(squeue(t, "--states=RUNNING"), job) {
		t.Fatalf("job %s is not running", job)
	}
	if _, err := checkCluster(ctx, c, job, 2); err != nil {
		t.Fatal(err)
	}
	ws := c.Workers()
	ex, stop := watch(c)
	defer stop()
	if b, err := exec.Command("scancel", job).CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v: %s", err, b)
	}
	disttest.Eventually(t, 30*time.Second, "workers reported gone after scancel", func() bool { return ex.has(ws...) })
	for _, pid := range ws {
		if err := disttest.WaitGone(c, pid, time.Second); err != nil {
			t.Error(err)
		}
		if _, err := square.Call(ctx, c, pid, 3); !errors.Is(err, dist.ErrProcessExited) {
			t.Errorf("call to cancelled worker %d: %v, want ErrProcessExited", pid, err)
		}
	}
	disttest.Eventually(t, 30*time.Second, "the manager noticing the job ended", func() bool { return len(m.Jobs()) == 0 })
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := disttest.CheckGoroutines(before, 5*time.Second); err != nil {
		t.Error(err)
	}
}

// Cluster.Close ends the worker steps; Manager.Close releases the allocations.
func TestOutsideAllocationClose(t *testing.T) {
	needSlurm(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithTimeLimit(5*time.Minute), slurm.WithJobName("godist-test"))
	defer m.Close()
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(1), dist.WithOutput(&disttest.Output{}),
		dist.WithLaunchTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	job := m.Jobs()[0]
	// A second AddProcs asks for a second allocation.
	pids, err := c.AddProcs(ctx, m, 1)
	if err != nil || len(pids) != 1 {
		t.Fatalf("AddProcs: %v %v", pids, err)
	}
	if jobs := m.Jobs(); len(jobs) != 2 {
		t.Fatalf("jobs %v, want two", jobs)
	}
	// RmProcs ends that worker's step.
	victim := c.Workers()[0]
	if err := c.RmProcs(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if got := c.Workers(); len(got) != 1 {
		t.Fatalf("workers after RmProcs: %v", got)
	}
	disttest.Eventually(t, 20*time.Second, "one step left", func() bool {
		n := 0
		for _, j := range m.Jobs() {
			n += len(squeue(t, "--steps", "--jobs="+j))
		}
		return n == 1
	})

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Every step of our jobs has ended; the allocations are still held until m.Close.
	for _, j := range m.Jobs() {
		disttest.Eventually(t, 20*time.Second, "steps of job "+j+" ended", func() bool {
			return len(squeue(t, "--steps", "--jobs="+j)) == 0
		})
	}
	held := m.Jobs()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if len(m.Jobs()) != 0 {
		t.Fatalf("jobs after Close: %v", m.Jobs())
	}
	disttest.Eventually(t, 20*time.Second, "allocations released", func() bool {
		q := squeue(t)
		return !slices.ContainsFunc(held, func(j string) bool { return slices.Contains(q, j) })
	})
	if !slices.Contains(held, job) {
		t.Errorf("first job %s not among %v", job, held)
	}
	if err := disttest.CheckGoroutines(before, 5*time.Second); err != nil {
		t.Error(err)
	}
}

// Interrupt reaches the worker through Slurm as SIGINT, which ends a worker that does not catch
// it, as it ends a local one.
func TestInterrupt(t *testing.T) {
	needSlurm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithTimeLimit(5*time.Minute), slurm.WithJobName("godist-test"))
	defer m.Close()
	procs, err := m.Launch(ctx, dist.LaunchSpec{
		Count:   1,
		Config:  dist.WorkerConfig{Cookie: "interrupt-test", ConnectTimeout: time.Minute},
		Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := procs[0]
	if network, addr := p.Addr(); network != "tcp" || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("worker listens on %s %s, want tcp at the node's address 127.0.0.1", network, addr)
	}
	p.SetPid(0)
	if err := p.Interrupt(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("interrupted worker exited cleanly")
		}
		t.Logf("interrupted worker: %v", err)
	case <-time.After(20 * time.Second):
		p.Kill()
		<-done
		t.Fatal("worker still running 20s after Interrupt")
	}
}

// A request Slurm cannot grant waits in the queue until ctx ends; the error gives Slurm's
// reason, and the request is withdrawn.
func TestImpossibleAllocation(t *testing.T) {
	needSlurm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithJobName("godist-impossible"))
	defer m.Close()
	_, err := m.Launch(ctx, dist.LaunchSpec{Count: 4096, Timeout: 10 * time.Second})
	if err == nil {
		t.Fatal("an allocation of 4096 tasks on one node succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("error does not say why: %v", err)
	}
	t.Log(err)
	disttest.Eventually(t, 20*time.Second, "the request withdrawn", func() bool {
		return len(squeue(t, "--name=godist-impossible")) == 0
	})
}

// Inside an allocation: the test binary runs as an sbatch job's script and is the driver; its
// workers are srun steps of that same job.
func TestInsideAllocation(t *testing.T) {
	needSlurm(t)
	runInner(t, "--ntasks=2")
}

// runInner submits the test binary as a batch job with the given resources, waits for it, and
// returns its output once it says that the inner driver did its work.
func runInner(t *testing.T, resources ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	outFile := filepath.Join(dir, "job.out")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// sbatch --wait polls slowly (seconds); squeue every 100ms is quicker.
	args := append([]string{"--parsable", "--job-name=godist-test", "--time=5", "--output=" + outFile,
		"--chdir=" + dir, "--export=ALL," + envInner + "=1", "--wrap=exec '" + exe + "'"}, resources...)
	b, err := exec.CommandContext(ctx, "sbatch", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch: %v: %s", err, b)
	}
	job := strings.TrimSpace(string(b))
	defer exec.Command("scancel", job).Run() // if the test fails early
	disttest.Eventually(t, 100*time.Second, "job "+job+" to end", func() bool { return len(squeue(t, "--jobs="+job)) == 0 })
	state, _ := exec.Command("scontrol", "--oneliner", "show", "job", job).CombinedOutput()
	got, _ := os.ReadFile(outFile)
	if !strings.Contains(string(state), "JobState=COMPLETED") || !strings.Contains(string(got), "inner driver ok in job "+job) {
		t.Fatalf("job %s: %s\noutput:\n%s", job, state, got)
	}
	t.Logf("job %s:\n%s", job, got)
	return string(got)
}

// hostsConf is the configuration of the several-node cluster `scripts/slurm.sh hosts` brings up
// on the test hosts of scripts/hosts.sh.
const hostsConf = "/run/godist/slurm-hosts/slurm.conf"

// Several nodes, each a network namespace with its own hostname and address: the driver
// outside the allocation (in the root namespace) gets one worker per node, and the workers
// call each other across hosts.
func TestHostsOutside(t *testing.T) {
	needCluster(t, hostsConf, "scripts/hosts.sh && scripts/slurm.sh hosts")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithNodes(3), slurm.WithTimeLimit(5*time.Minute), slurm.WithJobName("godist-test"))
	defer m.Close()
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(3), dist.WithOutput(&disttest.Output{}),
		dist.WithLaunchTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	job := m.Jobs()[0]
	nodes, err := checkCluster(ctx, c, job, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeSet(nodes); got != "h1 h2 h3" {
		t.Fatalf("workers on nodes %q, want one on each of h1 h2 h3", got)
	}
	for pid, node := range nodes {
		info, _ := c.ProcInfo(pid)
		if info.Host != node || strings.HasPrefix(info.Addr, "127.") {
			t.Errorf("worker %d on %s: %+v", pid, node, info)
		}
	}
	ex, stop := watch(c)
	defer stop()
	ws := c.Workers()
	if b, err := exec.Command("scancel", job).CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v: %s", err, b)
	}
	disttest.Eventually(t, 30*time.Second, "workers on every host reported gone after scancel", func() bool { return ex.has(ws...) })
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
}

// Several nodes, the driver inside the allocation: the batch script runs on the first node (a
// network namespace) and starts a worker on every node.
func TestHostsInside(t *testing.T) {
	needCluster(t, hostsConf, "scripts/hosts.sh && scripts/slurm.sh hosts")
	out := runInner(t, "--nodes=3", "--ntasks=3")
	if !strings.Contains(out, "workers on nodes h1 h2 h3") {
		t.Fatal("the workers are not one on each node")
	}
}

// innerDriver is the batch job's program: a cluster in the job it runs in.
func innerDriver() int {
	fail := func(format string, args ...any) int {
		fmt.Printf("inner driver FAILED: "+format+"\n", args...)
		return 1
	}
	if !slurm.InAllocation() {
		return fail("not in an allocation")
	}
	job := os.Getenv("SLURM_JOB_ID")
	n, err := strconv.Atoi(os.Getenv("SLURM_NTASKS"))
	if err != nil {
		return fail("SLURM_NTASKS: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := slurm.New()
	defer m.Close()
	t0 := time.Now()
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(n), dist.WithLaunchTimeout(60*time.Second))
	if err != nil {
		return fail("start: %v", err)
	}
	defer c.Close()
	fmt.Printf("%d workers joined in %v\n", n, time.Since(t0).Round(time.Millisecond))
	if len(m.Jobs()) != 0 {
		return fail("manager requested allocations %v inside one", m.Jobs())
	}
	nodes, err := checkCluster(ctx, c, job, n)
	if err != nil {
		return fail("%v", err)
	}
	host, _ := os.Hostname()
	fmt.Printf("driver on %s, workers on nodes %s\n", host, nodeSet(nodes))
	// The job's tasks are taken: one more worker would wait for CPUs, which is refused at
	// once with the reason.
	pids, err := c.AddProcs(ctx, m, 1)
	if err == nil || len(pids) != 0 || !strings.Contains(err.Error(), "would wait for CPUs") {
		return fail("one worker more than the job's tasks: %v %v", pids, err)
	}
	fmt.Printf("one worker too many: %v\n", err)
	// Once a worker is gone, its task takes a new one.
	if err := c.RmProcs(ctx, c.Workers()[0]); err != nil {
		return fail("rmprocs: %v", err)
	}
	if pids, err := c.AddProcs(ctx, m, 1); err != nil || len(pids) != 1 {
		return fail("a worker in the freed task: %v %v", pids, err)
	}
	if _, err := checkCluster(ctx, c, job, n); err != nil {
		return fail("after replacing a worker: %v", err)
	}
	if err := c.Close(); err != nil {
		return fail("close: %v", err)
	}
	fmt.Printf("inner driver ok in job %s\n", job)
	return 0
}

// nodeSet lists the distinct nodes, sorted, space-separated.
func nodeSet(nodes map[int]string) string {
	var ns []string
	for _, n := range nodes {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return strings.Join(slices.Compact(ns), " ")
}

// A driver killed with SIGKILL leaves nothing behind: its allocation is released and its
// workers end, because both hang on its pipes.
func TestDriverKilled(t *testing.T) {
	needSlurm(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	// Its socket directory goes in the test's: a killed driver cannot remove it.
	cmd.Env = append(os.Environ(), envOrphan+"=1", "TMPDIR="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 256)
		n, _ := stdout.Read(b)
		line <- string(b[:n])
	}()
	var job string
	var osPids []int
	select {
	case l := <-line:
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "orphan" {
			t.Fatalf("driver said %q", l)
		}
		job = f[1]
		for _, p := range f[2:] {
			var n int
			fmt.Sscan(p, &n)
			osPids = append(osPids, n)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("driver did not start its workers within 60s")
	}
	if len(osPids) != 2 {
		t.Fatalf("worker os pids %v", osPids)
	}
	cmd.Process.Kill()
	disttest.Eventually(t, 30*time.Second, "job "+job+" released after the driver died", func() bool {
		return len(squeue(t, "--jobs="+job)) == 0
	})
	disttest.Eventually(t, 10*time.Second, "workers gone", func() bool {
		return !disttest.Alive(osPids[0]) && !disttest.Alive(osPids[1])
	})
}

func orphanDriver() int {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithTimeLimit(5*time.Minute), slurm.WithJobName("godist-test"))
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(2), dist.WithLaunchTimeout(60*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, "orphan driver:", err)
		return 1
	}
	line := "orphan " + m.Jobs()[0]
	for _, pid := range c.Workers() {
		info, _ := c.ProcInfo(pid)
		line += fmt.Sprint(" ", info.OSPid)
	}
	fmt.Println(line)
	time.Sleep(time.Minute) // killed by the test before that
	return 1
}

// WithJob starts workers in an allocation made by someone else (here salloc --no-shell), which
// the manager leaves alone when it closes.
func TestWithJob(t *testing.T) {
	needSlurm(t)
	out, err := exec.Command("salloc", "--no-shell", "--immediate=60", "--ntasks=2", "--time=5", "--job-name=godist-test").CombinedOutput()
	if err != nil {
		t.Fatalf("salloc: %v: %s", err, out)
	}
	var job string
	for _, f := range strings.Fields(string(out)) {
		if _, err := strconv.Atoi(f); err == nil {
			job = f
		}
	}
	if job == "" {
		t.Fatalf("no job id in %q", out)
	}
	defer exec.Command("scancel", job).Run()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithJob(job))
	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(2), dist.WithOutput(&disttest.Output{}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := checkCluster(ctx, c, job, 2); err != nil {
		t.Fatal(err)
	}
	if len(m.Jobs()) != 0 {
		t.Errorf("the manager counts job %v as its own", m.Jobs())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(squeue(t, "--states=RUNNING"), job) {
		t.Errorf("job %s ended with the manager", job)
	}
	disttest.Eventually(t, 20*time.Second, "steps ended", func() bool { return len(squeue(t, "--steps", "--jobs="+job)) == 0 })
}

// A worker program that cannot run fails the launch with what Slurm said, and the allocation
// requested for it is released at once.
func TestBadExecutable(t *testing.T) {
	needSlurm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := slurm.New(slurm.WithExecutable("/nonexistent/godist-worker"), slurm.WithJobName("godist-badexe"))
	defer m.Close()
	procs, err := m.Launch(ctx, dist.LaunchSpec{Count: 1, Config: dist.WorkerConfig{Cookie: "x"}, Timeout: 30 * time.Second})
	if err == nil || len(procs) != 0 {
		t.Fatalf("launch of a missing program: %v %v", procs, err)
	}
	if !strings.Contains(err.Error(), "/nonexistent/godist-worker") {
		t.Errorf("error does not name the program: %v", err)
	}
	t.Log(err)
	if len(m.Jobs()) != 0 {
		t.Errorf("allocations still held: %v", m.Jobs())
	}
	disttest.Eventually(t, 20*time.Second, "the allocation released", func() bool {
		return len(squeue(t, "--name=godist-badexe")) == 0
	})
}
