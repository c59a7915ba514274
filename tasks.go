package dist

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Queued tasks, after PTools.jl: a task is data, a function, an optional callback and a
// target; a TaskQueue holds tasks by priority and runs one feeder per process that takes the
// best task that process may run. The scheduling decisions are made by taskSched, a plain
// data structure with no goroutines, IO or clock (etcd raft's shape), which TaskQueue drives.

// ErrTaskDequeued is matched by Wait of a task removed from its queue before it ran.
var ErrTaskDequeued = errors.New("dist: task dequeued")

// ErrTaskQueueClosed is matched by Wait of a task still queued when its queue was closed, and
// by operations on a closed queue.
var ErrTaskQueueClosed = errors.New("dist: task queue closed")

type targetKind int

const (
	targetAny targetKind = iota // the zero Target
	targetAll
	targetPids
	targetHosts
)

// Target says which processes of a TaskQueue may run a task. The zero Target is TargetAny.
type Target struct {
	kind  targetKind
	pids  []int
	hosts []string
}

// TargetAny lets any process of the queue run the task, once.
func TargetAny() Target { return Target{kind: targetAny} }

// TargetAll runs the task once on every process of the queue at the time it is queued (or
// executed); processes that join later do not run it, and processes that leave before taking
// it are not waited for.
func TargetAll() Target { return Target{kind: targetAll} }

// TargetPids lets any one of pids run the task, once. A task whose every target process has
// exited fails with an error matching ErrProcessExited.
func TargetPids(pids ...int) Target { return Target{kind: targetPids, pids: slices.Clone(pids)} }

// TargetHosts lets any process on one of hosts run the task, once. A host matches the host
// name a process reports (ProcInfo.Host) or, for a process reached over TCP, the host part of
// its address, so an IP address matches TCP workers only. A task whose hosts match no process
// stays queued until one joins, or until it is dequeued.
func TargetHosts(hosts ...string) Target {
	return Target{kind: targetHosts, hosts: slices.Clone(hosts)}
}

// String describes the target: "any", "all", "pids [2 3]" or "hosts a,b".
func (tg Target) String() string {
	switch tg.kind {
	case targetAll:
		return "all"
	case targetPids:
		return fmt.Sprintf("pids %v", tg.pids)
	case targetHosts:
		return "hosts " + strings.Join(tg.hosts, ",")
	}
	return "any"
}

// Task is a call waiting in a TaskQueue: a registered function, its argument, an optional
// callback and a target. Make one with NewTask. A task runs once (a TargetAll task once per
// process) and cannot be queued again. Its methods are safe for concurrent use.
type Task struct {
	name     string
	data     any
	target   Target
	exec     func(ctx context.Context, c *Cluster, pid int) (any, error)
	callback func(t *Task, out any, err error) // nil for none; serialised by cbMu
	cbMu     sync.Mutex
	done     chan struct{}
	err      error // set before done is closed

	// The scheduler's, guarded by the owning queue's lock.
	owner    *TaskQueue
	queuedAt time.Time
	seq      uint64
	prio     float64
	inQueue  bool
	running  int
	pending  map[int]bool // TargetAll: processes yet to take it
	dequeued bool
	finished bool
	errs     []error
}

// NewTask makes a task that calls f(in) on a process chosen by target. callback, when not
// nil, is called in the driver after each run of f with f's result or error (once per process
// for TargetAll; runs of one task never overlap), before the task is done; it is not called
// for a run cut short by its process's exit when the task is queued again to run elsewhere,
// nor for a task that never ran. It runs on the goroutine that ran the task (a queue's feeder,
// or Execute's caller), so it should return quickly, and must not call the queue's methods
// that take a function argument. A panic in it is not recovered.
func NewTask[In, Out any](f *Func[In, Out], in In, target Target, callback func(t *Task, out Out, err error)) *Task {
	t := &Task{
		name:   f.Name(),
		data:   in,
		target: target,
		exec: func(ctx context.Context, c *Cluster, pid int) (any, error) {
			return f.Call(ctx, c, pid, in)
		},
		done: make(chan struct{}),
	}
	if callback != nil {
		t.callback = func(t *Task, out any, err error) {
			o, _ := out.(Out)
			callback(t, o, err)
		}
	}
	return t
}

