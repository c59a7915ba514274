// Package slurm starts godist workers through Slurm: the counterpart of ClusterManagers.jl's
// SlurmManager (addprocs_slurm) and of SlurmClusterManager.jl, which adds the tasks of the
// job it runs in.
//
// Inside an allocation (the process runs in a Slurm job: SLURM_JOB_ID is set, as under sbatch,
// salloc or srun) workers are placed on the allocation's nodes in turn, and each Launch starts
// one job step per node with srun, all nodes at once: the step runs this program as a launcher
// that starts the node's workers as its children and relays their addresses, output and exits
// (so hundreds of workers cost a few steps, not hundreds). Each worker is still its own
// dist.Process, killed, interrupted and reported gone alone. Outside an allocation, each Launch
// first requests one for the asked number of workers with salloc (plus the resources given by
// options), and then starts the steps in it. The allocation is held by a salloc whose command reads this process's pipe, so
// that it is released when Close is called, and also when this process dies without calling
// it: Slurm never keeps an allocation of a crashed driver until its time limit.
//
// A request that Slurm queues waits within the launch's deadline (dist.WithLaunchTimeout,
// default one minute); when it passes, the request is withdrawn and the error quotes salloc
// (e.g. "Requested partition configuration not available now").
//
// Workers stop with the job: scancel of the job (or of a step) ends the workers in it, and the
// cluster reports them gone. A step's workers also end when its srun ends.
//
// Workers listen on TCP at their node's address (NodeAddr in `scontrol show node`, unless
// WithNodeAddr says otherwise); the driver and the other workers must be able to reach it.
// The worker binary is this program's executable at the same path on every node (a shared
// file system, as Slurm clusters usually have), or WithExecutable.
//
//	m := slurm.New(slurm.WithTimeLimit(30 * time.Minute))
//	defer m.Close()
//	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(16))
//
// Limits: the driver's host needs Slurm's client commands (srun, salloc, scontrol) in PATH,
// and runs one srun process per node and launch while a worker of it runs; a step shares all
// of the job's CPUs on its node with the node's other steps (srun --overlap), while the
// manager starts no more workers on a node than the job has tasks there (unless WithOverlap);
// the program must call dist.Main first (the launcher runs there); workers spread over the nodes
// of one allocation (a second Launch outside an allocation requests a second one); and the
// driver must be able to reach every node's address directly (no tunnelling as in package
// ssh).
package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/launcher"
)

// Option configures New.
type Option func(*options)

type options struct {
	job         string
	exe         string
	nodes       int
	cpusPerTask int
	partition   string
	timeLimit   time.Duration
	jobName     string
	allocArgs   []string
	srunArgs    []string
	overlap     bool
	nodeAddr    func(ctx context.Context, node string) (string, error)
}

// WithJob makes the manager start workers in the given existing job (allocation) instead of
// the one in the environment or a new one.
func WithJob(id string) Option { return func(o *options) { o.job = id } }

// WithExecutable sets the worker program (default: this process's executable, os.Executable).
// It must be this same program built for the nodes: a worker runs the driver's registered
// functions by name.
func WithExecutable(path string) Option { return func(o *options) { o.exe = path } }

// WithNodes sets how many nodes an allocation requested by the manager spans (salloc -N).
func WithNodes(n int) Option { return func(o *options) { o.nodes = n } }

// WithCPUsPerTask sets the CPUs of each worker in a requested allocation (salloc -c). The
// workers of a node share the job's CPUs there.
func WithCPUsPerTask(n int) Option { return func(o *options) { o.cpusPerTask = n } }

// WithPartition sets the partition of a requested allocation (salloc -p).
func WithPartition(p string) Option { return func(o *options) { o.partition = p } }

// WithTimeLimit sets the time limit of a requested allocation (salloc -t), rounded up to whole
// minutes.
func WithTimeLimit(d time.Duration) Option { return func(o *options) { o.timeLimit = d } }

// WithJobName sets the name of requested allocations and the prefix of worker step names
// (default "godist").
func WithJobName(name string) Option { return func(o *options) { o.jobName = name } }

// WithAllocArgs adds arguments to the salloc command that requests an allocation, e.g.
// "--account=abc" or "--mem-per-cpu=2G".
func WithAllocArgs(args ...string) Option {
	return func(o *options) { o.allocArgs = append(o.allocArgs, args...) }
}

