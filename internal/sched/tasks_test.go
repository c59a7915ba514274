package sched_test

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/godist/dist/internal/sched"
)

var (
	errDequeued = errors.New("dequeued")
	errStranded = errors.New("stranded")
	inf         = math.Inf(1)
)

func task(name string, tg sched.Target) *sched.Task[string] {
	return &sched.Task[string]{Value: name, Target: tg}
}

func anyT() sched.Target              { return sched.Target{} }
func allT() sched.Target              { return sched.Target{Kind: sched.AllProcs} }
func pidsT(p ...int) sched.Target     { return sched.Target{Kind: sched.SomePids, Pids: p} }
func hostsT(h ...string) sched.Target { return sched.Target{Kind: sched.SomeHosts, Hosts: h} }
func procs(pids ...int) []sched.Proc  { return procsOn("", pids...) }
func names(ts []*sched.Task[string]) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Value
	}
	return out
}

func procsOn(host string, pids ...int) []sched.Proc {
	out := make([]sched.Proc, len(pids))
	for i, p := range pids {
		out[i] = sched.Proc{Pid: p, Host: host}
	}
	return out
}

func newTasks(ps ...sched.Proc) *sched.Tasks[string] {
	s := sched.NewTasks[string]()
	for _, p := range ps {
		s.AddProc(p)
	}
	return s
}

// drain takes tasks for pid until none is left and returns their names in order, finishing
// each run.
func drain(s *sched.Tasks[string], pid int) []string {
	var out []string
	for t := s.Next(pid); t != nil; t = s.Next(pid) {
		out = append(out, t.Value)
		s.Finish(t, nil)
	}
	return out
}

func TestTasksOrder(t *testing.T) {
	type push struct {
		name string
		prio float64
	}
	for _, c := range []struct {
		name   string
		pushes []push
		reprio map[string]float64 // nil: none
		want   []string
	}{
		{
			name:   "by priority, then arrival; NaN last",
			pushes: []push{{"inf-a", inf}, {"5-a", 5}, {"1", 1}, {"5-b", 5}, {"inf-b", inf}, {"-2", -2}, {"nan", math.NaN()}},
			want:   []string{"-2", "1", "5-a", "5-b", "inf-a", "inf-b", "nan"},
		},
		{
			name:   "reprioritized: ties keep arrival",
			pushes: []push{{"a", inf}, {"b", inf}, {"c", inf}, {"d", inf}, {"e", inf}},
			reprio: map[string]float64{"a": 2, "b": 7, "c": math.NaN(), "d": 1, "e": 2},
			want:   []string{"d", "a", "e", "b", "c"},
		},
		{
			name:   "equal priorities: first in, first out",
			pushes: []push{{"x", 0}, {"y", 0}, {"z", 0}},
			want:   []string{"x", "y", "z"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTasks(procs(2)...)
			for _, p := range c.pushes {
				s.Push(task(p.name, anyT()), p.prio, time.Time{})
			}
			if c.reprio != nil {
				s.Reprioritize(func(tk *sched.Task[string], cur float64) float64 {
					if cur != inf {
						t.Errorf("current priority of %s: %v", tk.Value, cur)
					}
					return c.reprio[tk.Value]
				})
			}
			if got := drain(s, 2); !slices.Equal(got, c.want) {
				t.Fatalf("order %v, want %v", got, c.want)
			}
			if got := len(s.Ready()); got != len(c.want) {
				t.Fatalf("%d tasks finished, want %d", got, len(c.want))
			}
		})
	}
}

func TestTasksTargets(t *testing.T) {
	s := newTasks(sched.Proc{Pid: 2, Host: "h1"}, sched.Proc{Pid: 3, Host: "h2", AddrHost: "10.0.0.3"})
	for i, tk := range []*sched.Task[string]{
		task("on3", pidsT(3)), task("h1", hostsT("h1")), task("ip3", hostsT("10.0.0.3")),
		task("nowhere", hostsT("nowhere")), task("any", anyT()), task("2or3", pidsT(5, 2, 3)),
	} {
		s.Push(tk, float64(i), time.Time{})
	}
	// Each process takes the best task it may run, skipping better ones that are not its own.
	for _, c := range []struct {
		pid  int
		want []string
	}{
		{2, []string{"h1", "any", "2or3"}},
		{3, []string{"on3", "ip3"}},
		{4, nil}, // unknown
	} {
		if got := drain(s, c.pid); !slices.Equal(got, c.want) {
			t.Fatalf("worker %d ran %v, want %v", c.pid, got, c.want)
		}
	}
	if got := names(s.Queue()); !slices.Equal(got, []string{"nowhere"}) {
		t.Fatalf("left in the queue: %v", got)
	}
	// A process joining on the host takes it.
	s.AddProc(sched.Proc{Pid: 4, Host: "nowhere"})
	if got := drain(s, 4); !slices.Equal(got, []string{"nowhere"}) {
		t.Fatalf("worker 4 ran %v", got)
	}
}

