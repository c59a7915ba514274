package script

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"unsafe"
)

// Bulk values skip CBOR: a message of script.eval's reply and of script.sow's request is a
// []byte, which the wire carries raw, laid out as
//
//	uvarint n | n bytes of CBOR (the small part) | zero padding to a multiple of 8 | raw tail
//
// The tail, when present, is the bytes of a numeric slice (Value.T names its type), so that a
// reaped or sown []float64 is copied, not encoded per element, and can be used in place where
// the buffer is aligned.
const tailAlign = 8

// pack lays out meta's CBOR and tail.
func pack(meta any, tail []byte) ([]byte, error) {
	m, err := valEnc.Marshal(meta)
	if err != nil {
		return nil, err
	}
	var hdr [binary.MaxVarintLen64]byte
	h := binary.PutUvarint(hdr[:], uint64(len(m)))
	off := h + len(m)
	if len(tail) > 0 {
		off = (off + tailAlign - 1) / tailAlign * tailAlign
	}
	b := make([]byte, off+len(tail))
	copy(b, hdr[:h])
	copy(b[h:], m)
	copy(b[off:], tail)
	return b, nil
}

// unpack decodes the CBOR part of b into meta and returns the tail, which aliases b.
func unpack(b []byte, meta any) ([]byte, error) {
	n, h := binary.Uvarint(b)
	if h <= 0 || n > uint64(len(b)-h) {
		return nil, errors.New("script: malformed message")
	}
	end := h + int(n)
	if err := valDec.Unmarshal(b[h:end], meta); err != nil {
		return nil, fmt.Errorf("script: malformed message: %w", err)
	}
	if end == len(b) {
		return nil, nil
	}
	off := (end + tailAlign - 1) / tailAlign * tailAlign
	if off > len(b) {
		return nil, errors.New("script: malformed message")
	}
	return b[off:], nil
}

// rawBytes returns the memory of numeric slice v (no copy).
func rawBytes(v reflect.Value) []byte {
	n := v.Len() * int(v.Type().Elem().Size())
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(v.UnsafePointer()), n)
}

// sliceFromRaw makes a slice of numeric type t over raw: in place when raw is aligned for t's
// elements (the caller hands raw over), else a copy.
func sliceFromRaw(t reflect.Type, raw []byte) (reflect.Value, error) {
	size := int(t.Elem().Size())
	if len(raw)%size != 0 {
		return reflect.Value{}, fmt.Errorf("script: %d bytes is not a whole number of %s elements", len(raw), t.Elem())
	}
	n := len(raw) / size
	if n == 0 {
		return reflect.MakeSlice(t, 0, 0), nil
	}
	if uintptr(unsafe.Pointer(&raw[0]))%uintptr(t.Elem().Align()) == 0 {
		return reflect.SliceAt(t.Elem(), unsafe.Pointer(&raw[0]), n).Convert(t), nil
	}
	s := reflect.MakeSlice(t, n, n)
	copy(unsafe.Slice((*byte)(s.UnsafePointer()), len(raw)), raw)
	return s, nil
}

// describeForPack describes v for a packed message: a numeric slice by its type only, with its
// bytes returned as the tail (the message's meta then says Tail), anything else fully encoded.
func describeForPack(v reflect.Value) (w Value, tail []byte, isTail bool, err error) {
	if v.IsValid() && isNumericSlice(v.Type()) && littleEndian {
		desc, err := typeDesc(v.Type(), 0)
		if err != nil {
			return Value{}, nil, false, err
		}
		return Value{T: desc}, rawBytes(v), true, nil
	}
	w, err = encodeValue(v)
	return w, nil, false, err
}