// Func returns the name of the task's function.
func (t *Task) Func() string { return t.name }

// Data returns the task's argument, for predicates and priority functions.
func (t *Task) Data() any { return t.data }

// Target returns where the task may run.
func (t *Task) Target() Target { return t.target }

// Done returns a channel closed when the task is over: run (on every target process, for
// TargetAll), failed, dequeued, or dropped by Close.
func (t *Task) Done() <-chan struct{} { return t.done }

// Wait waits until the task is over and returns its error: the function's error (a
// *RemoteError for an error or a panic of a remote function), ErrTaskDequeued,
// ErrTaskQueueClosed, or for TargetAll every process's failure joined.
func (t *Task) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// String names the task's function and target.
func (t *Task) String() string { return fmt.Sprintf("task %s on %v", t.name, t.target) }

func (t *Task) callBack(out any, err error) {
	if t.callback == nil {
		return
	}
	t.cbMu.Lock()
	defer t.cbMu.Unlock()
	t.callback(t, out, err)
}

// taskProc is a process that takes tasks, as the scheduler knows it.
type taskProc struct {
	pid      int
	host     string // its host name
	addrHost string // the host part of its TCP address; "" for others
}

// taskSched decides which queued task each process runs next. It holds the queue sorted by
// priority, lower first, and by arrival among equal priorities. It does no IO: tasks it has
// finished are collected and handed to the caller by ready, which makes them known.
type taskSched struct {
	seq      uint64
	queue    []*Task // sorted by (prio, seq)
	procs    map[int]taskProc
	gone     map[int]bool // processes that left; pids are never reused
	rr       int          // round robin for executing TargetAny tasks
	finished []*Task      // since the last ready
}

func newTaskSched() *taskSched {
	return &taskSched{procs: make(map[int]taskProc), gone: make(map[int]bool)}
}

func taskBefore(a, b *Task) bool {
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	return a.seq < b.seq
}

func (s *taskSched) insert(t *Task) {
	i := sort.Search(len(s.queue), func(i int) bool { return taskBefore(t, s.queue[i]) })
	s.queue = slices.Insert(s.queue, i, t)
	t.inQueue = true
}

func (s *taskSched) unqueue(t *Task) {
	if i := slices.Index(s.queue, t); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
	}
	t.inQueue = false
}

// finish marks t over with the errors recorded so far, once nothing of it is queued or running.
func (s *taskSched) maybeFinish(t *Task) {
	if t.finished || t.inQueue || t.running > 0 {
		return
	}
	t.finished = true
	if t.dequeued {
		t.errs = append(t.errs, ErrTaskDequeued)
	}
	s.finished = append(s.finished, t)
}

// ready returns the tasks that became over since the last call, for the caller to announce.
func (s *taskSched) ready() []*Task {
	f := s.finished
	s.finished = nil
	return f
}

func (s *taskSched) addProc(p taskProc) {
	if !s.gone[p.pid] {
		s.procs[p.pid] = p
	}
}

// removeProc takes pid out: TargetAll tasks stop waiting for it, and tasks that only it could
// still run fail. Removing a pid twice does nothing.
func (s *taskSched) removeProc(pid int) {
	if s.gone[pid] {
		return
	}
	delete(s.procs, pid)
	s.gone[pid] = true
	for _, t := range slices.Clone(s.queue) {
		switch t.target.kind {
		case targetAll:
			if t.pending[pid] {
				delete(t.pending, pid)
				if len(t.pending) == 0 {
					s.unqueue(t)
					s.maybeFinish(t)
				}
			}
		case targetPids:
			if s.stranded(t) {
				s.unqueue(t)
				t.errs = append(t.errs, &ProcessExitedError{Pid: pid, Cause: errors.New("every process the task targets has exited")})
				s.maybeFinish(t)
			}
		}
	}
}

