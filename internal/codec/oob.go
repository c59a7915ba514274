package codec

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/payload"
)

// A numeric slice inside a struct would be CBOR, element by element: ~75 MB/s both ways, and
// no more than MaxArrayElements of them. Instead, a struct type with numeric slice fields is
// encoded through a shadow type made with reflect.StructOf, whose numeric slice fields are
// oobRefs: each slice's bytes go out of band, into the message's raw part (RawBytes, the
// slices one after another), and its place in the CBOR says where they are. The receiver
// decodes into the same shadow type and makes each slice over the raw part, without a copy.
// Small slices stay in the CBOR, where they cost less than the reference. Plain CBOR of the
// struct (EncodeAppend's, say) decodes through the shadow as well.
//
// Shadows reach structs through pointers, slices, arrays and map values, at any depth. Not
// shadowed, so encoded as before: struct types with embedded fields or a "_" field (cbor's
// toarray), types with their own (un)marshaling methods, the fields by which a type refers to
// itself, and numeric slices that are not fields of structs ([][]float64, map values).

// oobTag is the CBOR tag of an out-of-band slice: [raw kind, offset, length in elements].
const oobTag = 26479

// oobMin is the size in bytes from which a slice goes out of band.
const oobMin = 256

// oobPlan says how a type and its shadow correspond: a struct with numeric slice fields, or a
// pointer, slice, array or map of such (elem), down to any depth.
type oobPlan struct {
	shadow reflect.Type
	elem   *oobPlan   // pointer, slice, array, map: the plan of the element
	fields []oobField // struct
}

type oobField struct {
	src, dst  int          // field index in the struct and in its shadow
	kind      payload.Kind // a numeric slice, carried by an oobRef; else RawNone
	omitEmpty bool         // the slice's tag says omitempty: an empty one is left out
	sub       *oobPlan     // a field whose type has a shadow of its own
}

// omitEmptyTag returns the shadow's tag for a slice field with tag: cbor (like encoding/json)
// leaves out an empty slice with omitempty, but never a value that encodes itself, such as an
// oobRef; omitzero leaves out the zero oobRef, which an empty slice becomes.
func omitEmptyTag(tag reflect.StructTag) (reflect.StructTag, bool) {
	v, ok := tag.Lookup("cbor")
	if !ok {
		v, ok = tag.Lookup("json") // what cbor reads when there is no cbor key
	}
	if !ok || !slices.Contains(strings.Split(v, ",")[1:], "omitempty") {
		return tag, false
	}
	return reflect.StructTag(fmt.Sprintf("cbor:%q", v+",omitzero")), true
}

var plans sync.Map // reflect.Type -> *oobPlan (nil: encoded as it is)

// planFor returns the plan of t, nil if t is encoded as it is.
func planFor(t reflect.Type) *oobPlan {
	if t == nil {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
	default:
		return nil
	}
	if p, ok := plans.Load(t); ok {
		return p.(*oobPlan)
	}
	p := makePlan(t, map[reflect.Type]bool{})
	plans.Store(t, p)
	return p
}

var (
	oobRefType   = reflect.TypeFor[oobRef]()
	marshalerIfs = []reflect.Type{
		reflect.TypeFor[cbor.Marshaler](), reflect.TypeFor[cbor.Unmarshaler](),
		reflect.TypeFor[encoding.BinaryMarshaler](), reflect.TypeFor[encoding.BinaryUnmarshaler](),
		reflect.TypeFor[encoding.TextMarshaler](), reflect.TypeFor[encoding.TextUnmarshaler](),
	}
)

// ownCoding reports whether t or *t encodes or decodes itself.
func ownCoding(t reflect.Type) bool {
	for _, i := range marshalerIfs {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return true
		}
	}
	return false
}

// rawKindOf returns the raw kind of a numeric slice type that may go out of band.
func rawKindOf(t reflect.Type) payload.Kind {
	if t.Kind() != reflect.Slice || ownCoding(t) {
		return payload.None
	}
	e := t.Elem()
	if e.PkgPath() != "" || e.Name() == "" { // only the predeclared types, not named ones
		return payload.None
	}
	switch e.Kind() {
	case reflect.Float64:
		return payload.Float64
	case reflect.Float32:
		return payload.Float32
	case reflect.Int64:
		return payload.Int64
	case reflect.Int32:
		return payload.Int32
	case reflect.Int16:
		return payload.Int16
	case reflect.Int8:
		return payload.Int8
	case reflect.Uint64:
		return payload.Uint64
	case reflect.Uint32:
		return payload.Uint32
	case reflect.Uint16:
		return payload.Uint16
	case reflect.Int:
		if e.Size() == 8 {
			return payload.Int64
		}
	case reflect.Uint:
		if e.Size() == 8 {
			return payload.Uint64
		}
	}
	return payload.None // []byte is a CBOR byte string already
}

