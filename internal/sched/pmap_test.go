package sched_test

import (
	"container/heap"
	"slices"
	"testing"
	"time"

	"github.com/godist/dist/internal/sched"
)

func TestPmapSizes(t *testing.T) {
	s := sched.NewPmap(100_000, 0)
	if b := s.Size(2); b != 1 {
		t.Fatalf("first batch %d, want a probe of 1", b)
	}
	if d := s.Depth(1); d != 1 {
		t.Fatalf("depth before any measure %d", d)
	}
	if first := s.Take(1); !slices.Equal(first, []int{0}) {
		t.Fatalf("take = %v", first)
	}
	// Tiny items: a batch holds at most 8 times the items answered so far.
	s.Observe(sched.Sample{Items: 1, Exec: 2 * time.Microsecond, Over: 100 * time.Microsecond, InBytes: 10, OutBytes: 10})
	if b := s.Size(2); b != 8 {
		t.Fatalf("after a probe: %d, want 8", b)
	}
	s.Observe(sched.Sample{Items: 8, Exec: 16 * time.Microsecond, Over: 100 * time.Microsecond, InBytes: 80, OutBytes: 80})
	if b := s.Size(2); b != 72 {
		t.Fatalf("second growth: %d, want 72", b)
	}
	// Short batches are pipelined to hide the round trip.
	if d := s.Depth(64); d < 2 {
		t.Fatalf("depth for 128 µs batches with 100 µs round trips: %d", d)
	}
	for range 10 {
		b := s.Size(2)
		s.Observe(sched.Sample{Items: b, Exec: time.Duration(b) * 2 * time.Microsecond, Over: 100 * time.Microsecond, InBytes: 10 * b, OutBytes: 10 * b})
	}
	// Capped by the target time (25 ms / 2 µs = 12500) and by a share of what is queued.
	if b := s.Size(2); b != 12500 {
		t.Fatalf("steady size %d, want 12500", b)
	}
	if d := s.Depth(12500); d != 2 {
		t.Fatalf("depth for 25 ms batches: %d", d)
	}
	s.Take(100_000 - 1 - 1000)
	if b, want := s.Size(2), (1000+7)/8; b != want {
		t.Fatalf("near the end: %d, want %d (a quarter of a fair share)", b, want)
	}
	// ... but never below a batch whose work is its round trip's: 100 µs / 2 µs.
	if b := s.Size(1000); b != 50 {
		t.Fatalf("near the end on 1,000 workers: %d, want 50", b)
	}
}

func TestPmapSizeLimits(t *testing.T) {
	for _, c := range []struct {
		name    string
		n, b    int // items, fixed batch
		sample  sched.Sample
		workers int
		take    int // items taken before asking
		want    int
		depth   int // 0: not checked
	}{
		{name: "slow items go one at a time, as Julia", n: 50, sample: sched.Sample{Items: 1, Exec: 100 * time.Millisecond, Over: 100 * time.Microsecond}, workers: 2, take: 1, want: 1, depth: 1},
		{name: "1 MiB items: 4 MiB a batch", n: 10_000, sample: sched.Sample{Items: 1, Exec: time.Microsecond, Over: 100 * time.Microsecond, InBytes: 1 << 20, OutBytes: 10}, workers: 1, take: 1, want: 4},
		{name: "1 MiB results: 16 MiB a batch", n: 10_000, sample: sched.Sample{Items: 1, Exec: time.Microsecond, Over: 100 * time.Microsecond, InBytes: 10, OutBytes: 1 << 20}, workers: 1, take: 1, want: 8},
		{name: "fixed", n: 250, b: 100, workers: 4, want: 100},
		{name: "fixed, the end", n: 250, b: 100, workers: 4, take: 200, want: 50},
		{name: "nothing queued", n: 3, workers: 4, take: 3, want: 0},
		{name: "no workers counts as one", n: 1000, sample: sched.Sample{Items: 100, Exec: 100 * time.Microsecond}, workers: 0, want: 250},
		{name: "local: no round trip, no floor", n: 100_000, sample: sched.Sample{Items: 1000, Exec: time.Millisecond}, workers: 1000, want: 25},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := sched.NewPmap(c.n, c.b)
			s.Take(c.take)
			s.Observe(c.sample)
			if got := s.Size(c.workers); got != c.want {
				t.Errorf("Size = %d, want %d", got, c.want)
			}
			if c.depth > 0 {
				if got := s.Depth(c.want); got != c.depth {
					t.Errorf("Depth = %d, want %d", got, c.depth)
				}
			}
		})
	}
}

