package dist

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// RemoteChannel is a channel of T values hosted by one process of the cluster (Where) that
// every process can put to and take from, like Julia's RemoteChannel. It is a FIFO of
// capacity size; capacity 0 is unbuffered (Put returns once a taker has the value). After
// Close, Put fails with ErrChannelClosed, and Take drains the buffered values and then fails
// with ErrChannelClosed.
//
// A *RemoteChannel may be passed inside the argument of a remote function. The host keeps the
// channel while any process holds a reference; Release gives this process's reference back,
// and an unreachable RemoteChannel releases itself.
type RemoteChannel[T any] struct {
	c    *Cluster
	id   refID
	hold *refHold
}

// NewRemoteChannel creates a channel of capacity size hosted on pid (this process's pid for a
// local one; Any for a worker chosen round robin).
func NewRemoteChannel[T any](ctx context.Context, c *Cluster, pid int, size int) (*RemoteChannel[T], error) {
	if size < 0 {
		return nil, fmt.Errorf("dist: NewRemoteChannel: negative size %d", size)
	}
	pid, err := c.resolve(pid)
	if err != nil {
		return nil, err
	}
	id := refID{Owner: pid, Whence: c.MyID(), Num: c.nextRef.Add(1)}
	if pid == c.MyID() {
		c.newChanEntry(id.key(), size)
	} else {
		fr, err := c.call(ctx, pid, callHeader{Fn: fnChNew}, chanNew{Num: id.Num, Size: size})
		if err != nil {
			return nil, err
		}
		if _, err := decodeReply[struct{}](fnChNew, fr); err != nil {
			return nil, err
		}
	}
	return newRemoteChannel[T](c, id, initialWeight), nil
}

func newRemoteChannel[T any](c *Cluster, id refID, weight int64) *RemoteChannel[T] {
	rc := &RemoteChannel[T]{c: c, id: id, hold: &refHold{c: c, id: id, weight: weight}}
	runtime.AddCleanup(rc, func(h *refHold) { h.release() }, rc.hold)
	return rc
}

type chanNew struct {
	_    struct{} `cbor:",toarray"`
	Num  uint64
	Size int
}

func (c *Cluster) newChanEntry(k refKey, size int) {
	c.refs.addChan(k, initialWeight, size)
}

// store finds the channel behind id in this process's table.
func (c *Cluster) chanStoreOf(id refID) (*chanStore, error) {
	c.refs.mu.Lock()
	defer c.refs.mu.Unlock()
	e := c.refs.m[id.key()]
	if e == nil {
		return nil, fmt.Errorf("%w: the channel was freed", ErrChannelClosed)
	}
	if e.ch == nil {
		return nil, fmt.Errorf("dist: reference %d/%d is not a channel", id.Whence, id.Num)
	}
	return e.ch, nil
}

// Where returns the pid of the process that hosts the channel.
func (rc *RemoteChannel[T]) Where() int { return rc.id.Owner }

// Put sends v, waiting while the channel is full (or, unbuffered, until a taker has it).
func (rc *RemoteChannel[T]) Put(ctx context.Context, v T) error {
	if rc.id.Owner == rc.c.MyID() {
		s, err := rc.c.chanStoreOf(rc.id)
		if err != nil {
			return err
		}
		m, err := codec.Encode(nil, v)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrTypeMismatch, err)
		}
		return s.put(ctx, &chanItem{cbor: m.CBOR, raw: m.RawValue})
	}
	prefix := mustMarshal(rc.id)
	fr, err := rc.c.call(ctx, rc.id.Owner, callHeader{Fn: fnChPut}, prefixed{prefix, v})
	if err != nil {
		return err
	}
	_, err = decodeReply[struct{}](fnChPut, fr)
	return err
}

// prefixed is an argument made of an already encoded CBOR item followed by a value.
type prefixed struct {
	prefix []byte
	v      any
}

// Take removes and returns the oldest value, waiting while the channel is empty.
func (rc *RemoteChannel[T]) Take(ctx context.Context) (T, error) { return rc.get(ctx, fnChTake) }

// Fetch returns the oldest value without removing it, waiting while the channel is empty.
func (rc *RemoteChannel[T]) Fetch(ctx context.Context) (T, error) { return rc.get(ctx, fnChFetch) }

func (rc *RemoteChannel[T]) get(ctx context.Context, fn string) (T, error) {
	var v T
	if rc.id.Owner == rc.c.MyID() {
		s, err := rc.c.chanStoreOf(rc.id)
		if err != nil {
			return v, err
		}
		it, err := s.take(ctx, fn == fnChTake)
		if err != nil {
			return v, err
		}
		if err := codec.Decode(it.cbor, it.raw, &v); err != nil {
			return v, fmt.Errorf("%w: %v", ErrTypeMismatch, err)
		}
		return v, nil
	}
	fr, err := rc.c.call(ctx, rc.id.Owner, callHeader{Fn: fn}, rc.id)
	if err != nil {
		return v, err
	}
	v, err = decodeReply[T](fn, fr)
	var re *RemoteError
	if errors.As(err, &re) && errors.Is(err, ErrChannelClosed) {
		return v, ErrChannelClosed // the plain sentinel, as for a local channel
	}
	return v, err
}

