package sched

import (
	"math"
	"slices"
	"sort"
	"time"
)

// TargetKind says which processes a Target lets run a task.
type TargetKind int

const (
	AnyProc   TargetKind = iota // any one process, once; the zero Target
	AllProcs                    // every process of the queue when the task is queued, once each
	SomePids                    // any one of Target.Pids, once
	SomeHosts                   // any one process on one of Target.Hosts, once
)

// Target says which processes may run a task. The caller must not change its slices once the
// task is queued.
type Target struct {
	Kind  TargetKind
	Pids  []int    // SomePids
	Hosts []string // SomeHosts: a process's host name, or the host part of its TCP address
}

// Proc is a process that takes tasks, as the scheduler knows it.
type Proc struct {
	Pid      int
	Host     string // its host name
	AddrHost string // the host part of its TCP address; "" for others
}

// Task is one task as the scheduler sees it: the caller's Value and the task's Target, and
// the scheduler's own state, which only a Tasks changes. A Task belongs to one Tasks.
type Task[T any] struct {
	Value  T
	Target Target

	seq      uint64
	prio     float64
	queuedAt time.Time
	inQueue  bool
	running  int
	pending  map[int]bool // AllProcs: processes yet to take it
	dropped  error        // why it left the queue before running everywhere; nil if it did not
	finished bool
	errs     []error
	lost     int // runs lost with their process (Requeue)
}

// Lost returns how many runs of the task were lost with the process that ran them.
func (t *Task[T]) Lost() int { return t.lost }

// Queued reports whether the task (the rest of it, for AllProcs) waits in the queue.
func (t *Task[T]) Queued() bool { return t.inQueue }

// Priority returns the task's priority, meaningful while it is queued.
func (t *Task[T]) Priority() float64 { return t.prio }

// QueuedAt returns the time given to Push; zero if the task was never queued.
func (t *Task[T]) QueuedAt() time.Time { return t.queuedAt }

// Running returns the number of runs of the task under way.
func (t *Task[T]) Running() int { return t.running }

// Finished reports whether the task is over: nothing of it queued or running any more.
func (t *Task[T]) Finished() bool { return t.finished }

// Errs returns the errors of the task's runs in the order they finished, followed by the
// reason it left the queue early (Dequeue, Drop, RemoveProc), if it did.
func (t *Task[T]) Errs() []error { return t.errs }

// Tasks decides which queued task each process runs next. It holds the queue sorted by
// priority, lower first, and by arrival among equal priorities (a task that Requeue puts back
// keeps its place). A process takes the best task it may run (Next), runs it, and reports the
// end of the run (Finish). Tasks that became over are collected, and handed to the caller by
// Ready, which announces them: the scheduler itself does no IO.
type Tasks[T any] struct {
	seq      uint64
	queue    []*Task[T] // sorted by (prio, seq)
	procs    map[int]Proc
	gone     map[int]bool // processes that left; pids are never reused
	rr       int          // round robin for placing AnyProc tasks
	finished []*Task[T]   // since the last Ready
}

// NewTasks returns an empty scheduler without processes.
func NewTasks[T any]() *Tasks[T] {
	return &Tasks[T]{procs: make(map[int]Proc), gone: make(map[int]bool)}
}

func before[T any](a, b *Task[T]) bool {
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	return a.seq < b.seq
}

func (s *Tasks[T]) insert(t *Task[T]) {
	i := sort.Search(len(s.queue), func(i int) bool { return before(t, s.queue[i]) })
	s.queue = slices.Insert(s.queue, i, t)
	t.inQueue = true
}

func (s *Tasks[T]) unqueue(t *Task[T]) {
	if i := slices.Index(s.queue, t); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
	}
	t.inQueue = false
}

// maybeFinish marks t over once nothing of it is queued or running.
func (s *Tasks[T]) maybeFinish(t *Task[T]) {
	if t.finished || t.inQueue || t.running > 0 {
		return
	}
	t.finished = true
	if t.dropped != nil {
		t.errs = append(t.errs, t.dropped)
	}
	s.finished = append(s.finished, t)
}

// Ready returns the tasks that became over since the last call, in the order they did, for
// the caller to announce.
func (s *Tasks[T]) Ready() []*Task[T] {
	f := s.finished
	s.finished = nil
	return f
}

// Len returns the number of queued tasks.
func (s *Tasks[T]) Len() int { return len(s.queue) }

// Queue returns the queued tasks, the next to run first.
func (s *Tasks[T]) Queue() []*Task[T] { return slices.Clone(s.queue) }

// Gone reports whether pid left (RemoveProc). A pid that left never comes back.
func (s *Tasks[T]) Gone(pid int) bool { return s.gone[pid] }

// AddProc lets p take tasks. A process that left is not added again.
func (s *Tasks[T]) AddProc(p Proc) {
	if !s.gone[p.Pid] {
		s.procs[p.Pid] = p
	}
}

// RemoveProc takes pid out: AllProcs tasks stop waiting for it, and each queued task that only
// it could still run is over, failed with stranded. Removing a pid twice does nothing.
func (s *Tasks[T]) RemoveProc(pid int, stranded error) {
	if s.gone[pid] {
		return
	}
	delete(s.procs, pid)
	s.gone[pid] = true
	for _, t := range slices.Clone(s.queue) {
		switch t.Target.Kind {
		case AllProcs:
			if t.pending[pid] {
				delete(t.pending, pid)
				if len(t.pending) == 0 {
					s.unqueue(t)
					s.maybeFinish(t)
				}
			}
		case SomePids:
			if s.stranded(t) {
				s.unqueue(t)
				t.errs = append(t.errs, stranded)
				s.maybeFinish(t)
			}
		}
	}
}

