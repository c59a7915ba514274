// Package slurm starts godist workers through Slurm: the counterpart of ClusterManagers.jl's
// SlurmManager (addprocs_slurm) and of SlurmClusterManager.jl, which adds the tasks of the
// job it runs in.
//
// Inside an allocation (the process runs in a Slurm job: SLURM_JOB_ID is set, as under sbatch,
// salloc or srun) each worker is one job step started with srun, placed on the allocation's
// nodes in turn. Outside one, each Launch first requests an allocation for the asked number of
// workers with salloc (plus the resources given by options), and then starts the workers as
// steps of it. The allocation is held by a salloc whose command reads this process's pipe, so
// that it is released when Close is called, and also when this process dies without calling
// it: Slurm never keeps an allocation of a crashed driver until its time limit.
//
// A request that Slurm queues waits within the launch's deadline (dist.WithLaunchTimeout,
// default one minute); when it passes, the request is withdrawn and the error quotes salloc
// (e.g. "Requested partition configuration not available now").
//
// Workers stop with the job: scancel of the job (or of a worker's step) ends the worker, and the
// cluster reports it gone. A worker also exits when its srun ends, which is how Kill works.
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
// and runs one srun process per worker for the worker's life; workers spread over the nodes
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
	"time"

	"github.com/godist/dist"
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

// WithCPUsPerTask sets the CPUs of each worker, both in a requested allocation (salloc -c) and
// for each worker's step (srun -c).
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

// WithSrunArgs adds arguments to the srun command of each worker, e.g. "--mem=4G".
func WithSrunArgs(args ...string) Option {
	return func(o *options) { o.srunArgs = append(o.srunArgs, args...) }
}

// WithOverlap lets worker steps share CPUs with steps already running in the job (srun
// --overlap). Use it when the driver itself runs as a step of the allocation (started with
// srun) and holds CPUs that the workers would otherwise wait for.
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
	running map[string][]*worker      // job -> workers started in it (ended ones pruned lazily)
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
		running: make(map[string][]*worker),
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

// Launch implements dist.Manager: it starts spec.Count workers as job steps, each on one node of
// the allocation, listening on TCP at that node's address. Outside an allocation it first
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
	type res struct {
		p   dist.Process
		err error
	}
	ch := make(chan res, spec.Count)
	for _, node := range nodes {
		m.mu.Lock()
		m.seq++
		name := fmt.Sprintf("%s-%s-%d", m.o.jobName, m.token, m.seq)
		m.mu.Unlock()
		go func() {
			w, err := m.startWorker(ctx, spec, exe, sl.job, node, name)
			m.mu.Lock()
			m.pending[sl.job][node]--
			if err == nil {
				m.running[sl.job] = append(m.running[sl.job], w)
			}
			m.mu.Unlock()
			if err != nil {
				ch <- res{nil, err}
				return
			}
			ch <- res{w, nil}
		}()
	}
	var procs []dist.Process
	var errs []error
	for i := 0; i < spec.Count; i++ {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		procs = append(procs, r.p)
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
	for _, w := range m.running[sl.job] {
		select {
		case <-w.Done():
		default:
			live = append(live, w)
			used[w.node]++
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

// startWorker runs one worker as a one-task step on node.
func (m *Manager) startWorker(ctx context.Context, spec dist.LaunchSpec, exe, job, node, name string) (*worker, error) {
	addr, err := m.addrOf(ctx, node)
	if err != nil {
		return nil, err
	}
	// The port the caller asked for, if any (a firewall-friendly fixed port); the host is
	// always the node's, since the caller's bind address is its own host's.
	port := "0"
	if spec.Config.Network == "tcp" {
		if _, p, err := net.SplitHostPort(spec.Config.Bind); err == nil && p != "" {
			port = p
		}
	}
	spec.Config.Network = "tcp"
	spec.Config.Bind = net.JoinHostPort(addr, port)

	args := []string{
		"--jobid=" + job, "--nodes=1", "--ntasks=1", "--nodelist=" + node,
		"--job-name=" + name,
		// Every task gets srun's stdin: the worker reads its configuration there, and its end
		// (srun gone) tells the worker that the driver is gone.
		"--input=all",
		// Only the CPUs asked for: by default a step takes all of the job's CPUs on its node
		// and the next worker's step would wait for it to end.
		"--exact",
		"--mpi=none",
	}
	if m.o.cpusPerTask > 0 {
		args = append(args, "--cpus-per-task="+strconv.Itoa(m.o.cpusPerTask))
	}
	if m.o.overlap {
		args = append(args, "--overlap")
	}
	args = append(args, m.o.srunArgs...)
	args = append(args, exe)
	cmd := exec.Command("srun", args...)
	cmd.Env = dist.WorkerEnv(os.Environ())
	cp, err := dist.StartCmd(ctx, cmd, spec, node)
	if err != nil {
		return nil, fmt.Errorf("slurm: job %s: %w", job, err)
	}
	return &worker{CmdProcess: cp, job: job, node: node, name: name}, nil
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

// worker is one worker's srun. Kill (inherited) kills srun, which makes Slurm end the step.
type worker struct {
	*dist.CmdProcess
	job, node, name string
}

// Interrupt implements dist.Process: SIGINT to the worker through Slurm (srun itself answers a
// single SIGINT with a status report instead of forwarding it).
func (w *worker) Interrupt() error {
	step, err := stepOf(context.Background(), w.job, w.name)
	if err != nil {
		return err
	}
	_, err = run(context.Background(), "scancel", "--signal=INT", step)
	return err
}

// stepOf finds the step id ("JOB.STEP") of the step named name.
func stepOf(ctx context.Context, job, name string) (string, error) {
	out, err := run(ctx, "squeue", "--noheader", "--steps", "--jobs="+job, "--format=%i|%j")
	if err != nil {
		return "", fmt.Errorf("slurm: finding step %s: %w", name, err)
	}
	for _, line := range strings.Split(out, "\n") {
		if id, n, ok := strings.Cut(strings.TrimSpace(line), "|"); ok && n == name {
			return id, nil
		}
	}
	return "", fmt.Errorf("slurm: no step named %s in job %s (it has ended)", name, job)
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