// stranded reports whether every process a TargetPids task may run on has left.
func (s *taskSched) stranded(t *Task) bool {
	for _, p := range t.target.pids {
		if !s.gone[p] {
			return false
		}
	}
	return true
}

// check says whether t could be queued or executed now.
func (s *taskSched) check(t *Task) error {
	if t.owner != nil {
		return fmt.Errorf("dist: %v was already queued or executed: a task runs once", t)
	}
	switch t.target.kind {
	case targetAll:
		if len(s.procs) == 0 {
			return fmt.Errorf("dist: %v: %w taking tasks", t, ErrNoWorkers)
		}
	case targetPids:
		if !slices.ContainsFunc(t.target.pids, func(p int) bool { _, ok := s.procs[p]; return ok }) {
			return fmt.Errorf("dist: %v: %w: none of them takes tasks from this queue", t, ErrNoWorkers)
		}
	}
	return nil
}

// push queues t with priority prio (NaN counts as +Inf); check(t) must have passed.
func (s *taskSched) push(t *Task, prio float64, now time.Time) {
	if math.IsNaN(prio) {
		prio = math.Inf(1)
	}
	s.seq++
	t.seq, t.prio, t.queuedAt = s.seq, prio, now
	if t.target.kind == targetAll {
		t.pending = make(map[int]bool, len(s.procs))
		for p := range s.procs {
			t.pending[p] = true
		}
	}
	s.insert(t)
}

// matches reports whether pid may run t now.
func (s *taskSched) matches(t *Task, pid int) bool {
	p, ok := s.procs[pid]
	if !ok {
		return false
	}
	switch t.target.kind {
	case targetAll:
		return t.pending[pid]
	case targetPids:
		return slices.Contains(t.target.pids, pid)
	case targetHosts:
		return slices.ContainsFunc(t.target.hosts, func(h string) bool {
			return h == p.host || (p.addrHost != "" && h == p.addrHost)
		})
	}
	return true
}

// next takes the best task pid may run, marks it running there, and returns it; nil if none.
func (s *taskSched) next(pid int) *Task {
	for _, t := range s.queue {
		if !s.matches(t, pid) {
			continue
		}
		if t.target.kind == targetAll {
			delete(t.pending, pid)
			if len(t.pending) == 0 {
				s.unqueue(t)
			}
		} else {
			s.unqueue(t)
		}
		t.running++
		return t
	}
	return nil
}

// finish records the end of one run of t, with its error.
func (s *taskSched) finish(t *Task, err error) {
	t.running--
	if err != nil {
		t.errs = append(t.errs, err)
	}
	s.maybeFinish(t)
}

// requeue handles a run of t cut short because its process left (removeProc it first): the
// task goes back to its place in the queue, ahead of later tasks of its priority, if another
// process may still run it, and requeue reports true. Otherwise it reports false, and the run
// is to be finished with its error as usual.
func (s *taskSched) requeue(t *Task) bool {
	if t.target.kind == targetAll || (t.target.kind == targetPids && s.stranded(t)) {
		return false
	}
	t.running--
	s.insert(t)
	return true
}

// dequeue takes t out of the queue before it runs (the rest of it, for TargetAll).
func (s *taskSched) dequeue(t *Task) bool {
	if !t.inQueue {
		return false
	}
	s.unqueue(t)
	t.dequeued = true
	s.maybeFinish(t)
	return true
}

// dequeueFunc dequeues every queued task for which pred is true, in queue order.
func (s *taskSched) dequeueFunc(pred func(*Task) bool) []*Task {
	var out []*Task
	for _, t := range slices.Clone(s.queue) {
		if pred(t) {
			s.dequeue(t)
			out = append(out, t)
		}
	}
	return out
}

