package sched_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/godist/dist/internal/sched"
)

// pmapModel is what a Pmap must do, written the obvious way: the fuzz target checks the
// scheduler against it after every step.
type pmapModel struct {
	n        int
	fixed    int
	next     int
	redo     []int
	wait     []waitingItem // by due time, then arrival
	seq      int
	now      time.Time
	failed   map[int]bool // failed items waiting for a decision
	attempts []int
	lost     []int
	taken    []int // runs handed out, by item
	results  []int // final results recorded, by item
	batches  [][]int
}

type waitingItem struct {
	due  time.Time
	seq  int
	item int
}

func (m *pmapModel) queued() int { return len(m.redo) + m.n - m.next }

func (m *pmapModel) left() int {
	l := 0
	for _, r := range m.results {
		if r == 0 {
			l++
		}
	}
	return l
}

// expectTake is the order in which Take must hand out k items: requeued first, then new.
func (m *pmapModel) expectTake(k int) []int {
	var out []int
	for len(out) < k && len(out) < len(m.redo) {
		out = append(out, m.redo[len(out)])
	}
	for i := m.next; len(out) < k && i < m.n; i++ {
		out = append(out, i)
	}
	return out
}

// pmapFuzz drives a Pmap by the bytes of data and checks it against the model.
type pmapFuzz struct {
	t    *testing.T
	s    *sched.Pmap
	m    *pmapModel
	data []byte
}

func (f *pmapFuzz) byte() byte {
	if len(f.data) == 0 {
		return 0
	}
	b := f.data[0]
	f.data = f.data[1:]
	return b
}

func (f *pmapFuzz) check(step string) {
	t, s, m := f.t, f.s, f.m
	t.Helper()
	if s.Queued() != m.queued() || s.Left() != m.left() {
		t.Fatalf("after %s: queued %d, left %d; want %d, %d", step, s.Queued(), s.Left(), m.queued(), m.left())
	}
	w, ok := s.Wake()
	if ok != (len(m.wait) > 0) || ok && !w.Equal(m.wait[0].due) {
		t.Fatalf("after %s: Wake = %v, %v; want %v", step, w, ok, m.wait)
	}
	for i, r := range m.results {
		if r > 1 {
			t.Fatalf("after %s: item %d has %d results", step, i, r)
		}
		if s.Done(i) != (r == 1) {
			t.Fatalf("after %s: Done(%d) = %v", step, i, s.Done(i))
		}
	}
}

func (f *pmapFuzz) take(k int) {
	t, s, m := f.t, f.s, f.m
	want := m.expectTake(k)
	got := s.Take(k)
	if !slices.Equal(got, want) {
		t.Fatalf("Take(%d) = %v, want %v (items to run again first, then in input order)", k, got, want)
	}
	nr := min(len(got), len(m.redo))
	m.redo = m.redo[nr:]
	m.next += len(got) - nr
	for _, i := range got {
		m.taken[i]++
	}
	if len(got) > 0 {
		m.batches = append(m.batches, got)
	}
}

func (f *pmapFuzz) takeSized(workers int) {
	t, s, m := f.t, f.s, f.m
	k := s.Size(workers)
	switch q := m.queued(); {
	case q == 0 && k != 0, q > 0 && (k < 1 || k > q || k > sched.MaxBatch):
		t.Fatalf("Size(%d) = %d with %d queued", workers, k, q)
	case m.fixed > 0 && k != min(m.fixed, q):
		t.Fatalf("Size(%d) = %d with %d queued and a fixed size of %d", workers, k, q, m.fixed)
	}
	if d := s.Depth(k); d < 1 || d > sched.MaxDepth {
		t.Fatalf("Depth(%d) = %d", k, d)
	}
	f.take(k)
}

// popBatch removes and returns a batch in flight chosen by the next byte; nil if none.
func (f *pmapFuzz) popBatch() []int {
	m := f.m
	if len(m.batches) == 0 {
		return nil
	}
	j := int(f.byte()) % len(m.batches)
	b := m.batches[j]
	m.batches = slices.Delete(m.batches, j, j+1)
	return b
}

func (f *pmapFuzz) answer(b []int, failMask byte) {
	t, s, m := f.t, f.s, f.m
	for k, i := range b {
		if failMask&(1<<(k%8)) != 0 {
			a, ok := s.Fail(i)
			m.attempts[i]++
			if !ok || a != m.attempts[i] {
				t.Fatalf("Fail(%d) = %d, %v; want %d", i, a, ok, m.attempts[i])
			}
			m.failed[i] = true
			continue
		}
		if !s.Succeed(i) {
			t.Fatalf("Succeed(%d) of an item in flight: false", i)
		}
		m.results[i]++
	}
}