// WithSrunArgs adds arguments to the srun command of each step (one per node and launch,
// running all of that node's new workers), e.g. "--mem=4G".
func WithSrunArgs(args ...string) Option {
	return func(o *options) { o.srunArgs = append(o.srunArgs, args...) }
}

// WithOverlap lets the manager start more workers on a node than the job has tasks there
// (its workers share the job's CPUs; worker steps always overlap other steps, srun
// --overlap). Use it to run many light workers per CPU, or when the driver itself runs as a
// step of the allocation (started with srun) and takes one of its tasks.
func WithOverlap() Option { return func(o *options) { o.overlap = true } }

// WithNodeAddr sets how the address workers listen on is found for a node name (default:
// the node's NodeAddr from `scontrol show node`). Use it to pick a particular network.
func WithNodeAddr(f func(ctx context.Context, node string) (string, error)) Option {
	return func(o *options) { o.nodeAddr = f }
}

// InAllocation reports whether this process runs inside a Slurm job, where New's manager
// starts workers in that job rather than requesting a new allocation.
func InAllocation() bool { return os.Getenv("SLURM_JOB_ID") != "" }

// Manager starts workers as Slurm job steps. It implements dist.Manager. Its methods are safe
// for concurrent use.
type Manager struct {
	o options

	mu      sync.Mutex
	running map[string][]*step        // job -> steps started in it (ended ones pruned lazily)
	pending map[string]map[string]int // job -> node -> workers being started
	addrs   map[string]string         // node -> address
	allocs  []*allocation             // requested by this manager
	seq     int                       // numbers worker step names
	token   string                    // tells this manager's steps from others' in the same job
	closed  bool
}

// New returns a Slurm manager. Launch uses the job given by WithJob, else the job this process
// runs in, else a new allocation per Launch.
func New(opts ...Option) *Manager {
	m := &Manager{
		addrs:   make(map[string]string),
		running: make(map[string][]*step),
		pending: make(map[string]map[string]int),
	}
	m.o.jobName = "godist"
	for _, o := range opts {
		o(&m.o)
	}
	m.token = strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid())
	return m
}

// slots is where workers go: one node name per task of an allocation.
type slots struct {
	job   string
	nodes []string
}

// Launch implements dist.Manager: it starts spec.Count workers on the allocation's nodes, one
// job step per node (all at once) whose launcher starts that node's workers, each listening on
// TCP at its node's address. Outside an allocation it first
// requests one for spec.Count workers, which waits while Slurm queues the request (bounded by
// ctx). Workers that started are returned even when others failed, with an error joining the
// failures; an allocation requested for a launch in which no worker started is released at
// once rather than held until Close.
func (m *Manager) Launch(ctx context.Context, spec dist.LaunchSpec) ([]dist.Process, error) {
	if spec.Count <= 0 {
		return nil, nil
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, errors.New("slurm: manager closed")
	}
	exe := m.o.exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("slurm: worker executable: %w", err)
		}
	}
	var (
		sl    slots
		err   error
		alloc *allocation // requested for this launch
	)
	switch job := m.o.job; {
	case job == "" && InAllocation():
		job = os.Getenv("SLURM_JOB_ID")
		fallthrough
	case job != "":
		if sl, err = jobSlots(ctx, job); err != nil {
			return nil, err
		}
	default:
		if alloc, err = m.allocate(ctx, spec.Count); err != nil {
			return nil, err
		}
		sl = alloc.slots
	}

	nodes, err := m.place(sl, spec.Count)
	if err != nil {
		if alloc != nil {
			m.drop(alloc)
		}
		return nil, err
	}
	// One step per node, started in parallel, whose launcher starts that node's workers.
	perNode := map[string]int{}
	var order []string
	for _, n := range nodes {
		if perNode[n] == 0 {
			order = append(order, n)
		}
		perNode[n]++
	}
	type res struct {
		ws   []*launcher.Worker
		errs []error
	}
	ch := make(chan res, len(order))
	for _, node := range order {
		m.mu.Lock()
		m.seq++
		name := fmt.Sprintf("%s-%s-%d", m.o.jobName, m.token, m.seq)
		m.mu.Unlock()
		go func() {
			k := perNode[node]
			st, ws, errs := m.startStep(ctx, spec, exe, sl.job, node, name, k)
			m.mu.Lock()
			m.pending[sl.job][node] -= k
			if st != nil {
				m.running[sl.job] = append(m.running[sl.job], st)
			}
			m.mu.Unlock()
			ch <- res{ws, errs}
		}()
	}
	var procs []dist.Process
	var errs []error
	for range order {
		r := <-ch
		errs = append(errs, r.errs...)
		for _, w := range r.ws {
			procs = append(procs, w)
		}
	}
	if len(procs) == 0 && alloc != nil {
		// Nothing runs in it: hold no resources for nothing.
		m.drop(alloc)
	}
	return procs, errors.Join(errs...)
}

