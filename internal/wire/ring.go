package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Between two processes of one host, the raw parts of large frames travel through shared
// memory instead of the socket. A unix socket copies every byte twice, into the kernel's
// buffers and out again: a 256 MiB array streamed through it moved at 4.2-4.7 GB/s on a
// 2-vCPU VM. A ring of 1 MiB slots mapped by both processes is the same two copies in user
// space, one on each side, running at once on the two processors with the slots staying in
// cache: 7.7-10.7 GB/s in the same setting. One-copy kernel paths were slower here:
// process_vm_readv 3.5-4.5 GB/s, vmsplice into a pipe 3.3-3.8 GB/s (both pin 4 KiB pages).
//
// Each direction of a connection has its own ring, created by the sending side on its first
// large raw part and offered to the other side in a KindRing frame; until the peer accepts
// (KindRingAck), raw parts keep going through the socket, and a refusal leaves it that way.
// A frame whose raw part went through the ring says so with FlagRing in its header: the
// header and CBOR part still come through the socket, in order with every other frame, and the
// receiver then takes the raw part's bytes from the ring.

// FlagRing in a frame header says that the frame's raw part comes through the sender's ring
// rather than after the CBOR part on the stream. Senders set it themselves; Send refuses it.
const FlagRing uint16 = 1 << 0

// Frame kinds private to a connection: they never reach a Handler.
const (
	// KindRing offers the receiver the sender's ring: ID is the descriptor number of the ring's
	// memory in the sender, the raw part an encoded ringOffer.
	KindRing Kind = 6
	// KindRingAck answers KindRing: ID is 1 if the ring was mapped and will be read, 0 if not.
	KindRingAck Kind = 7
)

const (
	ringMin        = 1 << 20 // raw parts from this size go through the ring
	ringSlot       = 1 << 20
	ringSlots      = 8
	ringHeaderSize = 4096
	ringMagic      = 0x31676e6972646f67 // "godring1", little-endian

	// What a receiver accepts in an offer: a page-multiple slot of 64 KiB to 16 MiB, 2 to 64 slots.
	ringMinSlot, ringMaxSlot   = 64 << 10, 16 << 20
	ringMinSlots, ringMaxSlots = 2, 64

	ringOfferSize = 24
)

// ringHeader is the start of a ring's memory. head and tail count slots since the ring was
// made: head-tail (mod 2^32) is how many are full. Each is written by one side only, and each
// sits on a cache line of its own so that the two sides do not steal each other's lines.
type ringHeader struct {
	magic uint64
	token [16]byte
	_     [40]byte
	head  atomic.Uint32 // slots filled, written by the sender
	_     [60]byte
	tail  atomic.Uint32 // slots emptied, written by the receiver
	_     [60]byte
}

var _ [ringHeaderSize - unsafe.Sizeof(ringHeader{})]byte // the header fits its page

// ringOffer describes a ring to the process offered it.
type ringOffer struct {
	token [16]byte // also written in the ring's header: proves the right memory was mapped
	slot  uint32   // bytes per slot
	slots uint32   // number of slots
}

func (o ringOffer) encode() []byte {
	b := make([]byte, ringOfferSize)
	copy(b, o.token[:])
	binary.LittleEndian.PutUint32(b[16:], o.slot)
	binary.LittleEndian.PutUint32(b[20:], o.slots)
	return b
}

// parseRingOffer decodes and checks an offer: a peer must not make this process map more than
// ringMaxSlot*ringMaxSlots bytes.
func parseRingOffer(b []byte) (ringOffer, error) {
	var o ringOffer
	if len(b) != ringOfferSize {
		return o, fmt.Errorf("%w: ring offer of %d bytes, want %d", ErrFrame, len(b), ringOfferSize)
	}
	copy(o.token[:], b)
	o.slot = binary.LittleEndian.Uint32(b[16:])
	o.slots = binary.LittleEndian.Uint32(b[20:])
	switch {
	case o.slot < ringMinSlot || o.slot > ringMaxSlot || o.slot%4096 != 0:
		return o, fmt.Errorf("%w: ring offer with slots of %d bytes (want a multiple of 4096 from %d to %d)", ErrFrame, o.slot, ringMinSlot, ringMaxSlot)
	case o.slots < ringMinSlots || o.slots > ringMaxSlots:
		return o, fmt.Errorf("%w: ring offer with %d slots (want %d to %d)", ErrFrame, o.slots, ringMinSlots, ringMaxSlots)
	}
	return o, nil
}

// size is the length of the memory an offer describes.
func (o ringOffer) size() int { return ringHeaderSize + int(o.slot)*int(o.slots) }

