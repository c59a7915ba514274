//go:build linux

package wire

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
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
	// On one ring a writer fills every slot the reader leaves and waits for room that never
	// comes; on another a reader waits for bytes that never come.
	go func() { done <- out.put(make([]byte, (ringSlots+4)*ringSlot), abort) }()
	if err := in.get(make([]byte, 3*ringSlot), abort); err != nil {
		t.Fatal(err)
	}
	_, starved := twoViews(t)
	go func() { done <- starved.get(make([]byte, 2*ringSlot), abort) }()
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	out.wake()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("transfer ended with %v, want abort's error", err)
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
	na, peer := UnixPair(t)
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
	na, peer := UnixPair(t)
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

// Offers that cannot be taken are refused, each for its reason, and the connection goes on.
func TestRingBadOffers(t *testing.T) {
	good := func() (ringOffer, int) {
		r, o, err := newRingOut()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.close)
		return o, r.fd
	}
	memfd := func(name string, seal bool, size int) int {
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		unix.Ftruncate(fd, int64(size))
		if seal {
			unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK)
		}
		return fd
	}
	o, _ := good()
	huge := o
	huge.slot = 1 << 30
	cases := []struct {
		name   string
		fd     uint64
		raw    []byte
		reason string
	}{
		{"no such descriptor", 1 << 20, o.encode(), "no such file"},
		{"descriptor out of range", 1 << 40, o.encode(), "out of range"},
		{"not a memfd", 0, o.encode(), "not a ring's memory"},
		{"a memfd of another name", uint64(memfd("other", true, o.size())), o.encode(), "not a ring's memory"},
		{"not sealed", uint64(memfd(ringName, false, o.size())), o.encode(), "not sealed"},
		{"wrong size", uint64(memfd(ringName, true, o.size()-4096)), o.encode(), "not a ring of"},
		{"another ring's token", func() uint64 { _, fd := good(); return uint64(fd) }(), o.encode(), "not the ring offered"},
		{"slots too large", 3, huge.encode(), "slots of"},
		{"short offer", 3, o.encode()[:20], "ring offer of 20 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			na, peer := UnixPair(t)
			c := NewConn(na, DefaultLimits, func(*Conn, *Frame) {}, nil)
			defer c.Close()
			peer.SetDeadline(time.Now().Add(10 * time.Second))
			writeFrame(t, peer, Header{Kind: KindRing, Raw: RawBytes, ID: tc.fd}, tc.raw)
			f, err := ReadFrame(peer, DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if f.Kind != KindRingAck || f.ID != 0 {
				t.Fatalf("answered %v %d, want a refusal", f.Kind, f.ID)
			}
			if p := c.rings.refusal.Load(); p == nil || !strings.Contains((*p).Error(), tc.reason) {
				t.Fatalf("refused for %v, want a reason mentioning %q", p, tc.reason)
			}
			select {
			case <-c.Done():
				t.Fatalf("connection ended: %v", c.Err())
			default:
			}
			if out, in := c.Rings(); out || in {
				t.Fatalf("Rings() = %v, %v", out, in)
			}
		})
	}
	// A good offer after a refused one is refused too: one offer per connection.
	na, peer := UnixPair(t)
	c := NewConn(na, DefaultLimits, func(*Conn, *Frame) {}, nil)
	defer c.Close()
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	o2, fd2 := good()
	for i, id := range []uint64{1 << 20, uint64(fd2)} {
		writeFrame(t, peer, Header{Kind: KindRing, Raw: RawBytes, ID: id}, o2.encode())
		if f, err := ReadFrame(peer, DefaultLimits); err != nil || f.Kind != KindRingAck || f.ID != 0 {
			t.Fatalf("offer %d: answered %+v, %v; want a refusal", i, f, err)
		}
	}
}

// resident counts the pages of mem in memory.
func resident(t *testing.T, mem []byte) int {
	t.Helper()
	vec := make([]byte, (len(mem)+4095)/4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&mem[0])), uintptr(len(mem)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// An unused ring gives its slots' memory back, and works as before on the next transfer.
func TestRingReleasesIdleMemory(t *testing.T) {
	defer func(d time.Duration) { ringIdle = d }(ringIdle)
	ringIdle = time.Hour // the timer is brought forward below, once the pages have been seen
	out, in := twoViews(t)
	slots := out.mem[ringHeaderSize:]
	for round := range 2 {
		src := bytes.Repeat([]byte{byte(round + 1)}, ringSlots*ringSlot)
		done := make(chan error, 1)
		go func() { done <- out.put(src, noAbort) }()
		dst := make([]byte, len(src))
		if err := in.get(dst, noAbort); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(src, dst) {
			t.Fatalf("round %d: received bytes differ", round)
		}
		if n := resident(t, slots); n != len(slots)/4096 {
			t.Fatalf("round %d: %d of %d slot pages resident right after a transfer", round, n, len(slots)/4096)
		}
		out.mu.Lock()
		out.idle.Reset(10 * time.Millisecond)
		out.mu.Unlock()
		for deadline := time.Now().Add(5 * time.Second); resident(t, slots) > 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d slot pages still resident long after the ring went idle", round, resident(t, slots))
			}
		}
	}
}
