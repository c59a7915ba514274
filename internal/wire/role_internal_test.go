package wire

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestReadRoleTransitions(t *testing.T) {
	names := [...]string{roleBackground: "background", roleCaller: "caller", roleFree: "free"}
	for _, tc := range []struct {
		name  string
		from  int32
		step  func(r *readRole) bool // reports what the step reports, true if nothing
		want  int32
		wantB bool
	}{
		{"caller claims a free role", roleFree, func(r *readRole) bool { return r.claim(roleCaller) }, roleCaller, true},
		{"background claims a free role", roleFree, func(r *readRole) bool { return r.claim(roleBackground) }, roleBackground, true},
		{"a held role cannot be claimed", roleBackground, func(r *readRole) bool { return r.claim(roleCaller) }, roleBackground, false},
		{"a caller's role cannot be claimed", roleCaller, func(r *readRole) bool { return r.claim(roleBackground) }, roleCaller, false},
		{"the caller passes it on", roleCaller, func(r *readRole) bool { r.pass(); return true }, roleBackground, true},
		{"the reader releases it", roleBackground, func(r *readRole) bool { r.release(1); return true }, roleFree, true},
		{"the caller releases it", roleCaller, func(r *readRole) bool { r.release(1); return true }, roleFree, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r readRole
			r.holder.Store(tc.from)
			if got := tc.step(&r); got != tc.wantB {
				t.Errorf("step reported %v, want %v", got, tc.wantB)
			}
			if got := r.who(); got != tc.want {
				t.Errorf("role %s, want %s", names[got], names[tc.want])
			}
		})
	}
}

func TestReadRoleOneClaimWins(t *testing.T) {
	var r readRole
	r.release(0)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if r.claim(int32(i%2) * roleCaller) {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d goroutines claimed the role, want 1", wins.Load())
	}
}

func TestReadRoleFreeAtLeast(t *testing.T) {
	var r readRole
	if r.freeAtLeast(100, 0) {
		t.Fatal("a held role reported free")
	}
	r.release(10)
	if r.freeAtLeast(19, 10) {
		t.Fatal("free for 9 reported free for 10")
	}
	if !r.freeAtLeast(20, 10) {
		t.Fatal("free for 10 not reported free for 10")
	}
	if !r.claim(roleCaller) || r.freeAtLeast(100, 10) {
		t.Fatal("a claimed role still reported free")
	}
}

func TestReadRoleCallers(t *testing.T) {
	var r readRole
	r.callerWaiting()
	r.callerWaiting()
	r.callerDone()
	if !r.callersWaiting() {
		t.Fatal("one caller still waits")
	}
	r.callerDone()
	if r.callersWaiting() {
		t.Fatal("no caller waits")
	}
}

// fakeClock is a clock a test moves by hand. It starts far from zero, as the wall clock does:
// a connection that never served a request counts as quiet for serverQuiet.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(1 << 60)
	return c
}

func (c *fakeClock) now() int64              { return c.ns.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// echoHandler answers every frame with its own CBOR, from a goroutine as a Handler must.
func echoHandler(c *Conn, f *Frame) { go c.Send(KindReply, f.ID, Msg{CBOR: f.CBOR}) }

// manualPair connects a, watched by m, to b, watched by the process's monitor.
func manualPair(t *testing.T, m *monitor, ha, hb Handler) (a, b *Conn) {
	t.Helper()
	na, nb := UnixPair(t)
	a = newConn(na, DefaultLimits, ha, nil, m)
	b = NewConn(nb, DefaultLimits, hb, nil)
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// The monitor restarts reading on a connection left free for two ticks of its clock, and not
// before: until then, a request from the peer waits.
func TestMonitorRestartsFreeRole(t *testing.T) {
	clock := newFakeClock()
	m := newManualMonitor(clock.now)
	a, b := manualPair(t, m, echoHandler, echoHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// a only calls: after a call, nobody reads a, and its next call reads for itself.
	for a.role.who() != roleFree {
		if _, err := a.Call(ctx, Msg{CBOR: []byte{0xf6}}); err != nil {
			t.Fatal(err)
		}
	}
	answered := make(chan error, 1)
	go func() {
		_, err := b.Call(ctx, Msg{CBOR: []byte{0xf6}})
		answered <- err
	}()
	clock.advance(monitorTick)
	m.scan()
	if got := a.role.who(); got != roleFree {
		t.Fatalf("role %d after one tick, want still free", got)
	}
	clock.advance(monitorTick)
	m.scan()
	if err := <-answered; err != nil {
		t.Fatalf("b's call after the monitor restarted a's reader: %v", err)
	}
}

// The monitor takes reading over from a handler that overran InlineBudget by its clock, and
// not from one within it.
func TestMonitorTakesOverSlowHandler(t *testing.T) {
	clock := newFakeClock()
	m := newManualMonitor(clock.now)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	slowFirst := func(c *Conn, f *Frame) {
		if string(f.CBOR) == "\x61s" { // "s": the slow one
			started <- struct{}{}
			<-release
		}
		go c.Send(KindReply, f.ID, Msg{CBOR: f.CBOR})
	}
	a, b := manualPair(t, m, slowFirst, echoHandler)
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		_, err := b.Call(ctx, Msg{CBOR: []byte("\x61s")})
		slow <- err
	}()
	<-started
	run := a.inline.Load()
	if run == nil {
		t.Fatal("the slow handler does not run inline")
	}
	clock.advance(InlineBudget / 2)
	m.scan()
	if run.state.Load() != 0 {
		t.Fatal("taken over within InlineBudget")
	}
	clock.advance(InlineBudget)
	m.scan()
	if run.state.Load() != 2 {
		t.Fatal("not taken over past InlineBudget")
	}
	// A new reader serves b's next call while the slow handler still blocks.
	if _, err := b.Call(ctx, Msg{CBOR: []byte("\x61q")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow call returned before its handler: %v", err)
	default:
	}
}