func TestPmapItemLifecycle(t *testing.T) {
	now := time.Unix(1000, 0)
	s := sched.NewPmap(6, 0)
	got := s.Take(4)
	if !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Fatalf("take %v", got)
	}
	if !s.Succeed(0) || s.Succeed(0) {
		t.Fatal("Succeed: want true once")
	}
	if s.Succeed(5) {
		t.Fatal("an item never handed out succeeded")
	}
	if a, ok := s.Fail(1); !ok || a != 1 {
		t.Fatalf("Fail = %d, %v", a, ok)
	}
	if _, ok := s.Fail(1); ok {
		t.Fatal("an item failed twice in one run")
	}
	if !s.Retry(1, now, 10*time.Millisecond) || s.Retry(1, now, 0) {
		t.Fatal("Retry: want true once")
	}
	// Worker of 2 and 3 exits: both go back, ahead of the new items; 1 waits for its delay.
	for _, i := range []int{2, 3} {
		if re, gave := s.Lost(i); !re || gave {
			t.Fatalf("Lost(%d) = %v, %v", i, re, gave)
		}
	}
	if re, gave := s.Lost(2); re || gave {
		t.Fatal("a queued item was lost")
	}
	if w, ok := s.Wake(); !ok || !w.Equal(now.Add(10*time.Millisecond)) {
		t.Fatalf("Wake = %v, %v", w, ok)
	}
	if n := s.Tick(now.Add(9 * time.Millisecond)); n != 0 {
		t.Fatalf("Tick before the delay queued %d", n)
	}
	if got := s.Take(3); !slices.Equal(got, []int{2, 3, 4}) {
		t.Fatalf("take %v, want requeued items first", got)
	}
	if n := s.Tick(now.Add(10 * time.Millisecond)); n != 1 {
		t.Fatalf("Tick at the delay queued %d", n)
	}
	if _, ok := s.Wake(); ok {
		t.Fatal("Wake with nothing waiting")
	}
	if got := s.Take(9); !slices.Equal(got, []int{1, 5}) {
		t.Fatalf("take %v", got)
	}
	// An item lost MaxLost times waits for a decision; a substitute value settles it.
	for k := 1; k < sched.MaxLost; k++ {
		if re, _ := s.Lost(5); !re || !slices.Equal(s.Take(1), []int{5}) {
			t.Fatalf("loss %d not requeued", k)
		}
	}
	if re, gave := s.Lost(5); re || !gave {
		t.Fatalf("loss %d: %v, %v", sched.MaxLost, re, gave)
	}
	for _, i := range []int{1, 2, 3, 4, 5} {
		if !s.Succeed(i) {
			t.Fatalf("Succeed(%d) false", i)
		}
	}
	if s.Left() != 0 || s.Queued() != 0 || !s.Done(5) {
		t.Fatalf("left %d, queued %d", s.Left(), s.Queued())
	}
}