// reprioritize sets every queued task's priority to fn(task, current priority) and reorders
// the queue; ties keep their order of arrival.
func (s *taskSched) reprioritize(fn func(*Task, float64) float64) {
	for _, t := range s.queue {
		p := fn(t, t.prio)
		if math.IsNaN(p) {
			p = math.Inf(1)
		}
		t.prio = p
	}
	slices.SortFunc(s.queue, func(a, b *Task) int {
		switch {
		case taskBefore(a, b):
			return -1
		case taskBefore(b, a):
			return 1
		}
		return 0
	})
}

// place chooses where to run t at once, outside the queue, and marks it running there.
func (s *taskSched) place(t *Task) ([]int, error) {
	if err := s.check(t); err != nil {
		return nil, err
	}
	var pids []int
	for p := range s.procs {
		if s.matchesStatic(t, p) {
			pids = append(pids, p)
		}
	}
	sort.Ints(pids)
	switch {
	case len(pids) == 0:
		return nil, fmt.Errorf("dist: %v: %w: no process of the queue matches", t, ErrNoWorkers)
	case t.target.kind == targetAll:
	case t.target.kind == targetPids:
		// The first of the target's pids that takes tasks, in the target's order.
		i := slices.IndexFunc(t.target.pids, func(p int) bool { return slices.Contains(pids, p) })
		pids = []int{t.target.pids[i]}
	case t.target.kind == targetAny:
		s.rr++
		pids = []int{pids[s.rr%len(pids)]}
	default:
		pids = pids[:1]
	}
	t.running = len(pids)
	return pids, nil
}

// matchesStatic is matches for a task that was never queued (no pending set).
func (s *taskSched) matchesStatic(t *Task, pid int) bool {
	if t.target.kind == targetAll {
		_, ok := s.procs[pid]
		return ok
	}
	return s.matches(t, pid)
}

// TaskQueue queues tasks for a set of processes and runs them by priority: lower numbers run
// sooner, equal priorities in order of arrival, and tasks queued without a priority after all
// others (priority +Inf, as in PTools). One feeder goroutine per process takes the best task
// that process may run whenever it is idle, so each process runs one task of the queue at a
// time. A process that exits leaves the queue; a task whose process exits while running it
// goes back to its place in the queue if another process may run it (so a task may run more
// than once: make its function safe to repeat). Methods are safe for concurrent use.
type TaskQueue struct {
	c      *Cluster
	follow bool
	unsub  func()
	ctx    context.Context // ends at Close: cancels the running tasks
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	s       *taskSched
	feeders map[int]*taskFeeder
	running int // tasks being run by feeders
	paused  bool
	closed  bool
	idle    []chan struct{} // Wait callers
}

type taskFeeder struct {
	wake chan struct{} // buffered 1: a nudge to look at the queue again
	stop chan struct{} // closed when the process leaves the queue
}

// NewTaskQueue starts a queue feeding the processes pids (pid 1, the driver, may be one). With
// no pids it feeds the cluster's workers and follows the cluster: workers that join later get
// a feeder too. Pids that are not live members are left out. Close the queue when done.
func NewTaskQueue(c *Cluster, pids []int) *TaskQueue {
	q := &TaskQueue{c: c, follow: len(pids) == 0, s: newTaskSched(), feeders: make(map[int]*taskFeeder)}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	// Subscribed before the membership is read, as in NewWorkerSet.
	q.unsub = c.Subscribe(q.onEvent)
	if q.follow {
		pids = c.realWorkers()
	}
	for _, p := range pids {
		if procLive(c, p) {
			q.addProc(p)
		}
	}
	return q
}

func (q *TaskQueue) onEvent(e Event) {
	switch e.Kind {
	case Joined:
		if q.follow && e.Pid != 1 {
			q.addProc(e.Pid)
		}
	case Exited:
		q.mu.Lock()
		defer q.mu.Unlock()
		q.removeProcLocked(e.Pid)
	}
}

// placeOf describes pid for host targeting.
func (q *TaskQueue) placeOf(pid int) taskProc {
	p := taskProc{pid: pid}
	if pid == q.c.MyID() {
		p.host, _ = os.Hostname()
		return p
	}
	if info, ok := q.c.ProcInfo(pid); ok {
		p.host = info.Host
		if info.Network == "tcp" {
			if h, _, err := net.SplitHostPort(info.Addr); err == nil {
				p.addrHost = h
			}
		}
	}
	return p
}

