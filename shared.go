package dist

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// Shared is a handle to a read-only value kept by one process of the cluster (its owner,
// the process that called Share). The handle is small: put it inside the arguments of remote
// calls, for example in every item of a Pmap, instead of the value itself. In a remote
// function, Get returns the value, fetched from the owner the first time it is needed in that
// process and cached there, so a large value used by every item crosses to each worker once,
// not once per item (Julia's CachingPool; julia#28949 is the cost of not doing so).
//
// The owner keeps the value until Release, or until the cluster closes; caches elsewhere are
// dropped when the owner releases the value or exits. Nobody may modify the value: Get in the
// owner returns the value itself, and in other processes one copy shared by every caller.
type Shared[T any] struct {
	c     *Cluster
	owner int
	id    uint64

	own      *sharedEntry // in the handle Share returned: the owner's entry
	val      T            // in the handle Share returned
	released atomic.Bool
}

// Share makes v available to every process of c through the returned handle. v is encoded
// once, now, and served from that encoding; an error means v cannot travel. ctx is accepted
// for symmetry with the other blocking calls; Share does not wait for other processes.
func Share[T any](ctx context.Context, c *Cluster, v T) (*Shared[T], error) {
	if c == nil {
		return nil, errors.New("dist: Share: nil cluster")
	}
	m, err := codec.Encode(nil, v)
	if err != nil {
		return nil, fmt.Errorf("dist: Share: %w: %v", ErrTypeMismatch, err)
	}
	e := &sharedEntry{c: c, msg: m, val: v, fetchers: make(map[int]int)}
	id := sharedIDs.Add(1)
	sharedOwned.Lock()
	for k, o := range sharedOwned.m {
		if o.c.ctx.Err() != nil {
			delete(sharedOwned.m, k) // its cluster is closed: nobody can fetch it any more
		}
	}
	sharedOwned.m[id] = e
	sharedOwned.Unlock()
	return &Shared[T]{c: c, owner: c.MyID(), id: id, own: e, val: v}, nil
}

// Owner returns the pid of the process that keeps the value.
func (s *Shared[T]) Owner() int { return s.owner }

// Get returns the value. In the owner it returns at once; elsewhere the first Get of the
// process fetches the value from the owner (concurrent first Gets share one fetch) and later
// ones return the cached copy. It fails with an error matching ErrReleased once the owner has
// released the value, and with ErrProcessExited if the owner is gone.
func (s *Shared[T]) Get(ctx context.Context) (T, error) {
	var zero T
	if s.own != nil {
		if s.released.Load() {
			return zero, fmt.Errorf("dist: Shared.Get: %w", ErrReleased)
		}
		return s.val, nil
	}
	c := s.c
	if c == nil {
		return zero, errors.New("dist: Shared.Get: no cluster in this process")
	}
	if s.owner == c.MyID() {
		sharedOwned.Lock()
		e := sharedOwned.m[s.id]
		sharedOwned.Unlock()
		if e == nil || e.c != c {
			return zero, fmt.Errorf("dist: Shared.Get: %w", ErrReleased)
		}
		e.mu.Lock()
		v, released := e.val, e.released
		e.mu.Unlock()
		if released {
			return zero, fmt.Errorf("dist: Shared.Get: %w", ErrReleased)
		}
		return sharedAs[T](v)
	}
	k := sharedKey{c: c, owner: s.owner, id: s.id}
	for {
		sharedCache.Lock()
		e := sharedCache.m[k]
		if e == nil {
			e = &sharedCached{done: make(chan struct{})}
			sharedCache.m[k] = e
			watch := sharedWatchLocked(c)
			sharedCache.Unlock()
			if watch {
				// Not under the cache's lock: events are delivered holding the
				// subscribers' lock, and the handler takes the cache's.
				c.Subscribe(func(e Event) {
					if e.Kind == Exited {
						sharedDrop(c, e.Pid, 0)
					}
				})
			}
			v, err := s.fetch(ctx)
			sharedCache.Lock()
			e.val, e.err = v, err
			if (err != nil || e.dropped) && sharedCache.m[k] == e {
				delete(sharedCache.m, k)
			}
			close(e.done)
			sharedCache.Unlock()
			return v, err
		}
		sharedCache.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
		if e.err == nil {
			return sharedAs[T](e.val)
		}
		if ctx.Err() == nil && (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) {
			continue // the fetch was cut short by its caller's context, not ours: try again
		}
		return zero, e.err
	}
}

func sharedAs[T any](v any) (T, error) {
	t, ok := v.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("dist: Shared.Get: %w: the value is a %T, not a %T", ErrTypeMismatch, v, zero)
	}
	return t, nil
}

func (s *Shared[T]) fetch(ctx context.Context) (T, error) {
	fr, err := s.c.call(ctx, s.owner, callHeader{Fn: fnSharedGet}, s.id)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("dist: Shared.Get from process %d: %w", s.owner, err)
	}
	v, err := decodeReply[T](fnSharedGet, fr)
	if err != nil {
		return v, fmt.Errorf("dist: Shared.Get from process %d: %w", s.owner, err)
	}
	return v, nil
}

