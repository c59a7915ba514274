package codec

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/wire"
)

type oobInner struct {
	Label string
	Ys    []float32
}

type oobOuter struct {
	ID     int
	Xs     []float64
	Is     []int
	Small  []int32
	Empty  []uint16
	Nil    []int64
	Bytes  []byte
	In     oobInner
	Ptr    *oobInner
	NilPtr *oobInner
	When   time.Time // encodes itself: kept as it is
	Keyed  []uint32  `cbor:"k,omitempty"`
	hidden []float64
}

func filled(n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(i)*0.5 - 3
	}
	return xs
}

// roundTrip encodes v as a message and decodes it as a receiver would.
func roundTrip[T any](t *testing.T, v T) (T, wire.Msg) {
	t.Helper()
	m, err := Encode([]byte{}, v)
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	if m.RawKind != wire.RawNone {
		r, b := wire.MakeRaw(m.RawKind, len(m.Raw)/m.RawKind.Size())
		copy(b, m.Raw)
		raw = r
	}
	var out T
	if err := Decode(m.CBOR, raw, &out); err != nil {
		t.Fatal(err)
	}
	return out, m
}

func TestOutOfBandSlices(t *testing.T) {
	v := oobOuter{
		ID: 7, Xs: filled(100000), Is: []int{-1, 2, math.MaxInt64, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33},
		Small: []int32{1, 2, 3}, Empty: []uint16{}, Bytes: []byte("abc"),
		In:   oobInner{Label: "in", Ys: make([]float32, 1000)},
		Ptr:  &oobInner{Label: "ptr", Ys: []float32{1.5}},
		When: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC), Keyed: make([]uint32, 500),
		hidden: []float64{1},
	}
	v.In.Ys[999] = 9
	v.Keyed[499] = 42
	got, m := roundTrip(t, v)
	v.hidden = nil // not sent, as with plain CBOR
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip changed the value:\n got %+v\nwant %+v", got.In, v.In)
	}
	if got.Nil != nil || got.Empty == nil || got.NilPtr != nil {
		t.Fatal("nil and empty slices, or a nil pointer, not kept apart")
	}
	// The big slices travelled raw; the CBOR stayed small.
	if m.RawKind != wire.RawBytes || len(m.Raw) < 800000+4000+2000 || len(m.CBOR) > 1000 {
		t.Fatalf("message of %d CBOR and %d raw bytes (kind %v)", len(m.CBOR), len(m.Raw), m.RawKind)
	}
	// A pointer to such a struct, and nil.
	p, _ := roundTrip(t, &v)
	if !reflect.DeepEqual(*p, v) {
		t.Fatal("round trip through a pointer changed the value")
	}
	if n, _ := roundTrip[*oobOuter](t, nil); n != nil {
		t.Fatal("nil pointer came back non-nil")
	}
}

// Plain CBOR of a planned type (EncodeAppend's, or another encoder's) decodes too.
func TestOutOfBandAcceptsPlainCBOR(t *testing.T) {
	v := oobInner{Label: "plain", Ys: []float32{1, 2, 3, 4}}
	data, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out oobInner
	if err := Decode(data, nil, &out); err != nil || !reflect.DeepEqual(out, v) {
		t.Fatalf("Decode of plain CBOR = %+v, %v", out, err)
	}
}

