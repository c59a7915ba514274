package dist

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/godist/dist/internal/sched"
)

// Queued tasks, after PTools.jl: a task is data, a function, an optional callback and a
// target; a TaskQueue (taskqueue.go) runs it on a process its target allows.

// Task is a call waiting in a TaskQueue: a registered function, its argument, an optional
// callback and a target. Make one with NewTask. A task runs once (a TargetAll task once per
// process) and cannot be queued again. Its methods are safe for concurrent use.
type Task struct {
	name     string
	data     any
	exec     func(ctx context.Context, c *Cluster, pid int) (any, error)
	callback func(t *Task, out any, err error) // nil for none; serialised by cbMu
	cbMu     sync.Mutex
	done     chan struct{}
	err      error // set before done is closed

	// The queue's, guarded by its lock.
	owner *TaskQueue
	st    sched.Task[*Task] // the target, and the scheduler's state
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
		name: f.Name(),
		data: in,
		exec: func(ctx context.Context, c *Cluster, pid int) (any, error) {
			return f.Call(ctx, c, pid, in)
		},
		done: make(chan struct{}),
	}
	t.st.Value, t.st.Target = t, target.st
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
func (t *Task) Target() Target { return Target{t.st.Target} }

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
func (t *Task) String() string { return fmt.Sprintf("task %s on %v", t.name, t.Target()) }

func (t *Task) callBack(out any, err error) {
	if t.callback == nil {
		return
	}
	t.cbMu.Lock()
	defer t.cbMu.Unlock()
	t.callback(t, out, err)
}

// Target says which processes of a TaskQueue may run a task. The zero Target is TargetAny.
type Target struct{ st sched.Target }

// TargetAny lets any process of the queue run the task, once.
func TargetAny() Target { return Target{} }

// TargetAll runs the task once on every process of the queue at the time it is queued (or
// executed); processes that join later do not run it, and processes that leave before taking
// it are not waited for.
func TargetAll() Target { return Target{sched.Target{Kind: sched.AllProcs}} }

// TargetPids lets any one of pids run the task, once. A task whose every target process has
// exited fails with an error matching ErrProcessExited.
func TargetPids(pids ...int) Target {
	return Target{sched.Target{Kind: sched.SomePids, Pids: slices.Clone(pids)}}
}

// TargetHosts lets any process on one of hosts run the task, once. A host matches the host
// name a process reports (ProcInfo.Host) or, for a process reached over TCP, the host part of
// its address, so an IP address matches TCP workers only. A task whose hosts match no process
// stays queued until one joins, or until it is dequeued.
func TargetHosts(hosts ...string) Target {
	return Target{sched.Target{Kind: sched.SomeHosts, Hosts: slices.Clone(hosts)}}
}

// String describes the target: "any", "all", "pids [2 3]" or "hosts a,b".
func (tg Target) String() string {
	switch tg.st.Kind {
	case sched.AllProcs:
		return "all"
	case sched.SomePids:
		return fmt.Sprintf("pids %v", tg.st.Pids)
	case sched.SomeHosts:
		return "hosts " + strings.Join(tg.st.Hosts, ",")
	}
	return "any"
}
