// Package codec turns Go values into messages (package payload) and back: CBOR for
// structure, and a raw little-endian part for a top-level numeric slice, or for the numeric
// slices inside a struct (oob.go), so that bulk data is never encoded per element.
package codec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/payload"
)

var (
	encMode cbor.UserBufferEncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{Time: cbor.TimeRFC3339Nano}.UserBufferEncMode()
	if err != nil {
		panic(err) // static options: a failure here is a programming error caught by any test
	}
	// Limits keep a small hostile message from making us allocate much: counts are checked
	// against these before allocation, lengths against the frame's size.
	decMode, err = cbor.DecOptions{
		MaxNestedLevels: 64,
		// 4M: a small hostile message must not cost gigabytes; big numeric data travels
		// raw (top level) and has no such limit.
		MaxArrayElements: 4 << 20,
		MaxMapPairs:      4 << 20,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsAllowed,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v as CBOR only.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes CBOR data into v, a non-nil pointer, with the hardened limits.
func Unmarshal(data []byte, v any) error { return decMode.Unmarshal(data, v) }

// UnmarshalFirst decodes the first CBOR item of data into v and returns the rest.
func UnmarshalFirst(data []byte, v any) ([]byte, error) { return decMode.UnmarshalFirst(data, v) }

// Encode appends v to prefix and returns a message. A numeric slice travels in the raw part
// (aliasing v's memory); anything else is CBOR appended after prefix.
func Encode(prefix []byte, v any) (payload.Msg, error) {
	if k, raw, ok := payload.Of(v); ok {
		return payload.Msg{CBOR: prefix, RawKind: k, Raw: raw, RawValue: v}, nil
	}
	if _, ok := v.(struct{}); ok {
		// "No argument" and "no result": common, and worth sparing the type lookups.
		return payload.Msg{CBOR: append(prefix, cborEmptyMap)}, nil
	}
	// Encoding after the prefix, in its spare capacity, spares a copy of the whole message.
	buf := bytes.NewBuffer(prefix)
	if p := planFor(reflect.TypeOf(v)); p != nil {
		raw, err := encodeOOB(buf, v, p)
		if err != nil {
			return payload.Msg{}, err
		}
		return withRaw(payload.Msg{CBOR: buf.Bytes()}, raw), nil
	}
	if err := encMode.MarshalToBuffer(v, buf); err != nil {
		return payload.Msg{}, fmt.Errorf("encode %T: %w", v, err)
	}
	return payload.Msg{CBOR: buf.Bytes()}, nil
}

// withRaw is m with raw, the out-of-band slices of its struct, as its raw part.
func withRaw(m payload.Msg, raw []byte) payload.Msg {
	if raw != nil {
		m.RawKind, m.Raw, m.RawValue = payload.Bytes, raw, raw
	}
	return m
}

// EncodeAppend is Encode writing v's CBOR at the end of buf, for callers that encode many
// values in a row and copy each where it belongs: one buffer serves them all, where Encode
// costs a buffer per value. The returned CBOR aliases buf's contents until buf next changes;
// a raw slice travels in Raw as with Encode, and then nothing is written to buf; the numeric
// slices of a struct travel in Raw too, beside its CBOR in buf (see oob.go).
func EncodeAppend(buf *bytes.Buffer, v any) (payload.Msg, error) {
	if k, raw, ok := payload.Of(v); ok {
		return payload.Msg{RawKind: k, Raw: raw, RawValue: v}, nil
	}
	start := buf.Len()
	if p := planFor(reflect.TypeOf(v)); p != nil {
		raw, err := encodeOOB(buf, v, p)
		if err != nil {
			buf.Truncate(start)
			return payload.Msg{}, err
		}
		return withRaw(payload.Msg{CBOR: buf.Bytes()[start:]}, raw), nil
	}
	if _, ok := v.(struct{}); ok {
		buf.WriteByte(cborEmptyMap)
	} else if err := encMode.MarshalToBuffer(v, buf); err != nil {
		buf.Truncate(start)
		return payload.Msg{}, fmt.Errorf("encode %T: %w", v, err)
	}
	return payload.Msg{CBOR: buf.Bytes()[start:]}, nil
}

// cborEmptyMap is how struct{} encodes.
const cborEmptyMap = 0xa0

// Decode stores into v (a non-nil pointer) the value held by data (CBOR) or raw (a slice made
// by payload.Make). A raw slice is handed over without a copy when v's element type matches.
// A struct whose numeric slices came out of band (data and a raw []byte) is decoded over raw,
// its slices sharing raw's memory; such a struct type is decoded whole, fields absent from
// data left zero, where plain CBOR decoding would leave them as they were in *v.
func Decode(data []byte, raw any, v any) error {
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer {
		if p := planFor(t.Elem()); p != nil {
			return decodeOOB(data, raw, v, p)
		}
	}
	if raw == nil {
		if len(data) == 0 {
			return fmt.Errorf("decode %T: empty message", v)
		}
		if _, ok := v.(*struct{}); ok && len(data) == 1 && data[0] == cborEmptyMap {
			return nil
		}
		if err := decMode.Unmarshal(data, v); err != nil {
			return decodeFailure(v, err)
		}
		return nil
	}
	if p, ok := v.(*any); ok {
		if rb, ok := raw.([]byte); ok && len(data) > 0 {
			if x, ok, err := decodeAnyOOB(data, rb); ok {
				if err != nil {
					return fmt.Errorf("decode %T: %w", v, err)
				}
				*p = x // a struct whose slices came out of band
				return nil
			}
		}
		*p = raw
		return nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode: need a non-nil pointer, got %T", v)
	}
	dst := rv.Elem()
	src := reflect.ValueOf(raw)
	if src.Type().AssignableTo(dst.Type()) {
		dst.Set(src)
		return nil
	}
	// int/uint travel as 64-bit; a named slice type of a matching element is converted.
	if dst.Kind() == reflect.Slice && src.Len() > 0 && sameLayout(src.Type().Elem(), dst.Type().Elem()) {
		s := reflect.SliceAt(dst.Type().Elem(), src.UnsafePointer(), src.Len())
		dst.Set(s.Convert(dst.Type()))
		return nil
	}
	if dst.Kind() == reflect.Slice && src.Len() == 0 && sameLayout(src.Type().Elem(), dst.Type().Elem()) {
		dst.Set(reflect.MakeSlice(dst.Type(), 0, 0))
		return nil
	}
	if dst.Kind() == reflect.Interface && src.Type().Implements(dst.Type()) {
		dst.Set(src)
		return nil
	}
	if rb, ok := raw.([]byte); ok && len(data) > 0 {
		// A struct whose slices came out of band, received as another type than the sender's
		// (a map, a struct with fields of type any): through its generic form, as plain CBOR.
		if x, found, err := decodeAnyOOB(data, rb); found {
			if err != nil {
				return decodeFailure(v, err)
			}
			b, err := encMode.Marshal(x)
			if err != nil {
				return fmt.Errorf("decode %T: %w", v, err)
			}
			return Decode(b, nil, v)
		}
	}
	return fmt.Errorf("decode: a %s cannot be stored in a %s", src.Type(), dst.Type())
}

// decodeFailure is Decode's error for err, the CBOR decoder's, decoding into v.
func decodeFailure(v any, err error) error {
	if cause := decoderCause(err); cause != nil {
		return &DecoderError{Type: fmt.Sprintf("%T", v), Err: cause}
	}
	return fmt.Errorf("decode %T: %w", v, err)
}

func sameLayout(a, b reflect.Type) bool {
	if a.Size() != b.Size() {
		return false
	}
	ka, kb := a.Kind(), b.Kind()
	if ka == kb {
		return true
	}
	isInt := func(k reflect.Kind) bool { return k >= reflect.Int && k <= reflect.Int64 }
	isUint := func(k reflect.Kind) bool { return k >= reflect.Uint && k <= reflect.Uint64 }
	return (isInt(ka) && isInt(kb)) || (isUint(ka) && isUint(kb))
}

// DecoderError is Decode's error when the data had the shape of the value's type but the
// type's own decoder (an UnmarshalCBOR, UnmarshalBinary or UnmarshalText method) failed: a
// shared array that cannot be mapped in this process, say. It is not a type mismatch, and Err
// is that decoder's error. Every other error of Decode is a mismatch or malformed data.
type DecoderError struct {
	Type string // the Go type decoded into
	Err  error
}

func (e *DecoderError) Error() string { return "decode " + e.Type + ": " + e.Err.Error() }

// Unwrap returns the decoder's error.
func (e *DecoderError) Unwrap() error { return e.Err }

// cborPkg is the import path of the CBOR library, whose own error types mark its findings.
var cborPkg = reflect.TypeFor[cbor.UnmarshalTypeError]().PkgPath()

// decoderCause returns the error, among those err (from the CBOR library) wraps, that is
// none of the library's own: the library returns a type's decoder's error as is (or, for
// UnmarshalText, wrapped in one of its messages), and its own findings as its error types,
// io.ErrUnexpectedEOF for truncated data or plain errors that start with "cbor: ". nil when
// there is none: the failure is the library's.
func decoderCause(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		t := reflect.TypeOf(e)
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.PkgPath() == cborPkg || e == io.EOF || e == io.ErrUnexpectedEOF || strings.HasPrefix(e.Error(), "cbor: ") {
			continue
		}
		return e
	}
	return nil
}
