// Package wire is godist's transport: frames, the cookie handshake and multiplexed connections.
//
// A frame is a fixed 24-byte header followed by a CBOR part and an optional raw part. The raw
// part carries one numeric slice as little-endian bytes, so that bulk data is written from and
// read into the Go slice itself instead of being encoded element by element. Between two
// processes of one host, a raw part of 1 MiB or more crosses through a shared-memory ring
// instead of the stream (see ring.go); the frame's header still comes on the stream.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/godist/dist/internal/payload"
)

// HeaderSize is the length in bytes of a frame header.
const HeaderSize = 24

// Kind says what a frame is for.
type Kind uint8

// Frame kinds. Values are part of the protocol: never renumber them.
const (
	KindRequest Kind = 1 // a call that expects a reply with the same id
	KindOneWay  Kind = 2 // a call that expects no reply
	KindReply   Kind = 3 // the successful result of the request with the same id
	KindError   Kind = 4 // the failure of the request with the same id; CBOR part is an error record
	KindCancel  Kind = 5 // the caller gave up on the request with the same id
	// Kinds 6 and 7 (KindRing, KindRingAck) belong to the connection itself: see ring.go.
	kindMax Kind = 7
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindOneWay:
		return "oneway"
	case KindReply:
		return "reply"
	case KindError:
		return "error"
	case KindCancel:
		return "cancel"
	case KindRing:
		return "ring"
	case KindRingAck:
		return "ring-ack"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// RawKind names the element type of a frame's raw part (see package payload).
type RawKind = payload.Kind

// Raw element kinds. Values are part of the protocol.
const (
	RawNone    = payload.None
	RawBytes   = payload.Bytes
	RawFloat64 = payload.Float64
	RawFloat32 = payload.Float32
	RawInt64   = payload.Int64
	RawInt32   = payload.Int32
	RawUint64  = payload.Uint64
	RawUint32  = payload.Uint32
	RawInt16   = payload.Int16
	RawUint16  = payload.Uint16
	RawInt8    = payload.Int8
	rawMax     = payload.NumKinds
)

// Limits bound what a peer may make this process allocate. They are checked on the header,
// before any payload byte is read.
type Limits struct {
	MaxCBOR int // largest CBOR part of a frame
	MaxRaw  int // largest raw part of a frame
	// Budget, if not nil, bounds the memory frames being received may claim (see Budget);
	// the connections of a process share one.
	Budget *Budget
	// Stall, if positive, is how long the large parts of a frame being received may go
	// without a byte arriving before the connection is closed: a sender that announced a
	// frame and stopped must not hold memory (and budget) for ever.
	Stall time.Duration
}

// DefaultLimits allow 64 MiB of structured data and 2 GiB of raw numeric data in one frame.
var DefaultLimits = Limits{MaxCBOR: 64 << 20, MaxRaw: 2 << 30}

// Header is the fixed part of a frame.
type Header struct {
	CBORLen uint32
	RawLen  uint64
	Kind    Kind
	Raw     RawKind
	Flags   uint16
	ID      uint64
}

// Frame is one decoded frame. Raw, when present, is a slice of the Go type RawKind names
// (for example []float64), allocated by the reader so that the bytes land in it directly.
type Frame struct {
	Header
	CBOR []byte
	Raw  any

	run    *inlineRun // the handler run for this frame on a reader goroutine, if any
	inline inlineRun  // where run points: part of the frame, which is allocated anyway
}

// ErrFrame is wrapped by every error about a malformed or oversized frame.
var ErrFrame = errors.New("wire: bad frame")

// PutHeader encodes h into b, which must be at least HeaderSize long.
func PutHeader(b []byte, h Header) {
	binary.LittleEndian.PutUint32(b[0:], h.CBORLen)
	binary.LittleEndian.PutUint64(b[4:], h.RawLen)
	b[12] = byte(h.Kind)
	b[13] = byte(h.Raw)
	binary.LittleEndian.PutUint16(b[14:], h.Flags)
	binary.LittleEndian.PutUint64(b[16:], h.ID)
}

// ParseHeader decodes and validates a header against lim.
func ParseHeader(b []byte, lim Limits) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header is %d bytes, want %d", ErrFrame, len(b), HeaderSize)
	}
	h := Header{
		CBORLen: binary.LittleEndian.Uint32(b[0:]),
		RawLen:  binary.LittleEndian.Uint64(b[4:]),
		Kind:    Kind(b[12]),
		Raw:     RawKind(b[13]),
		Flags:   binary.LittleEndian.Uint16(b[14:]),
		ID:      binary.LittleEndian.Uint64(b[16:]),
	}
	switch {
	case h.Kind == 0 || h.Kind > kindMax:
		return h, fmt.Errorf("%w: unknown kind %d", ErrFrame, b[12])
	case h.Raw >= rawMax:
		return h, fmt.Errorf("%w: unknown raw element kind %d", ErrFrame, b[13])
	case uint64(h.CBORLen) > uint64(lim.MaxCBOR):
		return h, fmt.Errorf("%w: CBOR part of %d bytes exceeds the limit of %d", ErrFrame, h.CBORLen, lim.MaxCBOR)
	case h.RawLen > uint64(lim.MaxRaw):
		return h, fmt.Errorf("%w: raw part of %d bytes exceeds the limit of %d", ErrFrame, h.RawLen, lim.MaxRaw)
	case h.Raw == RawNone && h.RawLen != 0:
		return h, fmt.Errorf("%w: raw part of %d bytes without an element kind", ErrFrame, h.RawLen)
	case h.Flags&FlagRing != 0 && h.RawLen == 0:
		return h, fmt.Errorf("%w: shared-memory flag on a frame without a raw part", ErrFrame)
	case h.Raw != RawNone && h.RawLen%uint64(h.Raw.Size()) != 0:
		return h, fmt.Errorf("%w: raw part of %d bytes is not a whole number of %d-byte elements", ErrFrame, h.RawLen, h.Raw.Size())
	}
	return h, nil
}

