package codec_test

import (
	"bytes"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

type inner struct {
	X, Y float64
	Tags []string
}

type record struct {
	Name    string
	N       int
	U       uint64
	F       float64
	Ok      bool
	Bytes   []byte
	Grid    [][]int
	Floats  [][]float64
	M       map[string]int
	Inner   inner
	Ptr     *inner
	Nil     *inner
	Any     any
	When    time.Time
	Elapsed time.Duration
}

// roundTrip encodes v and decodes it into a new value of type T, as the other end does.
func roundTrip[T any](t *testing.T, v any) T {
	t.Helper()
	m, err := codec.Encode(nil, v)
	if err != nil {
		t.Fatalf("Encode(%T): %v", v, err)
	}
	var raw any
	if m.RawKind != wire.RawNone {
		var b []byte
		raw, b = wire.MakeRaw(m.RawKind, len(m.Raw)/m.RawKind.Size())
		copy(b, m.Raw)
	}
	var out T
	if err := codec.Decode(m.CBOR, raw, &out); err != nil {
		t.Fatalf("Decode into %T: %v", &out, err)
	}
	return out
}

func TestRoundTripStruct(t *testing.T) {
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 2*3600))
	in := record{
		Name:    "héllo, 世界",
		N:       -42,
		U:       math.MaxUint64,
		F:       math.Pi,
		Ok:      true,
		Bytes:   []byte{0, 1, 255},
		Grid:    [][]int{{1, 2}, {}, {-3}},
		Floats:  [][]float64{{0.5, math.Inf(1)}, {math.Copysign(0, -1)}},
		M:       map[string]int{"a": 1, "b": -2},
		Inner:   inner{1, 2, []string{"x", ""}},
		Ptr:     &inner{X: 3},
		Any:     "dynamic",
		When:    when,
		Elapsed: 3 * time.Second,
	}
	out := roundTrip[record](t, in)
	if !out.When.Equal(when) {
		t.Fatalf("time %v came back as %v", when, out.When)
	}
	if _, off := out.When.Zone(); off != 2*3600 {
		t.Errorf("time zone offset %d lost", off)
	}
	in.When, out.When = time.Time{}, time.Time{}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

func TestRoundTripValues(t *testing.T) {
	if got := roundTrip[string](t, "a string with \x00 and ✓"); got != "a string with \x00 and ✓" {
		t.Errorf("string: %q", got)
	}
	if got := roundTrip[string](t, ""); got != "" {
		t.Errorf("empty string: %q", got)
	}
	if got := roundTrip[map[string]any](t, map[string]any{"n": 1, "s": "x", "l": []any{"a", 2.5}, "m": map[string]any{"k": true}}); !reflect.DeepEqual(got, map[string]any{
		"n": uint64(1), "s": "x", "l": []any{"a", 2.5}, "m": map[any]any{"k": true},
	}) {
		t.Errorf("map[string]any: %#v", got)
	}
	if got := roundTrip[map[int][]string](t, map[int][]string{-1: {"a"}, 7: nil}); !reflect.DeepEqual(got, map[int][]string{-1: {"a"}, 7: nil}) {
		t.Errorf("map[int][]string: %#v", got)
	}
	if got := roundTrip[[][]string](t, [][]string{{"a", "b"}, nil, {""}}); !reflect.DeepEqual(got, [][]string{{"a", "b"}, nil, {""}}) {
		t.Errorf("[][]string: %#v", got)
	}
	if got := roundTrip[[][][]int](t, [][][]int{{{1}, {2, 3}}, {}}); !reflect.DeepEqual(got, [][][]int{{{1}, {2, 3}}, {}}) {
		t.Errorf("[][][]int: %#v", got)
	}
	when := time.Date(1999, 12, 31, 23, 59, 59, 1, time.UTC)
	if got := roundTrip[time.Time](t, when); !got.Equal(when) {
		t.Errorf("time.Time: %v, want %v", got, when)
	}
	if got := roundTrip[[]time.Time](t, []time.Time{when, when.Add(time.Hour)}); len(got) != 2 || !got[1].Equal(when.Add(time.Hour)) {
		t.Errorf("[]time.Time: %v", got)
	}
	if got := roundTrip[*inner](t, &inner{X: 1}); got == nil || got.X != 1 {
		t.Errorf("*inner: %+v", got)
	}
	if got := roundTrip[[]string](t, []string{"not", "raw"}); !reflect.DeepEqual(got, []string{"not", "raw"}) {
		t.Errorf("[]string: %v", got)
	}
	if got := roundTrip[[3]float64](t, [3]float64{1, 2, 3}); got != [3]float64{1, 2, 3} {
		t.Errorf("[3]float64: %v", got)
	}
}

