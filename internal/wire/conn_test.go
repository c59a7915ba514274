package wire_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/godist/dist/internal/wire"
)

// closeRec records the calls of a Conn's onClose callback.
type closeRec struct {
	n   atomic.Int32
	err chan error
}

func newCloseRec() *closeRec { return &closeRec{err: make(chan error, 1)} }

func (r *closeRec) onClose(err error) {
	r.n.Add(1)
	select {
	case r.err <- err:
	default:
	}
}

func (r *closeRec) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.err:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("onClose was not called")
		return nil
	}
}

func waitDone(t *testing.T, c *wire.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done() was not closed")
	}
}

// connPair starts two Conns over a real unix socket. Both are closed when the test ends.
func connPair(t *testing.T, lim wire.Limits, ha, hb wire.Handler) (a, b *wire.Conn, ra, rb *closeRec) {
	t.Helper()
	na, nb := unixPair(t)
	ra, rb = newCloseRec(), newCloseRec()
	a = wire.NewConn(na, lim, ha, ra.onClose)
	b = wire.NewConn(nb, lim, hb, rb.onClose)
	t.Cleanup(func() {
		a.Close()
		b.Close()
		waitDone(t, a)
		waitDone(t, b)
	})
	return a, b, ra, rb
}

// reply answers request f with its own content, from a goroutine as a Handler must.
func reply(c *wire.Conn, f *wire.Frame, kind wire.Kind) {
	m := wire.Msg{CBOR: f.CBOR, Flags: f.Flags}
	if f.Raw != nil {
		k, b, ok := wire.RawOf(f.Raw)
		if !ok || k != f.Header.Raw {
			panic(fmt.Sprintf("frame of raw kind %v carries a %T", f.Header.Raw, f.Raw))
		}
		m.RawKind, m.Raw, m.RawValue = k, b, f.Raw
	}
	go c.Send(kind, f.ID, m)
}

// echo is a Handler that replies to every request with the request's content.
func echo(c *wire.Conn, f *wire.Frame) {
	if f.Kind == wire.KindRequest {
		reply(c, f, wire.KindReply)
	}
}

func rawMsg(cbor string, v any) wire.Msg {
	m := wire.Msg{CBOR: []byte(cbor)}
	if v != nil {
		k, b, ok := wire.RawOf(v)
		if !ok {
			panic(fmt.Sprintf("%T does not travel raw", v))
		}
		m.RawKind, m.Raw, m.RawValue = k, b, v
	}
	return m
}

// echoInline replies from the handler itself, on the connection's reader goroutine.
func echoInline(c *wire.Conn, f *wire.Frame) {
	if f.Kind != wire.KindRequest {
		return
	}
	m := wire.Msg{CBOR: f.CBOR, Flags: f.Flags}
	if f.Raw != nil {
		m.RawKind, m.Raw, _ = wire.RawOf(f.Raw)
	}
	c.Send(wire.KindReply, f.ID, m)
}

func TestConnEchoConcurrent(t *testing.T) {
	t.Run("goroutine handler", func(t *testing.T) { testEchoConcurrent(t, echo) })
	t.Run("inline handler", func(t *testing.T) { testEchoConcurrent(t, echoInline) })
}

