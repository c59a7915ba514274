package sched

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Tuning of Pmap's automatic batching; dist.Pmap's documentation says what each does.
const (
	// TargetBatch is the time a batch should take on a worker.
	TargetBatch = 25 * time.Millisecond
	// MaxGrowth bounds a batch by this many times the items answered so far, so that a wrong
	// early estimate costs little.
	MaxGrowth = 8
	// Share bounds a batch by 1/Share of a worker's fair share of the items still queued, so
	// that the end of a run stays balanced.
	Share = 4
	// MaxBatch bounds a batch in items.
	MaxBatch = 1 << 16
	// MaxBatchIn and MaxBatchOut bound a batch's encoded items and expected results, in bytes.
	MaxBatchIn  = 4 << 20
	MaxBatchOut = 16 << 20
	// MaxDepth bounds the batches in flight to one worker.
	MaxDepth = 8
	// SlowBatch is the length from which batches go to a worker one at a time.
	SlowBatch = 50 * time.Millisecond
	// MaxLost is how many times, by default, an item may be in flight on a worker that
	// exited before it fails with that worker's exit (SetMaxLost).
	MaxLost = 3
)

// item states in Pmap.state.
const (
	queued  uint8 = iota // waiting to be handed out (new, or to run again)
	flying               // handed out in a batch, no answer yet
	failed               // its run failed: waiting for the caller's decision (Retry or Succeed)
	waiting              // to be queued again at a time (Retry with a delay)
	done                 // has its final result
)

// Sample is what the caller measured of one batch answered, for Pmap.Observe.
type Sample struct {
	Items    int           // items in the batch
	Exec     time.Duration // time the worker spent running them
	Over     time.Duration // the rest of the round trip (network, codec, queues); 0 if unknown
	InBytes  int           // encoded size of the items; 0 if unknown
	OutBytes int           // encoded size of the results; 0 if unknown
}

// Pmap is the dispatcher of one Pmap run over n items, numbered 0 to n-1. It decides which
// items the next batch holds (items to run again first, then new ones in input order) and how
// many, from what was measured of the batches answered, and it keeps each item's state, so
// that every item gets exactly one final result: an item is never in flight twice at once,
// and an answer for an item that is not in flight changes nothing.
//
// The caller sends batches (Take), reports each item's outcome (Succeed, Fail, Lost), decides
// about failed items (Retry, or Succeed with a substitute value, or giving up the run), and
// moves time on (Tick) for retries that wait. The zero Pmap has no items; use NewPmap.
type Pmap struct {
	n     int
	fixed int     // WithBatchSize; 0 for automatic
	next  int     // items [next, n) have never been handed out
	redo  []int   // items to hand out again, served first, in the order they were queued
	left  int     // items without a final result
	state []uint8 // by item

	attempts map[int]int // failed runs by item (Fail)
	lost     map[int]int // runs lost with their worker, by item (Lost)
	maxLost  int         // losses that fail an item (SetMaxLost)
	wait     []timedItem // items waiting to be queued again, by due time then arrival
	seq      uint64      // orders wait among equal due times

	itemNs float64 // execution time per item on a worker (moving average); 0 until measured
	overNs float64 // time per batch not spent executing: round trip and codec
	seen   int     // items answered so far
	inB    float64 // encoded bytes per item
	outB   float64 // encoded bytes per result
}

type timedItem struct {
	due  time.Time
	seq  uint64
	item int
}

// NewPmap returns the dispatcher of a run over n items. batch > 0 fixes the number of items
// per batch (the last ones may hold fewer); batch ≤ 0 sizes batches automatically.
func NewPmap(n, batch int) *Pmap {
	return &Pmap{
		n: n, left: n, fixed: max(batch, 0), state: make([]uint8, n),
		attempts: make(map[int]int), lost: make(map[int]int), maxLost: MaxLost,
	}
}

// LostRuns returns how many times item i was lost with its worker.
func (s *Pmap) LostRuns(i int) int { return s.lost[i] }

// SetMaxLost sets how many times an item may be lost with its worker before Lost gives up on
// it (default MaxLost); k < 1 means 1.
func (s *Pmap) SetMaxLost(k int) { s.maxLost = max(k, 1) }

// Len returns the number of items of the run.
func (s *Pmap) Len() int { return s.n }

// Queued returns the number of items waiting to be handed out.
func (s *Pmap) Queued() int { return len(s.redo) + s.n - s.next }

// Left returns the number of items without a final result. The run is complete at 0.
func (s *Pmap) Left() int { return s.left }

// Done reports whether item i has its final result.
func (s *Pmap) Done(i int) bool { return s.state[i] == done }

// Size returns the number of items the next batch should hold when workers workers take
// items: 0 when none is queued; with a fixed size, that size or what is queued; otherwise one
// item until a batch was measured, then a batch that takes about TargetBatch on a worker,
// bounded by MaxGrowth times the items answered so far, by the byte limits, and by 1/Share
// of a worker's fair share of the items queued (guided self-scheduling, which evens out the end
// of the run) but never, for that last bound, below the work of one batch's overhead.
//
// That floor is what keeps dispatch from degrading with many workers (issue 18): below it, a
// smaller batch makes the end of the run no more even, since a batch's own round trip costs
// more than its work, but it costs another call. Without it, 100,000 no-op items on 1,000
// workers took ~15,000 calls, most of them of a single item at the end of the run.
func (s *Pmap) Size(workers int) int {
	q := s.Queued()
	if q == 0 {
		return 0
	}
	if s.fixed > 0 {
		return min(s.fixed, q)
	}
	if s.itemNs <= 0 {
		return 1 // nothing measured yet: probe with one item
	}
	w := max(workers, 1)
	b := int(min(float64(TargetBatch)/max(s.itemNs, 1), MaxBatch))
	b = min(b, max(s.seen, 1)*MaxGrowth)
	share := (q + Share*w - 1) / (Share * w)
	if s.overNs > 0 {
		share = max(share, int(min(math.Ceil(s.overNs/max(s.itemNs, 1)), MaxBatch)))
	}
	b = min(b, share)
	if s.inB > 0 {
		b = min(b, int(min(MaxBatchIn/s.inB, MaxBatch)))
	}
	if s.outB > 0 {
		b = min(b, int(min(MaxBatchOut/s.outB, MaxBatch)))
	}
	return min(max(b, 1), q) // the floor may exceed what is left
}