func makePlan(t reflect.Type, visiting map[reflect.Type]bool) *oobPlan {
	if visiting[t] || ownCoding(t) {
		return nil
	}
	visiting[t] = true
	defer delete(visiting, t)
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		e := makePlan(t.Elem(), visiting)
		if e == nil {
			return nil
		}
		p := &oobPlan{elem: e}
		switch t.Kind() {
		case reflect.Pointer:
			p.shadow = reflect.PointerTo(e.shadow)
		case reflect.Slice:
			p.shadow = reflect.SliceOf(e.shadow)
		case reflect.Array:
			p.shadow = reflect.ArrayOf(t.Len(), e.shadow)
		case reflect.Map:
			p.shadow = reflect.MapOf(t.Key(), e.shadow)
		}
		return p
	case reflect.Struct:
	default:
		return nil
	}
	p := &oobPlan{}
	var fields []reflect.StructField
	changed := false
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous || f.Name == "_" {
			return nil
		}
		if !f.IsExported() {
			continue // cbor leaves these out anyway
		}
		of := oobField{src: i, dst: len(fields)}
		sf := reflect.StructField{Name: f.Name, Type: f.Type, Tag: f.Tag}
		if k := rawKindOf(f.Type); k != payload.None {
			of.kind, sf.Type, changed = k, oobRefType, true
			sf.Tag, of.omitEmpty = omitEmptyTag(f.Tag)
		} else if sub := makePlan(f.Type, visiting); sub != nil {
			of.sub, sf.Type, changed = sub, sub.shadow, true
		}
		p.fields = append(p.fields, of)
		fields = append(fields, sf)
	}
	if !changed {
		return nil
	}
	p.shadow = reflect.StructOf(fields)
	return p
}

// oobRef stands for a numeric slice in a shadow struct.
type oobRef struct {
	form  byte // refNil (also the zero value: a field absent from the CBOR), refInline or refOut
	value any  // encoding, refInline: the slice itself
	msg   []byte
	kind  payload.Kind
	off   uint64
	n     uint64
}

const (
	refNil = iota
	refInline
	refOut
)

// MarshalCBOR implements cbor.Marshaler.
func (r oobRef) MarshalCBOR() ([]byte, error) {
	switch r.form {
	case refInline:
		return encMode.Marshal(r.value)
	case refOut:
		return encMode.Marshal(cbor.Tag{Number: oobTag, Content: [3]uint64{uint64(r.kind), r.off, r.n}})
	}
	return []byte{0xf6}, nil // null
}

// UnmarshalCBOR implements cbor.Unmarshaler: a reference, null, or the slice in place (kept
// to decode once the field's type is at hand).
func (r *oobRef) UnmarshalCBOR(b []byte) error {
	if len(b) == 1 && b[0] == 0xf6 {
		*r = oobRef{}
		return nil
	}
	var tag cbor.RawTag
	if err := decMode.Unmarshal(b, &tag); err == nil && tag.Number == oobTag {
		var c []uint64
		if err := decMode.Unmarshal(tag.Content, &c); err != nil || len(c) != 3 {
			return fmt.Errorf("malformed out-of-band slice reference")
		}
		if c[0] == 0 || c[0] > 255 {
			return fmt.Errorf("out-of-band slice of unknown kind %d", c[0])
		}
		*r = oobRef{form: refOut, kind: payload.Kind(c[0]), off: c[1], n: c[2]}
		return nil
	}
	*r = oobRef{form: refInline, msg: append([]byte(nil), b...)}
	return nil
}

// oobWriter gathers the out-of-band slices of one message.
type oobWriter struct {
	segs [][]byte
	size uint64
}

func (w *oobWriter) add(b []byte) uint64 {
	w.size = (w.size + 7) &^ 7 // every slice starts 8-aligned, as its element type may need
	off := w.size
	w.segs = append(w.segs, b)
	w.size += uint64(len(b))
	return off
}

// bytes returns the raw part: the slices, each at its offset. It aliases a single slice's
// memory and copies several into one buffer.
func (w *oobWriter) bytes() []byte {
	switch len(w.segs) {
	case 0:
		return nil
	case 1:
		// One large slice, the usual case: sent from its own memory, as a top-level slice is.
		return w.segs[0]
	}
	// Not cleared first (every byte is written below, the padding too): clearing a large
	// buffer costs as much as filling it.
	_, out := payload.Make(payload.Bytes, int(w.size))
	var off uint64
	for _, s := range w.segs {
		pad := (off+7)&^7 - off
		clear(out[off : off+pad])
		off += pad
		off += uint64(copy(out[off:], s))
	}
	return out
}

