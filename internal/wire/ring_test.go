package wire_test

import (
	"context"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godist/dist/internal/wire"
)

// ringMappings counts this process's mappings of ring memory.
func ringMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "godist-ring")
}

// waitRings waits until c reports the given ring state.
func waitRings(t *testing.T, c *wire.Conn, out, in bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, i := c.Rings()
		if o == out && i == in {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Rings() = %v, %v; want %v, %v", o, i, out, in)
		}
		time.Sleep(time.Millisecond)
	}
}

// pattern returns n float64s that differ from those of any other seed.
func pattern(n, seed int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(i*7+seed) + 0.5
	}
	return xs
}

func TestRingCarriesLargeRawParts(t *testing.T) {
	checkLeaks(t)
	maps0 := ringMappings(t)
	a, b, _, _ := connPair(t, wire.DefaultLimits, nil, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call := func(v any) {
		t.Helper()
		f, err := a.Call(ctx, rawMsg("big", v))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f.Raw, v) || f.Flags != 0 {
			t.Fatalf("%T of %d elements came back different (flags %#x)", v, reflect.ValueOf(v).Len(), f.Flags)
		}
	}
	// The first large part in each direction goes through the socket and offers a ring.
	if o, i := a.Rings(); o || i {
		t.Fatalf("rings before any large part: %v, %v", o, i)
	}
	call(pattern(1<<17, 1)) // exactly 1 MiB
	waitRings(t, a, true, true)
	waitRings(t, b, true, true)
	// Two rings, one per direction, each mapped by both ends, which live in this process.
	if got := ringMappings(t); got != maps0+4 {
		t.Fatalf("%d ring mappings, want %d", got, maps0+4)
	}
	// Sizes around the slot size, and element types of every width.
	call(pattern(3<<17+1, 2))
	call([]byte(strings.Repeat("abcdefg", 3<<20/7)))
	big := make([]int32, 9<<18+3)
	for i := range big {
		big[i] = int32(i) * -3
	}
	call(big)
	call(pattern(1<<17-1, 3)) // just under the threshold: through the socket, between ring frames

	// Many goroutines, large and small messages interleaved: every frame arrives whole, in
	// its place, whichever way its raw part came.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				var v any = []byte{byte(g), byte(i)}
				if g%2 == 0 {
					v = pattern(1<<17+g*1000+i, g*100+i)
				}
				f, err := a.Call(ctx, rawMsg("mixed", v))
				if err != nil {
					errs <- err
					return
				}
				if !reflect.DeepEqual(f.Raw, v) {
					errs <- io.ErrUnexpectedEOF
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent calls: %v", err)
	}
	a.Close()
	b.Close()
	waitDone(t, a)
	waitDone(t, b)
	// Done is closed before the rings are unmapped (a transfer waiting on a ring watches it
	// to give up), and the end of a connection may be under way on its reader's goroutine.
	waitMappings(t, maps0)
}

// waitMappings waits until this process maps want rings.
func waitMappings(t *testing.T, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ringMappings(t) != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d ring mappings, want %d", ringMappings(t), want)
		}
	}
}

// A connection other than a unix socket never offers a ring.
func TestRingNotOverTCP(t *testing.T) {
	checkLeaks(t)
	na, nb := tcpPair(t)
	a := wire.NewConn(na, wire.DefaultLimits, nil, nil)
	b := wire.NewConn(nb, wire.DefaultLimits, echo, nil)
	defer b.Close()
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		v := pattern(1<<18, i)
		f, err := a.Call(ctx, rawMsg("tcp", v))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f.Raw, v) {
			t.Fatal("raw part came back different")
		}
	}
	if o, i := a.Rings(); o || i {
		t.Fatalf("Rings() over TCP = %v, %v", o, i)
	}
}

// sendFrame writes a frame as the raw peers of the tests below do.
func sendFrame(t *testing.T, w io.Writer, h wire.Header, raw []byte) {
	t.Helper()
	h.RawLen = uint64(len(raw))
	if _, err := w.Write(append(encodeHeader(h), raw...)); err != nil {
		t.Fatal(err)
	}
}

// A peer that refuses the ring: every large part keeps going through the socket, and the
// refused ring is unmapped.
func TestRingRefusedByPeer(t *testing.T) {
	checkLeaks(t)
	maps0 := ringMappings(t)
	c, peer, _ := peerConn(t, wire.DefaultLimits)
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	v := pattern(1<<18, 1)
	go c.Send(wire.KindOneWay, 0, rawMsg("x", v))
	f, err := wire.ReadFrame(peer, wire.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != wire.KindRing {
		t.Fatalf("first frame is %v, want the ring's offer", f.Kind)
	}
	if f, err = wire.ReadFrame(peer, wire.DefaultLimits); err != nil || !reflect.DeepEqual(f.Raw, v) {
		t.Fatalf("first large part: %v", err)
	}
	sendFrame(t, peer, wire.Header{Kind: wire.KindRingAck, ID: 0}, nil)
	// ReadFrame fails on a frame whose raw part went through a ring: these came on the stream.
	for i := range 3 {
		v := pattern(1<<18, i+2)
		go c.Send(wire.KindOneWay, 0, rawMsg("x", v))
		f, err := wire.ReadFrame(peer, wire.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if f.Kind == wire.KindRing || !reflect.DeepEqual(f.Raw, v) {
			t.Fatalf("part %d: kind %v, or content differs", i, f.Kind)
		}
	}
	if o, i := c.Rings(); o || i {
		t.Fatalf("Rings() = %v, %v after a refusal", o, i)
	}
	waitMappings(t, maps0) // the refusal is taken on the reader's goroutine
}
