package dist

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist/internal/wire"
)

// The refTable and refHold tests drive weighted reference counting directly: the table is a
// plain data structure, and a refHold only needs a Cluster whose owner is this process, so
// releases and growths apply to the local table without any connection.

func rtTable() *refTable {
	t := new(refTable)
	t.init()
	return t
}

// rtWeight returns k's weight in t and whether k is filed.
func rtWeight(t *refTable, k refKey) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[k]
	if !ok {
		return 0, false
	}
	return e.weight, true
}

func rtShared(t *refTable, k refKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[k]
	return e != nil && e.shared
}

func rtCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rtWaitErr waits (bounded) for e and returns the error it holds.
func rtWaitErr(t *testing.T, e *refEntry) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("entry was never set")
	}
	return err
}

func TestRefTableAddThenDrop(t *testing.T) {
	tb := rtTable()
	k := refKey{whence: 2, num: 1}
	e := tb.add(k, initialWeight)
	if e == nil || tb.Len() != 1 {
		t.Fatalf("after add: entry %v, Len %d; want an entry and Len 1", e, tb.Len())
	}
	if w, _ := rtWeight(tb, k); w != initialWeight {
		t.Fatalf("weight = %d, want %d", w, initialWeight)
	}
	if e2 := tb.add(k, 0); e2 != e {
		t.Fatal("add on an existing key returned a different entry")
	}
	tb.drop(k, initialWeight, 2)
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after all weight came back, want 0", tb.Len())
	}
}

func TestRefTablePartialDrops(t *testing.T) {
	tb := rtTable()
	k := refKey{whence: 2, num: 1}
	tb.add(k, 100)
	for _, d := range []struct {
		w    int64
		from int
	}{{50, 2}, {25, 3}, {24, 4}} {
		tb.drop(k, d.w, d.from)
		if tb.Len() != 1 {
			t.Fatalf("entry freed while weight is still out")
		}
	}
	if w, _ := rtWeight(tb, k); w != 1 {
		t.Fatalf("weight = %d, want 1", w)
	}
	tb.drop(k, 1, 2)
	if tb.Len() != 0 {
		t.Fatalf("Len = %d, want 0", tb.Len())
	}
	// Other keys are independent.
	k1, k2 := refKey{2, 1}, refKey{3, 1}
	tb.add(k1, 10)
	tb.add(k2, 10)
	tb.drop(k1, 10, 2)
	if _, ok := rtWeight(tb, k2); !ok || tb.Len() != 1 {
		t.Fatalf("dropping %v freed %v (Len %d)", k1, k2, tb.Len())
	}
}

func TestRefTableDropBeforeAdd(t *testing.T) {
	// A release from a third process may overtake the request that creates the value.
	tb := rtTable()
	k := refKey{whence: 2, num: 5}
	tb.drop(k, 10, 3)
	if tb.Len() != 1 {
		t.Fatalf("Len = %d after an early drop, want 1: the entry must be kept", tb.Len())
	}
	if w, _ := rtWeight(tb, k); w != -10 {
		t.Fatalf("weight = %d, want -10", w)
	}
	if !rtShared(tb, k) {
		t.Fatal("a drop from another process did not mark the entry shared")
	}
	tb.add(k, 4)
	if tb.Len() != 1 {
		t.Fatal("entry freed at weight -6")
	}
	tb.add(k, 6)
	if tb.Len() != 0 {
		t.Fatalf("Len = %d once the add brought the weight to zero, want 0", tb.Len())
	}
}

func TestRefTableGetCreatesEntry(t *testing.T) {
	// A fetch may arrive before the value exists: get files an empty entry to wait on.
	ctx := rtCtx(t)
	tb := rtTable()
	k := refKey{whence: 2, num: 9}
	e := tb.get(k, 2)
	if tb.Len() != 1 || e.isReady() {
		t.Fatalf("get: Len %d, ready %v; want a filed, unset entry", tb.Len(), e.isReady())
	}
	if rtShared(tb, k) {
		t.Fatal("get by the creator marked the entry shared")
	}
	if tb.get(k, 3) != e || !rtShared(tb, k) {
		t.Fatal("get by another process: want the same entry, marked shared")
	}
	if w, _ := rtWeight(tb, k); w != 0 {
		t.Fatalf("get changed the weight to %d", w)
	}
	// The creating request arrives, is answered, and the reference is released.
	if tb.add(k, initialWeight) != e {
		t.Fatal("add did not find the entry get created")
	}
	e.set(wire.Msg{CBOR: []byte{0x01}}, nil, 1, "f")
	m, err := e.wait(ctx)
	if err != nil || !bytes.Equal(m.CBOR, []byte{0x01}) {
		t.Fatalf("wait = (%v, %v)", m, err)
	}
	tb.drop(k, initialWeight, 2)
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after the add/drop cycle, want 0", tb.Len())
	}
}