// stranded reports whether every process a SomePids task may run on has left.
func (s *Tasks[T]) stranded(t *Task[T]) bool {
	for _, p := range t.Target.Pids {
		if !s.gone[p] {
			return false
		}
	}
	return true
}

// Reachable reports whether a task for tg could be queued now: an AllProcs task needs a
// process, a SomePids task one of its pids among the processes. Others always can (a host
// may join later).
func (s *Tasks[T]) Reachable(tg Target) bool {
	switch tg.Kind {
	case AllProcs:
		return len(s.procs) > 0
	case SomePids:
		return slices.ContainsFunc(tg.Pids, func(p int) bool { _, ok := s.procs[p]; return ok })
	}
	return true
}

// Push queues t, which was never queued, with priority prio (NaN counts as +Inf) at time now.
// An AllProcs task waits for every process known now.
func (s *Tasks[T]) Push(t *Task[T], prio float64, now time.Time) {
	if math.IsNaN(prio) {
		prio = math.Inf(1)
	}
	s.seq++
	t.seq, t.prio, t.queuedAt = s.seq, prio, now
	if t.Target.Kind == AllProcs {
		t.pending = make(map[int]bool, len(s.procs))
		for p := range s.procs {
			t.pending[p] = true
		}
	}
	s.insert(t)
}

// matches reports whether pid may run t now.
func (s *Tasks[T]) matches(t *Task[T], pid int) bool {
	p, ok := s.procs[pid]
	if !ok {
		return false
	}
	switch t.Target.Kind {
	case AllProcs:
		return t.pending[pid]
	case SomePids:
		return slices.Contains(t.Target.Pids, pid)
	case SomeHosts:
		return slices.ContainsFunc(t.Target.Hosts, func(h string) bool {
			return h == p.Host || (p.AddrHost != "" && h == p.AddrHost)
		})
	}
	return true
}

// Next takes the best queued task pid may run, marks one run of it under way, and returns
// it; nil if pid may run none.
func (s *Tasks[T]) Next(pid int) *Task[T] {
	for _, t := range s.queue {
		if !s.matches(t, pid) {
			continue
		}
		if t.Target.Kind == AllProcs {
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

// Finish records the end of one run of t (from Next or Place), with its error or nil.
func (s *Tasks[T]) Finish(t *Task[T], err error) {
	t.running--
	if err != nil {
		t.errs = append(t.errs, err)
	}
	s.maybeFinish(t)
}

// Requeue handles a run of t cut short because its process left (RemoveProc it first): the
// task goes back to its place in the queue, ahead of later tasks of its priority, if another
// process may still run it, and Requeue reports true. Otherwise it reports false, and the run
// is to be finished with its error as usual. An AllProcs task is never requeued, nor a task
// lost with its process MaxLost times: it may be what kills them (t.Lost tells).
func (s *Tasks[T]) Requeue(t *Task[T]) bool {
	t.lost++
	if t.Target.Kind == AllProcs || (t.Target.Kind == SomePids && s.stranded(t)) || t.lost >= MaxLost {
		return false
	}
	t.running--
	s.insert(t)
	return true
}

// Dequeue takes t out of the queue before it runs (the rest of it, for AllProcs) and reports
// whether it was queued. The task is over, with reason as its last error, once its runs under
// way end.
func (s *Tasks[T]) Dequeue(t *Task[T], reason error) bool {
	if !t.inQueue {
		return false
	}
	s.unqueue(t)
	t.dropped = reason
	s.maybeFinish(t)
	return true
}

// DequeueFunc dequeues, with reason, every queued task for which pred is true, and returns
// them in queue order.
func (s *Tasks[T]) DequeueFunc(pred func(*Task[T]) bool, reason error) []*Task[T] {
	var out []*Task[T]
	for _, t := range slices.Clone(s.queue) {
		if pred(t) {
			s.Dequeue(t, reason)
			out = append(out, t)
		}
	}
	return out
}

// Reprioritize sets every queued task's priority to fn(task, its current priority) (NaN
// counts as +Inf) and reorders the queue; ties keep their order of arrival.
func (s *Tasks[T]) Reprioritize(fn func(*Task[T], float64) float64) {
	for _, t := range s.queue {
		p := fn(t, t.prio)
		if math.IsNaN(p) {
			p = math.Inf(1)
		}
		t.prio = p
	}
	slices.SortFunc(s.queue, func(a, b *Task[T]) int {
		switch {
		case before(a, b):
			return -1
		case before(b, a):
			return 1
		}
		return 0
	})
}

// Place chooses where to run t, which was never queued, at once and outside the queue, and
// marks those runs under way: every process for AllProcs, the first of its pids that takes
// tasks for SomePids, the lowest matching pid for SomeHosts, round robin for AnyProc. It
// returns nil, and marks nothing, when no process matches.
func (s *Tasks[T]) Place(t *Task[T]) []int {
	var pids []int
	for p := range s.procs {
		if t.Target.Kind == AllProcs || s.matches(t, p) {
			pids = append(pids, p)
		}
	}
	sort.Ints(pids)
	switch {
	case len(pids) == 0:
		return nil
	case t.Target.Kind == AllProcs:
	case t.Target.Kind == SomePids:
		// The first of the target's pids that takes tasks, in the target's order.
		i := slices.IndexFunc(t.Target.Pids, func(p int) bool { return slices.Contains(pids, p) })
		pids = []int{t.Target.Pids[i]}
	case t.Target.Kind == AnyProc:
		s.rr++
		pids = []int{pids[s.rr%len(pids)]}
	default:
		pids = pids[:1]
	}
	t.running = len(pids)
	return pids
}

// Drop dequeues every queued task with reason, as when the queue closes.
func (s *Tasks[T]) Drop(reason error) {
	s.DequeueFunc(func(*Task[T]) bool { return true }, reason)
}
