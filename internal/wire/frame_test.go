package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/godist/dist/internal/wire"
)

var allRawKinds = []wire.RawKind{
	wire.RawBytes, wire.RawFloat64, wire.RawFloat32, wire.RawInt64, wire.RawInt32,
	wire.RawUint64, wire.RawUint32, wire.RawInt16, wire.RawUint16, wire.RawInt8,
}

var allKinds = []wire.Kind{wire.KindRequest, wire.KindOneWay, wire.KindReply, wire.KindError, wire.KindCancel}

func encodeHeader(h wire.Header) []byte {
	b := make([]byte, wire.HeaderSize)
	wire.PutHeader(b, h)
	return b
}

func TestHeaderRoundTrip(t *testing.T) {
	lim := wire.Limits{MaxCBOR: 1 << 20, MaxRaw: 1 << 30}
	var hs []wire.Header
	for _, k := range allKinds {
		for _, rk := range append([]wire.RawKind{wire.RawNone}, allRawKinds...) {
			h := wire.Header{
				CBORLen: 1 << 20, // exactly at the limit is allowed
				Kind:    k,
				Raw:     rk,
				Flags:   0xBEEE, // every bit but FlagRing, which needs a raw part
				ID:      0x0102030405060708,
			}
			if rk != wire.RawNone {
				h.RawLen = uint64(rk.Size()) * 12345
			}
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		wire.Header{Kind: wire.KindReply},
		wire.Header{Kind: wire.KindRequest, Raw: wire.RawBytes, RawLen: 1 << 30, ID: math.MaxUint64, Flags: math.MaxUint16},
	)
	for _, h := range hs {
		b := make([]byte, wire.HeaderSize+3) // a longer buffer is fine
		wire.PutHeader(b, h)
		got, err := wire.ParseHeader(b, lim)
		if err != nil {
			t.Fatalf("ParseHeader(PutHeader(%+v)): %v", h, err)
		}
		if got != h {
			t.Fatalf("round trip: got %+v, want %+v", got, h)
		}
	}

	// The layout is part of the protocol: pin it.
	b := encodeHeader(wire.Header{CBORLen: 0x11223344, RawLen: 0x10, Kind: wire.KindError, Raw: wire.RawInt64, Flags: 0xA1B2, ID: 0x0807060504030201})
	want := []byte{
		0x44, 0x33, 0x22, 0x11, // CBOR length
		0x10, 0, 0, 0, 0, 0, 0, 0, // raw length
		4,          // kind
		4,          // raw kind
		0xB2, 0xA1, // flags
		1, 2, 3, 4, 5, 6, 7, 8, // id
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("header layout:\n got %x\nwant %x", b, want)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	lim := wire.Limits{MaxCBOR: 1000, MaxRaw: 8000}
	valid := wire.Header{CBORLen: 10, RawLen: 16, Kind: wire.KindRequest, Raw: wire.RawFloat64, ID: 7}
	tests := []struct {
		name    string
		b       []byte
		mention string
	}{
		{"short buffer", encodeHeader(valid)[:wire.HeaderSize-1], "header is 23 bytes"},
		{"empty buffer", nil, "header is 0 bytes"},
		{"kind 0", mutate(valid, func(h *wire.Header) { h.Kind = 0 }), "unknown kind 0"},
		{"kind 8", mutate(valid, func(h *wire.Header) { h.Kind = 8 }), "unknown kind 8"},
		{"ring flag without raw part", mutate(valid, func(h *wire.Header) { h.Flags, h.Raw, h.RawLen = wire.FlagRing, wire.RawNone, 0 }), "without a raw part"},
		{"kind 255", mutate(valid, func(h *wire.Header) { h.Kind = 255 }), "unknown kind 255"},
		{"raw kind 11", mutate(valid, func(h *wire.Header) { h.Raw = 11 }), "unknown raw element kind 11"},
		{"raw kind 255", mutate(valid, func(h *wire.Header) { h.Raw = 255 }), "unknown raw element kind 255"},
		{"CBOR over limit", mutate(valid, func(h *wire.Header) { h.CBORLen = 1001 }), "exceeds the limit of 1000"},
		{"CBOR length max", mutate(valid, func(h *wire.Header) { h.CBORLen = math.MaxUint32 }), "exceeds the limit"},
		{"raw over limit", mutate(valid, func(h *wire.Header) { h.RawLen = 8008 }), "exceeds the limit of 8000"},
		{"raw length max", mutate(valid, func(h *wire.Header) { h.RawLen = math.MaxUint64 }), "exceeds the limit"},
		{"raw length 2^63", mutate(valid, func(h *wire.Header) { h.RawLen = 1 << 63 }), "exceeds the limit"},
		{"raw not whole float64s", mutate(valid, func(h *wire.Header) { h.RawLen = 12 }), "not a whole number of 8-byte elements"},
		{"raw not whole int16s", mutate(valid, func(h *wire.Header) { h.Raw, h.RawLen = wire.RawInt16, 3 }), "not a whole number of 2-byte elements"},
		{"raw not whole float32s", mutate(valid, func(h *wire.Header) { h.Raw, h.RawLen = wire.RawFloat32, 6 }), "not a whole number of 4-byte elements"},
		{"raw length without raw kind", mutate(valid, func(h *wire.Header) { h.Raw = wire.RawNone }), "without an element kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.ParseHeader(tt.b, lim)
			if err == nil {
				t.Fatalf("ParseHeader(%x) accepted a bad header", tt.b)
			}
			if !errors.Is(err, wire.ErrFrame) {
				t.Fatalf("error %q does not wrap ErrFrame", err)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
	// And the valid header these were made from is accepted, so each rejection above is due
	// to its own mutation.
	if _, err := wire.ParseHeader(encodeHeader(valid), lim); err != nil {
		t.Fatalf("valid header rejected: %v", err)
	}
}

func mutate(h wire.Header, f func(*wire.Header)) []byte {
	f(&h)
	return encodeHeader(h)
}

// frameBytes encodes a whole frame the way a sender does.
func frameBytes(h wire.Header, cbor, raw []byte) []byte {
	h.CBORLen = uint32(len(cbor))
	h.RawLen = uint64(len(raw))
	b := encodeHeader(h)
	b = append(b, cbor...)
	return append(b, raw...)
}

func TestReadFrame(t *testing.T) {
	s := []float64{1.5, -2, math.Inf(1), math.Pi}
	_, raw, _ := wire.RawOf(s)
	cbor := []byte{0x63, 'a', 'b', 'c'}
	var stream []byte
	stream = append(stream, frameBytes(wire.Header{Kind: wire.KindRequest, Raw: wire.RawFloat64, ID: 1, Flags: 6}, cbor, raw)...)
	stream = append(stream, frameBytes(wire.Header{Kind: wire.KindCancel, ID: 2}, nil, nil)...)
	stream = append(stream, frameBytes(wire.Header{Kind: wire.KindReply, Raw: wire.RawBytes, ID: 3}, nil, []byte("xyz"))...)
	stream = append(stream, frameBytes(wire.Header{Kind: wire.KindReply, Raw: wire.RawInt32, ID: 4}, cbor, nil)...)

	r := bytes.NewReader(stream)
	f, err := wire.ReadFrame(r, wire.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != wire.KindRequest || f.ID != 1 || f.Flags != 6 || f.Header.Raw != wire.RawFloat64 || !bytes.Equal(f.CBOR, cbor) {
		t.Fatalf("frame 1: %+v", f)
	}
	if got, ok := f.Raw.([]float64); !ok || !reflect.DeepEqual(got, s) {
		t.Fatalf("frame 1 raw: %#v, want %#v", f.Raw, s)
	}

	f, err = wire.ReadFrame(r, wire.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != wire.KindCancel || f.ID != 2 || f.CBOR != nil || f.Raw != nil {
		t.Fatalf("frame 2: %+v", f)
	}

	f, err = wire.ReadFrame(r, wire.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := f.Raw.([]byte); !ok || string(got) != "xyz" || f.ID != 3 {
		t.Fatalf("frame 3: %+v", f)
	}

	// A raw kind with an empty raw part is an empty slice of that type.
	f, err = wire.ReadFrame(r, wire.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := f.Raw.([]int32); !ok || len(got) != 0 || f.ID != 4 {
		t.Fatalf("frame 4: %+v", f)
	}

	if _, err := wire.ReadFrame(r, wire.DefaultLimits); err != io.EOF {
		t.Fatalf("clean end of stream: got %v, want io.EOF", err)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	_, raw, _ := wire.RawOf([]int64{1, 2, 3})
	full := frameBytes(wire.Header{Kind: wire.KindReply, Raw: wire.RawInt64, ID: 9}, []byte{0x82, 1, 2}, raw)
	// Cut inside the CBOR part and inside the raw part.
	for n := wire.HeaderSize; n < len(full); n++ {
		_, err := wire.ReadFrame(bytes.NewReader(full[:n]), wire.DefaultLimits)
		if !errors.Is(err, wire.ErrFrame) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("frame cut at %d of %d bytes: got %v, want an error wrapping ErrFrame and io.ErrUnexpectedEOF", n, len(full), err)
		}
	}
	// Cut inside the header.
	for n := 1; n < wire.HeaderSize; n++ {
		_, err := wire.ReadFrame(bytes.NewReader(full[:n]), wire.DefaultLimits)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("header cut at %d bytes: got %v, want an error wrapping io.ErrUnexpectedEOF", n, err)
		}
	}
	if _, err := wire.ReadFrame(bytes.NewReader(nil), wire.DefaultLimits); err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
	if f, err := wire.ReadFrame(bytes.NewReader(full), wire.DefaultLimits); err != nil || !reflect.DeepEqual(f.Raw, []int64{1, 2, 3}) {
		t.Fatalf("whole frame: %+v, %v", f, err)
	}
}

func TestReadFrameTruncatedHeaderIsFrameError(t *testing.T) {
	full := frameBytes(wire.Header{Kind: wire.KindReply, ID: 9}, []byte{0xf6}, nil)
	for n := 1; n < wire.HeaderSize; n++ {
		_, err := wire.ReadFrame(bytes.NewReader(full[:n]), wire.DefaultLimits)
		if !errors.Is(err, wire.ErrFrame) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("header cut at %d bytes: got %v, want an error wrapping ErrFrame and io.ErrUnexpectedEOF", n, err)
		}
	}
}

// A header over the limits is rejected before any payload is read or allocated.
func TestReadFrameLimitsCheckedFirst(t *testing.T) {
	lim := wire.Limits{MaxCBOR: 16, MaxRaw: 64}
	hdr := encodeHeader(wire.Header{Kind: wire.KindRequest, Raw: wire.RawBytes, RawLen: 1 << 40})
	r := &countingReader{r: io.MultiReader(bytes.NewReader(hdr), zeroReader{})}
	_, err := wire.ReadFrame(r, lim)
	if !errors.Is(err, wire.ErrFrame) {
		t.Fatalf("got %v, want ErrFrame", err)
	}
	if r.n != wire.HeaderSize {
		t.Fatalf("read %d bytes, want only the %d of the header", r.n, wire.HeaderSize)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestKindString(t *testing.T) {
	want := map[wire.Kind]string{
		wire.KindRequest: "request", wire.KindOneWay: "oneway", wire.KindReply: "reply",
		wire.KindError: "error", wire.KindCancel: "cancel", wire.KindRing: "ring", wire.KindRingAck: "ring-ack", 0: "kind(0)", 200: "kind(200)",
	}
	for k, s := range want {
		if k.String() != s {
			t.Errorf("Kind(%d).String() = %q, want %q", uint8(k), k.String(), s)
		}
	}
}

func TestRawKindSize(t *testing.T) {
	want := map[wire.RawKind]int{
		wire.RawNone: 0, wire.RawBytes: 1, wire.RawInt8: 1, wire.RawInt16: 2, wire.RawUint16: 2,
		wire.RawFloat32: 4, wire.RawInt32: 4, wire.RawUint32: 4,
		wire.RawFloat64: 8, wire.RawInt64: 8, wire.RawUint64: 8, 11: 0, 255: 0,
	}
	for k, n := range want {
		if k.Size() != n {
			t.Errorf("RawKind(%d).Size() = %d, want %d", uint8(k), k.Size(), n)
		}
	}
}

// elemLE decodes element 0 of kind k from little-endian bytes b, as the typed slice should hold it.
func elemLE(k wire.RawKind, b []byte) any {
	switch k {
	case wire.RawBytes:
		return b[0]
	case wire.RawInt8:
		return int8(b[0])
	case wire.RawInt16:
		return int16(binary.LittleEndian.Uint16(b))
	case wire.RawUint16:
		return binary.LittleEndian.Uint16(b)
	case wire.RawInt32:
		return int32(binary.LittleEndian.Uint32(b))
	case wire.RawUint32:
		return binary.LittleEndian.Uint32(b)
	case wire.RawFloat32:
		return math.Float32frombits(binary.LittleEndian.Uint32(b))
	case wire.RawInt64:
		return int64(binary.LittleEndian.Uint64(b))
	case wire.RawUint64:
		return binary.LittleEndian.Uint64(b)
	case wire.RawFloat64:
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	panic("unknown kind")
}

func TestMakeRawRawOfRoundTrip(t *testing.T) {
	wantType := map[wire.RawKind]reflect.Type{
		wire.RawBytes: reflect.TypeFor[[]byte](), wire.RawFloat64: reflect.TypeFor[[]float64](),
		wire.RawFloat32: reflect.TypeFor[[]float32](), wire.RawInt64: reflect.TypeFor[[]int64](),
		wire.RawInt32: reflect.TypeFor[[]int32](), wire.RawUint64: reflect.TypeFor[[]uint64](),
		wire.RawUint32: reflect.TypeFor[[]uint32](), wire.RawInt16: reflect.TypeFor[[]int16](),
		wire.RawUint16: reflect.TypeFor[[]uint16](), wire.RawInt8: reflect.TypeFor[[]int8](),
	}
	for _, k := range allRawKinds {
		t.Run(wantType[k].String(), func(t *testing.T) {
			const n = 5
			v, b := wire.MakeRaw(k, n)
			if reflect.TypeOf(v) != wantType[k] {
				t.Fatalf("MakeRaw made a %T, want %s", v, wantType[k])
			}
			if reflect.ValueOf(v).Len() != n || len(b) != n*k.Size() {
				t.Fatalf("MakeRaw(%d): %d elements, %d bytes", n, reflect.ValueOf(v).Len(), len(b))
			}
			for i := range b {
				b[i] = byte(0x81 + 7*i) // high bits set: sign matters
			}
			// The byte view is the slice's memory, little-endian.
			if got, want := reflect.ValueOf(v).Index(0).Interface(), elemLE(k, b); got != want && !(isNaN(got) && isNaN(want)) {
				t.Fatalf("element 0 = %v, want %v from bytes %x", got, want, b[:k.Size()])
			}
			if got, want := reflect.ValueOf(v).Index(n-1).Interface(), elemLE(k, b[(n-1)*k.Size():]); got != want && !(isNaN(got) && isNaN(want)) {
				t.Fatalf("element %d = %v, want %v", n-1, got, want)
			}
			rk, rb, ok := wire.RawOf(v)
			if !ok || rk != k {
				t.Fatalf("RawOf(%T) = %v, %v; want %v, true", v, rk, ok, k)
			}
			if len(rb) != len(b) || unsafe.SliceData(rb) != unsafe.SliceData(b) {
				t.Fatalf("RawOf's byte view does not alias the slice (len %d vs %d)", len(rb), len(b))
			}
			// Empty slices work too.
			v0, b0 := wire.MakeRaw(k, 0)
			if reflect.ValueOf(v0).Len() != 0 || len(b0) != 0 {
				t.Fatalf("MakeRaw(0): %v, %v", v0, b0)
			}
			if rk, rb, ok := wire.RawOf(v0); !ok || rk != k || len(rb) != 0 {
				t.Fatalf("RawOf(empty) = %v, %v, %v", rk, rb, ok)
			}
		})
	}

	t.Run("[]int", func(t *testing.T) {
		s := []int{-1, 2, math.MaxInt, math.MinInt}
		k, b, ok := wire.RawOf(s)
		if !ok || k != wire.RawInt64 || len(b) != 8*len(s) || unsafe.SliceData(b) != (*byte)(unsafe.Pointer(&s[0])) {
			t.Fatalf("RawOf([]int) = %v, %d bytes, %v", k, len(b), ok)
		}
		v, vb := wire.MakeRaw(k, len(s))
		copy(vb, b)
		if got := v.([]int64); !reflect.DeepEqual(got, []int64{-1, 2, math.MaxInt64, math.MinInt64}) {
			t.Fatalf("[]int travelled as %v", got)
		}
	})
	t.Run("[]uint", func(t *testing.T) {
		s := []uint{0, 1, math.MaxUint}
		k, b, ok := wire.RawOf(s)
		if !ok || k != wire.RawUint64 || len(b) != 8*len(s) || unsafe.SliceData(b) != (*byte)(unsafe.Pointer(&s[0])) {
			t.Fatalf("RawOf([]uint) = %v, %d bytes, %v", k, len(b), ok)
		}
		v, vb := wire.MakeRaw(k, len(s))
		copy(vb, b)
		if got := v.([]uint64); !reflect.DeepEqual(got, []uint64{0, 1, math.MaxUint64}) {
			t.Fatalf("[]uint travelled as %v", got)
		}
	})
	t.Run("not raw", func(t *testing.T) {
		for _, v := range []any{nil, 3, "abc", []string{"a"}, []complex128{1}, []bool{true}, [3]float64{}, []any{1.0}, map[int]int{}} {
			if k, b, ok := wire.RawOf(v); ok || k != wire.RawNone || b != nil {
				t.Errorf("RawOf(%#v) = %v, %v, %v; want RawNone, nil, false", v, k, b, ok)
			}
		}
		for _, k := range []wire.RawKind{wire.RawNone, 11, 255} {
			if v, b := wire.MakeRaw(k, 3); v != nil || b != nil {
				t.Errorf("MakeRaw(%d) = %v, %v; want nil, nil", k, v, b)
			}
		}
	})
}

func isNaN(v any) bool {
	switch f := v.(type) {
	case float64:
		return math.IsNaN(f)
	case float32:
		return math.IsNaN(float64(f))
	}
	return false
}