func (q *TaskQueue) addProc(pid int) {
	place := q.placeOf(pid)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.feeders[pid] != nil || q.s.gone[pid] {
		return
	}
	q.s.addProc(place)
	f := &taskFeeder{wake: make(chan struct{}, 1), stop: make(chan struct{})}
	q.feeders[pid] = f
	q.wg.Add(1)
	go q.feed(pid, f)
	f.wake <- struct{}{}
}

func (q *TaskQueue) removeProcLocked(pid int) {
	q.s.removeProc(pid)
	if f := q.feeders[pid]; f != nil {
		close(f.stop)
		delete(q.feeders, pid)
	}
	q.flushLocked()
}

// feed is the feeder of pid: it runs the best task pid may run, one at a time, until pid
// leaves the queue or the queue is closed.
func (q *TaskQueue) feed(pid int, f *taskFeeder) {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		var t *Task
		if !q.paused && !q.closed {
			t = q.s.next(pid)
		}
		if t != nil {
			q.running++
		}
		q.mu.Unlock()
		if t == nil {
			select {
			case <-f.wake:
				continue
			case <-f.stop:
				return
			case <-q.ctx.Done():
				return
			}
		}
		out, err := t.exec(q.ctx, q.c, pid)
		exited := exitedWhileRunning(err, pid)
		if exited {
			// The process is gone: leave the queue now, without waiting for the cluster's
			// event, so that the task is not handed back to this feeder.
			q.mu.Lock()
			q.removeProcLocked(pid)
			requeued := q.s.requeue(t)
			if requeued {
				q.running--
				q.notifyLocked()
				q.flushLocked()
			}
			q.mu.Unlock()
			if requeued {
				return
			}
		}
		t.callBack(out, err)
		q.mu.Lock()
		q.s.finish(t, err)
		q.running--
		q.flushLocked()
		q.mu.Unlock()
		if exited {
			return
		}
	}
}

// notifyLocked nudges every feeder to look at the queue.
func (q *TaskQueue) notifyLocked() {
	for _, f := range q.feeders {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// flushLocked announces the tasks the scheduler finished and wakes Wait callers if the queue
// is idle.
func (q *TaskQueue) flushLocked() {
	for _, t := range q.s.ready() {
		t.err = joinTaskErrs(t.errs)
		close(t.done)
	}
	if len(q.s.queue) == 0 && q.running == 0 {
		for _, ch := range q.idle {
			close(ch)
		}
		q.idle = nil
	}
}

// joinErrs keeps a single error as it is, so that callers can compare it directly.
func joinTaskErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// Enqueue queues tasks after every task already queued (priority +Inf) and returns at once.
// It queues none of them and returns an error if one was already queued or executed, if one
// targets pids none of which is a process of the queue, or if one targets all processes
// while the queue has none.
func (q *TaskQueue) Enqueue(tasks ...*Task) error { return q.EnqueueAt(math.Inf(1), tasks...) }

// EnqueueAt queues tasks with the given priority: lower runs sooner, and among equal
// priorities in order of arrival. NaN counts as +Inf. Errors are those of Enqueue.
func (q *TaskQueue) EnqueueAt(priority float64, tasks ...*Task) error {
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrTaskQueueClosed
	}
	for i, t := range tasks {
		if err := q.s.check(t); err != nil {
			return err
		}
		if slices.Contains(tasks[:i], t) {
			return fmt.Errorf("dist: %v given twice: a task runs once", t)
		}
	}
	for _, t := range tasks {
		t.owner = q
		q.s.push(t, priority, now)
	}
	q.notifyLocked()
	return nil
}

// Dequeue removes t from the queue if it has not been taken by a process yet (for TargetAll,
// the processes that have not taken it yet stop waiting for it) and reports whether it did.
// A dequeued task's Wait returns ErrTaskDequeued.
func (q *TaskQueue) Dequeue(t *Task) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.owner != q {
		return false
	}
	ok := q.s.dequeue(t)
	q.flushLocked()
	return ok
}