// Depth returns how many batches of b items to keep in flight per worker. Two at least, so
// that a worker never waits for the driver between batches (on a busy machine the driver may
// be descheduled for milliseconds), more when batches are short next to the round trip; but
// one for slow batches, as Julia does: an item committed early to a busy worker is one that
// cannot go to a worker that frees up sooner. It is 1 until a batch was measured.
func (s *Pmap) Depth(b int) int {
	if s.itemNs <= 0 || s.overNs <= 0 || b <= 0 {
		return 1
	}
	bd := float64(b) * s.itemNs
	if bd >= float64(SlowBatch) && bd >= 50*s.overNs {
		return 1
	}
	return min(max(1+int(math.Ceil(1.5*s.overNs/bd)), 2), MaxDepth)
}

// Take hands out up to k items, now in flight: those to run again first, then new ones in
// input order.
func (s *Pmap) Take(k int) []int {
	out := make([]int, 0, min(max(k, 0), s.Queued()))
	for len(out) < k && len(s.redo) > 0 {
		out = append(out, s.redo[0])
		s.redo = s.redo[1:]
	}
	for len(out) < k && s.next < s.n {
		out = append(out, s.next)
		s.next++
	}
	for _, i := range out {
		s.state[i] = flying
	}
	return out
}

// Succeed records item i's final result: the value its run returned, or (for a failed item)
// the value that stands in for it. It reports false, and changes nothing, when i is neither in
// flight nor failed: a late or duplicate answer, whose value the caller must drop.
func (s *Pmap) Succeed(i int) bool {
	if st := s.state[i]; st != flying && st != failed {
		return false
	}
	s.state[i] = done
	s.left--
	return true
}

// Fail records that item i's run in flight failed, and returns how many of its runs have
// failed so far, this one included. The item then waits for the caller's decision: Retry,
// Succeed with a substitute value, or failing the whole run. ok is false, and nothing
// changes, when i was not in flight.
func (s *Pmap) Fail(i int) (attempt int, ok bool) {
	if s.state[i] != flying {
		return 0, false
	}
	s.state[i] = failed
	s.attempts[i]++
	return s.attempts[i], true
}

// Lost records that item i was in flight on a worker that exited before answering. The item
// is queued again (requeued), without counting as a failed run, unless this is its maxLost-th
// loss: it then waits for the caller's decision as a failed item does (gaveUp). Both are
// false, and nothing changes, when i was not in flight.
func (s *Pmap) Lost(i int) (requeued, gaveUp bool) {
	if s.state[i] != flying {
		return false, false
	}
	s.lost[i]++
	if s.lost[i] >= s.maxLost {
		s.state[i] = failed
		return false, true
	}
	s.queue(i)
	return true, false
}

// Retry queues failed item i to run again: at once when delay ≤ 0, otherwise once Tick is
// given a time at or past now+delay (the wait holds no worker). It reports false, and changes
// nothing, when i is not a failed item.
func (s *Pmap) Retry(i int, now time.Time, delay time.Duration) bool {
	if s.state[i] != failed {
		return false
	}
	if delay <= 0 {
		s.queue(i)
		return true
	}
	s.state[i] = waiting
	s.seq++
	t := timedItem{due: now.Add(delay), seq: s.seq, item: i}
	k, _ := slices.BinarySearchFunc(s.wait, t, func(a, b timedItem) int {
		if c := a.due.Compare(b.due); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	s.wait = slices.Insert(s.wait, k, t)
	return true
}

// Tick queues the items whose retry delay ended at or before now, in the order they came due,
// and returns how many it queued.
func (s *Pmap) Tick(now time.Time) int {
	k := 0
	for k < len(s.wait) && !s.wait[k].due.After(now) {
		s.queue(s.wait[k].item)
		k++
	}
	s.wait = s.wait[k:]
	return k
}

// Wake returns the time at which the next item waiting for a retry comes due, and false when
// none waits.
func (s *Pmap) Wake() (time.Time, bool) {
	if len(s.wait) == 0 {
		return time.Time{}, false
	}
	return s.wait[0].due, true
}

func (s *Pmap) queue(i int) {
	s.state[i] = queued
	s.redo = append(s.redo, i)
}

// Observe records what was measured of a batch answered; it sizes the batches that follow.
func (s *Pmap) Observe(m Sample) {
	if m.Items <= 0 {
		return
	}
	avg := func(old, v float64) float64 {
		if old <= 0 {
			return v
		}
		return 0.7*old + 0.3*v
	}
	s.itemNs = avg(s.itemNs, max(float64(m.Exec)/float64(m.Items), 1))
	if m.Over > 0 {
		s.overNs = avg(s.overNs, float64(m.Over))
	}
	if m.InBytes > 0 {
		s.inB = avg(s.inB, float64(m.InBytes)/float64(m.Items))
	}
	if m.OutBytes > 0 {
		s.outB = avg(s.outB, float64(m.OutBytes)/float64(m.Items))
	}
	s.seen += m.Items
}
