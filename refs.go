package dist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/godist/dist/internal/wire"
)

// Distributed reference counting is weighted: the owner of a value records the total weight
// handed out, each reference holds part of it, and passing a reference to another process
// splits the holder's weight without telling the owner. Only releases send messages (batched),
// returning weight; the owner frees the value when all weight is back. Unlike add/remove
// counting (Julia's), no ordering between three processes' messages matters, so a value can
// never be freed while a reference to it is in flight.
//
// Known limit: weight held by a process that crashes is lost, so a value shared with a crashed
// process lives until its owner exits. Values whose only holder was their creator are freed
// when the creator exits.

// initialWeight is what a new reference holds; splits halve it, and a holder down to 1 asks the
// owner for more.
const initialWeight = 1 << 40

// refID names a remote value: the process that owns it and the (creator, number) pair the
// owner files it under.
type refID struct {
	_      struct{} `cbor:",toarray"`
	Owner  int
	Whence int
	Num    uint64
}

func (id refID) key() refKey { return refKey{id.Whence, id.Num} }

type refKey struct {
	whence int
	num    uint64
}

// refEntry is a value kept by its owner: a future's result or a channel.
type refEntry struct {
	mu     sync.Mutex
	weight int64
	shared bool          // someone other than the creator has touched it
	ready  chan struct{} // made by a waiter that comes before the value, closed by set
	isSet  bool
	msg    wire.Msg
	err    *errRecord
	ch     *chanStore
}

func (e *refEntry) set(msg wire.Msg, err error, pid int, fn string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isSet {
		return
	}
	e.isSet = true
	if err != nil {
		e.err = recordOf(pid, fn, err)
	} else {
		e.msg = msg
	}
	if e.ready != nil {
		close(e.ready)
	}
}

// wait returns the stored result once it is set.
func (e *refEntry) wait(ctx context.Context) (wire.Msg, error) {
	if ready := e.readyChan(); ready != closedChan { // a value already there wins over a cancelled ctx
		wire.WillBlock(ctx)
		select {
		case <-ready:
		case <-ctx.Done():
			return wire.Msg{}, ctx.Err()
		}
	}
	if e.err != nil {
		return wire.Msg{}, e.err.toError()
	}
	return e.msg, nil
}

// readyChan returns a channel closed once the value is set. Most values are set before
// anyone waits for them (the reply carries them to their creator), and need none.
func (e *refEntry) readyChan() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.isSet {
		return closedChan
	}
	if e.ready == nil {
		e.ready = make(chan struct{})
	}
	return e.ready
}

func (e *refEntry) isReady() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.isSet
}

// refTable holds the values this process owns.
type refTable struct {
	mu   sync.Mutex
	m    map[refKey]*refEntry
	dead map[int]bool // creators that exited: their missing values will never come
}

func (t *refTable) init() {
	t.m = make(map[refKey]*refEntry)
	t.dead = make(map[int]bool)
}

// entry returns the entry for k, creating an empty one: a fetch or a release may arrive before
// the request that creates the value, over another connection.
func (t *refTable) entry(k refKey) *refEntry {
	e := t.m[k]
	if e == nil {
		e = &refEntry{}
		if len(t.dead) > 0 && t.dead[k.whence] {
			e.set(wire.Msg{}, &ProcessExitedError{Pid: k.whence, Cause: errNeverCreated}, k.whence, "")
			return e // not filed: there is nothing to keep
		}
		t.m[k] = e
	}
	return e
}

// add records w more weight handed out for k and returns its entry.
func (t *refTable) add(k refKey, w int64) *refEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entry(k)
	e.weight += w
	if e.weight == 0 {
		delete(t.m, k)
	}
	return e
}

// addChan is add for a channel entry: the store is made under the table's lock, so that a
// concurrent drop or forget never sees an entry half made.
func (t *refTable) addChan(k refKey, w int64, size int) *refEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entry(k)
	if e.ch == nil {
		e.ch = newChanStore(size)
	}
	e.weight += w
	if e.weight == 0 {
		delete(t.m, k)
		e.ch.close()
	}
	return e
}

// get returns k's entry (creating an empty one) and marks it shared when from is not its creator.
func (t *refTable) get(k refKey, from int) *refEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entry(k)
	if from != k.whence {
		e.shared = true
	}
	return e
}

// drop takes back w weight for k and frees the value when all weight is back.
func (t *refTable) drop(k refKey, w int64, from int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropLocked(k, w, from)
}

func (t *refTable) dropLocked(k refKey, w int64, from int) {
	e := t.entry(k)
	e.weight -= w
	if from != k.whence {
		e.shared = true
	}
	if e.weight == 0 {
		delete(t.m, k)
		if e.ch != nil {
			e.ch.close()
		}
	}
}

// forget handles the exit of pid: values it created that nobody else has touched are freed,
// and values it would have created fail their waiters.
func (t *refTable) forget(pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dead[pid] = true
	for k, e := range t.m {
		if k.whence != pid {
			continue
		}
		if !e.shared || e.weight <= 0 {
			delete(t.m, k)
			e.set(wire.Msg{}, &ProcessExitedError{Pid: pid}, pid, "")
			if e.ch != nil {
				e.ch.close()
			}
		}
	}
}