func TestTasksAll(t *testing.T) {
	s := newTasks(procs(2, 3, 4)...)
	all, later := task("all", allT()), task("later", anyT())
	s.Push(all, inf, time.Time{})
	s.Push(later, inf, time.Time{})
	if s.Next(2) != all || s.Next(2) != later || s.Next(2) != nil {
		t.Fatal("worker 2 should run all, then later, then nothing")
	}
	if s.Next(3) != all {
		t.Fatal("worker 3 did not get the all-processes task")
	}
	s.RemoveProc(4, errStranded) // never took it: not waited for
	if s.Len() != 0 || all.Queued() {
		t.Fatalf("queue %v", names(s.Queue()))
	}
	boom, bang := errors.New("boom"), errors.New("bang")
	s.Finish(all, boom)
	if len(s.Ready()) != 0 || all.Finished() {
		t.Fatal("finished while worker 3 still runs it")
	}
	s.Finish(all, bang)
	s.Finish(later, nil)
	if r := s.Ready(); !slices.Equal(names(r), []string{"all", "later"}) {
		t.Fatalf("ready %v", names(r))
	}
	if !slices.Equal(all.Errs(), []error{boom, bang}) || len(later.Errs()) != 0 {
		t.Fatalf("errors %v, %v", all.Errs(), later.Errs())
	}
	if !s.Reachable(allT()) {
		t.Fatal("an all-processes task refused with processes")
	}
	s.RemoveProc(2, errStranded)
	s.RemoveProc(3, errStranded)
	if s.Reachable(allT()) {
		t.Fatal("an all-processes task accepted without processes")
	}
}

func TestTasksProcessLeaves(t *testing.T) {
	s := newTasks(procs(2, 3)...)
	a, b, only3, host := task("a", anyT()), task("b", anyT()), task("only3", pidsT(3)), task("host", hostsT("elsewhere"))
	for _, tk := range []*sched.Task[string]{a, b, only3, host} {
		s.Push(tk, 1, time.Time{})
	}
	if s.Next(3) != a {
		t.Fatal("worker 3 should take a")
	}
	// Worker 3 dies running a: a goes back ahead of b; the task only 3 could run fails; the
	// host task waits on.
	s.RemoveProc(3, errStranded)
	s.RemoveProc(3, errors.New("twice")) // harmless
	if !s.Requeue(a) {
		t.Fatal("a not requeued")
	}
	if r := s.Ready(); len(r) != 1 || r[0] != only3 || !slices.Equal(only3.Errs(), []error{errStranded}) {
		t.Fatalf("ready %v, errs %v", names(r), only3.Errs())
	}
	if got := drain(s, 2); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("worker 2 ran %v", got)
	}
	if !host.Queued() {
		t.Fatal("host task left the queue")
	}
	// A pinned task whose process dies while running it is not requeued.
	pinned := task("pinned", pidsT(2))
	s.Push(pinned, 1, time.Time{})
	if s.Next(2) != pinned {
		t.Fatal("worker 2 should take pinned")
	}
	s.RemoveProc(2, errStranded)
	if s.Requeue(pinned) {
		t.Fatal("a task no process can run was requeued")
	}
	s.AddProc(sched.Proc{Pid: 2}) // a pid is never reused
	if s.Next(2) != nil || !s.Gone(2) {
		t.Fatal("a removed process came back")
	}
	if s.Reachable(pidsT(2)) {
		t.Fatal("a task for a removed process is reachable")
	}
	if s.Requeue(task("all", allT())) {
		t.Fatal("an all-processes run was requeued")
	}
}

func TestTasksDequeue(t *testing.T) {
	s := newTasks(procs(2, 3)...)
	var ts []*sched.Task[string]
	for _, n := range []string{"a", "b", "c", "d"} {
		tk := task(n, anyT())
		ts = append(ts, tk)
		s.Push(tk, 1, time.Time{})
	}
	all := task("all", allT())
	s.Push(all, 0, time.Time{})
	if s.Next(2) != all || s.Next(2) != ts[0] {
		t.Fatal("worker 2 should take all, then a")
	}
	if s.Dequeue(ts[0], errDequeued) {
		t.Fatal("dequeued a running task")
	}
	if !s.Dequeue(ts[2], errDequeued) || s.Dequeue(ts[2], errDequeued) {
		t.Fatal("dequeue c: want true once")
	}
	got := s.DequeueFunc(func(t *sched.Task[string]) bool { return t.Value == "d" || t.Value == "all" }, errDequeued)
	if !slices.Equal(names(got), []string{"all", "d"}) {
		t.Fatalf("DequeueFunc = %v", names(got))
	}
	if r := s.Ready(); !slices.Equal(names(r), []string{"c", "d"}) || !slices.Equal(ts[2].Errs(), []error{errDequeued}) {
		t.Fatalf("ready %v, errs %v", names(r), ts[2].Errs())
	}
	// The all-processes task still runs on worker 2; it is over, dequeued, when that ends.
	s.Finish(all, nil)
	if r := s.Ready(); len(r) != 1 || r[0] != all || !slices.Equal(all.Errs(), []error{errDequeued}) {
		t.Fatalf("ready %v, errs %v", names(r), all.Errs())
	}
	if got := drain(s, 3); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("worker 3 ran %v", got)
	}
	// Drop empties the queue.
	s.Ready()
	s.Push(task("e", anyT()), 1, time.Time{})
	s.Drop(errDequeued)
	if s.Len() != 0 || len(s.Ready()) != 1 {
		t.Fatal("Drop left tasks")
	}
}

func TestTasksPlace(t *testing.T) {
	s := newTasks(sched.Proc{Pid: 2, Host: "h"}, sched.Proc{Pid: 3, Host: "h"}, sched.Proc{Pid: 4, Host: "g"})
	for _, c := range []struct {
		target sched.Target
		want   []int
	}{
		{pidsT(7, 4, 2), []int{4}},
		{hostsT("h"), []int{2}},
		{hostsT("g", "h"), []int{2}},
		{allT(), []int{2, 3, 4}},
		{anyT(), []int{3}}, // round robin
		{anyT(), []int{4}},
		{anyT(), []int{2}},
		{hostsT("none"), nil},
		{pidsT(9), nil},
	} {
		tk := task("x", c.target)
		if got := s.Place(tk); !slices.Equal(got, c.want) || tk.Running() != len(c.want) {
			t.Errorf("Place(%+v) = %v, running %d; want %v", c.target, got, tk.Running(), c.want)
		}
	}
}