func TestRefTableDropClosesChannel(t *testing.T) {
	ctx := rtCtx(t)
	tb := rtTable()
	k := refKey{whence: 1, num: 1}
	e := tb.add(k, 8)
	e.ch = newChanStore(2)
	if err := e.ch.put(ctx, &chanItem{raw: 1}); err != nil {
		t.Fatal(err)
	}
	tb.drop(k, 4, 1)
	if err := e.ch.put(ctx, &chanItem{raw: 2}); err != nil {
		t.Fatalf("put while weight is still out: %v", err)
	}
	tb.drop(k, 4, 1)
	if tb.Len() != 0 {
		t.Fatal("entry kept after all weight came back")
	}
	if err := e.ch.put(ctx, &chanItem{raw: 3}); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("put on a freed channel = %v, want ErrChannelClosed", err)
	}
}

func TestRefTableSetWait(t *testing.T) {
	ctx := rtCtx(t)
	e := rtTable().add(refKey{1, 1}, 1)
	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		m, err := e.wait(ctx)
		if err == nil && !bytes.Equal(m.CBOR, []byte("first")) {
			err = errors.New("wrong value: " + string(m.CBOR))
		}
		done <- err
	})
	defer wg.Wait()
	select {
	case err := <-done:
		t.Fatalf("wait returned (%v) before set", err)
	case <-time.After(20 * time.Millisecond):
	}
	e.set(wire.Msg{CBOR: []byte("first")}, nil, 1, "f")
	e.set(wire.Msg{CBOR: []byte("second")}, nil, 1, "f") // ignored
	e.set(wire.Msg{}, errors.New("third"), 1, "f")       // ignored
	if err := <-done; err != nil {
		t.Fatalf("blocked wait: %v", err)
	}
	if !e.isReady() {
		t.Fatal("isReady() = false after set")
	}
	for range 2 {
		m, err := e.wait(ctx)
		if err != nil || string(m.CBOR) != "first" {
			t.Fatalf("wait = (%q, %v), want the first value", m.CBOR, err)
		}
	}
}

func TestRefTableSetError(t *testing.T) {
	ctx := rtCtx(t)
	e := rtTable().add(refKey{1, 1}, 1)
	e.set(wire.Msg{CBOR: []byte("ignored")}, ErrChannelClosed, 3, "fn")
	e.set(wire.Msg{CBOR: []byte("late")}, nil, 3, "fn") // the first result, an error, stays
	_, err := e.wait(ctx)
	var re *RemoteError
	if !errors.As(err, &re) || re.Pid != 3 || re.Func != "fn" {
		t.Fatalf("wait = %v, want a RemoteError from pid 3 in fn", err)
	}
	if !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("wait = %v, want it to match ErrChannelClosed", err)
	}
}

