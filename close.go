package dist

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/godist/dist/internal/wire"
)

// Close ends the cluster. In the driver it stops every worker (politely, then by force) and
// returns once they have exited; nothing is left running. Close is idempotent.
func (c *Cluster) Close() error {
	if !c.driver {
		return ErrNotDriver
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	err := c.RmProcs(context.Background(), c.realWorkers()...)
	c.shutdown()
	currentMu.Lock()
	if current == c {
		current = nil
	}
	currentMu.Unlock()
	return err
}

// shutdown closes every connection and listener and waits for background goroutines.
func (c *Cluster) shutdown() {
	c.mu.Lock()
	c.closed = true
	lns := c.lns
	conns := make([]*wire.Conn, 0, len(c.conns))
	for cn := range c.conns {
		conns = append(conns, cn)
	}
	c.mu.Unlock()
	c.cancel()
	for _, ln := range lns {
		ln.Close()
	}
	for _, cn := range conns {
		cn.Close()
	}
	c.drops.stop()
	c.bg.closeAndWait()
}

// goLocal runs fn, a call of this process to itself, on a goroutine that Close cancels (fn's
// context ends with ctx or with the cluster) and waits for. It returns false, running
// nothing, once the cluster is closing.
func (c *Cluster) goLocal(ctx context.Context, fn func(context.Context)) bool {
	if !c.bg.add() {
		return false
	}
	go func() {
		defer c.bg.done()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(c.ctx, cancel)()
		fn(ctx)
	}()
	return true
}

// errClusterClosed is the error of work asked of a closed cluster.
var errClusterClosed = errors.New("dist: cluster is closed")

// shutdownWithin is shutdown bounded by d: false if handlers still run after d (they were
// cancelled, and ignore it). The shutdown then completes in the background, if ever.
func (c *Cluster) shutdownWithin(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		c.shutdown()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// tracker counts the cluster's background goroutines and handlers so that shutdown can wait
// for them. Once it is closed it refuses new ones: a WaitGroup must not be added to while a
// Wait on it may be running.
type tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// add registers one more goroutine; false means the cluster is shutting down and the work must
// not start.
func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) done() { t.wg.Done() }

// closeAndWait refuses new goroutines and waits for the registered ones.
func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