// drop releases an allocation this manager requested and forgets it.
func (m *Manager) drop(a *allocation) {
	m.mu.Lock()
	m.allocs = slices.DeleteFunc(m.allocs, func(b *allocation) bool { return b == a })
	m.mu.Unlock()
	a.release()
}

// place picks a node for each of count new workers in the job: the one with the fewest of this
// manager's live workers among those with a task free. Without WithOverlap, asking for more
// workers than free tasks fails at once: their steps would wait silently for CPUs.
func (m *Manager) place(sl slots, count int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	capacity := map[string]int{}
	var order []string
	for _, n := range sl.nodes {
		if capacity[n] == 0 {
			order = append(order, n)
		}
		capacity[n]++
	}
	if m.pending[sl.job] == nil {
		m.pending[sl.job] = make(map[string]int)
	}
	used := maps.Clone(m.pending[sl.job])
	live := m.running[sl.job][:0]
	for _, st := range m.running[sl.job] {
		select {
		case <-st.s.Done():
			continue
		default:
		}
		live = append(live, st)
		for _, w := range st.s.Workers() {
			select {
			case <-w.Done():
			default:
				used[st.node]++
			}
		}
	}
	m.running[sl.job] = live
	busy := 0
	for _, u := range used {
		busy += u
	}
	var out []string
	for i := 0; i < count; i++ {
		best := ""
		for _, n := range order {
			if (m.o.overlap || used[n] < capacity[n]) && (best == "" || used[n]*capacity[best] < used[best]*capacity[n]) {
				best = n
			}
		}
		if best == "" {
			return nil, fmt.Errorf("slurm: job %s has %d tasks and %d workers of this manager run or start in it: %d more would wait for CPUs (use a bigger allocation, or WithOverlap to share CPUs)",
				sl.job, len(sl.nodes), busy, count)
		}
		used[best]++
		out = append(out, best)
	}
	for _, n := range out {
		m.pending[sl.job][n]++
	}
	return out, nil
}

// step is one job step of this manager: a launcher on one node and the workers it started.
type step struct {
	s    *launcher.Session
	node string
}