// DequeueFunc dequeues every queued task for which pred returns true and returns them in
// queue order. pred runs under the queue's lock: it must not call the queue's methods.
func (q *TaskQueue) DequeueFunc(pred func(*Task) bool) []*Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	ts := q.s.dequeueFunc(pred)
	q.flushLocked()
	return ts
}

// SetPriorities sets the priority of every queued task to fn(task, its current priority)
// (PTools' set_priorities) and reorders the queue; equal priorities keep their order of
// arrival, and NaN counts as +Inf. fn runs under the queue's lock: it must not call the
// queue's methods.
func (q *TaskQueue) SetPriorities(fn func(t *Task, current float64) float64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.s.reprioritize(fn)
	q.notifyLocked()
}

// Priority returns t's priority and whether t is queued here.
func (q *TaskQueue) Priority(t *Task) (float64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.owner != q || !t.inQueue {
		return 0, false
	}
	return t.prio, true
}

// QueuedAt returns when t was queued here, and whether it was.
func (q *TaskQueue) QueuedAt(t *Task) (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.owner != q || t.queuedAt.IsZero() {
		return time.Time{}, false
	}
	return t.queuedAt, true
}

// Queued returns the queued tasks, the next to run first.
func (q *TaskQueue) Queued() []*Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.s.queue)
}

// Len returns the number of queued tasks (not counting those running).
func (q *TaskQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.s.queue)
}

// Pids returns the processes the queue feeds, ascending.
func (q *TaskQueue) Pids() []int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Sorted(maps.Keys(q.feeders))
}

// Pause stops the feeders from taking tasks; tasks already running go on. Tasks can still be
// queued, so that a batch is ordered by priority before any of it runs.
func (q *TaskQueue) Pause() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.paused = true
}

// Resume lets the feeders take tasks again after Pause.
func (q *TaskQueue) Resume() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.paused = false
	q.notifyLocked()
}

// Execute runs t at once, outside the queue and whether or not the queue is paused, on a
// process of the queue that matches its target (the first of its pids that the queue feeds;
// the lowest matching pid for hosts; round robin for TargetAny; every process for TargetAll),
// calls its callback, and returns its error, remote errors included (PTools'
// execute_worker_task). t must not have been queued or executed before. Cancelling ctx
// cancels the call.
func (q *TaskQueue) Execute(ctx context.Context, t *Task) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrTaskQueueClosed
	}
	pids, err := q.s.place(t)
	if err != nil {
		q.mu.Unlock()
		return err
	}
	t.owner = q
	q.mu.Unlock()
	var wg sync.WaitGroup
	for _, pid := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := t.exec(ctx, q.c, pid)
			t.callBack(out, err)
			q.mu.Lock()
			q.s.finish(t, err)
			q.flushLocked()
			q.mu.Unlock()
		}()
	}
	wg.Wait()
	<-t.done
	return t.err
}

// Wait waits until no task is queued or running and returns nil, or ctx's error. Tasks that
// no process can take (a host that has no process) keep the queue from being idle.
func (q *TaskQueue) Wait(ctx context.Context) error {
	q.mu.Lock()
	if len(q.s.queue) == 0 && q.running == 0 {
		q.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	q.idle = append(q.idle, ch)
	q.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the queue: queued tasks fail with ErrTaskQueueClosed, running tasks are
// cancelled (their callbacks see the cancellation), and Close returns once every feeder has
// ended. Close is idempotent.
func (q *TaskQueue) Close() {
	q.unsub() // before taking q.mu: the event callback runs under the cluster's lock
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	for _, t := range slices.Clone(q.s.queue) {
		q.s.unqueue(t)
		t.errs = append(t.errs, ErrTaskQueueClosed)
		q.s.maybeFinish(t)
	}
	q.flushLocked()
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
}