func testEchoConcurrent(t *testing.T, handler wire.Handler) {
	checkLeaks(t)
	a, _, _, _ := connPair(t, wire.DefaultLimits, nil, handler)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const calls, workers = 1000, 16
	var next atomic.Int64
	var ok atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= calls {
					return
				}
				var raw any
				switch i % 4 {
				case 1:
					raw = []int32{int32(i), -int32(i)}
				case 2:
					if i%40 == 2 {
						// Larger than the copy threshold: written from the caller's memory.
						big := make([]float64, 10000)
						for j := range big {
							big[j] = float64(i*j) + 0.25
						}
						raw = big
					} else {
						raw = []byte(strings.Repeat("x", i))
					}
				case 3:
					raw = []uint16{}
				}
				m := rawMsg(fmt.Sprintf("call %d", i), raw)
				m.Flags = uint16(i << 1) // bit 0 is FlagRing, set by the connection only
				f, err := a.Call(ctx, m)
				if err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
					return
				}
				if f.Kind != wire.KindReply || string(f.CBOR) != fmt.Sprintf("call %d", i) || f.Flags != uint16(i<<1) {
					errs <- fmt.Errorf("call %d got reply %s %q flags %d", i, f.Kind, f.CBOR, f.Flags)
					return
				}
				if raw == nil {
					if f.Raw != nil || f.Header.Raw != wire.RawNone {
						errs <- fmt.Errorf("call %d: reply has a raw part %T", i, f.Raw)
						return
					}
				} else if !reflect.DeepEqual(f.Raw, raw) {
					errs <- fmt.Errorf("call %d: raw part %T of %d elements differs from the %T sent",
						i, f.Raw, reflect.ValueOf(f.Raw).Len(), raw)
					return
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ok.Load() != calls {
		t.Fatalf("%d of %d calls got their own reply", ok.Load(), calls)
	}
}

func TestConnBigRaw(t *testing.T) {
	checkLeaks(t)
	type seen struct {
		kind wire.RawKind
		raw  any
	}
	got := make(chan seen, 1)
	handler := func(c *wire.Conn, f *wire.Frame) {
		if f.Kind == wire.KindRequest {
			got <- seen{f.Header.Raw, f.Raw}
			reply(c, f, wire.KindReply)
		}
	}
	a, _, _, _ := connPair(t, wire.DefaultLimits, nil, handler)
	const n = 64 << 20 / 8 // 64 MiB of float64
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i) * 0.5
	}
	s[n-1] = math.Inf(-1)
	check := func(what string, v any) {
		t.Helper()
		r, ok := v.([]float64)
		if !ok {
			t.Fatalf("%s: raw part is a %T, want []float64", what, v)
		}
		if len(r) != n {
			t.Fatalf("%s: %d elements, want %d", what, len(r), n)
		}
		if unsafe.SliceData(r) == unsafe.SliceData(s) {
			t.Fatalf("%s: received slice aliases the sent one", what)
		}
		for _, i := range []int{0, 1, 12345, n / 2, n - 2} {
			if r[i] != float64(i)*0.5 {
				t.Fatalf("%s: element %d = %v, want %v", what, i, r[i], float64(i)*0.5)
			}
		}
		if !math.IsInf(r[n-1], -1) {
			t.Fatalf("%s: last element %v", what, r[n-1])
		}
		if !slicesEqual(r, s) {
			t.Fatalf("%s: contents differ", what)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := a.Call(ctx, rawMsg("big", s))
	if err != nil {
		t.Fatal(err)
	}
	in := <-got
	if in.kind != wire.RawFloat64 {
		t.Fatalf("request raw kind %v", in.kind)
	}
	check("request", in.raw)
	if f.Header.Raw != wire.RawFloat64 || f.RawLen != n*8 || string(f.CBOR) != "big" {
		t.Fatalf("reply header %+v, CBOR %q", f.Header, f.CBOR)
	}
	check("reply", f.Raw)
}

func slicesEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
			return false
		}
	}
	return true
}

func TestConnOneWay(t *testing.T) {
	checkLeaks(t)
	frames := make(chan *wire.Frame, 10)
	a, _, _, _ := connPair(t, wire.DefaultLimits, nil, func(c *wire.Conn, f *wire.Frame) { frames <- f })
	if err := a.Send(wire.KindOneWay, 0, wire.Msg{CBOR: []byte("hello"), Flags: 0x1234}); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(wire.KindOneWay, 77, rawMsg("with raw", []int16{-1, 1, math.MaxInt16})); err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		id    uint64
		cbor  string
		flags uint16
		raw   any
	}{{0, "hello", 0x1234, nil}, {77, "with raw", 0, []int16{-1, 1, math.MaxInt16}}} {
		select {
		case f := <-frames:
			if f.Kind != wire.KindOneWay || f.ID != want.id || string(f.CBOR) != want.cbor || f.Flags != want.flags || !reflect.DeepEqual(f.Raw, want.raw) {
				t.Fatalf("frame %d: %+v raw %#v", i, f.Header, f.Raw)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("one-way frame %d did not reach the handler", i)
		}
	}
}

