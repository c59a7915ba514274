package wire

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Budget bounds the memory a process's connections may claim for frames they are receiving.
// A frame's CBOR and raw parts are allocated in full when its header arrives, before a byte
// of them does: without a bound, authenticated peers announcing large frames and then sending
// nothing make a process reserve whatever they announce (four connections announcing 2 GiB
// each once took a worker's heap to 8 GiB). A frame's large parts (from budgetMin on) are
// counted from its header until it has been read whole; a connection waits for room before
// reading them, which holds its sender back through the socket. A frame larger than the
// whole budget is refused. Small frames, the calls and replies of everyday traffic, do not
// take part. One Budget is shared by all the connections of a process; the zero Budget is
// not usable: make one with NewBudget.
type Budget struct {
	limit int64
	mu    sync.Mutex
	used  int64
	room  chan struct{} // closed and replaced whenever used falls
	peak  atomic.Int64
}

// budgetMin is the frame size from which a frame takes part in its process's budget.
const budgetMin = 1 << 20

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: limit, room: make(chan struct{})}
}

// Limit returns the budget's size.
func (b *Budget) Limit() int64 { return b.limit }

// Peak returns the most the budget has had claimed at once.
func (b *Budget) Peak() int64 { return b.peak.Load() }

// acquire claims n bytes, waiting while the budget has no room for them, until done closes.
func (b *Budget) acquire(n int64, done <-chan struct{}) error {
	if n > b.limit {
		return fmt.Errorf("%w: a frame of %d bytes is more than this process's receive budget of %d", ErrFrame, n, b.limit)
	}
	for {
		b.mu.Lock()
		if b.used+n <= b.limit {
			b.used += n
			if b.used > b.peak.Load() {
				b.peak.Store(b.used)
			}
			b.mu.Unlock()
			return nil
		}
		room := b.room
		b.mu.Unlock()
		select {
		case <-room:
		case <-done:
			return ErrClosed
		}
	}
}

// release gives back n bytes claimed with acquire.
func (b *Budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.room)
	b.room = make(chan struct{})
	b.mu.Unlock()
}