func (f *pmapFuzz) lose(b []int) {
	t, s, m := f.t, f.s, f.m
	for _, i := range b {
		re, gave := s.Lost(i)
		m.lost[i]++
		if want := m.lost[i] < sched.MaxLost; re != want || gave == want {
			t.Fatalf("Lost(%d), loss %d: %v, %v", i, m.lost[i], re, gave)
		}
		if re {
			m.redo = append(m.redo, i)
		} else {
			m.failed[i] = true
		}
	}
}

func (f *pmapFuzz) decide(i int, how byte) {
	t, s, m := f.t, f.s, f.m
	delete(m.failed, i)
	switch how % 3 {
	case 0: // a substitute value
		if !s.Succeed(i) {
			t.Fatalf("Succeed(%d) of a failed item: false", i)
		}
		m.results[i]++
	case 1: // again at once
		if !s.Retry(i, m.now, 0) {
			t.Fatalf("Retry(%d): false", i)
		}
		m.redo = append(m.redo, i)
	default: // again after a delay
		d := time.Duration(1+how/3) * time.Millisecond
		if !s.Retry(i, m.now, d) {
			t.Fatalf("Retry(%d, %v): false", i, d)
		}
		m.seq++
		w := waitingItem{due: m.now.Add(d), seq: m.seq, item: i}
		k, _ := slices.BinarySearchFunc(m.wait, w, func(a, b waitingItem) int {
			if c := a.due.Compare(b.due); c != 0 {
				return c
			}
			return a.seq - b.seq
		})
		m.wait = slices.Insert(m.wait, k, w)
	}
}

func (f *pmapFuzz) tick(d time.Duration) {
	t, s, m := f.t, f.s, f.m
	m.now = m.now.Add(d)
	want := 0
	for want < len(m.wait) && !m.wait[want].due.After(m.now) {
		m.redo = append(m.redo, m.wait[want].item)
		want++
	}
	m.wait = m.wait[want:]
	if got := s.Tick(m.now); got != want {
		t.Fatalf("Tick queued %d, want %d", got, want)
	}
}

// stale answers an item that is neither in flight nor failed: nothing may change.
func (f *pmapFuzz) stale(i int) {
	t, s, m := f.t, f.s, f.m
	if m.failed[i] || slices.ContainsFunc(m.batches, func(b []int) bool { return slices.Contains(b, i) }) {
		return
	}
	_, failOK := s.Fail(i)
	re, gave := s.Lost(i)
	if s.Succeed(i) || failOK || re || gave || s.Retry(i, m.now, 0) {
		t.Fatalf("item %d, neither in flight nor failed, was answered", i)
	}
}