// startStep runs one step on node whose launcher starts k workers, and waits until each has
// printed its address, failed, or spec.Timeout has passed. It returns the step if it
// started, the ready workers, and the errors of the others (each distinct failure once).
func (m *Manager) startStep(ctx context.Context, spec dist.LaunchSpec, exe, job, node, name string, k int) (*step, []*launcher.Worker, []error) {
	addr, err := m.addrOf(ctx, node)
	if err != nil {
		return nil, nil, []error{err}
	}
	// The port the caller asked for, if any (a firewall-friendly fixed port, then the next
	// ones); the host is always the node's, since the caller's bind address is its own host's.
	port := 0
	if spec.Config.Network == "tcp" {
		if _, p, err := net.SplitHostPort(spec.Config.Bind); err == nil && p != "" {
			port, _ = strconv.Atoi(p)
		}
	}
	ls := launcher.Spec{Workers: make([]dist.WorkerConfig, k)}
	for i := range k {
		cfg := spec.Config
		cfg.Network = "tcp"
		p := 0
		if port != 0 {
			p = port + i
		}
		cfg.Bind = net.JoinHostPort(addr, strconv.Itoa(p))
		ls.Workers[i] = cfg
	}

	args := []string{
		"--jobid=" + job, "--nodes=1", "--ntasks=1", "--nodelist=" + node,
		"--job-name=" + name,
		// The launcher reads its spec and requests on srun's stdin, and its end (srun gone)
		// ends the launcher and its workers.
		"--input=all",
		// The step takes all of the job's CPUs on its node (Slurm's default), for its
		// workers to share, and overlaps the node's other steps: which workers may run
		// where is this manager's count (place), kept per worker, so that a worker that
		// ends frees its task at once for a new one even while its step's other workers
		// run on.
		"--overlap",
		"--mpi=none",
	}
	args = append(args, m.o.srunArgs...)
	args = append(args, exe)
	cmd := exec.Command("srun", args...)
	// The workers' environment, less the variable that makes a worker: the launcher sets it
	// for its children only.
	cmd.Env = slices.DeleteFunc(dist.WorkerEnv(os.Environ()), func(kv string) bool {
		return strings.HasPrefix(kv, dist.EnvWorker+"=")
	})
	cmd.Env = append(cmd.Env, launcher.Env+"=1")
	// Own process group: a terminal's ^C reaches the driver, which stops workers in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second

	where := "job " + job + ": " + node
	s := launcher.New(cmd, k, launcher.Options{
		Where: node,
		Err: func(code int, msg string, cause error) error {
			if msg = oneLine(msg); msg != "" {
				return fmt.Errorf("slurm: %s: %w; it said: %s", where, cause, msg)
			}
			return fmt.Errorf("slurm: %s: %w", where, cause)
		},
		Lost: func(waitErr error, msg string, running bool) error {
			err := fmt.Errorf("slurm: %s: the step ended (%v)", where, waitErr)
			if msg = oneLine(msg); msg != "" {
				err = fmt.Errorf("%w; it said: %s", err, msg)
			}
			return err
		},
	})
	if err := s.Start(); err != nil {
		return nil, nil, []error{err}
	}
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	deadline := time.Now().Add(timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line := <-s.Control(): // no control lines are asked for: Hello, or the end
		if line != launcher.Hello {
			return nil, nil, []error{s.Fail(nil)}
		}
	case <-timer.C:
		return nil, nil, []error{s.Fail(fmt.Errorf("%s did not start as a launcher within %v (is it the driver's program, and does it call dist.Main first?)", exe, timeout))}
	case <-ctx.Done():
		return nil, nil, []error{s.Fail(fmt.Errorf("launch cancelled: %w", ctx.Err()))}
	}
	// The configurations travel on srun's stdin, never on a command line.
	if err := s.SendSpec(ls); err != nil {
		return nil, nil, []error{s.Fail(fmt.Errorf("sending the launcher its spec: %w", err))}
	}
	ws, errs := s.AwaitReady(ctx, deadline, timeout)
	return &step{s: s, node: node}, ws, errs
}

// oneLine joins the last lines a step printed into one.
func oneLine(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, " | ")
}

// addrOf returns the address workers on node listen at, looked up once per node.
func (m *Manager) addrOf(ctx context.Context, node string) (string, error) {
	m.mu.Lock()
	a, ok := m.addrs[node]
	m.mu.Unlock()
	if ok {
		return a, nil
	}
	var err error
	if m.o.nodeAddr != nil {
		a, err = m.o.nodeAddr(ctx, node)
	} else {
		a, err = nodeAddr(ctx, node)
	}
	if err != nil {
		return "", fmt.Errorf("slurm: address of node %s: %w", node, err)
	}
	m.mu.Lock()
	m.addrs[node] = a
	m.mu.Unlock()
	return a, nil
}

// nodeAddr reads NodeAddr from `scontrol show node`; Slurm itself reaches slurmd there.
func nodeAddr(ctx context.Context, node string) (string, error) {
	out, err := run(ctx, "scontrol", "--oneliner", "show", "node", node)
	if err != nil {
		return "", err
	}
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "NodeAddr="); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("no NodeAddr in: %s", strings.TrimSpace(out))
}

