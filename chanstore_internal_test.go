package dist

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// The chanStore tests drive the owner's side of a RemoteChannel directly: no processes, no IO.
// Every wait is bounded by a context, blocking is observed with short (≤ 50ms) grace periods,
// and every goroutine started is joined before the test returns.

// csTimeout bounds each test as a whole.
const csTimeout = 10 * time.Second

// csGrace is how long an operation that must stay blocked is watched.
const csGrace = 30 * time.Millisecond

func csCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), csTimeout)
	t.Cleanup(cancel)
	return ctx
}

// csItem makes an item whose identity is n.
func csItem(n int) *chanItem { return &chanItem{cbor: []byte{byte(n)}, raw: n} }

func csNum(t *testing.T, it *chanItem) int {
	t.Helper()
	if it == nil {
		t.Fatal("nil item")
	}
	n, ok := it.raw.(int)
	if !ok {
		t.Fatalf("item raw = %#v, want an int", it.raw)
	}
	return n
}

// csResult is the outcome of an operation run in a goroutine.
type csResult struct {
	it  *chanItem
	err error
}

// csGo runs f in a goroutine and returns a channel that delivers its result once; the test's
// cleanup joins the goroutine.
func csGo(t *testing.T, f func() (*chanItem, error)) <-chan csResult {
	t.Helper()
	out := make(chan csResult, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		it, err := f()
		out <- csResult{it, err}
	}()
	t.Cleanup(wg.Wait)
	return out
}

func csPut(t *testing.T, ctx context.Context, s *chanStore, n int) <-chan csResult {
	t.Helper()
	return csGo(t, func() (*chanItem, error) { return nil, s.put(ctx, csItem(n)) })
}

func csTake(t *testing.T, ctx context.Context, s *chanStore, remove bool) <-chan csResult {
	t.Helper()
	return csGo(t, func() (*chanItem, error) { return s.take(ctx, remove) })
}

// csBlocked fails the test if the operation behind ch completes within csGrace.
func csBlocked(t *testing.T, ch <-chan csResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned (%v, %v); want it blocked", what, r.it, r.err)
	case <-time.After(csGrace):
	}
}

// csDone waits (bounded) for the operation behind ch.
func csDone(t *testing.T, ch <-chan csResult, what string) csResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(csTimeout):
		t.Fatalf("%s did not return", what)
		return csResult{}
	}
}

// csWaitLen waits (bounded) until the store holds n items.
func csWaitLen(t *testing.T, s *chanStore, n int) {
	t.Helper()
	deadline := time.Now().Add(csTimeout)
	for s.len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("store holds %d items, want %d", s.len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func csMustTake(t *testing.T, ctx context.Context, s *chanStore, want int) {
	t.Helper()
	it, err := s.take(ctx, true)
	if err != nil {
		t.Fatalf("take: %v", err)
	}
	if got := csNum(t, it); got != want {
		t.Fatalf("take = %d, want %d", got, want)
	}
}

// csEmpty checks that a take finds nothing: it must end with its short deadline.
func csEmpty(t *testing.T, s *chanStore) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), csGrace)
	defer cancel()
	it, err := s.take(ctx, true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("take on an empty store = (%v, %v), want DeadlineExceeded", it, err)
	}
}