// A handler that blocks does not stop the connection: other requests are still answered.
func TestConnBlockingHandler(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	a, _, _, _ := connPair(t, wire.DefaultLimits, nil, func(c *wire.Conn, f *wire.Frame) {
		if string(f.CBOR) == "block" {
			blocked <- struct{}{}
			<-release
		}
		echoInline(c, f)
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, wire.Msg{CBOR: []byte("block")})
		slow <- err
	}()
	<-blocked
	for i := range 10 {
		f, err := a.Call(ctx, wire.Msg{CBOR: []byte(fmt.Sprint(i))})
		if err != nil || string(f.CBOR) != fmt.Sprint(i) {
			t.Fatalf("call %d while a handler blocks: %v, %v", i, f, err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("the blocked call returned early: %v", err)
	default:
	}
	release <- struct{}{}
	if err := <-slow; err != nil {
		t.Fatalf("blocked call: %v", err)
	}
}

func TestConnErrorReply(t *testing.T) {
	checkLeaks(t)
	a, _, _, _ := connPair(t, wire.DefaultLimits, nil, func(c *wire.Conn, f *wire.Frame) {
		if f.Kind == wire.KindRequest {
			go c.Send(wire.KindError, f.ID, wire.Msg{CBOR: []byte("it failed")})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := a.Call(ctx, wire.Msg{CBOR: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != wire.KindError || string(f.CBOR) != "it failed" {
		t.Fatalf("got %s %q, want the error frame", f.Kind, f.CBOR)
	}
}

func TestConnCancel(t *testing.T) {
	checkLeaks(t)
	requests := make(chan *wire.Frame, 10)
	cancels := make(chan *wire.Frame, 10)
	a, b, _, _ := connPair(t, wire.DefaultLimits, nil, func(c *wire.Conn, f *wire.Frame) {
		switch {
		case f.Kind == wire.KindCancel:
			cancels <- f
		case string(f.CBOR) == "hold":
			requests <- f // never answered
		default:
			echo(c, f)
		}
	})

	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		now  bool // cancel as soon as the request has arrived
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, true, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, false, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			res := make(chan error, 1)
			go func() {
				_, err := a.Call(ctx, wire.Msg{CBOR: []byte("hold")})
				res <- err
			}()
			var req *wire.Frame
			select {
			case req = <-requests:
			case <-time.After(5 * time.Second):
				t.Fatal("request did not arrive")
			}
			if tc.now {
				cancel()
			}
			select {
			case err := <-res:
				if !errors.Is(err, tc.want) || err != ctx.Err() {
					t.Fatalf("Call returned %v, want ctx.Err() = %v", err, ctx.Err())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Call did not return after its context ended")
			}
			select {
			case f := <-cancels:
				if f.Kind != wire.KindCancel || f.ID != req.ID {
					t.Fatalf("cancel frame %+v for request %d", f.Header, req.ID)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the other end got no cancel frame")
			}
			// A reply that comes after all is dropped, and the connection goes on.
			if err := b.Send(wire.KindReply, req.ID, wire.Msg{CBOR: []byte("late")}); err != nil {
				t.Fatal(err)
			}
			ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel2()
			f, err := a.Call(ctx2, wire.Msg{CBOR: []byte("ping")})
			if err != nil || string(f.CBOR) != "ping" {
				t.Fatalf("call after a cancelled one: %v, %v", f, err)
			}
			if a.Err() != nil || b.Err() != nil {
				t.Fatalf("connection ended: %v, %v", a.Err(), b.Err())
			}
		})
	}
}

func TestConnCloseFailsPending(t *testing.T) {
	checkLeaks(t)
	const n = 5
	requests := make(chan *wire.Frame, 2*n)
	var callbacks atomic.Int32
	var callbacksAtClose atomic.Int32
	na, nb := unixPair(t)
	closedA := make(chan error, 2)
	var closeCountA atomic.Int32
	a := wire.NewConn(na, wire.DefaultLimits, nil, func(err error) {
		callbacksAtClose.Store(callbacks.Load())
		closeCountA.Add(1)
		closedA <- err
	})
	rb := newCloseRec()
	b := wire.NewConn(nb, wire.DefaultLimits, func(c *wire.Conn, f *wire.Frame) { requests <- f }, rb.onClose)
	defer a.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	callErrs := make(chan error, n)
	for range n {
		go func() {
			_, err := a.Call(ctx, wire.Msg{CBOR: []byte("wait")})
			callErrs <- err
		}()
	}
	funcErrs := make(chan error, n)
	for range n {
		_, err := a.StartFunc(wire.Msg{CBOR: []byte("wait")}, func(f *wire.Frame, err error) {
			callbacks.Add(1)
			if f != nil {
				err = fmt.Errorf("got a frame %+v", f.Header)
			}
			funcErrs <- err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 2 * n {
		select {
		case <-requests:
		case <-time.After(5 * time.Second):
			t.Fatal("requests did not arrive")
		}
	}

	b.Close() // the other end goes away
	for range n {
		select {
		case err := <-callErrs:
			if !errors.Is(err, wire.ErrClosed) {
				t.Fatalf("pending Call: got %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("pending Call did not fail")
		}
		select {
		case err := <-funcErrs:
			if !errors.Is(err, wire.ErrClosed) {
				t.Fatalf("pending StartFunc: got %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("pending StartFunc did not fail")
		}
	}
	waitDone(t, a)
	waitDone(t, b)
	var errA error
	select {
	case errA = <-closedA:
	case <-time.After(5 * time.Second):
		t.Fatal("onClose not called")
	}
	if !errors.Is(errA, wire.ErrClosed) || !errors.Is(a.Err(), wire.ErrClosed) {
		t.Fatalf("onClose got %v, Err() = %v; want ErrClosed", errA, a.Err())
	}
	if got := callbacksAtClose.Load(); got != n {
		t.Fatalf("onClose ran after %d of %d pending callbacks", got, n)
	}
	if err := rb.wait(t); !errors.Is(err, wire.ErrClosed) || !strings.Contains(err.Error(), "by this process") {
		t.Fatalf("onClose of the closed end got %v", err)
	}

	// Once closed, calls fail at once and nothing runs twice.
	if _, err := a.Call(ctx, wire.Msg{CBOR: []byte("x")}); !errors.Is(err, wire.ErrClosed) {
		t.Fatalf("Call after close: %v", err)
	}
	if err := a.Send(wire.KindOneWay, 0, wire.Msg{CBOR: []byte("x")}); !errors.Is(err, wire.ErrClosed) {
		t.Fatalf("Send after close: %v", err)
	}
	if err := b.Send(wire.KindOneWay, 0, wire.Msg{CBOR: []byte("x")}); !errors.Is(err, wire.ErrClosed) {
		t.Fatalf("Send on the closed end: %v", err)
	}
	a.Close()
	b.Close()
	a.Cancel(12345)
	a.Forget(12345)
	if closeCountA.Load() != 1 || rb.n.Load() != 1 {
		t.Fatalf("onClose called %d and %d times, want once each", closeCountA.Load(), rb.n.Load())
	}
	if callbacks.Load() != n {
		t.Fatalf("%d StartFunc callbacks, want %d", callbacks.Load(), n)
	}
}

func TestConnSendOverLimits(t *testing.T) {
	checkLeaks(t)
	lim := wire.Limits{MaxCBOR: 1 << 10, MaxRaw: 1 << 12}
	a, b, ra, rb := connPair(t, lim, nil, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := a.Call(ctx, wire.Msg{CBOR: make([]byte, lim.MaxCBOR+1)})
	if !errors.Is(err, wire.ErrFrame) || errors.Is(err, wire.ErrClosed) {
		t.Fatalf("Call with an oversized CBOR part: got %v, want ErrFrame", err)
	}
	err = a.Send(wire.KindOneWay, 0, rawMsg("", make([]byte, lim.MaxRaw+1)))
	if !errors.Is(err, wire.ErrFrame) {
		t.Fatalf("Send with an oversized raw part: got %v, want ErrFrame", err)
	}
	_, err = a.Call(ctx, rawMsg("", make([]float64, lim.MaxRaw/8+1)))
	if !errors.Is(err, wire.ErrFrame) {
		t.Fatalf("Call with an oversized raw part: got %v, want ErrFrame", err)
	}
	// The connection is still up, and a message exactly at the limits goes through.
	select {
	case <-a.Done():
		t.Fatalf("connection closed by an oversized send: %v", a.Err())
	default:
	}
	if a.Err() != nil || b.Err() != nil || ra.n.Load() != 0 || rb.n.Load() != 0 {
		t.Fatalf("connection ended: %v, %v", a.Err(), b.Err())
	}
	cbor := bytes.Repeat([]byte{'c'}, lim.MaxCBOR)
	raw := make([]uint32, lim.MaxRaw/4)
	raw[len(raw)-1] = 42
	f, err := a.Call(ctx, rawMsg(string(cbor), raw))
	if err != nil {
		t.Fatalf("call at the limits: %v", err)
	}
	if !bytes.Equal(f.CBOR, cbor) || !reflect.DeepEqual(f.Raw, raw) {
		t.Fatal("reply at the limits differs")
	}
}

// peerConn starts a Conn on one end of a unix socket and returns the raw other end.
func peerConn(t *testing.T, lim wire.Limits) (*wire.Conn, net.Conn, *closeRec) {
	t.Helper()
	na, nb := unixPair(t)
	r := newCloseRec()
	c := wire.NewConn(na, lim, func(*wire.Conn, *wire.Frame) {}, r.onClose)
	t.Cleanup(func() {
		c.Close()
		waitDone(t, c)
	})
	return c, nb, r
}

var badInputs = []struct {
	name    string
	b       []byte
	hangUp  bool
	mention []error
	text    string
}{
	{"garbage", []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"), false, nil, "unknown kind"},
	{"all ones", bytes.Repeat([]byte{0xff}, wire.HeaderSize), false, nil, "unknown kind 255"},
	{"over the limit", encodeHeader(wire.Header{Kind: wire.KindRequest, CBORLen: 1 << 20}), false, nil, "exceeds the limit"},
	{"bad raw kind", encodeHeader(wire.Header{Kind: wire.KindReply, Raw: 99, RawLen: 8}), false, nil, "unknown raw element kind 99"},
	{"ring never set up", encodeHeader(wire.Header{Kind: wire.KindRequest, Raw: wire.RawBytes, RawLen: 8, Flags: wire.FlagRing}), false, nil, "never set up"},
	{"truncated", append(encodeHeader(wire.Header{Kind: wire.KindRequest, CBORLen: 100}), "only part of it"...), true, []error{io.ErrUnexpectedEOF}, "truncated"},
}

func TestConnMalformedFromPeer(t *testing.T) {
	checkLeaks(t)
	for _, tc := range badInputs {
		t.Run(tc.name, func(t *testing.T) {
			c, peer, rec := peerConn(t, wire.Limits{MaxCBOR: 1 << 10, MaxRaw: 1 << 10})
			pending := make(chan error, 1)
			if _, err := c.StartFunc(wire.Msg{CBOR: []byte("q")}, func(f *wire.Frame, err error) { pending <- err }); err != nil {
				t.Fatal(err)
			}
			if _, err := peer.Write(tc.b); err != nil {
				t.Fatal(err)
			}
			if tc.hangUp {
				// Read the request first: closing a unix socket with unread data resets the
				// connection instead of ending the stream.
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(peer, make([]byte, wire.HeaderSize+1)); err != nil {
					t.Fatal(err)
				}
				peer.Close()
			}
			waitDone(t, c)
			err := c.Err()
			if !errors.Is(err, wire.ErrFrame) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Err() = %v, want ErrFrame mentioning %q", err, tc.text)
			}
			for _, e := range tc.mention {
				if !errors.Is(err, e) {
					t.Fatalf("Err() = %v does not wrap %v", err, e)
				}
			}
			if got := rec.wait(t); got != err {
				t.Fatalf("onClose got %v, want %v", got, err)
			}
			select {
			case perr := <-pending:
				if perr == nil {
					t.Fatal("pending call succeeded")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("pending call did not fail")
			}
			// The Conn closed its socket: the peer sees the end of the stream.
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, peer); err != nil && !errors.Is(err, net.ErrClosed) {
				t.Fatalf("peer: %v", err)
			}
			c.Close()
			if rec.n.Load() != 1 {
				t.Fatalf("onClose called %d times", rec.n.Load())
			}
		})
	}
}

// ErrClosed is documented as wrapped by the errors of every call on a connection that has
// ended, and cluster.go relies on it to report a ProcessExitedError.
func TestConnEndedByBadFrameFailsCallsWithErrClosed(t *testing.T) {
	checkLeaks(t)
	for _, tc := range badInputs {
		t.Run(tc.name, func(t *testing.T) {
			c, peer, _ := peerConn(t, wire.Limits{MaxCBOR: 1 << 10, MaxRaw: 1 << 10})
			pending := make(chan error, 1)
			if _, err := c.StartFunc(wire.Msg{CBOR: []byte("q")}, func(f *wire.Frame, err error) { pending <- err }); err != nil {
				t.Fatal(err)
			}
			peer.Write(tc.b)
			if tc.hangUp {
				// Read the request first: closing a unix socket with unread data resets the
				// connection instead of ending the stream.
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(peer, make([]byte, wire.HeaderSize+1)); err != nil {
					t.Fatal(err)
				}
				peer.Close()
			}
			waitDone(t, c)
			if err := <-pending; !errors.Is(err, wire.ErrClosed) {
				t.Fatalf("pending call failed with %v, want an error wrapping ErrClosed", err)
			}
			if _, err := c.Call(context.Background(), wire.Msg{CBOR: []byte("q")}); !errors.Is(err, wire.ErrClosed) {
				t.Fatalf("Call after the end failed with %v, want an error wrapping ErrClosed", err)
			}
			if err := c.Send(wire.KindReply, 1, wire.Msg{}); !errors.Is(err, wire.ErrClosed) {
				t.Fatalf("Send after the end failed with %v, want an error wrapping ErrClosed", err)
			}
		})
	}
}

// StartFunc's contract: done is called exactly once when StartFunc succeeds, and never when
// it returns an error (the caller handles the error itself). Close races with new calls here.
func TestConnStartFuncVersusClose(t *testing.T) {
	checkLeaks(t)
	type call struct {
		err   error
		calls *atomic.Int32
	}
	var bad []string
	for iter := range 1000 {
		a, b := net.Pipe()
		c := wire.NewConn(a, wire.DefaultLimits, nil, nil)
		go io.Copy(io.Discard, b)
		var mu sync.Mutex
		var all []call
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					n := new(atomic.Int32)
					_, err := c.StartFunc(wire.Msg{CBOR: []byte("x")}, func(*wire.Frame, error) { n.Add(1) })
					mu.Lock()
					all = append(all, call{err, n})
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		c.Close()
		wg.Wait()
		<-c.Done()
		b.Close()
		for _, cl := range all {
			want := int32(1)
			if cl.err != nil {
				want = 0
			}
			if got := cl.calls.Load(); got != want {
				bad = append(bad, fmt.Sprintf("iteration %d: StartFunc returned %v and done was called %d times", iter, cl.err, got))
			}
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d violations, e.g. %s", len(bad), bad[0])
	}
}