// FuzzPmap drives the Pmap scheduler through batches answered, failed, lost with their worker,
// retried at once or later, and stale answers, and checks it against a model after every step:
// requeued items go first, then new ones in input order; no item is in flight twice; late
// answers change nothing; and once everything is answered every item has exactly one result.
func FuzzPmap(f *testing.F) {
	f.Add([]byte{10, 0, 0, 4, 0, 1, 0, 0, 4, 1, 0})
	f.Add([]byte{40, 0, 0, 0, 7, 9, 2, 0, 0, 5, 3, 0, 2, 3, 1, 3, 0, 5, 4, 10})
	f.Add([]byte{200, 3, 0, 3, 0, 3, 2, 0, 2, 1, 2, 0, 7, 3, 1, 1, 0, 255, 3, 0, 8, 4, 20, 6, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		n := 1 + int(data[0])
		fixed := int(data[1] % 5) // 0: automatic
		m := &pmapModel{
			n: n, fixed: fixed, now: time.Unix(1_000_000, 0), failed: make(map[int]bool),
			attempts: make([]int, n), lost: make([]int, n), taken: make([]int, n), results: make([]int, n),
		}
		fz := &pmapFuzz{t: t, s: sched.NewPmap(n, fixed), m: m, data: data[2:]}
		for step := 0; len(fz.data) > 0; step++ {
			op := fz.byte()
			switch op % 8 {
			case 0:
				fz.takeSized(1 + int(fz.byte()))
			case 1:
				if b := fz.popBatch(); b != nil {
					fz.answer(b, fz.byte())
				}
			case 2:
				if b := fz.popBatch(); b != nil {
					fz.lose(b)
				}
			case 3:
				if len(m.failed) > 0 {
					ks := sortedKeys(m.failed)
					fz.decide(ks[int(fz.byte())%len(ks)], fz.byte())
				}
			case 4:
				fz.tick(time.Duration(fz.byte()) * time.Millisecond / 4)
			case 5:
				b := fz.byte()
				fz.s.Observe(sched.Sample{
					Items: int(b%16) + 1, Exec: time.Duration(b) * time.Microsecond * 37,
					Over: time.Duration(fz.byte()) * time.Microsecond * 11, InBytes: int(b) << 12, OutBytes: int(b) << 8,
				})
			case 6:
				fz.stale(int(fz.byte()) % n)
			case 7:
				fz.take(int(fz.byte() % 10))
			}
			fz.check(fmt.Sprintf("step %d (op %d)", step, op%8))
		}
		// Answer everything, whatever is left, until every item has its result.
		for round := 0; fz.s.Left() > 0; round++ {
			if round > 10*n+100 {
				t.Fatalf("no progress: %d left", fz.s.Left())
			}
			for len(m.batches) > 0 {
				fz.answer(fz.popBatch(), 0)
			}
			for _, i := range sortedKeys(m.failed) {
				fz.decide(i, 0)
			}
			if w, ok := fz.s.Wake(); ok {
				fz.tick(w.Sub(m.now))
			}
			for m.queued() > 0 {
				fz.takeSized(3)
			}
			fz.check(fmt.Sprintf("completion round %d", round))
		}
		for i := range n {
			if m.results[i] != 1 || m.taken[i] < 1 {
				t.Fatalf("item %d: %d results, handed out %d times", i, m.results[i], m.taken[i])
			}
		}
	})
}