// Ready reports whether a value is waiting.
func (rc *RemoteChannel[T]) Ready(ctx context.Context) (bool, error) {
	if rc.id.Owner == rc.c.MyID() {
		s, err := rc.c.chanStoreOf(rc.id)
		if err != nil {
			return false, err
		}
		return s.ready(), nil
	}
	fr, err := rc.c.call(ctx, rc.id.Owner, callHeader{Fn: fnChReady}, rc.id)
	if err != nil {
		return false, err
	}
	return decodeReply[bool](fnChReady, fr)
}

// Close closes the channel for every process.
func (rc *RemoteChannel[T]) Close(ctx context.Context) error {
	if rc.id.Owner == rc.c.MyID() {
		s, err := rc.c.chanStoreOf(rc.id)
		if err != nil {
			return err
		}
		s.close()
		return nil
	}
	fr, err := rc.c.call(ctx, rc.id.Owner, callHeader{Fn: fnChClose}, rc.id)
	if err != nil {
		return err
	}
	_, err = decodeReply[struct{}](fnChClose, fr)
	return err
}

// All returns an iterator that takes values until the channel is closed and drained (the
// iteration then ends without an error) or another error occurs (yielded once, then the end).
func (rc *RemoteChannel[T]) All(ctx context.Context) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for {
			v, err := rc.Take(ctx)
			if errors.Is(err, ErrChannelClosed) {
				return
			}
			if !yield(v, err) || err != nil {
				return
			}
		}
	}
}

// Release gives this process's reference back to the host.
func (rc *RemoteChannel[T]) Release() { rc.hold.release() }

type channelWire struct {
	_      struct{} `cbor:",toarray"`
	ID     refID
	Weight int64
}

// MarshalCBOR lets a *RemoteChannel travel inside a remote call's argument.
func (rc *RemoteChannel[T]) MarshalCBOR() ([]byte, error) {
	w, err := rc.hold.split()
	if err != nil {
		return nil, err
	}
	return codec.Marshal(&channelWire{ID: rc.id, Weight: w})
}

// UnmarshalCBOR is the receiving side of MarshalCBOR.
func (rc *RemoteChannel[T]) UnmarshalCBOR(data []byte) error {
	var w channelWire
	if err := codec.Unmarshal(data, &w); err != nil {
		return err
	}
	c := Current(context.Background())
	if c == nil {
		return errors.New("dist: a RemoteChannel arrived in a process with no cluster")
	}
	rc.c, rc.id = c, w.ID
	rc.hold = &refHold{c: c, id: w.ID, weight: w.Weight}
	runtime.AddCleanup(rc, func(h *refHold) { h.release() }, rc.hold)
	return nil
}

func registerChannelBuiltins() {
	builtin(fnChNew, func(ctx context.Context, c *Cluster, n chanNew) (struct{}, error) {
		c.newChanEntry(refKey{CallerPid(ctx), n.Num}, n.Size)
		return struct{}{}, nil
	})
	rawBuiltin(fnChPut, func(ctx context.Context, c *Cluster, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		var id refID
		rest, err := codec.UnmarshalFirst(arg, &id)
		if err != nil {
			return wire.Msg{}, fmt.Errorf("%w: %v", ErrTypeMismatch, err)
		}
		s, err := c.chanStoreOf(id)
		if err != nil {
			return wire.Msg{}, err
		}
		if err := s.put(ctx, &chanItem{cbor: rest, raw: fr.Raw}); err != nil {
			return wire.Msg{}, err
		}
		return codec.Encode(nil, struct{}{})
	})
	take := func(remove bool) func(ctx context.Context, c *Cluster, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		return func(ctx context.Context, c *Cluster, fr *wire.Frame, arg []byte) (wire.Msg, error) {
			var id refID
			if err := codec.Unmarshal(arg, &id); err != nil {
				return wire.Msg{}, fmt.Errorf("%w: %v", ErrTypeMismatch, err)
			}
			s, err := c.chanStoreOf(id)
			if err != nil {
				return wire.Msg{}, err
			}
			it, err := s.take(ctx, remove)
			if err != nil {
				return wire.Msg{}, err
			}
			m := wire.Msg{CBOR: it.cbor, RawValue: it.raw}
			if it.raw != nil {
				m.RawKind, m.Raw, _ = wire.RawOf(it.raw)
			}
			return m, nil
		}
	}
	rawBuiltin(fnChTake, take(true))
	rawBuiltin(fnChFetch, take(false))
	builtin(fnChReady, func(ctx context.Context, c *Cluster, id refID) (bool, error) {
		s, err := c.chanStoreOf(id)
		if err != nil {
			return false, err
		}
		return s.ready(), nil
	})
	builtin(fnChClose, func(ctx context.Context, c *Cluster, id refID) (struct{}, error) {
		s, err := c.chanStoreOf(id)
		if err != nil {
			return struct{}{}, err
		}
		s.close()
		return struct{}{}, nil
	})
}
