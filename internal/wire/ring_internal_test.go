package wire

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// twoViews returns a new ring and a second mapping-sharing view of it, as the receiving
// process would have (same memory, its own state).
func twoViews(t *testing.T) (out, in *ring) {
	t.Helper()
	out, o, err := newRingOut()
	if err != nil {
		t.Fatal(err)
	}
	in = newRing(out.mem, o, -1)
	t.Cleanup(func() { out.close() })
	return out, in
}

func noAbort() error { return nil }

func TestRingPutGet(t *testing.T) {
	out, in := twoViews(t)
	for _, n := range []int{1, ringSlot - 1, ringSlot, ringSlot + 1, 5*ringSlot + 12345, 16 * ringSlot} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i*31 + n)
		}
		done := make(chan error, 1)
		go func() { done <- out.put(src, noAbort) }()
		dst := make([]byte, n)
		if err := in.get(dst, noAbort); err != nil {
			t.Fatalf("%d bytes: get: %v", n, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("%d bytes: put: %v", n, err)
		}
		if !bytes.Equal(src, dst) {
			t.Fatalf("%d bytes: received bytes differ", n)
		}
		if h, tl := out.hdr.head.Load(), out.hdr.tail.Load(); h != tl {
			t.Fatalf("%d bytes: head %d, tail %d after a whole transfer", n, h, tl)
		}
	}
}

// Counters that a broken or hostile peer left inconsistent end the transfer with ErrFrame
// rather than reading or writing outside the ring.
func TestRingInconsistentCounters(t *testing.T) {
	out, in := twoViews(t)
	out.hdr.head.Store(10)
	out.hdr.tail.Store(20)
	if err := out.put(make([]byte, 10), noAbort); !errors.Is(err, ErrFrame) {
		t.Fatalf("put with tail past head: %v, want ErrFrame", err)
	}
	out.hdr.head.Store(100)
	out.hdr.tail.Store(0)
	if err := in.get(make([]byte, 10), noAbort); !errors.Is(err, ErrFrame) {
		t.Fatalf("get with more full slots than exist: %v, want ErrFrame", err)
	}
}

// A transfer that waits for a peer gives up with abort's error, and close waits for it.
func TestRingAbortAndClose(t *testing.T) {
	out, in := twoViews(t)
	var stop atomic.Bool
	abort := func() error {
		if stop.Load() {
			return errRingClosed
		}
		return nil
	}
	done := make(chan error, 2)
	go func() { done <- in.get(make([]byte, 3*ringSlot), abort) }()  // nothing will come
	go func() { done <- out.put(make([]byte, 9*ringSlot), abort) }() // nobody empties past 3 slots
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	out.wake()
	for range 2 {
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, ErrClosed) {
				t.Fatalf("transfer ended with %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a waiting transfer did not give up")
		}
	}
	out.close()
	if err := out.put([]byte{1}, noAbort); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v, want ErrClosed", err)
	}
}

// unixPairInternal returns the two ends of a unix socket, closed when the test ends.
func unixPairInternal(t *testing.T) (a, b net.Conn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "wr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	if b, err = net.Dial("unix", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if a = <-ch; a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func writeFrame(t *testing.T, w net.Conn, h Header, raw []byte) {
	t.Helper()
	var hb [HeaderSize]byte
	h.RawLen = uint64(len(raw))
	PutHeader(hb[:], h)
	if _, err := w.Write(append(hb[:], raw...)); err != nil {
		t.Fatal(err)
	}
}