// ring is one side's mapping of a ring. A transfer holds mu for as long as it uses the memory,
// so that close, which unmaps it, waits for the transfer to give up.
type ring struct {
	mu     sync.Mutex
	mem    []byte
	hdr    *ringHeader
	slot   int
	slots  uint32
	fd     int  // the sender's descriptor, kept until the peer has answered the offer; else -1
	closed bool // unmapped: transfers fail

	closing atomic.Bool // close has begun
	idle    *time.Timer // the sender's: releases the slots' memory when unused (see release)
}

func newRing(mem []byte, o ringOffer, fd int) *ring {
	return &ring{
		mem:   mem,
		hdr:   (*ringHeader)(unsafe.Pointer(&mem[0])),
		slot:  int(o.slot),
		slots: o.slots,
		fd:    fd,
	}
}

func (r *ring) data(i uint32) []byte {
	off := ringHeaderSize + int(i%r.slots)*r.slot
	return r.mem[off : off+r.slot : off+r.slot]
}

var errRingClosed = fmt.Errorf("%w: shared-memory ring closed", ErrClosed)

// put copies raw into the ring, slot by slot, waiting for the receiver to empty slots. abort
// is asked whenever put is about to sleep; an error from it ends the transfer. Once put
// returns, raw is no longer used.
func (r *ring) put(raw []byte, abort func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errRingClosed
	}
	head := r.hdr.head.Load() // this side is its only writer
	for off := 0; off < len(raw); {
		for {
			tail := r.hdr.tail.Load()
			full := head - tail
			if full > r.slots {
				return fmt.Errorf("%w: shared-memory ring: the receiver emptied %d slots more than were filled", ErrFrame, tail-head)
			}
			if full < r.slots {
				break
			}
			if err := ringWait(&r.hdr.tail, tail, abort); err != nil {
				return err
			}
		}
		off += copy(r.data(head), raw[off:])
		head++
		r.hdr.head.Store(head)
		futexWake(&r.hdr.head)
	}
	if r.idle == nil {
		r.idle = time.AfterFunc(ringIdle, r.release)
	} else {
		r.idle.Reset(ringIdle)
	}
	return nil
}

// ringIdle is how long a ring keeps its slots' memory after its last transfer: each ring
// holds ringSlots MiB of shared memory while in use, which only a release gives back (a
// cluster of many workers on one host has two rings per pair that moved large slices).
var ringIdle = time.Second

// release gives the slots' memory back to the system once the receiver has emptied them; the
// next transfer faults fresh pages in (~2,000 faults, a few milliseconds). The sender's side
// does this: only it knows that no transfer is under way, and a slot is only read after the
// sender has written it again.
func (r *ring) release() {
	if !r.mu.TryLock() {
		return // a transfer is under way, and will set the timer again
	}
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if r.hdr.head.Load() != r.hdr.tail.Load() {
		r.idle.Reset(ringIdle) // the receiver is still emptying slots
		return
	}
	releasePages(r.mem[ringHeaderSize:])
}

// get fills dst from the ring, slot by slot, as put filled it from a raw part of the same length.
func (r *ring) get(dst []byte, abort func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errRingClosed
	}
	tail := r.hdr.tail.Load()
	for off := 0; off < len(dst); {
		for {
			head := r.hdr.head.Load()
			full := head - tail
			if full > r.slots {
				return fmt.Errorf("%w: shared-memory ring: the sender claims %d full slots of %d", ErrFrame, full, r.slots)
			}
			if full > 0 {
				break
			}
			if err := ringWait(&r.hdr.head, head, abort); err != nil {
				return err
			}
		}
		off += copy(dst[off:], r.data(tail))
		tail++
		r.hdr.tail.Store(tail)
		futexWake(&r.hdr.tail)
	}
	return nil
}

// ringSpins is how many times a side looks at the other's counter before sleeping on it. On
// two processors the other side is usually running and about done with its slot: sleeping and
// being woken would cost more than the rest of its copy.
const ringSpins = 2000

// ringWait returns when *addr may no longer be seen, after a spell of spinning and then a
// bounded sleep, or with abort's error.
func ringWait(addr *atomic.Uint32, seen uint32, abort func() error) error {
	for range ringSpins {
		if addr.Load() != seen {
			return nil
		}
	}
	if err := abort(); err != nil {
		return err
	}
	futexWait(addr, seen)
	return nil
}

// wake wakes whoever sleeps on this side's mapping, so that a transfer blocked on a peer
// that no longer moves notices its connection's end at once.
func (r *ring) wake() {
	futexWake(&r.hdr.head)
	futexWake(&r.hdr.tail)
}

// close unmaps the ring, after the transfer using it, if any, has returned. Calls after the
// first do nothing.
func (r *ring) close() {
	if !r.closing.CompareAndSwap(false, true) {
		return
	}
	r.wake()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.idle != nil {
		r.idle.Stop()
	}
	r.closeFD()
	unmapRing(r.mem)
	r.mem, r.hdr = nil, nil
}