// EncodeAppend puts the struct's CBOR in the buffer and its slices in the raw part.
func TestOutOfBandEncodeAppend(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString("before")
	m, err := EncodeAppend(&buf, oobOuter{Xs: filled(5000)})
	if err != nil || m.RawKind != wire.RawBytes || len(m.Raw) != 40000 {
		t.Fatalf("EncodeAppend: raw kind %v of %d bytes, %v", m.RawKind, len(m.Raw), err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("before")) || !bytes.Equal(buf.Bytes()[6:], m.CBOR) {
		t.Fatal("the CBOR is not what was appended to the buffer")
	}
	var o oobOuter
	if err := Decode(m.CBOR, m.RawValue, &o); err != nil || len(o.Xs) != 5000 || o.Xs[4999] != filled(5000)[4999] {
		t.Fatalf("Decode of EncodeAppend's message: %d values, %v", len(o.Xs), err)
	}
}

// References that point outside the raw part, or at the wrong element kind, are errors.
func TestOutOfBandBadReferences(t *testing.T) {
	ref := func(kind wire.RawKind, off, n uint64) []byte {
		b, err := cbor.Marshal(map[string]any{"Label": "x", "Ys": cbor.Tag{Number: oobTag, Content: []uint64{uint64(kind), off, n}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// 8-aligned, as wire.MakeRaw makes raw parts: a []byte of its own need not be.
	raw := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(make([]uint64, 8)))), 64)
	cases := []struct {
		name string
		data []byte
		raw  any
		want string
	}{
		{"past the end", ref(wire.RawFloat32, 0, 17), raw, "not within"},
		{"offset past the end", ref(wire.RawFloat32, 64, 1), raw, "not within"},
		{"huge count", ref(wire.RawFloat32, 0, 1<<62), raw, "not within"},
		{"misaligned", ref(wire.RawFloat32, 2, 1), raw, "not within"},
		{"wrong kind", ref(wire.RawFloat64, 0, 1), raw, "where a []float32 goes"},
		{"unknown kind", ref(0, 0, 1), raw, "unknown kind"},
		{"no raw part", ref(wire.RawFloat32, 0, 1), nil, "not within"},
		{"raw of another type", ref(wire.RawFloat32, 0, 1), []float64{1}, "where out-of-band slices were expected"},
		{"inline of another type", []byte("\xa2eLabelaxbYs\x81ax"), nil, "cannot unmarshal"},
		{"misaligned memory", ref(wire.RawFloat32, 0, 1), misaligned(), "misaligned"},
		{"two-field reference", []byte("\xa1bYs\xd9\x67\x6f\x82\x03\x00"), raw, "malformed"},
		{"four-field reference", []byte("\xa1bYs\xd9\x67\x6f\x84\x03\x00\x01\x05"), raw, "malformed"},
	}
	for _, c := range cases {
		var out oobInner
		err := Decode(c.data, c.raw, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	// In range, it works, and the slice is the raw part's memory.
	f := []float32{1, 2, 3}
	copy(raw[8:], unsafeBytes(f))
	var out oobInner
	if err := Decode(ref(wire.RawFloat32, 8, 3), raw, &out); err != nil || !reflect.DeepEqual(out.Ys, f) || cap(out.Ys) != 3 {
		t.Fatalf("good reference: %v, %v", out.Ys, err)
	}
}

// misaligned returns 16 bytes that start 1 byte past an 8-aligned address.
func misaligned() []byte {
	s := make([]uint64, 3)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 24)[1:17]
}

func unsafeBytes(f []float32) []byte {
	_, b, _ := wire.RawOf(f)
	return b
}

// Types that cannot have a shadow are encoded as before.
func TestOutOfBandNotPlanned(t *testing.T) {
	type embedded struct {
		oobInner
		Xs []float64
	}
	type toArray struct {
		_  struct{} `cbor:",toarray"`
		Xs []float64
	}
	type node struct {
		Xs   []float64
		Next *node
	}
	type myFloat float64
	type ofNamedElems struct{ Xs []myFloat }
	for _, v := range []any{embedded{}, toArray{}, struct{ N int }{}, time.Time{}, ofNamedElems{}} {
		if p := planFor(reflect.TypeOf(v)); p != nil {
			t.Errorf("%T has a plan", v)
		}
	}
	// A recursive type keeps its recursive field as it is, and still works.
	n := node{Xs: filled(1000), Next: &node{Xs: filled(3)}}
	got, _ := roundTrip(t, n)
	if !reflect.DeepEqual(got, n) {
		t.Fatal("recursive type changed in a round trip")
	}
	// A named slice type of a predeclared element type is planned, and keeps its type.
	type named []float64
	type withNamed struct{ Xs named }
	wn, m0 := roundTrip(t, withNamed{Xs: filled(1000)})
	if !reflect.DeepEqual([]float64(wn.Xs), filled(1000)) || m0.RawKind != wire.RawBytes {
		t.Fatalf("named slice type: raw kind %v", m0.RawKind)
	}
	ta := toArray{Xs: filled(100)}
	gotTA, m := roundTrip(t, ta)
	if !reflect.DeepEqual(gotTA.Xs, ta.Xs) || m.RawKind != wire.RawNone {
		t.Fatalf("toarray struct: raw kind %v", m.RawKind)
	}
}

func BenchmarkStructWithSlice(b *testing.B) {
	v := oobInner{Label: "x", Ys: make([]float32, 1<<20)}
	b.SetBytes(4 << 20)
	for b.Loop() {
		m, err := Encode(nil, v)
		if err != nil {
			b.Fatal(err)
		}
		var out oobInner
		if err := Decode(m.CBOR, m.RawValue, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// A receiver without the type (CallByName's *any) gets the struct as a map, its out-of-band
// slices as slices of their raw kind.
func TestOutOfBandIntoAny(t *testing.T) {
	v := oobInner{Label: "any", Ys: []float32{1, 2, 3}}
	v.Ys = append(v.Ys, make([]float32, 200)...)
	m, err := Encode(nil, v)
	if err != nil || m.RawKind != wire.RawBytes {
		t.Fatalf("Encode: %v, raw kind %v", err, m.RawKind)
	}
	var out any
	if err := Decode(m.CBOR, m.RawValue, &out); err != nil {
		t.Fatal(err)
	}
	mm, ok := out.(map[any]any)
	if !ok || mm["Label"] != "any" || !reflect.DeepEqual(mm["Ys"], v.Ys) {
		t.Fatalf("decoded into any: %#v", out)
	}
	// A top-level raw slice is still handed over as it is.
	xs := []float64{1, 2}
	m, _ = Encode(nil, xs)
	if err := Decode(m.CBOR, m.RawValue, &out); err != nil || !reflect.DeepEqual(out, xs) {
		t.Fatalf("top-level slice into any: %#v, %v", out, err)
	}
}

// FuzzDecodeOutOfBand: any CBOR and raw part decode into a planned struct, or into any, or
// fail with an error; nothing panics or reads outside the raw part.
func FuzzDecodeOutOfBand(f *testing.F) {
	for _, v := range []any{
		oobInner{Label: "x", Ys: make([]float32, 100)},
		oobOuter{ID: 1, Xs: filled(40), Is: []int{1, 2}, Ptr: &oobInner{Ys: make([]float32, 70)}},
		oobOuter{},
	} {
		m, err := Encode(nil, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.CBOR, m.Raw)
	}
	f.Add([]byte("\xa1bYs\xd9\x67\x6f\x83\x03\x00\x01"), []byte{1, 2, 3, 4})
	f.Add([]byte{0xf6}, []byte(nil))
	f.Fuzz(func(t *testing.T, data, raw []byte) {
		var rawv any
		if raw != nil {
			rawv = raw
		}
		for _, dst := range []any{new(oobOuter), new(*oobOuter), new(oobInner), new(any)} {
			if err := Decode(data, rawv, dst); err != nil && !strings.HasPrefix(err.Error(), "decode") {
				t.Fatalf("error %q does not say what failed", err)
			}
		}
	})
}

// A struct with one large slice sends it from its own memory, as a top-level slice is sent;
// several are gathered into one buffer, each at an 8-aligned offset.
func TestOutOfBandSingleSliceNotCopied(t *testing.T) {
	v := oobInner{Label: "one", Ys: make([]float32, 1000)}
	m, err := Encode(nil, v)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Raw) != 4000 || unsafe.SliceData(m.Raw) != (*byte)(unsafe.Pointer(unsafe.SliceData(v.Ys))) {
		t.Fatal("the single slice was copied")
	}
	two := oobOuter{Xs: filled(33), In: oobInner{Ys: make([]float32, 65)}} // 264 and 260 bytes
	m, err = Encode(nil, two)
	if err != nil || len(m.Raw) != 264+260 {
		t.Fatalf("two slices: %d raw bytes, %v", len(m.Raw), err)
	}
	// 264 bytes at 0, 260 at 264, then 260 more at 528 (524 rounded up to 8).
	two.Small = make([]int32, 65)
	two.Small[64] = -5
	if m, _ = Encode(nil, two); len(m.Raw) != 528+260 {
		t.Fatalf("three slices: %d raw bytes, want %d", len(m.Raw), 528+260)
	}
	got, _ := roundTrip(t, two)
	if !reflect.DeepEqual(got.Xs, two.Xs) || !reflect.DeepEqual(got.Small, two.Small) || len(got.In.Ys) != 65 {
		t.Fatal("three slices did not come back")
	}
}

// A receiver of another type than the sender's gets the struct as plain CBOR would give it.
func TestOutOfBandIntoOtherTypes(t *testing.T) {
	m, err := Encode(nil, oobInner{Label: "other", Ys: make([]float32, 100)})
	if err != nil || m.RawKind != wire.RawBytes {
		t.Fatalf("Encode: %v, raw kind %v", err, m.RawKind)
	}
	var asMap map[string]any
	if err := Decode(m.CBOR, m.RawValue, &asMap); err != nil || asMap["Label"] != "other" || len(asMap["Ys"].([]any)) != 100 {
		t.Fatalf("into a map: %v, %v", asMap, err)
	}
	var loose struct {
		Label string
		Ys    any
	}
	if err := Decode(m.CBOR, m.RawValue, &loose); err != nil || loose.Label != "other" || len(loose.Ys.([]any)) != 100 {
		t.Fatalf("into a struct with an any field: %+v, %v", loose, err)
	}
}

// Small slices encode exactly as plain CBOR does, omitempty included.
func TestOutOfBandSmallAsPlain(t *testing.T) {
	type tagged struct {
		A  int
		Ys []float32 `cbor:"ys,omitempty"`
		Zs []int16   `json:"zs,omitempty"`
		Ws []uint32
	}
	for _, v := range []tagged{
		{A: 1},
		{A: 2, Ys: []float32{}, Zs: []int16{}, Ws: []uint32{}},
		{A: 3, Ys: []float32{1.5}, Zs: []int16{-1, 2}, Ws: []uint32{7}},
	} {
		m, err := Encode(nil, v)
		if err != nil || m.RawKind != wire.RawNone {
			t.Fatalf("%+v: raw kind %v, %v", v, m.RawKind, err)
		}
		plain, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m.CBOR, plain) {
			t.Errorf("%+v: shadow CBOR %x, plain %x", v, m.CBOR, plain)
		}
	}
}

// Structs reached through slices, arrays, maps and pointers have their slices out of band
// too, at the top level or inside other values.
func TestOutOfBandThroughContainers(t *testing.T) {
	type holder struct {
		Items []oobInner
		Pair  [2]oobInner
		ByKey map[string]*oobInner
		None  []oobInner
	}
	item := func(i int) oobInner {
		ys := make([]float32, 300)
		ys[299] = float32(i)
		return oobInner{Label: fmt.Sprint(i), Ys: ys}
	}
	h := holder{
		Items: []oobInner{item(1), item(2), {Label: "small", Ys: []float32{1}}},
		Pair:  [2]oobInner{item(3), item(4)},
		ByKey: map[string]*oobInner{"five": ptrTo(item(5)), "nil": nil},
	}
	got, m := roundTrip(t, h)
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("round trip changed the holder:\n got %+v\nwant %+v", got, h)
	}
	if m.RawKind != wire.RawBytes || len(m.Raw) < 5*1200 {
		t.Fatalf("holder: %d raw bytes of kind %v, want its five large slices", len(m.Raw), m.RawKind)
	}
	top := []oobInner{item(6), item(7)}
	gotTop, m := roundTrip(t, top)
	if !reflect.DeepEqual(gotTop, top) || len(m.Raw) < 2*1200 {
		t.Fatalf("top-level slice of structs: %d raw bytes", len(m.Raw))
	}
	var nilTop []oobInner
	if gotNil, _ := roundTrip(t, nilTop); gotNil != nil {
		t.Fatal("nil slice of structs came back non-nil")
	}
	// Numeric slices that are not fields of a struct stay CBOR.
	for _, v := range []any{[][]float64{{1}}, map[string][]float64{"a": {1}}, []int{1}} {
		if planFor(reflect.TypeOf(v)) != nil {
			t.Errorf("%T has a plan", v)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