// The receiving process dies in the middle of a raw part: the sender, waiting for slots
// that will never be emptied, fails and its connection ends, promptly.
func TestRingReceiverDiesMidTransfer(t *testing.T) {
	na, peer := unixPairInternal(t)
	c := NewConn(na, DefaultLimits, func(*Conn, *Frame) {}, nil)
	defer c.Close()
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	// The first large part brings the offer, which the peer takes as a Conn would.
	go c.Send(KindOneWay, 0, Msg{RawKind: RawBytes, Raw: make([]byte, ringMin)})
	f, err := ReadFrame(peer, DefaultLimits)
	if err != nil || f.Kind != KindRing {
		t.Fatalf("offer: %v %v", f, err)
	}
	o, err := parseRingOffer(f.Raw.([]byte))
	if err != nil {
		t.Fatal(err)
	}
	r, err := openRingIn(peer, f.ID, o)
	if err != nil {
		t.Fatalf("mapping the offered ring: %v", err)
	}
	defer r.close()
	if _, err := ReadFrame(peer, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	writeFrame(t, peer, Header{Kind: KindRingAck, ID: 1}, nil)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if out, _ := c.Rings(); out {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ring was not taken into use")
		}
	}
	sent := make(chan error, 1)
	go func() { sent <- c.Send(KindOneWay, 0, Msg{RawKind: RawBytes, Raw: make([]byte, 64*ringSlot)}) }()
	if f, err = ReadFrame(peer, DefaultLimits); !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "where there is none") {
		t.Fatalf("reading the ring frame without a ring: %v %v", f, err) // the header says FlagRing
	}
	if err := r.get(make([]byte, ringSlot), noAbort); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	t0 := time.Now()
	select {
	case err := <-sent:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Send ended with %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send still waits for a receiver that is gone")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not end")
	}
	t.Logf("sender gave up %v after the receiver went", time.Since(t0))
}

// The sending process dies in the middle of a raw part: the receiver, waiting for slots that
// will never be filled, ends the connection with a truncation error, promptly.
func TestRingSenderDiesMidTransfer(t *testing.T) {
	na, peer := unixPairInternal(t)
	closed := make(chan error, 1)
	c := NewConn(na, DefaultLimits, func(*Conn, *Frame) {}, func(err error) { closed <- err })
	defer c.Close()
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	r, o, err := newRingOut()
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	writeFrame(t, peer, Header{Kind: KindRing, Raw: RawBytes, ID: uint64(r.fd)}, o.encode())
	f, err := ReadFrame(peer, DefaultLimits)
	if err != nil || f.Kind != KindRingAck || f.ID != 1 {
		t.Fatalf("answer to the offer: %+v %v (refusal: %v)", f, err, c.rings.refusal.Load())
	}
	if _, in := c.Rings(); !in {
		t.Fatal("Rings() says the accepted ring is not read")
	}
	var hb [HeaderSize]byte
	PutHeader(hb[:], Header{Kind: KindOneWay, Raw: RawFloat64, RawLen: 8 * ringSlot, Flags: FlagRing})
	if _, err := peer.Write(hb[:]); err != nil {
		t.Fatal(err)
	}
	if err := r.put(make([]byte, ringSlot), noAbort); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	select {
	case err := <-closed:
		if !errors.Is(err, ErrFrame) || !strings.Contains(err.Error(), "peer gone") {
			t.Fatalf("connection ended with %v, want a truncated frame", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the receiver still waits for a sender that is gone")
	}
}

// FuzzParseRingOffer: any bytes either fail with ErrFrame or make an offer within bounds that
// encodes back to the same bytes.
func FuzzParseRingOffer(f *testing.F) {
	f.Add(ringOffer{slot: ringSlot, slots: ringSlots}.encode())
	f.Add(ringOffer{slot: ringMaxSlot, slots: ringMaxSlots}.encode())
	f.Add(ringOffer{slot: ringMinSlot + 1, slots: 1}.encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := parseRingOffer(b)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error %v does not wrap ErrFrame", err)
			}
			return
		}
		if o.size() > ringHeaderSize+ringMaxSlot*ringMaxSlots || o.slot%4096 != 0 || o.slots < ringMinSlots {
			t.Fatalf("accepted %+v", o)
		}
		if !bytes.Equal(o.encode(), b) {
			t.Fatalf("%x encodes back as %x", b, o.encode())
		}
	})
}