// offerRing makes this side's ring and offers it to the peer, once per connection. Until the
// peer accepts, large raw parts go through the socket as before; a ring that cannot be made
// here (another system, no memfd) leaves it that way, as a refusal does.
func (c *Conn) offerRing() {
	if !c.rings.offered.CompareAndSwap(false, true) || !ringsSupported(c.nc) {
		return
	}
	r, o, err := newRingOut()
	if err != nil {
		return
	}
	fd := uint64(r.fd) // read before r is shared: closeRings may close it at any time after
	c.rings.out.Store(r)
	select {
	case <-c.done: // closeRings may have run before the Store: close it here instead
		if c.rings.out.CompareAndSwap(r, nil) {
			r.close()
		}
		return
	default:
	}
	raw := o.encode()
	var hb [HeaderSize]byte
	PutHeader(hb[:], Header{RawLen: uint64(len(raw)), Kind: KindRing, Raw: RawBytes, ID: fd})
	c.w.write(hb[:], nil, raw, writeNow) // an error means the connection is ending: closeRings cleans up
}

// acceptRing answers the peer's offer of its ring: mapped, and read from now on, or refused.
func (c *Conn) acceptRing(f *Frame) {
	err := c.openPeerRing(f)
	if err != nil {
		c.rings.refusal.Store(&err)
	}
	var ok uint64
	if err == nil {
		ok = 1
	}
	// From a goroutine of its own: the reader must not wait for a writer that may be waiting
	// for the peer, which may be waiting for this reader (no handler runs here, so the
	// monitor would not take over).
	go func() {
		var hb [HeaderSize]byte
		PutHeader(hb[:], Header{Kind: KindRingAck, ID: ok})
		c.w.write(hb[:], nil, nil, writeNow)
	}()
}

func (c *Conn) openPeerRing(f *Frame) error {
	raw, _ := f.Raw.([]byte)
	o, err := parseRingOffer(raw)
	switch {
	case !c.rings.inOffered.CompareAndSwap(false, true):
		// Each offer costs an open and a mapping: one per connection is all a peer gets.
		return fmt.Errorf("%w: a second ring offered on one connection", ErrFrame)
	case err != nil:
		return err
	case !ringsSupported(c.nc):
		return errors.New("shared-memory rings need a unix socket")
	}
	r, err := openRingIn(c.nc, f.ID, o)
	if err != nil {
		return err
	}
	c.rings.in.Store(r)
	select {
	case <-c.done:
		if c.rings.in.CompareAndSwap(r, nil) {
			r.close()
		}
	default:
	}
	return nil
}

// ringAnswered takes the peer's answer to this side's offer.
func (c *Conn) ringAnswered(f *Frame) {
	r := c.rings.out.Load()
	if r == nil || c.rings.outOK.Load() {
		return // gone with the connection, or an answer nobody asked for
	}
	r.mu.Lock()
	r.closeFD() // the peer has its own descriptor now, or will never take one
	r.mu.Unlock()
	if f.ID == 1 {
		c.rings.outOK.Store(true)
	} else if c.rings.out.CompareAndSwap(r, nil) {
		r.close()
	}
}

// ringRaw fills dst, the raw part of a frame with FlagRing, from the peer's ring.
func (c *Conn) ringRaw(dst []byte) error {
	r := c.rings.in.Load()
	if r == nil {
		return fmt.Errorf("%w: raw part announced through a shared-memory ring that was never set up", ErrFrame)
	}
	return r.get(dst, c.ringAbortFn)
}

// ringAbort is asked by a transfer through a ring before it sleeps: the transfer ends when the
// connection has, or when the peer is gone, since the ring alone would never say so.
func (c *Conn) ringAbort() error {
	select {
	case <-c.done:
		return errRingClosed
	default:
	}
	if peerGone(c.nc) {
		return truncated(fmt.Errorf("peer gone during a transfer through shared memory: %w", io.ErrUnexpectedEOF))
	}
	return nil
}

// closeRings unmaps both rings when the connection ends, once the transfers using them have
// given up.
func (c *Conn) closeRings() {
	c.rings.offered.Store(true)
	if r := c.rings.out.Swap(nil); r != nil {
		r.close()
	}
	if r := c.rings.in.Swap(nil); r != nil {
		r.close()
	}
}

// Rings reports whether large raw parts travel through shared memory: out, those this side
// sends (the peer accepted this side's ring); in, those it receives (this side accepted the
// peer's). A connection offers its ring with its first raw part of 1 MiB or more, which still
// goes through the socket, as does everything on connections that are not unix sockets.
func (c *Conn) Rings() (out, in bool) {
	return c.rings.outOK.Load() && c.rings.out.Load() != nil, c.rings.in.Load() != nil
}
