// Package payload is what a message carries, apart from how it travels: a CBOR part and an
// optional raw part, one numeric slice as little-endian bytes (Kind says its element type).
// The codec (internal/codec) makes and reads messages; the transport (internal/wire) frames
// and sends them. Both import this package and neither imports the other.
package payload

import (
	"strings"
	"unsafe"
)

// Msg is an outgoing message: a CBOR part and an optional raw part. Raw aliases the caller's
// slice; a transport's Send does not return before the bytes are written or copied.
type Msg struct {
	CBOR    []byte
	RawKind Kind
	Raw     []byte
	// Flags go into the frame's header, for the peer's handler (package wire); FlagRing is the
	// connection's own, and Send refuses a message that sets it.
	Flags uint16
	// RawValue is the typed slice Raw views, when the sender has it; it is not sent.
	RawValue any
}

// Kind names the element type of a message's raw part.
type Kind uint8

// Raw element kinds. Values are part of the wire protocol.
const (
	None Kind = iota
	Bytes
	Float64
	Float32
	Int64
	Int32
	Uint64
	Uint32
	Int16
	Uint16
	Int8
	// NumKinds is one past the last kind: a kind from a peer at or past it is invalid.
	NumKinds
)

// Size returns the size in bytes of one element of kind k, or 0 for None and unknown kinds.
func (k Kind) Size() int {
	switch k {
	case Bytes, Int8:
		return 1
	case Int16, Uint16:
		return 2
	case Float32, Int32, Uint32:
		return 4
	case Float64, Int64, Uint64:
		return 8
	}
	return 0
}

// Make allocates a slice of n elements of kind k and returns it with a byte view of its
// memory. From noZeroSize bytes on, the memory is not cleared first: the caller must overwrite
// all of it (as reading a frame's raw part does) before the slice is seen by anyone.
func Make(k Kind, n int) (any, []byte) {
	noZero := k > None && k < NumKinds && n >= noZeroSize/k.Size()
	switch k {
	case Bytes:
		if !noZero {
			// 8-aligned, as any numeric slice made over it needs (see codec's out-of-band
			// slices): a small []byte of its own may be placed at any address.
			s := make([]uint64, (n+7)/8)
			b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), n)
			return b, b
		}
		return makeRaw[byte](n, noZero)
	case Float64:
		return makeRaw[float64](n, noZero)
	case Float32:
		return makeRaw[float32](n, noZero)
	case Int64:
		return makeRaw[int64](n, noZero)
	case Int32:
		return makeRaw[int32](n, noZero)
	case Uint64:
		return makeRaw[uint64](n, noZero)
	case Uint32:
		return makeRaw[uint32](n, noZero)
	case Int16:
		return makeRaw[int16](n, noZero)
	case Uint16:
		return makeRaw[uint16](n, noZero)
	case Int8:
		return makeRaw[int8](n, noZero)
	}
	return nil, nil
}

// makeRaw makes n elements of T and their byte view, cleared unless noZero.
func makeRaw[T any](n int, noZero bool) (any, []byte) {
	if !noZero {
		s := make([]T, n)
		return s, bytesOf(s)
	}
	var zero T
	b := makeNoZero(n * int(unsafe.Sizeof(zero)))
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), n), b
}

// noZeroSize is the size from which Make skips clearing. Go clears a large allocation that
// reuses freed memory; for a 256 MiB transfer that is ~25 ms on this VM, a third of the time
// the socket takes to fill it.
const noZeroSize = 1 << 20

// makeNoZero returns size bytes of memory that is not cleared. strings.Builder.Grow is the
// standard library's one way to uncleared memory; the slice is made over the builder's
// buffer, which nothing else refers to. A large allocation is page-aligned, so any element
// type may view it.
func makeNoZero(size int) []byte {
	var sb strings.Builder
	sb.Grow(size)
	sb.WriteByte(0) // the buffer's address is then that of the builder's string
	return unsafe.Slice(unsafe.StringData(sb.String()), size)
}

// Of returns the kind and byte view of v if v is a numeric slice that travels raw.
// The byte view aliases v's memory: this is how bulk data avoids a copy on send.
// int and uint are sent as 64-bit values, which every supported platform uses.
func Of(v any) (Kind, []byte, bool) {
	switch s := v.(type) {
	case []byte:
		return Bytes, s, true
	case []float64:
		return Float64, bytesOf(s), true
	case []float32:
		return Float32, bytesOf(s), true
	case []int64:
		return Int64, bytesOf(s), true
	case []int32:
		return Int32, bytesOf(s), true
	case []uint64:
		return Uint64, bytesOf(s), true
	case []uint32:
		return Uint32, bytesOf(s), true
	case []int16:
		return Int16, bytesOf(s), true
	case []uint16:
		return Uint16, bytesOf(s), true
	case []int8:
		return Int8, bytesOf(s), true
	case []int:
		if unsafe.Sizeof(int(0)) == 8 {
			return Int64, bytesOf(s), true
		}
	case []uint:
		if unsafe.Sizeof(uint(0)) == 8 {
			return Uint64, bytesOf(s), true
		}
	}
	return None, nil, false
}

func bytesOf[T any](s []T) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
}