func TestRefTableWaitCancelled(t *testing.T) {
	e := rtTable().get(refKey{2, 1}, 2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled ctx = %v, want context.Canceled", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer dcancel()
	if _, err := e.wait(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past its deadline = %v, want DeadlineExceeded", err)
	}
	if e.isReady() {
		t.Fatal("a cancelled wait set the entry")
	}
}

func TestRefTableForget(t *testing.T) {
	ctx := rtCtx(t)
	tb := rtTable()
	const dead, other = 2, 3
	private := refKey{dead, 1}     // created by dead, touched by nobody else
	fetched := refKey{dead, 2}     // created by dead, fetched by other: kept
	released := refKey{dead, 3}    // created by dead, other's share already back: weight > 0 but shared
	early := refKey{dead, 4}       // other's release overtook the creation, which never comes
	waitedFor := refKey{dead, 5}   // other waits for a value dead would have created
	foreign := refKey{other, 1}    // another creator: untouched
	privateCh := refKey{dead, 6}   // a private channel: closed when freed
	fetchedDone := refKey{dead, 7} // shared, value set, then all weight returned after forget

	pe := tb.add(private, initialWeight)
	fe := tb.add(fetched, initialWeight)
	tb.get(fetched, other)
	tb.add(released, initialWeight)
	tb.drop(released, initialWeight/2, other)
	tb.drop(early, 7, other)
	we := tb.get(waitedFor, other)
	tb.add(foreign, 1)
	ce := tb.add(privateCh, initialWeight)
	ce.ch = newChanStore(1)
	fde := tb.add(fetchedDone, initialWeight)
	tb.get(fetchedDone, other)
	fde.set(wire.Msg{CBOR: []byte("v")}, nil, 1, "f")

	// Waiters blocked before the exit are woken by it.
	var wg sync.WaitGroup
	defer wg.Wait()
	errs := make(chan error, 2)
	for _, e := range []*refEntry{pe, we} {
		wg.Go(func() {
			_, err := e.wait(ctx)
			errs <- err
		})
	}

	tb.forget(dead)

	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrProcessExited) {
				t.Fatalf("waiter woken by forget got %v, want ErrProcessExited", err)
			}
		case <-ctx.Done():
			t.Fatal("waiter not woken by forget")
		}
	}
	for _, k := range []refKey{private, early, waitedFor, privateCh} {
		if _, ok := rtWeight(tb, k); ok {
			t.Errorf("entry %v kept after its creator exited", k)
		}
	}
	for _, k := range []refKey{fetched, released, foreign, fetchedDone} {
		if _, ok := rtWeight(tb, k); !ok {
			t.Errorf("entry %v freed by forget", k)
		}
	}
	if tb.Len() != 4 {
		t.Fatalf("Len = %d after forget, want 4", tb.Len())
	}
	if err := rtWaitErr(t, pe); !errors.Is(err, ErrProcessExited) {
		t.Fatalf("freed entry holds %v, want ErrProcessExited", err)
	}
	var pee *ProcessExitedError
	if err := rtWaitErr(t, pe); !errors.As(err, &pee) || pee.Pid != dead {
		t.Fatalf("freed entry holds %v, want a ProcessExitedError for pid %d", err, dead)
	}
	if err := ce.ch.put(ctx, &chanItem{}); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("put on a channel freed by forget = %v, want ErrChannelClosed", err)
	}
	if fe.isReady() {
		t.Fatal("forget set a kept, shared entry")
	}
	if m, err := fde.wait(ctx); err != nil || string(m.CBOR) != "v" {
		t.Fatalf("kept entry's value = (%q, %v), want v", m.CBOR, err)
	}

	// Kept entries are still freed by their weight's return.
	tb.drop(fetchedDone, initialWeight, other)
	tb.drop(released, initialWeight-initialWeight/2, other)
	tb.drop(fetched, initialWeight, other)
	tb.drop(foreign, 1, other)
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after the kept entries' weight came back, want 0", tb.Len())
	}
	tb.forget(dead) // twice: harmless
}

func TestRefTableEntryAfterForget(t *testing.T) {
	tb := rtTable()
	const dead = 2
	tb.forget(dead)
	k := refKey{dead, 42}

	e := tb.get(k, 3)
	if tb.Len() != 0 {
		t.Fatalf("Len = %d: an entry for a dead creator was filed", tb.Len())
	}
	if !e.isReady() {
		t.Fatal("entry for a dead creator is not already failed")
	}
	err := rtWaitErr(t, e)
	if !errors.Is(err, ErrProcessExited) {
		t.Fatalf("entry for a dead creator holds %v, want ErrProcessExited", err)
	}
	if !strings.Contains(err.Error(), errNeverCreated.Error()) {
		t.Fatalf("error %q does not say the value was never created", err)
	}
	if tb.get(k, 3) == e {
		t.Fatal("the unfiled entry was found again: it should not have been kept")
	}

	// add and drop for the dead creator's keys leave nothing behind either.
	tb.add(k, initialWeight)
	tb.drop(refKey{dead, 43}, 5, 3)
	tb.mu.Lock()
	ne := tb.entry(refKey{dead, 44})
	tb.mu.Unlock()
	if !ne.isReady() || tb.Len() != 0 {
		t.Fatalf("entry(): ready %v, Len %d; want a failed, unfiled entry", ne.isReady(), tb.Len())
	}
	// Other creators are unaffected.
	if e := tb.get(refKey{3, 1}, 3); e.isReady() || tb.Len() != 1 {
		t.Fatalf("entry for a live creator: ready %v, Len %d", e.isReady(), tb.Len())
	}
}