func TestChanStoreFIFO(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(5)
	for i := range 5 {
		if err := s.put(ctx, csItem(i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if s.len() != 5 {
		t.Fatalf("len = %d, want 5", s.len())
	}
	for i := range 5 {
		csMustTake(t, ctx, s, i)
	}
	// Interleaved puts and takes keep the order too.
	s = newChanStore(20)
	next := 0
	for i := range 20 {
		if err := s.put(ctx, csItem(i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if i%3 == 2 {
			csMustTake(t, ctx, s, next)
			next++
		}
	}
	for ; next < 20; next++ {
		csMustTake(t, ctx, s, next)
	}
	if s.len() != 0 || s.ready() {
		t.Fatalf("store not empty at the end: len %d", s.len())
	}
}

func TestChanStoreBufferedPutBlocksAtCapacity(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(2)
	for i := range 2 {
		// Below capacity, a put returns at once, with no taker.
		if err := s.put(ctx, csItem(i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	put := csPut(t, ctx, s, 2)
	csBlocked(t, put, "put on a full store")
	if s.len() != 2 {
		t.Fatalf("len = %d while a put is blocked, want 2", s.len())
	}
	csMustTake(t, ctx, s, 0)
	if r := csDone(t, put, "put after a take"); r.err != nil {
		t.Fatalf("put after a take: %v", r.err)
	}
	csMustTake(t, ctx, s, 1)
	csMustTake(t, ctx, s, 2)
}

func TestChanStoreUnbufferedPutWaitsForTaker(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(0)
	put := csPut(t, ctx, s, 7)
	csWaitLen(t, s, 1) // the value is offered...
	if !s.ready() {
		t.Fatal("ready() = false while a put offers a value")
	}
	csBlocked(t, put, "unbuffered put with no taker") // ...but the put has not returned
	csMustTake(t, ctx, s, 7)
	if r := csDone(t, put, "unbuffered put after a take"); r.err != nil {
		t.Fatalf("unbuffered put: %v", r.err)
	}
	if s.ready() || s.len() != 0 {
		t.Fatalf("store not empty after the take: len %d", s.len())
	}
}

func TestChanStoreUnbufferedTakerFirst(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(0)
	take := csTake(t, ctx, s, true)
	csBlocked(t, take, "take on an empty unbuffered store")
	if err := s.put(ctx, csItem(3)); err != nil {
		t.Fatalf("put with a waiting taker: %v", err)
	}
	r := csDone(t, take, "take")
	if r.err != nil || csNum(t, r.it) != 3 {
		t.Fatalf("take = (%v, %v), want 3", r.it, r.err)
	}
}

func TestChanStoreUnbufferedSecondPutWaits(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(0)
	put1 := csPut(t, ctx, s, 1)
	csWaitLen(t, s, 1)
	put2 := csPut(t, ctx, s, 2)
	csBlocked(t, put2, "second unbuffered put")
	if s.len() != 1 {
		t.Fatalf("len = %d with two unbuffered puts pending, want 1 (the second must wait)", s.len())
	}
	csBlocked(t, put1, "first unbuffered put")

	csMustTake(t, ctx, s, 1)
	if r := csDone(t, put1, "first put"); r.err != nil {
		t.Fatalf("first put: %v", r.err)
	}
	csWaitLen(t, s, 1) // the second put now offers its value
	csBlocked(t, put2, "second unbuffered put before its take")
	csMustTake(t, ctx, s, 2)
	if r := csDone(t, put2, "second put"); r.err != nil {
		t.Fatalf("second put: %v", r.err)
	}
}

func TestChanStoreTakeBlocksUntilPut(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(1)
	take := csTake(t, ctx, s, true)
	csBlocked(t, take, "take on an empty store")
	if err := s.put(ctx, csItem(9)); err != nil {
		t.Fatalf("put: %v", err)
	}
	r := csDone(t, take, "take after a put")
	if r.err != nil || csNum(t, r.it) != 9 {
		t.Fatalf("take = (%v, %v), want 9", r.it, r.err)
	}
	if s.len() != 0 {
		t.Fatalf("len = %d after the take, want 0", s.len())
	}
}

func TestChanStoreFetch(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(3)

	fetch := csTake(t, ctx, s, false)
	csBlocked(t, fetch, "fetch on an empty store")
	for i := range 2 {
		if err := s.put(ctx, csItem(i)); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	if r := csDone(t, fetch, "fetch"); r.err != nil || csNum(t, r.it) != 0 {
		t.Fatalf("blocked fetch = (%v, %v), want 0", r.it, r.err)
	}
	for range 3 {
		it, err := s.take(ctx, false)
		if err != nil || csNum(t, it) != 0 {
			t.Fatalf("fetch = (%v, %v), want the head 0", it, err)
		}
	}
	if s.len() != 2 {
		t.Fatalf("len = %d after fetches, want 2: fetch must not remove", s.len())
	}
	csMustTake(t, ctx, s, 0)
	if it, err := s.take(ctx, false); err != nil || csNum(t, it) != 1 {
		t.Fatalf("fetch = (%v, %v), want the new head 1", it, err)
	}
}

func TestChanStoreFetchDoesNotCompleteUnbufferedPut(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(0)
	put := csPut(t, ctx, s, 5)
	csWaitLen(t, s, 1)
	it, err := s.take(ctx, false)
	if err != nil || csNum(t, it) != 5 {
		t.Fatalf("fetch = (%v, %v), want 5", it, err)
	}
	csBlocked(t, put, "unbuffered put after a fetch") // only a take completes it
	csMustTake(t, ctx, s, 5)
	if r := csDone(t, put, "put"); r.err != nil {
		t.Fatalf("put: %v", r.err)
	}
}

func TestChanStoreReady(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(2)
	if s.ready() {
		t.Fatal("ready() on a new store")
	}
	if err := s.put(ctx, csItem(1)); err != nil {
		t.Fatal(err)
	}
	if !s.ready() {
		t.Fatal("ready() = false with one item")
	}
	if _, err := s.take(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !s.ready() {
		t.Fatal("ready() = false after a fetch")
	}
	csMustTake(t, ctx, s, 1)
	if s.ready() {
		t.Fatal("ready() = true after the only item was taken")
	}
	s.close()
	if s.ready() {
		t.Fatal("ready() = true on a closed, empty store")
	}
}

func TestChanStoreClose(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(3)
	for i := range 2 {
		if err := s.put(ctx, csItem(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.close()
	s.close() // idempotent
	if err := s.put(ctx, csItem(99)); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("put after close = %v, want ErrChannelClosed", err)
	}
	if !s.ready() {
		t.Fatal("ready() = false on a closed store with buffered items")
	}
	if it, err := s.take(ctx, false); err != nil || csNum(t, it) != 0 {
		t.Fatalf("fetch after close = (%v, %v), want 0", it, err)
	}
	csMustTake(t, ctx, s, 0) // takes drain what is buffered...
	csMustTake(t, ctx, s, 1)
	for _, remove := range []bool{true, false} {
		// ...and then fail, without blocking.
		if it, err := s.take(ctx, remove); !errors.Is(err, ErrChannelClosed) || it != nil {
			t.Fatalf("take(remove=%v) on a closed, drained store = (%v, %v), want ErrChannelClosed", remove, it, err)
		}
	}
	if s.len() != 0 {
		t.Fatalf("len = %d, want 0", s.len())
	}
}

func TestChanStoreCloseWakesBlockedTakers(t *testing.T) {
	ctx := csCtx(t)
	for _, size := range []int{0, 1} {
		s := newChanStore(size)
		takes := []<-chan csResult{csTake(t, ctx, s, true), csTake(t, ctx, s, true), csTake(t, ctx, s, false)}
		for _, tk := range takes {
			csBlocked(t, tk, "take on an empty store")
		}
		s.close()
		for _, tk := range takes {
			if r := csDone(t, tk, "take woken by close"); !errors.Is(r.err, ErrChannelClosed) || r.it != nil {
				t.Fatalf("size %d: blocked take after close = (%v, %v), want ErrChannelClosed", size, r.it, r.err)
			}
		}
	}
}

func TestChanStoreCloseWakesBlockedBufferedPut(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(1)
	if err := s.put(ctx, csItem(1)); err != nil {
		t.Fatal(err)
	}
	put := csPut(t, ctx, s, 2)
	csBlocked(t, put, "put on a full store")
	s.close()
	if r := csDone(t, put, "put woken by close"); !errors.Is(r.err, ErrChannelClosed) {
		t.Fatalf("blocked put after close = %v, want ErrChannelClosed", r.err)
	}
	csMustTake(t, ctx, s, 1)
	if _, err := s.take(ctx, true); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("take after drain = %v, want ErrChannelClosed (the rejected put must not be buffered)", err)
	}
}

func TestChanStoreCloseWithUnbufferedPutPending(t *testing.T) {
	// Current behaviour, pinned: an unbuffered put that already offers its value when the
	// store is closed is part of what takes drain; it returns once taken. A second put still
	// waiting for room fails with ErrChannelClosed.
	ctx := csCtx(t)
	s := newChanStore(0)
	put1 := csPut(t, ctx, s, 1)
	csWaitLen(t, s, 1)
	put2 := csPut(t, ctx, s, 2)
	csBlocked(t, put2, "second unbuffered put")
	s.close()
	if r := csDone(t, put2, "waiting put woken by close"); !errors.Is(r.err, ErrChannelClosed) {
		t.Fatalf("waiting unbuffered put after close = %v, want ErrChannelClosed", r.err)
	}
	csBlocked(t, put1, "offered unbuffered put after close")
	csMustTake(t, ctx, s, 1)
	if r := csDone(t, put1, "offered put"); r.err != nil {
		t.Fatalf("offered put after its take = %v, want nil", r.err)
	}
	if _, err := s.take(ctx, true); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("take after drain = %v, want ErrChannelClosed", err)
	}
}

func TestChanStoreCancelBlockedTake(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(1)
	tctx, cancel := context.WithCancel(ctx)
	take := csTake(t, tctx, s, true)
	csBlocked(t, take, "take on an empty store")
	cancel()
	if r := csDone(t, take, "cancelled take"); !errors.Is(r.err, context.Canceled) || r.it != nil {
		t.Fatalf("cancelled take = (%v, %v), want context.Canceled", r.it, r.err)
	}
	// The store still works, and the cancelled taker took nothing.
	if err := s.put(ctx, csItem(4)); err != nil {
		t.Fatal(err)
	}
	if s.len() != 1 {
		t.Fatalf("len = %d, want 1", s.len())
	}
	csMustTake(t, ctx, s, 4)

	// A deadline behaves the same.
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer dcancel()
	if _, err := s.take(dctx, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fetch past its deadline = %v, want DeadlineExceeded", err)
	}
}

func TestChanStoreCancelBlockedBufferedPut(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(2)
	for i := range 2 {
		if err := s.put(ctx, csItem(i)); err != nil {
			t.Fatal(err)
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	put := csPut(t, pctx, s, 99)
	csBlocked(t, put, "put on a full store")
	cancel()
	if r := csDone(t, put, "cancelled put"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled put = %v, want context.Canceled", r.err)
	}
	if s.len() != 2 {
		t.Fatalf("len = %d after a cancelled put, want 2", s.len())
	}
	csMustTake(t, ctx, s, 0)
	if err := s.put(ctx, csItem(2)); err != nil {
		t.Fatal(err)
	}
	csMustTake(t, ctx, s, 1)
	csMustTake(t, ctx, s, 2)
	csEmpty(t, s) // the cancelled value never appears
}

func TestChanStoreCancelUnbufferedPutBeforeTake(t *testing.T) {
	ctx := csCtx(t)
	s := newChanStore(0)
	pctx, cancel := context.WithCancel(ctx)
	put := csPut(t, pctx, s, 1)
	csWaitLen(t, s, 1)
	cancel()
	if r := csDone(t, put, "cancelled unbuffered put"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled unbuffered put = %v, want context.Canceled", r.err)
	}
	if s.len() != 0 || s.ready() {
		t.Fatalf("len = %d after a cancelled unbuffered put, want 0: its value must be withdrawn", s.len())
	}
	csEmpty(t, s) // a later take does not see it

	// The store is consistent: a new unbuffered put/take pair works.
	put2 := csPut(t, ctx, s, 2)
	csMustTake(t, ctx, s, 2)
	if r := csDone(t, put2, "put"); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestChanStoreCancelQueuedUnbufferedPut(t *testing.T) {
	// A put waiting behind another unbuffered put is cancelled: the first is unaffected.
	ctx := csCtx(t)
	s := newChanStore(0)
	put1 := csPut(t, ctx, s, 1)
	csWaitLen(t, s, 1)
	pctx, cancel := context.WithCancel(ctx)
	put2 := csPut(t, pctx, s, 2)
	csBlocked(t, put2, "queued unbuffered put")
	cancel()
	if r := csDone(t, put2, "cancelled queued put"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled queued put = %v, want context.Canceled", r.err)
	}
	csMustTake(t, ctx, s, 1)
	if r := csDone(t, put1, "first put"); r.err != nil {
		t.Fatal(r.err)
	}
	csEmpty(t, s)
}

func TestChanStoreCancelledPutRace(t *testing.T) {
	// An unbuffered put cancelled while a taker takes it: either the put reports success and
	// the value was taken, or it reports the cancellation and the value was withdrawn. Never
	// both, never neither.
	ctx := csCtx(t)
	for i := range 100 {
		s := newChanStore(0)
		pctx, cancel := context.WithCancel(ctx)
		put := csPut(t, pctx, s, i)
		csWaitLen(t, s, 1)
		tctx, tcancel := context.WithTimeout(ctx, 10*time.Millisecond)
		take := csTake(t, tctx, s, true)
		cancel()
		pr := csDone(t, put, "put")
		tr := csDone(t, take, "take")
		tcancel()
		switch {
		case pr.err == nil && tr.err == nil && csNum(t, tr.it) == i:
		case errors.Is(pr.err, context.Canceled) && errors.Is(tr.err, context.DeadlineExceeded):
		default:
			t.Fatalf("round %d: put = %v, take = (%v, %v): inconsistent", i, pr.err, tr.it, tr.err)
		}
		if s.len() != 0 {
			t.Fatalf("round %d: len = %d, want 0", i, s.len())
		}
	}
}

func TestChanStoreManyProducersConsumers(t *testing.T) {
	for _, size := range []int{3, 0} {
		csExactlyOnce(t, size, 8, 8, 1000)
	}
}

// csExactlyOnce runs producers × perProducer puts against consumers takers and checks that
// every value arrives exactly once, and that each consumer sees each producer's values in order.
func csExactlyOnce(t *testing.T, size, producers, consumers, perProducer int) {
	t.Helper()
	ctx := csCtx(t)
	s := newChanStore(size)
	total := producers * perProducer
	var pwg, cwg sync.WaitGroup
	perr := make(chan error, producers)
	for p := range producers {
		pwg.Go(func() {
			for i := range perProducer {
				if err := s.put(ctx, csItem(p*perProducer+i)); err != nil {
					perr <- err
					return
				}
			}
		})
	}
	got := make([][]int, consumers)
	cerr := make(chan error, consumers)
	for c := range consumers {
		cwg.Go(func() {
			for {
				it, err := s.take(ctx, true)
				if errors.Is(err, ErrChannelClosed) {
					return
				}
				if err != nil {
					cerr <- err
					return
				}
				got[c] = append(got[c], it.raw.(int))
			}
		})
	}
	pwg.Wait()
	s.close() // consumers drain what is left, then stop
	cwg.Wait()
	close(perr)
	close(cerr)
	for err := range perr {
		t.Fatalf("size %d: put: %v", size, err)
	}
	for err := range cerr {
		t.Fatalf("size %d: take: %v", size, err)
	}
	seen := make([]int, total)
	n := 0
	for c, vs := range got {
		last := make([]int, producers)
		for i := range last {
			last[i] = -1
		}
		for _, v := range vs {
			if v < 0 || v >= total {
				t.Fatalf("size %d: value %d out of range", size, v)
			}
			seen[v]++
			n++
			p, i := v/perProducer, v%perProducer
			if i <= last[p] {
				t.Fatalf("size %d: consumer %d saw producer %d's item %d after %d", size, c, p, i, last[p])
			}
			last[p] = i
		}
	}
	if n != total {
		t.Fatalf("size %d: %d values delivered, want %d", size, n, total)
	}
	for v, k := range seen {
		if k != 1 {
			t.Fatalf("size %d: value %d delivered %d times", size, v, k)
		}
	}
	if s.len() != 0 {
		t.Fatalf("size %d: len = %d at the end, want 0", size, s.len())
	}
}