func sortedKeys(m map[int]bool) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// FuzzTasks drives the task scheduler through pushes, runs, failures, processes leaving,
// requeues, dequeues and new priorities, and checks: a process takes the best task it may run
// (lowest priority, then earliest arrival); a task runs on one process at a time, and on each
// process at most once for an all-processes task; every task ends exactly once, with its
// runs' errors; and once every process has drained the queue and every run has ended, every
// task is over.
func FuzzTasks(f *testing.F) {
	f.Add([]byte{3, 0, 5, 0, 1, 1, 2, 2, 0, 4})
	f.Add([]byte{4, 0, 1, 0, 2, 3, 1, 9, 1, 2, 4, 0, 5, 1, 6, 2, 7, 0})
	f.Add([]byte{2, 0, 200, 0, 17, 0, 33, 1, 0, 1, 1, 3, 0, 4, 1, 6, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		nprocs := 1 + int(data[0]%5)
		data = data[1:]
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		s := sched.NewTasks[int]()
		live := map[int]bool{}
		for p := 2; p < 2+nprocs; p++ {
			s.AddProc(sched.Proc{Pid: p, Host: fmt.Sprint("h", p%2)})
			live[p] = true
		}
		var all []*sched.Task[int]
		type run struct {
			t   *sched.Task[int]
			pid int
		}
		var runs []run
		ranOn := map[*sched.Task[int]]map[int]int{} // task → pid → runs started
		ended := map[*sched.Task[int]]int{}
		collect := func() {
			for _, tk := range s.Ready() {
				ended[tk]++
				if ended[tk] > 1 || !tk.Finished() || tk.Queued() || tk.Running() != 0 {
					t.Fatalf("task %d announced twice or while not over", tk.Value)
				}
			}
		}
		targetOf := func(b byte) sched.Target {
			switch b % 4 {
			case 1:
				return sched.Target{Kind: sched.AllProcs}
			case 2:
				return sched.Target{Kind: sched.SomePids, Pids: []int{2 + int(b/4)%6, 2 + int(b/16)%6}}
			case 3:
				return sched.Target{Kind: sched.SomeHosts, Hosts: []string{fmt.Sprint("h", (b/4)%3)}}
			}
			return sched.Target{}
		}
		mayRun := func(tk *sched.Task[int], pid int) bool {
			switch tk.Target.Kind {
			case sched.AllProcs:
				return ranOn[tk][pid] == 0 // pending is checked by the scheduler itself
			case sched.SomePids:
				return slices.Contains(tk.Target.Pids, pid)
			case sched.SomeHosts:
				return slices.Contains(tk.Target.Hosts, fmt.Sprint("h", pid%2))
			}
			return true
		}
		start := func(pid int) {
			if !live[pid] {
				if s.Next(pid) != nil {
					t.Fatalf("process %d, gone, got a task", pid)
				}
				return
			}
			queue := s.Queue()
			tk := s.Next(pid)
			if tk == nil {
				for _, q := range queue {
					if q.Target.Kind != sched.AllProcs && mayRun(q, pid) {
						t.Fatalf("process %d got nothing, but task %d was queued for it", pid, q.Value)
					}
				}
				return
			}
			if !mayRun(tk, pid) {
				t.Fatalf("process %d got task %d (target %+v)", pid, tk.Value, tk.Target)
			}
			for _, q := range queue {
				if q == tk {
					break
				}
				if q.Target.Kind != sched.AllProcs && mayRun(q, pid) {
					t.Fatalf("process %d got task %d, not the better task %d", pid, tk.Value, q.Value)
				}
			}
			if tk.Target.Kind != sched.AllProcs && tk.Running() != 1 {
				t.Fatalf("task %d runs %d times at once", tk.Value, tk.Running())
			}
			if ranOn[tk] == nil {
				ranOn[tk] = map[int]int{}
			}
			ranOn[tk][pid]++
			runs = append(runs, run{tk, pid})
		}
		for len(data) > 0 {
			op := next()
			switch op % 7 {
			case 0: // push
				b := next()
				tk := &sched.Task[int]{Value: len(all), Target: targetOf(b)}
				if !s.Reachable(tk.Target) {
					continue
				}
				all = append(all, tk)
				prio := float64(next() % 4)
				if b%8 == 7 {
					prio = math.NaN()
				}
				s.Push(tk, prio, time.Time{})
			case 1: // a process takes a task
				start(2 + int(next())%6)
			case 2: // a run ends
				if len(runs) > 0 {
					k := int(next()) % len(runs)
					r := runs[k]
					runs = slices.Delete(runs, k, k+1)
					var err error
					if next()%2 == 1 {
						err = fmt.Errorf("task %d failed on %d", r.t.Value, r.pid)
					}
					s.Finish(r.t, err)
				}
			case 3: // a process leaves, its runs cut short
				pid := 2 + int(next())%6
				s.RemoveProc(pid, errStranded)
				delete(live, pid)
				for _, r := range slices.Clone(runs) {
					if r.pid != pid {
						continue
					}
					runs = slices.DeleteFunc(runs, func(x run) bool { return x == r })
					if !s.Requeue(r.t) {
						s.Finish(r.t, errStranded)
					}
				}
			case 4: // dequeue
				if len(all) > 0 {
					tk := all[int(next())%len(all)]
					was := tk.Queued()
					if s.Dequeue(tk, errDequeued) != was {
						t.Fatalf("Dequeue of task %d, queued %v", tk.Value, was)
					}
				}
			case 5: // new priorities
				b := next()
				s.Reprioritize(func(tk *sched.Task[int], cur float64) float64 {
					return float64((tk.Value * int(b)) % 5)
				})
			case 6: // a process joins (a pid that left never comes back)
				pid := 2 + int(next())%6
				s.AddProc(sched.Proc{Pid: pid, Host: fmt.Sprint("h", pid%2)})
				if !s.Gone(pid) {
					live[pid] = true
				}
			}
			q := s.Queue()
			if !slices.IsSortedFunc(q, func(a, b *sched.Task[int]) int {
				if a.Priority() != b.Priority() {
					return cmpFloat(a.Priority(), b.Priority())
				}
				return 0
			}) {
				t.Fatal("queue not sorted by priority")
			}
			collect()
		}
		// End every run, drain the queue on every live process, then drop what no process
		// can take (a host without processes): every task must then be over, once.
		for len(runs) > 0 {
			s.Finish(runs[0].t, nil)
			runs = runs[1:]
		}
		for progress := true; progress; {
			progress = false
			for pid := range 8 {
				if live[pid] {
					for tk := s.Next(pid); tk != nil; tk = s.Next(pid) {
						s.Finish(tk, nil)
						progress = true
					}
				}
			}
		}
		s.Drop(errDequeued)
		collect()
		for _, tk := range all {
			if ended[tk] != 1 {
				t.Fatalf("task %d (target %+v) ended %d times", tk.Value, tk.Target, ended[tk])
			}
			if tk.Target.Kind != sched.AllProcs && len(tk.Errs()) > 1 {
				t.Fatalf("task %d: %d errors for one run", tk.Value, len(tk.Errs()))
			}
		}
	})
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