func TestRefTableConcurrentAddDrop(t *testing.T) {
	// Many holders return their shares concurrently, some before the add: exactly the end
	// frees the entry.
	tb := rtTable()
	const keys, shares = 16, 64
	var wg sync.WaitGroup
	for n := range keys {
		k := refKey{2, uint64(n)}
		wg.Go(func() { tb.add(k, shares) })
		for s := range shares {
			wg.Go(func() { tb.drop(k, 1, 3+s%4) })
		}
	}
	wg.Wait()
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after every share came back, want 0", tb.Len())
	}
}

// rtCluster makes a Cluster that is pid 1 and never connects anywhere; the test's cleanup
// shuts it down and checks the release batcher stopped.
func rtCluster(t *testing.T) *Cluster {
	t.Helper()
	c := newCluster(newConfig(nil), []byte("k"), true)
	c.me.Store(1)
	t.Cleanup(func() {
		c.shutdown()
		select {
		case <-c.drops.done:
		default:
			t.Error("release batcher still running after shutdown")
		}
	})
	return c
}

// rtHold files a value owned by c (pid 1) and created by whence, and returns the owner's hold.
func rtHold(c *Cluster, whence int, num uint64, w int64) *refHold {
	id := refID{Owner: 1, Whence: whence, Num: num}
	c.refs.add(id.key(), w)
	return &refHold{c: c, id: id, weight: w}
}

func TestRefHoldRelease(t *testing.T) {
	c := rtCluster(t)
	h := rtHold(c, 1, 1, initialWeight)
	if c.refs.Len() != 1 {
		t.Fatalf("Len = %d, want 1", c.refs.Len())
	}
	h.release()
	if c.refs.Len() != 0 {
		t.Fatalf("Len = %d after the only hold was released, want 0", c.refs.Len())
	}
	if !c.drops.idle() {
		t.Fatal("a local release was queued for sending")
	}
	h.release() // only once: no negative entry appears
	if c.refs.Len() != 0 {
		t.Fatalf("Len = %d after a second release, want 0", c.refs.Len())
	}
	if _, err := h.split(); !errors.Is(err, ErrReleased) {
		t.Fatalf("split after release = %v, want ErrReleased", err)
	}
}

func TestRefHoldSplitConservesWeight(t *testing.T) {
	c := rtCluster(t)
	h := rtHold(c, 2, 1, initialWeight)
	var given []int64
	var sum int64
	for i := range 40 { // 2^40 halves 40 times before reaching 1
		w, err := h.split()
		if err != nil {
			t.Fatalf("split %d: %v", i, err)
		}
		if w <= 0 {
			t.Fatalf("split %d gave %d", i, w)
		}
		given = append(given, w)
		sum += w
		if h.weight+sum != initialWeight {
			t.Fatalf("split %d: held %d + given %d != %d", i, h.weight, sum, int64(initialWeight))
		}
	}
	if h.weight != 1 {
		t.Fatalf("held = %d after 40 splits, want 1", h.weight)
	}
	if w, _ := rtWeight(&c.refs, h.id.key()); w != initialWeight {
		t.Fatalf("splits changed the owner's weight to %d", w)
	}
	// Every copy, in any order, returns its share; the value is freed with the last.
	for i, w := range given {
		(&refHold{c: c, id: h.id, weight: w}).release()
		if c.refs.Len() != 1 {
			t.Fatalf("entry freed after %d of %d shares", i+1, len(given)+1)
		}
	}
	h.release()
	if c.refs.Len() != 0 {
		t.Fatalf("Len = %d after every share came back, want 0", c.refs.Len())
	}
}