// ReadFrame reads one whole frame. A truncated frame is an error wrapping io.ErrUnexpectedEOF;
// a clean end of stream before a header is io.EOF.
func ReadFrame(r io.Reader, lim Limits) (*Frame, error) {
	return readFrame(r, lim, nil)
}

// rawSource supplies the raw parts that do not come through the stream (FlagRing).
type rawSource interface {
	ringRaw(dst []byte) error
	// done is closed when the connection ends.
	doneCh() <-chan struct{}
	// setReadDeadline bounds the next reads of the connection (zero: no bound).
	setReadDeadline(t time.Time) error
}

// readFrame is ReadFrame on a connection whose raw parts may also come from src.
func readFrame(r io.Reader, lim Limits, src rawSource) (*Frame, error) {
	// Most frames (calls, replies of small values) take one allocation: the frame, whose
	// buffer first receives the header (a header array of its own would escape to the heap
	// through the io.Reader) and then the CBOR.
	sf := &smallFrame{}
	hb := sf.buf[:HeaderSize]
	if _, err := io.ReadFull(r, hb); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, truncated(err)
		}
		return nil, err
	}
	h, err := ParseHeader(hb, lim)
	if err != nil {
		return nil, err
	}
	f := &sf.Frame
	f.Header = h
	// A large frame is read within the process's receive budget and, from a connection,
	// with its sender watched for stalling.
	large := int64(h.RawLen)
	if h.CBORLen > smallCBOR {
		large += int64(h.CBORLen)
	}
	var stall time.Duration
	if large >= budgetMin {
		var done <-chan struct{}
		if src != nil {
			done = src.doneCh()
			stall = lim.Stall
		}
		if lim.Budget != nil {
			if err := lim.Budget.acquire(large, done); err != nil {
				return nil, err
			}
			defer lim.Budget.release(large)
		}
		if stall > 0 {
			defer src.setReadDeadline(time.Time{})
		}
	}
	read := func(b []byte) error {
		if stall <= 0 {
			_, err := io.ReadFull(r, b)
			return err
		}
		for len(b) > 0 {
			k := min(len(b), stallChunk)
			src.setReadDeadline(time.Now().Add(stall))
			if _, err := io.ReadFull(r, b[:k]); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return fmt.Errorf("%w: the sender stalled: nothing for %v in a frame of %d bytes", ErrFrame, stall, large)
				}
				return err
			}
			b = b[k:]
		}
		return nil
	}
	if h.CBORLen <= smallCBOR {
		f.CBOR = sf.buf[:h.CBORLen:h.CBORLen]
	} else {
		f.CBOR = make([]byte, h.CBORLen)
	}
	if h.CBORLen > 0 {
		if err := read(f.CBOR); err != nil {
			return nil, truncated(err)
		}
	} else {
		f.CBOR = nil
	}
	if h.Raw != RawNone {
		if h.Flags&FlagRing != 0 && src == nil {
			return nil, fmt.Errorf("%w: raw part announced through shared memory, where there is none", ErrFrame)
		}
		raw, bytes := MakeRaw(h.Raw, int(h.RawLen)/h.Raw.Size())
		if h.Flags&FlagRing != 0 {
			if err := src.ringRaw(bytes); err != nil {
				return nil, err
			}
			f.Flags &^= FlagRing // how the bytes came is the connection's business
		} else if err := read(bytes); err != nil {
			return nil, truncated(err)
		}
		f.Raw = raw
	}
	return f, nil
}

// stallChunk is how much of a large part is read under one deadline: a sender is stalled
// when no chunk arrives within the stall time.
const stallChunk = 4 << 20

// smallCBOR is the CBOR size up to which a frame and its CBOR share one allocation.
const smallCBOR = 96

// ReadFrame reads the header into the small frame's buffer.
var _ [smallCBOR - HeaderSize]struct{}

type smallFrame struct {
	Frame
	buf [smallCBOR]byte
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: truncated: %w", ErrFrame, err)
}

// MakeRaw allocates a slice of n elements of kind k and returns it with a byte view of its
// memory (payload.Make: large ones are not cleared, and the caller must overwrite them).
func MakeRaw(k RawKind, n int) (any, []byte) { return payload.Make(k, n) }

// RawOf returns the kind and byte view of v if v is a numeric slice that travels raw
// (payload.Of). The byte view aliases v's memory: bulk data is sent without a copy.
func RawOf(v any) (RawKind, []byte, bool) { return payload.Of(v) }