// simulate runs a Pmap of n items on workers workers that each take itemCost per item, with
// round trips of rtt, the way dist.Pmap's feeders drive the scheduler: each worker keeps
// Depth batches in flight and runs them one at a time. It returns the calls made and the
// largest batch. Time is simulated: nothing sleeps.
func simulate(t *testing.T, n, workers int, itemCost, rtt time.Duration) (calls, maxBatch int) {
	s := sched.NewPmap(n, 0)
	type worker struct {
		slots    int
		busyTill time.Duration
	}
	ws := make([]worker, workers)
	var q events
	slot := func(w int, now time.Duration) {
		b := s.Size(workers)
		d := s.Depth(b)
		if b == 0 || ws[w].slots > d {
			ws[w].slots--
			return
		}
		idx := s.Take(b)
		calls++
		maxBatch = max(maxBatch, len(idx))
		if ws[w].slots < d && s.Queued() > 0 {
			ws[w].slots++
			heap.Push(&q, event{at: now, w: w})
		}
		start := max(now+rtt/2, ws[w].busyTill)
		exec := time.Duration(len(idx)) * itemCost
		ws[w].busyTill = start + exec
		heap.Push(&q, event{at: start + exec + rtt/2, w: w, idx: idx, exec: exec, over: rtt})
	}
	for w := range ws {
		ws[w].slots = 1
		heap.Push(&q, event{w: w})
	}
	for q.Len() > 0 {
		e := heap.Pop(&q).(event)
		if e.idx != nil {
			for _, i := range e.idx {
				if !s.Succeed(i) {
					t.Fatalf("item %d answered twice", i)
				}
			}
			s.Observe(sched.Sample{Items: len(e.idx), Exec: e.exec, Over: e.over})
		}
		slot(e.w, e.at)
	}
	if s.Left() != 0 {
		t.Fatalf("%d items left", s.Left())
	}
	return calls, maxBatch
}

type event struct {
	at         time.Duration
	w          int
	idx        []int // nil: a slot starts
	exec, over time.Duration
}

type events []event

func (e events) Len() int           { return len(e) }
func (e events) Less(i, j int) bool { return e[i].at < e[j].at }
func (e events) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)        { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// TestPmapCallsAtScale checks that dispatch does not degrade with many workers (issue 18):
// the calls stay O(items / batch), where a batch adapts to the items per worker, instead of
// shrinking to single items at the end of the run.
func TestPmapCallsAtScale(t *testing.T) {
	for _, c := range []struct {
		name          string
		n, workers    int
		item, rtt     time.Duration
		maxCalls      int
		wantMinMaxBch int
	}{
		// 100 no-ops per worker: a probe each, then batches of a round trip's work (100
		// items) or more. Before the floor on the share and growth by items answered, the
		// same simulation made 20,204 calls, none over 9 items (~15,000 measured in issue 18).
		{"100k no-ops on 1,000 workers", 100_000, 1000, 2 * time.Microsecond, 200 * time.Microsecond, 3000, 100},
		{"100k no-ops on 250 workers", 100_000, 250, 2 * time.Microsecond, 200 * time.Microsecond, 1500, 100},      // was 7,301
		{"1M no-ops on 1,000 workers", 1_000_000, 1000, 2 * time.Microsecond, 200 * time.Microsecond, 12_000, 200}, // was 35,856
		// Few items per worker: one call per item at most.
		{"2,000 × 1 ms on 1,000 workers", 2000, 1000, time.Millisecond, 200 * time.Microsecond, 2000, 1},
		// Few workers: batches near the 25 ms target, a handful of calls per worker.
		{"100k no-ops on 4 workers", 100_000, 4, 2 * time.Microsecond, 200 * time.Microsecond, 150, 1000}, // was 206
	} {
		t.Run(c.name, func(t *testing.T) {
			calls, maxBatch := simulate(t, c.n, c.workers, c.item, c.rtt)
			t.Logf("%d calls, largest batch %d", calls, maxBatch)
			if calls > c.maxCalls {
				t.Errorf("%d calls, want at most %d", calls, c.maxCalls)
			}
			if maxBatch < c.wantMinMaxBch {
				t.Errorf("largest batch %d, want at least %d", maxBatch, c.wantMinMaxBch)
			}
		})
	}
}
