package wire

import (
	"sync"
	"sync/atomic"
	"time"
)

// monitor finds handlers that overran InlineBudget and hands their connection's reading to a
// new goroutine, and restarts reading on connections nobody has read for a tick (roleFree).
// A timer per handler would cost a thread wake-up per call (arming a timer wakes the network
// poller); one ticking goroutine costs a wake-up per tick, and only while handlers run or
// connections are free: it sleeps after a quiet spell and exits when no connection is open.
// Measured on a 2-vCPU VM, a 1 ms tick added ~20 µs to the median call; 5 ms costs little.
//
// Every Conn of a process shares one (processMonitor): one goroutine and one timer for all.
// Tests make their own, with a clock they move by hand and no goroutine (newManualMonitor).
type monitor struct {
	mu       sync.Mutex
	conns    map[*Conn]struct{}
	running  bool
	sleeping atomic.Bool
	lastUse  atomic.Int64
	wake     chan struct{}
	// now is a coarse clock (unix ns) that the monitor advances at every tick and active()
	// on waking it. Handlers and callers time themselves with it: time.Now costs 60 ns to
	// several hundred on a virtual machine, on the path of every request.
	now atomic.Int64

	// clock reads the time (unix ns): the wall clock, or a test's.
	clock func() int64
	// manual: no goroutine ticks; the test calls scan.
	manual bool
	// paused stops the monitor from taking over or restarting readers (tests only).
	paused atomic.Bool
}

// wallClock is the clock of the process's monitor.
func wallClock() int64 { return time.Now().UnixNano() }

// processMonitor watches every connection that NewConn makes.
var processMonitor = newMonitor(wallClock)

func newMonitor(clock func() int64) *monitor {
	return &monitor{conns: make(map[*Conn]struct{}), wake: make(chan struct{}, 1), clock: clock}
}

// newManualMonitor returns a monitor that runs no goroutine: the test moves clock and calls
// scan for each tick.
func newManualMonitor(clock func() int64) *monitor {
	m := newMonitor(clock)
	m.manual = true
	return m
}

const monitorTick = 5 * time.Millisecond

// monitorIdle is how long the monitor keeps ticking after the last handler or free
// connection, so that a steady stream of requests does not wake it once per request. It is
// one tick because every process has a monitor, and each tick wakes its process: with
// 200 ms, a no-op call to each of 1,000 idle workers kept them all ticking 40 times, 200,000
// wake-ups a second on two cores.
const monitorIdle = monitorTick

func (m *monitor) add(c *Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns[c] = struct{}{}
	if !m.running {
		m.running = true
		m.sleeping.Store(false)
		m.now.Store(m.clock()) // not the time it last stopped, or zero
		if !m.manual {
			go m.loop()
		}
	}
}

func (m *monitor) remove(c *Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
	m.kick()
}

// active tells the monitor that there is work to watch, waking it if it sleeps.
func (m *monitor) active() {
	if m.sleeping.Load() {
		// Its clock stopped with it.
		m.now.Store(m.clock())
		m.kick()
	}
	m.lastUse.Store(m.now.Load())
}

// freshClock returns the monitor's coarse time, at most a tick behind while the monitor
// runs; while it sleeps, its clock stopped with it, and the time is read anew.
func (m *monitor) freshClock() int64 {
	if m.sleeping.Load() {
		m.now.Store(m.clock())
	}
	return m.now.Load()
}

func (m *monitor) anyInline() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.conns {
		if c.inline.Load() != nil || c.role.who() == roleFree {
			return true
		}
	}
	return false
}

func (m *monitor) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// scanResult is what one tick of the monitor found.
type scanResult int

const (
	scanBusy  scanResult = iota // handlers run or connections are free: tick again
	scanIdle                    // nothing to watch for monitorIdle: the monitor may sleep
	scanEmpty                   // no connection is open: the monitor has stopped
)

// scan is one tick: it reads the clock, takes over from handlers that overran InlineBudget
// and starts readers on connections free for a tick.
func (m *monitor) scan() scanResult {
	m.mu.Lock()
	if len(m.conns) == 0 {
		m.running = false
		m.mu.Unlock()
		return scanEmpty
	}
	var runs []*inlineRun
	var free []*Conn
	for c := range m.conns {
		if run := c.inline.Load(); run != nil {
			runs = append(runs, run)
		}
		if c.role.who() == roleFree {
			free = append(free, c)
		}
	}
	m.mu.Unlock()
	now := m.clock()
	m.now.Store(now)
	paused := m.paused.Load()
	for _, run := range runs {
		if now-run.start > int64(InlineBudget) && !paused {
			run.takeOver()
		}
	}
	for _, c := range free {
		// Nobody has read this connection for a tick: requests from the peer may be
		// waiting. A caller in a tight loop of calls takes the role back first. (The
		// coarse clock stamped freeSince up to a tick early: two ticks mean at least one.)
		if c.role.freeAtLeast(now, int64(2*monitorTick)) && !paused {
			c.startReader()
		}
	}
	if len(runs) == 0 && len(free) == 0 && now-m.lastUse.Load() > int64(monitorIdle) {
		return scanIdle
	}
	return scanBusy
}

func (m *monitor) loop() {
	t := newTicker(monitorTick)
	defer t.close()
	for {
		switch m.scan() {
		case scanEmpty:
			return
		case scanIdle:
			m.sleeping.Store(true)
			// A handler that started after the scan but saw sleeping still false did not
			// kick us: look once more now that sleeping is announced.
			if m.anyInline() {
				m.sleeping.Store(false)
				continue
			}
			t.stop()
			<-m.wake
			m.sleeping.Store(false)
			t.reset(monitorTick)
			continue
		}
		t.wait()
	}
}