// toShadow fills dst, a value of p's shadow type, from src, a value of the planned type.
func toShadow(dst, src reflect.Value, p *oobPlan, w *oobWriter) {
	switch src.Kind() {
	case reflect.Pointer:
		if !src.IsNil() {
			v := reflect.New(p.elem.shadow)
			toShadow(v.Elem(), src.Elem(), p.elem, w)
			dst.Set(v)
		}
		return
	case reflect.Slice:
		if !src.IsNil() {
			dst.Set(reflect.MakeSlice(p.shadow, src.Len(), src.Len()))
			for i := range src.Len() {
				toShadow(dst.Index(i), src.Index(i), p.elem, w)
			}
		}
		return
	case reflect.Array:
		for i := range src.Len() {
			toShadow(dst.Index(i), src.Index(i), p.elem, w)
		}
		return
	case reflect.Map:
		if !src.IsNil() {
			dst.Set(reflect.MakeMapWithSize(p.shadow, src.Len()))
			for it := src.MapRange(); it.Next(); {
				v := reflect.New(p.elem.shadow).Elem()
				toShadow(v, it.Value(), p.elem, w)
				dst.SetMapIndex(it.Key(), v)
			}
		}
		return
	}
	for _, f := range p.fields {
		sf, df := src.Field(f.src), dst.Field(f.dst)
		switch {
		case f.kind != payload.None:
			var r oobRef
			if !sf.IsNil() && !(f.omitEmpty && sf.Len() == 0) {
				b := unsafe.Slice((*byte)(sf.UnsafePointer()), sf.Len()*int(sf.Type().Elem().Size()))
				if len(b) < oobMin {
					r = oobRef{form: refInline, value: sf.Interface()}
				} else {
					r = oobRef{form: refOut, kind: f.kind, off: w.add(b), n: uint64(sf.Len())}
				}
			}
			df.Set(reflect.ValueOf(r))
		case f.sub != nil:
			toShadow(df, sf, f.sub, w)
		default:
			df.Set(sf)
		}
	}
}

// fromShadow fills dst, a value of the planned type, from src, its shadow as decoded; the
// slices that came out of band are made over raw.
func fromShadow(dst, src reflect.Value, p *oobPlan, raw []byte) error {
	switch dst.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			dst.SetZero()
			return nil
		}
		v := reflect.New(dst.Type().Elem())
		if err := fromShadow(v.Elem(), src.Elem(), p.elem, raw); err != nil {
			return err
		}
		dst.Set(v)
		return nil
	case reflect.Slice:
		if src.IsNil() {
			dst.SetZero()
			return nil
		}
		dst.Set(reflect.MakeSlice(dst.Type(), src.Len(), src.Len()))
		for i := range src.Len() {
			if err := fromShadow(dst.Index(i), src.Index(i), p.elem, raw); err != nil {
				return err
			}
		}
		return nil
	case reflect.Array:
		for i := range src.Len() {
			if err := fromShadow(dst.Index(i), src.Index(i), p.elem, raw); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if src.IsNil() {
			dst.SetZero()
			return nil
		}
		dst.Set(reflect.MakeMapWithSize(dst.Type(), src.Len()))
		for it := src.MapRange(); it.Next(); {
			v := reflect.New(dst.Type().Elem()).Elem()
			if err := fromShadow(v, it.Value(), p.elem, raw); err != nil {
				return err
			}
			dst.SetMapIndex(it.Key(), v)
		}
		return nil
	}
	for _, f := range p.fields {
		sf, df := src.Field(f.dst), dst.Field(f.src)
		switch {
		case f.kind != payload.None:
			r := sf.Interface().(oobRef)
			switch r.form {
			case refNil:
				df.SetZero()
			case refInline:
				if err := decMode.Unmarshal(r.msg, df.Addr().Interface()); err != nil {
					return err
				}
			case refOut:
				s, err := sliceOver(df.Type(), f.kind, r, raw)
				if err != nil {
					return err
				}
				df.Set(s)
			}
		case f.sub != nil:
			if err := fromShadow(df, sf, f.sub, raw); err != nil {
				return err
			}
		default:
			df.Set(sf)
		}
	}
	return nil
}