// Len returns the number of values held, for tests and metrics.
func (t *refTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

var errNeverCreated = errors.New("the value was freed or never created before its creator exited")

// refHold is one process's share of the weight of a reference. It is kept apart from the
// Future or RemoteChannel so that a cleanup can release it when the handle is unreachable.
type refHold struct {
	c      *Cluster
	id     refID
	mu     sync.Mutex
	weight int64
}

// release returns all the weight held, once.
func (h *refHold) release() {
	h.mu.Lock()
	w := h.weight
	h.weight = 0
	h.mu.Unlock()
	if w > 0 {
		h.c.drops.add(h.id, w)
	}
}

// split takes part of the weight for a copy of the reference sent elsewhere.
func (h *refHold) split() (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.weight == 0 {
		return 0, ErrReleased
	}
	if h.weight == 1 {
		ctx, cancel := context.WithTimeout(h.c.ctx, 10*time.Second)
		defer cancel()
		if err := h.c.growRef(ctx, h.id, initialWeight); err != nil {
			return 0, err
		}
		h.weight += initialWeight
	}
	give := h.weight / 2
	h.weight -= give
	return give, nil
}

func (c *Cluster) growRef(ctx context.Context, id refID, w int64) error {
	if id.Owner == c.MyID() {
		c.refs.add(id.key(), w)
		return nil
	}
	fr, err := c.call(ctx, id.Owner, callHeader{Fn: fnGrow}, refDrop{Whence: id.Whence, Num: id.Num, Weight: w})
	if err != nil {
		return err
	}
	_, err = decodeReply[struct{}](fnGrow, fr)
	return err
}

// refDrop is weight returned to an owner.
type refDrop struct {
	_      struct{} `cbor:",toarray"`
	Whence int
	Num    uint64
	Weight int64
}

// A batch of drops travels as a flat []int64 of (whence, num, weight) triples: a raw numeric
// slice, which the codec copies instead of decoding element by element.
const dropWords = 3

// dropBatch takes back the weights of a batch of drops from one process, under one lock.
func (t *refTable) dropBatch(batch []int64, from int) error {
	if len(batch)%dropWords != 0 {
		return fmt.Errorf("%w: a drop batch of %d words is not whole triples", ErrTypeMismatch, len(batch))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < len(batch); i += dropWords {
		t.dropLocked(refKey{int(batch[i]), uint64(batch[i+1])}, batch[i+2], from)
	}
	return nil
}

// dropBatcher sends releases in batches, one message per owner per batch: under load, a
// batch gathers whatever was released while the previous one was being sent.
type dropBatcher struct {
	c       *Cluster
	mu      sync.Mutex
	pending map[int][]int64 // owner → dropWords per drop
	spare   map[int][]int64 // the previous batch's map, emptied, for the next swap
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

func (b *dropBatcher) init(c *Cluster) {
	b.c = c
	b.pending = make(map[int][]int64)
	b.spare = make(map[int][]int64)
	b.wake = make(chan struct{}, 1)
	b.quit = make(chan struct{})
	b.done = make(chan struct{})
	go b.loop()
}

func (b *dropBatcher) add(id refID, w int64) {
	if id.Owner == b.c.MyID() {
		b.c.refs.drop(id.key(), w, id.Owner)
		return
	}
	b.mu.Lock()
	b.pending[id.Owner] = append(b.pending[id.Owner], int64(id.Whence), int64(id.Num), w)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *dropBatcher) loop() {
	defer close(b.done)
	for {
		select {
		case <-b.quit:
			return
		case <-b.wake:
		}
		b.mu.Lock()
		batch := b.pending
		b.pending, b.spare = b.spare, nil
		b.mu.Unlock()
		for owner, drops := range batch {
			if len(drops) == 0 {
				continue
			}
			// An owner that is gone has nothing left to free: the error is not interesting.
			// The batch is copied into the connection's buffer by the time send returns
			// (large ones are written before it returns), so its slice can be reused.
			b.c.send(b.c.ctx, owner, callHeader{Fn: fnDrop}, drops)
			batch[owner] = drops[:0]
		}
		b.mu.Lock()
		// Keep the slices of owners that release often; a slice grown by a burst goes.
		for owner, drops := range batch {
			if cap(drops) > maxDropSlice {
				delete(batch, owner)
			}
		}
		b.spare = batch
		b.mu.Unlock()
	}
}

// maxDropSlice is the largest batch slice (in words) the batcher keeps for reuse.
const maxDropSlice = 3 << 12

// flushed reports whether no releases are waiting to be sent, for tests.
func (b *dropBatcher) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, drops := range b.pending {
		if len(drops) > 0 {
			return false
		}
	}
	return true
}

func (b *dropBatcher) stop() {
	select {
	case <-b.quit:
	default:
		close(b.quit)
	}
	<-b.done
}