func TestRefHoldSplitGrowsAtOne(t *testing.T) {
	c := rtCluster(t)
	h := rtHold(c, 1, 1, 1)
	w, err := h.split()
	if err != nil {
		t.Fatalf("split at weight 1: %v", err)
	}
	tw, _ := rtWeight(&c.refs, h.id.key())
	if tw != 1+initialWeight {
		t.Fatalf("owner's weight = %d, want %d: growRef must add initialWeight", tw, 1+int64(initialWeight))
	}
	if w <= 0 || h.weight <= 0 || w+h.weight != tw {
		t.Fatalf("held %d + given %d, want both > 0 summing to the owner's %d", h.weight, w, tw)
	}
	(&refHold{c: c, id: h.id, weight: w}).release()
	h.release()
	if c.refs.Len() != 0 {
		t.Fatalf("Len = %d after both shares came back, want 0", c.refs.Len())
	}
}

func TestRefHoldSplitGrowRemoteOwnerGone(t *testing.T) {
	// Growing a reference whose owner is not in the cluster fails, and the hold is unchanged.
	c := rtCluster(t)
	h := &refHold{c: c, id: refID{Owner: 7, Whence: 1, Num: 1}, weight: 1}
	if _, err := h.split(); !errors.Is(err, ErrProcessExited) {
		t.Fatalf("split needing a remote growth from a missing owner = %v, want ErrProcessExited", err)
	}
	if h.weight != 1 {
		t.Fatalf("held = %d after a failed growth, want 1", h.weight)
	}
}

func TestRefHoldConcurrentSplitRelease(t *testing.T) {
	// Copies are split off and released concurrently with the holder's own release: whatever
	// the interleaving, all weight comes back and the value is freed.
	c := rtCluster(t)
	h := rtHold(c, 1, 1, initialWeight)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				w, err := h.split()
				if errors.Is(err, ErrReleased) {
					return
				}
				if err != nil {
					t.Errorf("split: %v", err)
					return
				}
				(&refHold{c: c, id: h.id, weight: w}).release()
			}
		})
	}
	wg.Go(func() {
		time.Sleep(time.Millisecond)
		h.release()
	})
	wg.Wait()
	h.release()
	if c.refs.Len() != 0 {
		t.Fatalf("Len = %d, want 0", c.refs.Len())
	}
}

func TestRefHoldRemoteReleaseBatched(t *testing.T) {
	// A release for another owner is queued and sent by the batcher; an owner that is not in
	// the cluster makes the send fail quietly, and the queue drains.
	c := rtCluster(t)
	h := &refHold{c: c, id: refID{Owner: 7, Whence: 1, Num: 1}, weight: 10}
	h.release()
	deadline := time.Now().Add(5 * time.Second)
	for !c.drops.idle() {
		if time.Now().After(deadline) {
			t.Fatal("release to a remote owner was never sent")
		}
		time.Sleep(time.Millisecond)
	}
	if c.refs.Len() != 0 {
		t.Fatalf("a remote release touched the local table: Len %d", c.refs.Len())
	}
}

func TestDropBatch(t *testing.T) {
	tb := rtTable()
	a, b := refKey{2, 1}, refKey{2, 2}
	tb.add(a, 10)
	tb.add(b, 10)
	// A batch that is not whole triples is refused whole: nothing is dropped.
	if err := tb.dropBatch([]int64{2, 1, 10, 2, 2}, 2); !errors.Is(err, ErrTypeMismatch) {
		t.Fatalf("partial triple: %v", err)
	}
	if w, ok := rtWeight(tb, a); !ok || w != 10 {
		t.Fatalf("after a refused batch: weight %d, filed %v", w, ok)
	}
	if err := tb.dropBatch([]int64{2, 1, 10, 2, 2, 4}, 3); err != nil {
		t.Fatal(err)
	}
	if _, ok := rtWeight(tb, a); ok {
		t.Fatal("a value whose weight all came back is still filed")
	}
	if w, ok := rtWeight(tb, b); !ok || w != 6 || !rtShared(tb, b) {
		t.Fatalf("partly dropped by another process: weight %d, filed %v, shared %v", w, ok, rtShared(tb, b))
	}
}