// jobSlots lists a job's tasks by node, from squeue's node list and task counts.
func jobSlots(ctx context.Context, job string) (slots, error) {
	// %N: compressed node list; %C: CPUs; TasksPerNode is not in squeue, so the environment
	// is used for the job this process runs in and one task per CPU otherwise.
	if job == os.Getenv("SLURM_JOB_ID") && os.Getenv("SLURM_JOB_NODELIST") != "" {
		nodes, err := expandHosts(ctx, os.Getenv("SLURM_JOB_NODELIST"))
		if err != nil {
			return slots{}, err
		}
		tpn := os.Getenv("SLURM_TASKS_PER_NODE")
		if tpn == "" {
			tpn = os.Getenv("SLURM_JOB_CPUS_PER_NODE")
		}
		return makeSlots(job, nodes, tpn)
	}
	out, err := run(ctx, "squeue", "--noheader", "--jobs="+job, "--format=%T|%N|%C")
	if err != nil {
		return slots{}, fmt.Errorf("slurm: job %s: %w", job, err)
	}
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 3 {
		return slots{}, fmt.Errorf("slurm: job %s not found (squeue: %q)", job, out)
	}
	if f[0] != "RUNNING" {
		return slots{}, fmt.Errorf("slurm: job %s is %s, not RUNNING", job, f[0])
	}
	nodes, err := expandHosts(ctx, f[1])
	if err != nil {
		return slots{}, err
	}
	cpus, _ := strconv.Atoi(f[2])
	per := max(1, cpus/max(1, len(nodes)))
	return makeSlots(job, nodes, fmt.Sprintf("%d(x%d)", per, len(nodes)))
}

// makeSlots repeats each node as many times as it has tasks: tasksPerNode is Slurm's compact
// form, e.g. "2(x3),1" for nodes of 2, 2, 2 and 1 tasks.
func makeSlots(job string, nodes []string, tasksPerNode string) (slots, error) {
	counts, err := parseTasksPerNode(tasksPerNode)
	if err != nil {
		return slots{}, fmt.Errorf("slurm: job %s: %w", job, err)
	}
	if len(counts) != len(nodes) {
		return slots{}, fmt.Errorf("slurm: job %s: %d nodes but task counts for %d (%q)", job, len(nodes), len(counts), tasksPerNode)
	}
	sl := slots{job: job}
	// Interleaved (node 1, node 2, ..., node 1, ...) so that a few workers spread over nodes.
	for round := 0; ; round++ {
		added := false
		for i, n := range nodes {
			if round < counts[i] {
				sl.nodes = append(sl.nodes, n)
				added = true
			}
		}
		if !added {
			break
		}
	}
	if len(sl.nodes) == 0 {
		return slots{}, fmt.Errorf("slurm: job %s has no tasks", job)
	}
	return sl, nil
}

// parseTasksPerNode expands "2(x3),1" to [2 2 2 1].
func parseTasksPerNode(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, rep := part, "1"
		if i := strings.Index(part, "(x"); i >= 0 && strings.HasSuffix(part, ")") {
			n, rep = part[:i], part[i+2:len(part)-1]
		}
		c, err1 := strconv.Atoi(n)
		r, err2 := strconv.Atoi(rep)
		if err1 != nil || err2 != nil || c < 0 || r < 1 {
			return nil, fmt.Errorf("bad tasks-per-node list %q", s)
		}
		for range r {
			out = append(out, c)
		}
	}
	return out, nil
}

// expandHosts turns a compressed host list ("n[1-3],m5") into names, as Slurm does.
func expandHosts(ctx context.Context, list string) ([]string, error) {
	out, err := run(ctx, "scontrol", "show", "hostnames", list)
	if err != nil {
		return nil, err
	}
	hosts := strings.Fields(out)
	if len(hosts) == 0 {
		return nil, fmt.Errorf("slurm: empty node list %q", list)
	}
	return hosts, nil
}

// run runs a Slurm client command and returns its stdout; the error carries its stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// Jobs returns the ids of the allocations this manager requested and still holds.
func (m *Manager) Jobs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, a := range m.allocs {
		if !a.gone() {
			ids = append(ids, a.slots.job)
		}
	}
	return ids
}

// Close releases every allocation this manager requested, which ends the workers running in
// them; it returns once Slurm has released them. Workers started in an allocation the manager
// did not request are left to the cluster (dist.Cluster.Close stops them). Close is idempotent;
// the manager launches nothing after it.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	allocs := m.allocs
	m.allocs = nil
	m.mu.Unlock()
	var errs []error
	for _, a := range allocs {
		if err := a.release(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