// sliceOver makes a slice of type t over the bytes r refers to in raw, after checking them.
func sliceOver(t reflect.Type, want payload.Kind, r oobRef, raw []byte) (reflect.Value, error) {
	if r.kind != want {
		return reflect.Value{}, fmt.Errorf("out-of-band slice of raw kind %d where a %s goes", r.kind, t)
	}
	size := uint64(want.Size())
	if r.n > uint64(len(raw))/size || r.off > uint64(len(raw))-r.n*size || r.off%size != 0 {
		return reflect.Value{}, fmt.Errorf("out-of-band slice of %d elements at %d is not within the %d bytes sent", r.n, r.off, len(raw))
	}
	if r.n == 0 {
		return reflect.MakeSlice(t, 0, 0), nil
	}
	p := unsafe.Pointer(&raw[r.off])
	if uintptr(p)%uintptr(t.Elem().Align()) != 0 {
		// The raw part's memory comes from payload.Make, 8-aligned; a buffer that is not
		// must not become a misaligned slice.
		return reflect.Value{}, fmt.Errorf("out-of-band slice at a misaligned address")
	}
	s := reflect.SliceAt(t.Elem(), p, int(r.n))
	return s.Slice3(0, int(r.n), int(r.n)).Convert(t), nil
}

// encodeOOB writes the CBOR of v, whose type has plan p, to buf and returns the raw part (nil
// if no slice went out of band).
func encodeOOB(buf *bytes.Buffer, v any, p *oobPlan) ([]byte, error) {
	var w oobWriter
	sv := reflect.New(p.shadow).Elem()
	toShadow(sv, reflect.ValueOf(v), p, &w)
	if err := encMode.MarshalToBuffer(sv.Interface(), buf); err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return w.bytes(), nil
}

// decodeOOB is Decode for a pointer to a value whose type has a plan.
func decodeOOB(data []byte, raw any, v any, p *oobPlan) error {
	rb, ok := raw.([]byte)
	if raw != nil && !ok {
		return fmt.Errorf("decode %T: a raw %T where out-of-band slices were expected", v, raw)
	}
	if len(data) == 0 {
		return fmt.Errorf("decode %T: empty message", v)
	}
	sv := reflect.New(p.shadow)
	if err := decMode.Unmarshal(data, sv.Interface()); err != nil {
		return decodeFailure(v, err)
	}
	if err := fromShadow(reflect.ValueOf(v).Elem(), sv.Elem(), p, rb); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// rawElem is the Go element type of each raw kind, as a receiver without the sender's types
// sees out-of-band slices.
var rawElem = map[payload.Kind]reflect.Type{
	payload.Float64: reflect.TypeFor[float64](), payload.Float32: reflect.TypeFor[float32](),
	payload.Int64: reflect.TypeFor[int64](), payload.Int32: reflect.TypeFor[int32](),
	payload.Int16: reflect.TypeFor[int16](), payload.Int8: reflect.TypeFor[int8](),
	payload.Uint64: reflect.TypeFor[uint64](), payload.Uint32: reflect.TypeFor[uint32](),
	payload.Uint16: reflect.TypeFor[uint16](),
}

// decodeAnyOOB decodes for an untyped receiver (CallByName's results, interpreters) a struct
// whose numeric slices came out of band in raw: each reference becomes a slice of its raw
// kind. It reports false when data holds no such reference (raw is then the value itself),
// and true with an error when data is not CBOR.
func decodeAnyOOB(data, raw []byte) (any, bool, error) {
	var x any
	if err := decMode.Unmarshal(data, &x); err != nil {
		return nil, true, err
	}
	found := false
	x, err := resolveOOB(x, raw, &found)
	return x, found, err
}

// resolveOOB replaces the out-of-band references in x, a generic CBOR value.
func resolveOOB(x any, raw []byte, found *bool) (any, error) {
	var err error
	switch v := x.(type) {
	case cbor.Tag:
		if v.Number != oobTag {
			return v, nil
		}
		*found = true
		c, ok := v.Content.([]any)
		if !ok || len(c) != 3 {
			return nil, fmt.Errorf("malformed out-of-band slice reference")
		}
		var f [3]uint64
		for i := range f {
			if f[i], ok = c[i].(uint64); !ok {
				return nil, fmt.Errorf("malformed out-of-band slice reference")
			}
		}
		e, ok := rawElem[payload.Kind(f[0])]
		if !ok || f[0] > 255 {
			return nil, fmt.Errorf("out-of-band slice of unknown kind %d", f[0])
		}
		s, err := sliceOver(reflect.SliceOf(e), payload.Kind(f[0]), oobRef{kind: payload.Kind(f[0]), off: f[1], n: f[2]}, raw)
		if err != nil {
			return nil, err
		}
		return s.Interface(), nil
	case map[any]any:
		for k, e := range v {
			if v[k], err = resolveOOB(e, raw, found); err != nil {
				return nil, err
			}
		}
	case []any:
		for i, e := range v {
			if v[i], err = resolveOOB(e, raw, found); err != nil {
				return nil, err
			}
		}
	}
	return x, nil
}
