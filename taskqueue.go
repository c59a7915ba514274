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
	"sync"
	"time"

	"github.com/godist/dist/internal/sched"
)

// A TaskQueue is a thin IO loop around internal/sched's Tasks, a plain data structure with no
// goroutines, IO or clock (etcd raft's shape), which decides the task each process runs next:
// the queue owns one feeder goroutine per process, the calls, the callbacks and the
// announcement of tasks that are over.

// ErrTaskDequeued is matched by Wait of a task removed from its queue before it ran.
var ErrTaskDequeued = errors.New("dist: task dequeued")

// ErrTaskQueueClosed is matched by Wait of a task still queued when its queue was closed, and
// by operations on a closed queue.
var ErrTaskQueueClosed = errors.New("dist: task queue closed")

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
	s       *sched.Tasks[*Task] // which task each process runs next
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
	q := &TaskQueue{c: c, follow: len(pids) == 0, s: sched.NewTasks[*Task](), feeders: make(map[int]*taskFeeder)}
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
func (q *TaskQueue) placeOf(pid int) sched.Proc {
	p := sched.Proc{Pid: pid}
	if pid == q.c.MyID() {
		p.Host, _ = os.Hostname()
		return p
	}
	if info, ok := q.c.ProcInfo(pid); ok {
		p.Host = info.Host
		if info.Network == "tcp" {
			if h, _, err := net.SplitHostPort(info.Addr); err == nil {
				p.AddrHost = h
			}
		}
	}
	return p
}

func (q *TaskQueue) addProc(pid int) {
	place := q.placeOf(pid)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.feeders[pid] != nil || q.s.Gone(pid) {
		return
	}
	q.s.AddProc(place)
	f := &taskFeeder{wake: make(chan struct{}, 1), stop: make(chan struct{})}
	q.feeders[pid] = f
	q.wg.Add(1)
	go q.feed(pid, f)
	f.wake <- struct{}{}
}

func (q *TaskQueue) removeProcLocked(pid int) {
	q.s.RemoveProc(pid, &ProcessExitedError{Pid: pid, Cause: errors.New("every process the task targets has exited")})
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
			if st := q.s.Next(pid); st != nil {
				t = st.Value
			}
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
			requeued := q.s.Requeue(&t.st)
			if requeued {
				q.running--
				q.notifyLocked()
				q.flushLocked()
			}
			q.mu.Unlock()
			if requeued {
				return
			}
			if t.st.Lost() >= sched.MaxLost {
				err = fmt.Errorf("%w: task %q, after %d of them: %w", ErrKilledWorker, t.name, t.st.Lost(), err)
			}
		}
		t.callBack(out, err)
		q.mu.Lock()
		q.s.Finish(&t.st, err)
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
	for _, st := range q.s.Ready() {
		t := st.Value
		t.err = joinTaskErrs(st.Errs())
		close(t.done)
	}
	if q.s.Len() == 0 && q.running == 0 {
		for _, ch := range q.idle {
			close(ch)
		}
		q.idle = nil
	}
}

// joinTaskErrs keeps a single error as it is, so that callers can compare it directly.
func joinTaskErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// checkLocked says whether t could be queued or executed now.
func (q *TaskQueue) checkLocked(t *Task) error {
	if t.owner != nil {
		return fmt.Errorf("dist: %v was already queued or executed: a task runs once", t)
	}
	if q.s.Reachable(t.st.Target) {
		return nil
	}
	if t.st.Target.Kind == sched.AllProcs {
		return fmt.Errorf("dist: %v: %w taking tasks", t, ErrNoWorkers)
	}
	return fmt.Errorf("dist: %v: %w: none of them takes tasks from this queue", t, ErrNoWorkers)
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
		if err := q.checkLocked(t); err != nil {
			return err
		}
		if slices.Contains(tasks[:i], t) {
			return fmt.Errorf("dist: %v given twice: a task runs once", t)
		}
	}
	for _, t := range tasks {
		t.owner = q
		q.s.Push(&t.st, priority, now)
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
	ok := q.s.Dequeue(&t.st, ErrTaskDequeued)
	q.flushLocked()
	return ok
}

// DequeueFunc dequeues every queued task for which pred returns true and returns them in
// queue order. pred runs under the queue's lock: it must not call the queue's methods.
func (q *TaskQueue) DequeueFunc(pred func(*Task) bool) []*Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	sts := q.s.DequeueFunc(func(st *sched.Task[*Task]) bool { return pred(st.Value) }, ErrTaskDequeued)
	ts := make([]*Task, len(sts))
	for i, st := range sts {
		ts[i] = st.Value
	}
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
	q.s.Reprioritize(func(st *sched.Task[*Task], cur float64) float64 { return fn(st.Value, cur) })
	q.notifyLocked()
}

// Priority returns t's priority and whether t is queued here.
func (q *TaskQueue) Priority(t *Task) (float64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.owner != q || !t.st.Queued() {
		return 0, false
	}
	return t.st.Priority(), true
}

// QueuedAt returns when t was queued here, and whether it was.
func (q *TaskQueue) QueuedAt(t *Task) (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.owner != q || t.st.QueuedAt().IsZero() {
		return time.Time{}, false
	}
	return t.st.QueuedAt(), true
}

// Queued returns the queued tasks, the next to run first.
func (q *TaskQueue) Queued() []*Task {
	q.mu.Lock()
	defer q.mu.Unlock()
	sts := q.s.Queue()
	ts := make([]*Task, len(sts))
	for i, st := range sts {
		ts[i] = st.Value
	}
	return ts
}

// Len returns the number of queued tasks (not counting those running).
func (q *TaskQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.s.Len()
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
	if err := q.checkLocked(t); err != nil {
		q.mu.Unlock()
		return err
	}
	pids := q.s.Place(&t.st)
	if pids == nil {
		q.mu.Unlock()
		return fmt.Errorf("dist: %v: %w: no process of the queue matches", t, ErrNoWorkers)
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
			q.s.Finish(&t.st, err)
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
	if q.s.Len() == 0 && q.running == 0 {
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
	q.s.Drop(ErrTaskQueueClosed)
	q.flushLocked()
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
}
