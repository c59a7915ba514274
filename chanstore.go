package dist

import (
	"context"
	"slices"
	"sync"

	"github.com/godist/dist/internal/wire"
)

// chanItem is one value in a remote channel, kept encoded: the owner never needs its type.
type chanItem struct {
	cbor  []byte
	raw   any           // the typed numeric slice of a raw value, or nil
	taken chan struct{} // unbuffered channels: closed when a taker has it
}

// chanStore is the owner's side of a RemoteChannel: a bounded FIFO with Julia's blocking and
// close semantics. It does no IO, so its behaviour is tested without processes.
//
// Capacity 0 is unbuffered: a put completes only once a taker has its value. After close, puts
// fail, and takes drain what is buffered and then fail.
type chanStore struct {
	mu      sync.Mutex
	size    int
	buf     []*chanItem
	closed  bool
	changed chan struct{} // closed and replaced on every change, to wake waiters
}

func newChanStore(size int) *chanStore {
	return &chanStore{size: size, changed: make(chan struct{})}
}

func (s *chanStore) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitLocked releases the lock until the next change or ctx's end, and retakes it.
func (s *chanStore) waitLocked(ctx context.Context) error {
	ch := s.changed
	s.mu.Unlock()
	defer s.mu.Lock()
	wire.WillBlock(ctx)
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *chanStore) put(ctx context.Context, it *chanItem) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed && len(s.buf) >= max(s.size, 1) {
		if err := s.waitLocked(ctx); err != nil {
			return err
		}
	}
	if s.closed {
		return ErrChannelClosed
	}
	if s.size == 0 {
		it.taken = make(chan struct{})
	}
	s.buf = append(s.buf, it)
	s.notify()
	if s.size > 0 {
		return nil
	}
	s.mu.Unlock()
	wire.WillBlock(ctx)
	var err error
	select {
	case <-it.taken:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.mu.Lock()
	if err != nil {
		if i := slices.Index(s.buf, it); i >= 0 {
			s.buf = slices.Delete(s.buf, i, i+1)
			s.notify()
			return err
		}
		return nil // taken just as we gave up: the put happened
	}
	return nil
}

func (s *chanStore) take(ctx context.Context, remove bool) (*chanItem, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) == 0 {
		if s.closed {
			return nil, ErrChannelClosed
		}
		if err := s.waitLocked(ctx); err != nil {
			return nil, err
		}
	}
	it := s.buf[0]
	if remove {
		s.buf[0] = nil
		s.buf = s.buf[1:]
		if it.taken != nil {
			close(it.taken)
		}
		s.notify()
	}
	return it, nil
}

func (s *chanStore) ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf) > 0
}

func (s *chanStore) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.notify()
	}
}

func (s *chanStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf)
}
