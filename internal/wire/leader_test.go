package wire_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/internal/wire"
)

// makeFree brings a to the state where a synchronous caller reads for itself: a first call
// is answered through the background reader, which then leaves reading to the caller.
func makeFree(t *testing.T, a *wire.Conn) {
	t.Helper()
	if _, err := a.Call(context.Background(), wire.Msg{CBOR: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 5*time.Second, "a free connection", func() bool { return a.Role() == "free" })
}

// A caller reading for itself gets its reply, then leaves the connection free for the next.
func TestLeaderCalls(t *testing.T) {
	checkLeaks(t)
	defer wire.PauseMonitor()()
	a, _, _, _ := connPair(t, wire.DefaultLimits, nil, echoInline)
	makeFree(t, a)
	for i := range 100 {
		f, err := a.Call(context.Background(), wire.Msg{CBOR: []byte{byte(i)}})
		if err != nil || len(f.CBOR) != 1 || f.CBOR[0] != byte(i) {
			t.Fatalf("call %d: %v %v", i, f, err)
		}
		if r := a.Role(); r != "free" {
			t.Fatalf("after call %d the connection is %s, want free", i, r)
		}
	}
}

// A request from the peer read by a caller is served by a background reader that takes over,
// and the caller still gets its reply.
func TestLeaderHandsOverRequests(t *testing.T) {
	checkLeaks(t)
	defer wire.PauseMonitor()()
	served := make(chan string, 1)
	release := make(chan struct{})
	a, b, _, _ := connPair(t, wire.DefaultLimits, func(c *wire.Conn, f *wire.Frame) {
		served <- string(f.CBOR)
		echoInline(c, f)
	}, func(c *wire.Conn, f *wire.Frame) {
		if string(f.CBOR) == "slow" {
			go func() { <-release; echoInline(c, f) }()
			return
		}
		echoInline(c, f)
	})
	makeFree(t, a)
	res := make(chan error, 1)
	go func() {
		f, err := a.Call(context.Background(), wire.Msg{CBOR: []byte("slow")})
		if err == nil && string(f.CBOR) != "slow" {
			err = errors.New("wrong reply " + string(f.CBOR))
		}
		res <- err
	}()
	disttest.Eventually(t, 5*time.Second, "the caller reading", func() bool { return a.Role() == "caller" })
	f, err := b.Call(context.Background(), wire.Msg{CBOR: []byte("from b")})
	if err != nil || string(f.CBOR) != "from b" {
		t.Fatalf("b's call while a's caller reads: %v %v", f, err)
	}
	if got := <-served; got != "from b" {
		t.Fatalf("a served %q", got)
	}
	close(release)
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call never returned")
	}
}

// Nobody reads a free connection, yet a request from the peer is served: the monitor starts
// a reader.
func TestFreeConnectionRevived(t *testing.T) {
	checkLeaks(t)
	a, b, _, _ := connPair(t, wire.DefaultLimits, echoInline, echoInline)
	restore := wire.PauseMonitor()
	makeFree(t, a)
	restore()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	f, err := b.Call(ctx, wire.Msg{CBOR: []byte("hello")})
	if err != nil || string(f.CBOR) != "hello" {
		t.Fatalf("call to a free connection: %v %v", f, err)
	}
}

// A caller whose context ends while it reads stops reading between frames, never inside one:
// a frame arriving in two parts around the cancellation is read whole and the stream goes on.
func TestLeaderCancelKeepsFramesWhole(t *testing.T) {
	checkLeaks(t)
	defer wire.PauseMonitor()()
	na, nb := unixPair(t)
	a := wire.NewConn(na, wire.DefaultLimits, nil, nil)
	t.Cleanup(func() { a.Close(); waitDone(t, a) })
	// The peer's side, by hand: read a request and, unless m is empty, answer it with m.
	answer := func(m string) (*wire.Frame, error) {
		req, err := wire.ReadFrame(nb, wire.DefaultLimits)
		if err != nil {
			return nil, err
		}
		if m != "" {
			err = writeFrameErr(nb, wire.KindReply, req.ID, m)
		}
		return req, err
	}
	answered := make(chan error, 1)
	answerInBackground := func(m string) {
		go func() {
			_, err := answer(m)
			answered <- err
		}()
	}
	answerInBackground("warm")
	makeFree(t, a)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := a.Call(ctx, wire.Msg{CBOR: []byte("q")})
		res <- err
	}()
	req, err := answer("")
	if err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 5*time.Second, "the caller reading", func() bool { return a.Role() == "caller" })
	// Half of a reply to a call nobody waits for, then the cancellation, then the rest.
	var hb [wire.HeaderSize]byte
	body := []byte("0123456789")
	wire.PutHeader(hb[:], wire.Header{CBORLen: uint32(len(body)), Kind: wire.KindReply, ID: 999})
	if _, err := nb.Write(append(hb[:], body[:4]...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the caller start reading the frame
	cancel()
	time.Sleep(20 * time.Millisecond)
	if _, err := nb.Write(body[4:]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled call did not return")
	}
	// The late reply is dropped; the cancel frame reaches the peer; the next call works.
	writeFrame(t, nb, wire.KindReply, req.ID, "late")
	if f, err := wire.ReadFrame(nb, wire.DefaultLimits); err != nil || f.Kind != wire.KindCancel || f.ID != req.ID {
		t.Fatalf("peer got %v, %v; want the cancel of %d", f, err, req.ID)
	}
	answerInBackground("next")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	f, err := a.Call(ctx2, wire.Msg{CBOR: []byte("q2")})
	if err != nil || string(f.CBOR) != "next" {
		t.Fatalf("call after the cancelled one: %v %v", f, err)
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if a.Err() != nil {
		t.Fatalf("connection ended: %v", a.Err())
	}
}

func writeFrame(t *testing.T, w io.Writer, k wire.Kind, id uint64, cbor string) {
	t.Helper()
	if err := writeFrameErr(w, k, id, cbor); err != nil {
		t.Fatal(err)
	}
}

func writeFrameErr(w io.Writer, k wire.Kind, id uint64, cbor string) error {
	var hb [wire.HeaderSize]byte
	wire.PutHeader(hb[:], wire.Header{CBORLen: uint32(len(cbor)), Kind: k, ID: id})
	_, err := w.Write(append(hb[:], cbor...))
	return err
}

// A handler that says it will block (WillBlock) has its connection read by another goroutine
// at once, so a call back to its own caller completes without the monitor's help.
func TestWillBlockHandsOverAtOnce(t *testing.T) {
	checkLeaks(t)
	defer wire.PauseMonitor()()
	nested := make(chan error, 1)
	a, _, _, _ := connPair(t, wire.DefaultLimits, echoInline, func(c *wire.Conn, f *wire.Frame) {
		if f.Kind != wire.KindRequest {
			return
		}
		ctx := wire.InlineContext(context.Background(), f)
		r, err := c.Call(ctx, wire.Msg{CBOR: []byte("back")}) // answered by a
		if err == nil && string(r.CBOR) != "back" {
			err = errors.New("wrong nested reply")
		}
		nested <- err
		echoInline(c, f)
	})
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := a.Call(ctx, wire.Msg{CBOR: []byte("outer")})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-nested; err != nil {
			t.Fatal(err)
		}
	}
}