// Release frees the owner's copy of the value and tells every process that fetched it to drop
// its cache; later Gets fail with ErrReleased. It only has an effect on the handle Share
// returned (elsewhere it does nothing), and only the first time.
func (s *Shared[T]) Release() {
	if s.own == nil || !s.released.CompareAndSwap(false, true) {
		return
	}
	var zero T
	s.val = zero
	sharedOwned.Lock()
	delete(sharedOwned.m, s.id)
	sharedOwned.Unlock()
	e := s.own
	e.mu.Lock()
	pids := make([]int, 0, len(e.fetchers))
	for pid := range e.fetchers {
		pids = append(pids, pid)
	}
	e.msg, e.val, e.released = wire.Msg{}, nil, true
	e.mu.Unlock()
	for _, pid := range pids {
		// One way: a process that is gone has no cache to drop.
		e.c.send(e.c.ctx, pid, callHeader{Fn: fnSharedDrop}, s.id)
	}
}

// Fetches returns how many times the owner has sent the value to another process; in other
// processes it returns 0. With caching, that is at most once per process that used it.
func (s *Shared[T]) Fetches() int {
	if s.own == nil {
		return 0
	}
	s.own.mu.Lock()
	defer s.own.mu.Unlock()
	n := 0
	for _, k := range s.own.fetchers {
		n += k
	}
	return n
}

type sharedWire struct {
	_     struct{} `cbor:",toarray"`
	Owner int
	ID    uint64
}

// MarshalCBOR lets a *Shared travel inside a remote call's argument: only the handle travels.
func (s *Shared[T]) MarshalCBOR() ([]byte, error) {
	return codec.Marshal(sharedWire{Owner: s.owner, ID: s.id})
}

// UnmarshalCBOR is the receiving side of MarshalCBOR.
func (s *Shared[T]) UnmarshalCBOR(data []byte) error {
	var w sharedWire
	if err := codec.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = Shared[T]{c: Current(context.Background()), owner: w.Owner, id: w.ID}
	return nil
}

// sharedEntry is a value kept by its owner.
type sharedEntry struct {
	c        *Cluster
	mu       sync.Mutex
	msg      wire.Msg // the encoding sent to other processes
	val      any
	released bool
	fetchers map[int]int // pid → times sent
}

var (
	sharedIDs   atomic.Uint64
	sharedOwned = struct {
		sync.Mutex
		m map[uint64]*sharedEntry
	}{m: make(map[uint64]*sharedEntry)}
)

// sharedKey names a cached value; the cluster is part of it because a process may run
// several clusters one after the other, whose pids repeat.
type sharedKey struct {
	c     *Cluster
	owner int
	id    uint64
}

type sharedCached struct {
	done    chan struct{} // closed once val or err is set
	val     any
	err     error
	dropped bool // released while being fetched: not to be kept
}

var sharedCache = struct {
	sync.Mutex
	m       map[sharedKey]*sharedCached
	watched map[*Cluster]bool
}{m: make(map[sharedKey]*sharedCached), watched: make(map[*Cluster]bool)}

// sharedWatchLocked forgets the caches of closed clusters, and reports whether c still needs
// a subscription that drops the caches of values whose owner exits.
func sharedWatchLocked(c *Cluster) bool {
	for w := range sharedCache.watched {
		if w.ctx.Err() != nil {
			delete(sharedCache.watched, w)
			for k := range sharedCache.m {
				if k.c == w {
					delete(sharedCache.m, k)
				}
			}
		}
	}
	if sharedCache.watched[c] {
		return false
	}
	sharedCache.watched[c] = true
	return true
}

// sharedDrop forgets the cached values of owner in c: the value id, or all of them for id 0.
func sharedDrop(c *Cluster, owner int, id uint64) {
	sharedCache.Lock()
	defer sharedCache.Unlock()
	for k, e := range sharedCache.m {
		if k.c == c && k.owner == owner && (id == 0 || k.id == id) {
			e.dropped = true
			delete(sharedCache.m, k)
		}
	}
}

const (
	fnSharedGet  = "_dist.shared.get"
	fnSharedDrop = "_dist.shared.drop"
)

func init() {
	rawBuiltin(fnSharedGet, func(ctx context.Context, c *Cluster, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		var id uint64
		if err := codec.Unmarshal(arg, &id); err != nil {
			return wire.Msg{}, fmt.Errorf("%w: %v", ErrTypeMismatch, err)
		}
		sharedOwned.Lock()
		e := sharedOwned.m[id]
		sharedOwned.Unlock()
		if e == nil || e.c != c {
			return wire.Msg{}, fmt.Errorf("%w: shared value %d of process %d", ErrReleased, id, c.MyID())
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.released {
			return wire.Msg{}, fmt.Errorf("%w: shared value %d of process %d", ErrReleased, id, c.MyID())
		}
		e.fetchers[CallerPid(ctx)]++
		return e.msg, nil
	})
	// Only the owner drops caches of its values: the caller's pid is the owner.
	builtin(fnSharedDrop, func(ctx context.Context, c *Cluster, id uint64) (struct{}, error) {
		sharedDrop(c, CallerPid(ctx), id)
		return struct{}{}, nil
	})
}
