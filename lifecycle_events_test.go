package dist_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// eventLog collects lifecycle events.
type eventLog struct {
	mu sync.Mutex
	ev []dist.Event
}

func (l *eventLog) add(e dist.Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) events() []dist.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]dist.Event(nil), l.ev...)
}

// wait waits for an event matching match and returns it.
func (l *eventLog) wait(t *testing.T, what string, match func(dist.Event) bool) dist.Event {
	t.Helper()
	var found dist.Event
	disttest.Eventually(t, 10*time.Second, what, func() bool {
		for _, e := range l.events() {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

func TestLifecycleEvents(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0)
	var log eventLog
	defer c.SubscribeLifecycle(log.add)()
	var members eventLog
	defer c.Subscribe(members.add)()

	pids, err := c.AddProcs(ctx, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	ev := log.events()
	if len(ev) != 5 || ev[0].Kind != dist.Starting || ev[0].Count != 2 {
		t.Fatalf("launch events %+v", ev)
	}
	started, joined := 0, 0
	for _, e := range ev[1:] {
		switch e.Kind {
		case dist.Started:
			if joined >= started+1 || !strings.HasPrefix(e.Addr, "unix ") {
				t.Fatalf("started event %+v out of order or without an address in %+v", e, ev)
			}
			started++
		case dist.Joined:
			joined++
		}
	}
	if started != 2 || joined != 2 {
		t.Fatalf("events %+v", ev)
	}

	// Asked to exit: Exiting, then a clean Exited with no cause.
	c.RmProcs(ctx, pids[0])
	ex := log.wait(t, "exited event", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == pids[0] })
	if ex.Reason != dist.ExitClean || ex.Cause != nil {
		t.Fatalf("RmProcs: %+v", ex)
	}
	if i := indexOf(log.events(), dist.Exiting, pids[0]); i < 0 || i > indexOf(log.events(), dist.Exited, pids[0]) {
		t.Fatalf("no Exiting before Exited: %+v", log.events())
	}

	// Interrupt reaches the worker: a local worker takes SIGINT and, with no handler, dies of it.
	if err := c.Interrupt(ctx, pids[1]); err != nil {
		t.Fatal(err)
	}
	ex = log.wait(t, "crash event", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == pids[1] })
	if ex.Reason != dist.ExitCrash || !errors.Is(ex.Cause, dist.ErrProcessExited) || !strings.Contains(ex.Cause.Error(), "interrupt") {
		t.Fatalf("interrupted worker: %+v (%v)", ex, ex.Cause)
	}
	if err := c.Interrupt(ctx, pids[1]); !errors.Is(err, dist.ErrProcessExited) {
		t.Fatalf("interrupting a dead worker: %v", err)
	}

	// A worker that never joins.
	if _, err := c.AddProcs(ctx, cmdManager{[]string{"sh", "-c", "exit 3"}}, 1); err == nil {
		t.Fatal("a launch that failed succeeded")
	}
	ex = log.wait(t, "not-started event", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Reason == dist.ExitNotStarted })
	if ex.Pid != 0 || ex.Cause == nil {
		t.Fatalf("not started: %+v", ex)
	}
	// Membership subscribers saw only members joining and leaving.
	for _, e := range members.events() {
		if (e.Kind != dist.Joined && e.Kind != dist.Exited) || e.Pid == 0 {
			t.Fatalf("membership subscriber got %+v", e)
		}
	}
}

func indexOf(ev []dist.Event, k dist.EventKind, pid int) int {
	for i, e := range ev {
		if e.Kind == k && e.Pid == pid {
			return i
		}
	}
	return -1
}

func TestLostConnectionEvent(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0)
	var log eventLog
	defer c.SubscribeLifecycle(log.add)()
	m := disttest.NewLinks(t)
	pids, err := c.AddProcs(ctx, m, 1)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := c.ProcInfo(pids[0])
	if v, err := square.Call(ctx, c, pids[0], 3); err != nil || v != 9 {
		t.Fatalf("call through the proxy: %v, %v", v, err)
	}
	m.Cut()
	ex := log.wait(t, "lost event", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == pids[0] })
	if ex.Reason != dist.ExitLost || !errors.Is(ex.Cause, dist.ErrConnectionLost) || !errors.Is(ex.Cause, dist.ErrProcessExited) {
		t.Fatalf("lost worker: %+v (%v)", ex, ex.Cause)
	}
	// A worker the driver cannot talk to is killed.
	disttest.Eventually(t, 5*time.Second, "the lost worker killed", func() bool { return !disttest.Alive(info.OSPid) })
}

func TestHeartbeatLostLink(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _ := disttest.Start(t, 0, dist.WithHeartbeat(100*time.Millisecond, time.Second), dist.WithLogger(quietLogger()))
	var log eventLog
	defer c.SubscribeLifecycle(log.add)()
	m := disttest.NewLinks(t)
	pids, err := c.AddProcs(ctx, m, 1)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := c.ProcInfo(pids[0])
	if v, err := square.Call(ctx, c, pids[0], 3); err != nil || v != 9 {
		t.Fatalf("call through the proxy: %v, %v", v, err)
	}
	time.Sleep(200 * time.Millisecond) // heartbeats pass while the link is up
	if c.NWorkers() != 1 {
		t.Fatal("worker dropped while its link was up")
	}
	m.Freeze()
	start := time.Now()
	ex := log.wait(t, "lost event", func(e dist.Event) bool { return e.Kind == dist.Exited && e.Pid == pids[0] })
	if ex.Reason != dist.ExitLost || !errors.Is(ex.Cause, dist.ErrConnectionLost) || !strings.Contains(ex.Cause.Error(), "heartbeat") {
		t.Fatalf("worker behind a dark link: %+v (%v)", ex, ex.Cause)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("lost link noticed after %v", d)
	}
	disttest.Eventually(t, 5*time.Second, "the lost worker gone", func() bool { return !disttest.Alive(info.OSPid) })
}
