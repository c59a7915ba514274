package disttest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/godist/dist"
)

// Links is a dist.Manager that launches local workers reached through a TCP proxy of its own,
// so that a test can break the link between the driver and a worker while both processes
// live. Cut closes the driver's side of every link: the driver sees its connections end, the
// workers' sides stay open and silent. Freeze drops every byte from then on, both ways,
// closing nothing: a link gone dark, which only heartbeats can find.
//
// Partition and Heal do what Freeze does for one worker's links only: those of the driver
// and of every other worker to it (peers reach a worker at the address the driver knows, the
// proxy's).
//
// Everything it opened is closed, and its goroutines have ended, when the test ends.
type Links struct {
	frozen atomic.Bool
	wg     sync.WaitGroup
	dark   sync.Map // pid → *atomic.Bool: the worker's proxy drops everything
	byAddr sync.Map // proxy address → *atomic.Bool

	mu     sync.Mutex
	closed bool
	lns    []net.Listener
	downs  []net.Conn // the driver's sides
	ups    []net.Conn // the workers' sides
}

// NewLinks returns a Links whose proxies are torn down when t ends.
func NewLinks(t testing.TB) *Links {
	m := &Links{}
	t.Cleanup(m.close)
	return m
}

// Launch starts local workers listening on loopback TCP and puts a proxy before each.
func (m *Links) Launch(ctx context.Context, spec dist.LaunchSpec) ([]dist.Process, error) {
	spec.Config.Network, spec.Config.Bind = "tcp", "127.0.0.1:0"
	procs, err := dist.LocalManager().Launch(ctx, spec)
	var out []dist.Process
	for _, p := range procs {
		_, target := p.Addr()
		ln, lerr := net.Listen("tcp", "127.0.0.1:0")
		if lerr != nil {
			return out, fmt.Errorf("disttest: proxy for worker at %s: %w", target, lerr)
		}
		if !track(m, &m.lns, ln) {
			return out, fmt.Errorf("disttest: Links used after its test ended")
		}
		off := &atomic.Bool{}
		m.byAddr.Store(ln.Addr().String(), off)
		m.wg.Go(func() { m.serve(ln, target, off) })
		out = append(out, proxied{p, ln.Addr().String(), m})
	}
	return out, err
}

// Cut closes the driver's side of every link made so far.
func (m *Links) Cut() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.downs {
		c.Close()
	}
}

// Freeze makes every link, present and future, drop what it carries without closing.
func (m *Links) Freeze() { m.frozen.Store(true) }

// Partition makes every link to worker pid, present and future, from the driver or another
// worker, drop what it carries without closing, until Heal.
func (m *Links) Partition(t testing.TB, pid int) { m.switchOf(t, pid).Store(true) }

// Heal ends Partition(pid): its links carry bytes again (those dropped meanwhile are lost).
func (m *Links) Heal(t testing.TB, pid int) { m.switchOf(t, pid).Store(false) }

func (m *Links) switchOf(t testing.TB, pid int) *atomic.Bool {
	t.Helper()
	v, ok := m.dark.Load(pid)
	if !ok {
		t.Fatalf("disttest: worker %d was not launched by this Links", pid)
	}
	return v.(*atomic.Bool)
}

// track files x in *list unless the Links is closed, and reports whether it did.
func track[T any](m *Links, list *[]T, x T) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	*list = append(*list, x)
	return true
}

func (m *Links) serve(ln net.Listener, target string, off *atomic.Bool) {
	for {
		down, err := ln.Accept()
		if err != nil {
			return // closed at the test's end
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			down.Close()
			continue
		}
		if !track(m, &m.downs, down) || !track(m, &m.ups, up) {
			down.Close()
			up.Close()
			return
		}
		m.wg.Go(func() { m.pump(up, down, off) })
		m.wg.Go(func() { m.pump(down, up, off) })
	}
}

// pump copies src to dst until src ends, dropping what it reads while frozen or off. A failed
// write (dst cut) does not stop it: the other side stays open and reads nothing.
func (m *Links) pump(dst, src net.Conn, off *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if !m.frozen.Load() && !off.Load() {
			dst.Write(buf[:n])
		}
	}
}

func (m *Links) close() {
	m.mu.Lock()
	m.closed = true
	for _, ln := range m.lns {
		ln.Close()
	}
	for _, c := range append(m.downs, m.ups...) {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// proxied is a launched worker as reached through its proxy.
type proxied struct {
	dist.Process
	addr  string
	links *Links
}

// SetPid records which worker the proxy serves, for Partition, and passes it on.
func (p proxied) SetPid(pid int) {
	if v, ok := p.links.byAddr.Load(p.addr); ok && pid > 0 {
		p.links.dark.Store(pid, v)
	}
	p.Process.SetPid(pid)
}

// Addr returns the proxy's address in place of the worker's.
func (p proxied) Addr() (string, string) { return "tcp", p.addr }

// SetOutput passes the cluster's output function on to the wrapped process.
func (p proxied) SetOutput(f dist.OutputFunc) {
	if o, ok := p.Process.(interface{ SetOutput(dist.OutputFunc) }); ok {
		o.SetOutput(f)
	}
}