// A prefix (what the caller puts first, e.g. a call header) is kept before the value's CBOR.
func TestEncodePrefix(t *testing.T) {
	prefix, err := codec.Marshal(map[string]string{"fn": "f"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := codec.Encode(bytes.Clone(prefix), inner{X: 1, Tags: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.RawKind != wire.RawNone || m.Raw != nil || !bytes.HasPrefix(m.CBOR, prefix) {
		t.Fatalf("message %+v does not start with the prefix", m)
	}
	var hdr map[string]string
	rest, err := codec.UnmarshalFirst(m.CBOR, &hdr)
	if err != nil || hdr["fn"] != "f" {
		t.Fatalf("prefix: %v, %v", hdr, err)
	}
	var v inner
	if err := codec.Decode(rest, nil, &v); err != nil || v.X != 1 || v.Tags[0] != "t" {
		t.Fatalf("value after the prefix: %+v, %v", v, err)
	}
}

func TestRawTopLevel(t *testing.T) {
	prefix := []byte{0xa1, 0x61, 'k', 0x01} // {"k": 1}
	floats := []float64{1.5, -2, math.MaxFloat64, math.SmallestNonzeroFloat64}
	ints := []int{-1, 0, math.MaxInt, math.MinInt}
	bs := []byte("raw bytes")

	for _, tc := range []struct {
		v    any
		kind wire.RawKind
	}{
		{floats, wire.RawFloat64},
		{ints, wire.RawInt64},
		{bs, wire.RawBytes},
		{[]uint{1, math.MaxUint}, wire.RawUint64},
		{[]float32{1.25}, wire.RawFloat32},
		{[]int8{-128}, wire.RawInt8},
	} {
		m, err := codec.Encode(prefix, tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if m.RawKind != tc.kind {
			t.Fatalf("%T travels as raw kind %v, want %v", tc.v, m.RawKind, tc.kind)
		}
		if !bytes.Equal(m.CBOR, prefix) {
			t.Fatalf("%T: CBOR part %x, want only the prefix %x", tc.v, m.CBOR, prefix)
		}
		rv := reflect.ValueOf(tc.v)
		if len(m.Raw) != rv.Len()*tc.kind.Size() || unsafe.SliceData(m.Raw) != (*byte)(rv.UnsafePointer()) {
			t.Fatalf("%T: raw part does not alias the value", tc.v)
		}
		if !reflect.DeepEqual(m.RawValue, tc.v) {
			t.Fatalf("%T: RawValue %#v", tc.v, m.RawValue)
		}
	}

	// The receiving side: MakeRaw'd slices are handed over without a copy.
	recv := func(v any) (any, unsafe.Pointer) {
		k, b, _ := wire.RawOf(v)
		raw, rb := wire.MakeRaw(k, len(b)/k.Size())
		copy(rb, b)
		return raw, unsafe.Pointer(unsafe.SliceData(rb))
	}

	raw, p := recv(floats)
	var gotF []float64
	if err := codec.Decode(prefix, raw, &gotF); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotF, floats) || unsafe.Pointer(unsafe.SliceData(gotF)) != p {
		t.Fatalf("[]float64: %v, copied: %v", gotF, unsafe.Pointer(unsafe.SliceData(gotF)) != p)
	}

	raw, p = recv(ints)
	var gotI []int
	if err := codec.Decode(prefix, raw, &gotI); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotI, ints) || unsafe.Pointer(unsafe.SliceData(gotI)) != p {
		t.Fatalf("[]int: %v, copied: %v", gotI, unsafe.Pointer(unsafe.SliceData(gotI)) != p)
	}

	raw, p = recv(ints)
	var gotAny any
	if err := codec.Decode(prefix, raw, &gotAny); err != nil {
		t.Fatal(err)
	}
	// int travels as 64-bit: an untyped receiver gets []int64.
	if s, ok := gotAny.([]int64); !ok || len(s) != len(ints) || s[2] != math.MaxInt64 || unsafe.Pointer(unsafe.SliceData(s)) != p {
		t.Fatalf("*any got %#v", gotAny)
	}

	raw, p = recv(bs)
	var gotB []byte
	if err := codec.Decode(prefix, raw, &gotB); err != nil {
		t.Fatal(err)
	}
	if string(gotB) != string(bs) || unsafe.Pointer(unsafe.SliceData(gotB)) != p {
		t.Fatalf("[]byte: %q", gotB)
	}

	type vec []float64
	raw, p = recv(floats)
	var gotV vec
	if err := codec.Decode(nil, raw, &gotV); err != nil {
		t.Fatal(err)
	}
	if len(gotV) != len(floats) || gotV[0] != 1.5 || unsafe.Pointer(unsafe.SliceData(gotV)) != p {
		t.Fatalf("named slice type: %v", gotV)
	}

	var gotU []uint
	raw, _ = recv([]uint64{7, math.MaxUint64})
	if err := codec.Decode(nil, raw, &gotU); err != nil || !reflect.DeepEqual(gotU, []uint{7, math.MaxUint}) {
		t.Fatalf("[]uint: %v, %v", gotU, err)
	}

	var empty []int
	raw, _ = recv([]int64{})
	if err := codec.Decode(nil, raw, &empty); err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("empty []int: %#v, %v", empty, err)
	}
}

func TestDecodeRawMismatch(t *testing.T) {
	raw, _ := wire.MakeRaw(wire.RawFloat64, 3)
	var s string
	err := codec.Decode(nil, raw, &s)
	if err == nil {
		t.Fatalf("decoded a []float64 into a string: %q", s)
	}
	if !strings.Contains(err.Error(), "[]float64") || !strings.Contains(err.Error(), "string") {
		t.Fatalf("error %q does not name both types", err)
	}
	for _, dst := range []any{new([]int64), new([]float32), new([]uint64), new(int), new(map[string]any), new([]any), new(inner)} {
		if err := codec.Decode(nil, raw, dst); err == nil {
			t.Errorf("decoded a []float64 into a %T", dst)
		}
	}
	ints, _ := wire.MakeRaw(wire.RawInt64, 1)
	if err := codec.Decode(nil, ints, new([]uint)); err == nil {
		t.Error("decoded a []int64 into a []uint")
	}
	if err := codec.Decode(nil, ints, new([]float64)); err == nil {
		t.Error("decoded a []int64 into a []float64")
	}
	bs, _ := wire.MakeRaw(wire.RawBytes, 1)
	if err := codec.Decode(nil, bs, new([]int8)); err == nil {
		t.Error("decoded a []byte into a []int8")
	}
	// Not a pointer, or a nil one.
	if err := codec.Decode(nil, raw, []float64{}); err == nil || !strings.Contains(err.Error(), "pointer") {
		t.Errorf("non-pointer destination: %v", err)
	}
	if err := codec.Decode(nil, raw, (*[]float64)(nil)); err == nil || !strings.Contains(err.Error(), "pointer") {
		t.Errorf("nil pointer destination: %v", err)
	}
	// No data at all.
	if err := codec.Decode(nil, nil, new(any)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty message: %v", err)
	}
	// CBOR of the wrong type.
	b, _ := codec.Marshal("text")
	if err := codec.Decode(b, nil, new(int)); err == nil || !strings.Contains(err.Error(), "decode *int") {
		t.Errorf("string into int: %v", err)
	}
	// An interface the raw slice implements.
	var st any
	if err := codec.Decode(nil, raw, &st); err != nil {
		t.Errorf("into *any: %v", err)
	}
}

func hostileInputs() map[string][]byte {
	nested := append(bytes.Repeat([]byte{0x81}, 100_000), 0x00)
	nestedMaps := bytes.Repeat([]byte{0xa1, 0x61, 'k'}, 50_000)
	nestedMaps = append(nestedMaps, 0x00)
	return map[string][]byte{
		"array of 2^31 (9 bytes)":          {0x9b, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"array of 2^63 (9 bytes)":          {0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0},
		"array of 2^32-1 (5 bytes)":        {0x9a, 0xff, 0xff, 0xff, 0xff},
		"array of 16M (5 bytes)":           {0x9a, 0x01, 0, 0, 0},
		"array of 16M-1, 1 item":           {0x9a, 0x00, 0xff, 0xff, 0xff, 0x00},
		"map of 2^31 pairs":                {0xbb, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"map of 16M pairs":                 {0xba, 0x01, 0, 0, 0},
		"byte string of 2^31":              {0x5b, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"text string of 2^62":              {0x7b, 0x40, 0, 0, 0, 0, 0, 0, 0},
		"bignum of 2^31 bytes":             {0xc2, 0x5b, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"100k nested arrays":               nested,
		"50k nested maps":                  nestedMaps,
		"indefinite array":                 {0x9f, 0x01, 0x02, 0xff},
		"indefinite map":                   {0xbf, 0x61, 'a', 0x01, 0xff},
		"indefinite byte string":           {0x5f, 0x41, 'a', 0xff},
		"indefinite text string":           {0x7f, 0x61, 'a', 0xff},
		"unterminated indefinite array":    append([]byte{0x9f}, bytes.Repeat([]byte{0x9f}, 10_000)...),
		"array of 2^31 inside array":       {0x82, 0x01, 0x9b, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"tag nesting":                      append(bytes.Repeat([]byte{0xd8, 0x80}, 10_000), 0x00),
		"duplicate map keys":               {0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02},
		"reserved additional information":  {0x1c},
		"break outside indefinite":         {0xff},
		"truncated float64":                {0xfb, 0x40, 0x09},
		"map key that is an array, huge":   {0xa1, 0x9b, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"time tag with huge string":        {0xc0, 0x7b, 0, 0, 0, 0, 0x80, 0, 0, 0},
		"array of 2^31 into struct fields": {0xa1, 0x61, 'B', 0x9b, 0, 0, 0, 0, 0x80, 0, 0, 0},
	}
}

func TestDecodeHostile(t *testing.T) {
	inputs := hostileInputs()
	type target struct {
		A int
		B []string
	}
	news := []func() any{
		func() any { return new(any) },
		func() any { return new(map[string]any) },
		func() any { return new([]int) },
		func() any { return new([]any) },
		func() any { return new(target) },
		func() any { return new(string) },
	}
	for name, in := range inputs {
		for _, mk := range news {
			dst := mk()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			err := codec.Decode(in, nil, dst)
			d := time.Since(start)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Errorf("%s into %T: accepted, got %v", name, dst, reflect.ValueOf(dst).Elem())
				continue
			}
			if !strings.HasPrefix(err.Error(), "decode ") {
				t.Errorf("%s into %T: error %q does not say what failed", name, dst, err)
			}
			// A few times the input is fine (errors quote parts of it); a large allocation is not.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(4*len(in))+256<<10 {
				t.Errorf("%s into %T: allocated %d bytes for a %d-byte input", name, dst, alloc, len(in))
			}
			if d > time.Second {
				t.Errorf("%s into %T: took %v", name, dst, d)
			}
		}
	}
}

// The nesting limit is 64 containers: deeper is refused, up to it is fine.
func TestDecodeNestingLimit(t *testing.T) {
	mk := func(containers int) []byte { return append(bytes.Repeat([]byte{0x81}, containers), 0x00) }
	var v any
	if err := codec.Decode(mk(64), nil, &v); err != nil {
		t.Fatalf("64 nested arrays: %v", err)
	}
	if err := codec.Decode(mk(65), nil, &v); err == nil || !strings.Contains(err.Error(), "nested level") {
		t.Fatalf("65 nested arrays: %v", err)
	}
}

func TestEncodeAppend(t *testing.T) {
	var buf bytes.Buffer
	values := []any{inner{X: 1, Tags: []string{"a"}}, struct{}{}, []float64{1, 2}, "s", make(chan int), 7}
	var ends []int
	for _, v := range values {
		m, err := codec.EncodeAppend(&buf, v)
		if _, isChan := v.(chan int); isChan {
			// Not encodable: an error, and nothing left behind in the buffer.
			if err == nil || (len(ends) > 0 && buf.Len() != ends[len(ends)-1]) {
				t.Fatalf("chan: %v, buffer %d bytes after %v", err, buf.Len(), ends)
			}
			ends = append(ends, buf.Len())
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, isRaw := v.([]float64); isRaw != (m.RawKind != wire.RawNone) || isRaw && len(m.CBOR) != 0 {
			t.Fatalf("%T: message %+v", v, m)
		}
		ends = append(ends, buf.Len())
	}
	// Each value decodes from its own stretch of the buffer.
	b := buf.Bytes()
	var x inner
	if err := codec.Decode(b[:ends[0]], nil, &x); err != nil || x.X != 1 || x.Tags[0] != "a" {
		t.Fatalf("first: %+v, %v", x, err)
	}
	var e struct{}
	if err := codec.Decode(b[ends[0]:ends[1]], nil, &e); err != nil {
		t.Fatal(err)
	}
	if ends[2] != ends[1] {
		t.Fatal("a raw slice wrote to the buffer")
	}
	var s string
	if err := codec.Decode(b[ends[2]:ends[3]], nil, &s); err != nil || s != "s" {
		t.Fatalf("string: %q, %v", s, err)
	}
	var n int
	if err := codec.Decode(b[ends[4]:ends[5]], nil, &n); err != nil || n != 7 {
		t.Fatalf("int: %d, %v", n, err)
	}
}
