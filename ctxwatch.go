package dist

import (
	"context"
	"sync"
)

// ctxWatch cancels remote calls started with Go when their context ends. One AfterFunc per
// distinct context serves all the calls made with it; a call adds itself to its context's set
// and leaves it when its reply arrives. context.AfterFunc per call cost a tenth of the CPU of
// a call in a loop of Go calls.
type ctxWatch struct {
	mu   sync.Mutex
	next uint64
	sets map[<-chan struct{}]*watchSet
	// idle is the context whose set most recently became empty: it is kept, AfterFunc and
	// all, because a loop of Go-then-Wait empties and refills the same set on every call.
	idle <-chan struct{}
}

type watchSet struct {
	stop func() bool
	fns  map[uint64]watcher
}

// watcher is told when the context it watches ends, with the context's error. The call's
// own state is the watcher, so that a call needs no closure for it.
type watcher interface {
	contextEnded(err error)
}

// watchFunc is a function used as a watcher.
type watchFunc func(error)

func (f watchFunc) contextEnded(err error) { f(err) }

// add arranges for fn to be told once when ctx ends, unless remove comes first. It returns
// the key for remove; a ctx that can never end needs no watching (key 0).
func (w *ctxWatch) add(ctx context.Context, fn watcher) (done <-chan struct{}, key uint64) {
	done = ctx.Done()
	if done == nil {
		return nil, 0
	}
	w.mu.Lock()
	if w.sets == nil {
		w.sets = make(map[<-chan struct{}]*watchSet)
	}
	w.next++
	key = w.next
	s := w.sets[done]
	if s == nil {
		s = &watchSet{fns: make(map[uint64]watcher)}
		w.sets[done] = s
		d := done // not the result itself: capturing it would move it to the heap on every call
		s.stop = context.AfterFunc(ctx, func() { w.fire(d, ctx.Err()) })
	}
	s.fns[key] = fn
	w.mu.Unlock() // not deferred: this runs for every Go call
	return done, key
}

// remove forgets key; the context's AfterFunc goes when its set is empty.
func (w *ctxWatch) remove(done <-chan struct{}, key uint64) {
	if key == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sets[done]
	if s == nil {
		return
	}
	delete(s.fns, key)
	if len(s.fns) > 0 || w.idle == done {
		return
	}
	// One empty set is kept: the previous one goes, unless it has been refilled.
	if old := w.sets[w.idle]; old != nil && len(old.fns) == 0 {
		old.stop()
		delete(w.sets, w.idle)
	}
	w.idle = done
}

func (w *ctxWatch) fire(done <-chan struct{}, err error) {
	w.mu.Lock()
	s := w.sets[done]
	delete(w.sets, done)
	if w.idle == done {
		w.idle = nil
	}
	w.mu.Unlock()
	if s == nil {
		return
	}
	for _, fn := range s.fns {
		fn.contextEnded(err)
	}
}
