package script

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

type point struct {
	X, Y float64
	Tag  string `cbor:"tag"`
	Meta any
	hid  int
}

// TestValueRoundTrip checks that values keep their types across the wire form, nested
// interface contents included.
func TestValueRoundTrip(t *testing.T) {
	when := time.Date(2026, 11, 21, 12, 0, 0, 5, time.UTC)
	cases := []any{
		nil, true, 3, int8(-4), uint16(7), int64(math.MinInt64), uint64(math.MaxUint64), 2.5, float32(1.5), "s", "",
		[]float64{1, 2, 3}, []float64{}, []int{4, -5}, []byte("raw"), []uint32{1 << 31}, []float32{0.5},
		[][]float64{{1, 2}, {3, 4}}, [3]int{1, 2, 3},
		map[string][][]float64{"buzz": {{math.Pi}}},
		map[string]any{"buzz": [][]float64{{1}}, "badger": "hello", "n": 3, "m": map[int]any{2: 0}},
		map[int]any{2: 4, 3: []float64{6}, 4: nil},
		[]any{1, "a", []int{2}, map[string]int{"k": 1}, nil},
		point{X: 1, Y: 2, Tag: "p", Meta: []any{1.5, "x"}, hid: 9}, // hid is not carried
		[]point{{X: 1}, {Y: 2, Meta: 7}},
		&point{X: 3},
		when, []time.Time{when},
		time.Duration(5),
		map[any]any{"a": 1, 2: "b"},
	}
	for _, c := range cases {
		w, err := encodeValue(reflect.ValueOf(c))
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		got, err := decodeAny(w)
		if err != nil {
			t.Fatalf("%T (%s): %v", c, w.T, err)
		}
		want := c
		switch x := c.(type) {
		case point:
			want = struct {
				X, Y float64
				Tag  string `cbor:"tag"`
				Meta any
			}{x.X, x.Y, x.Tag, x.Meta}
			got = normalize(got)
			want = normalize(want)
		case []point, *point:
			got, want = normalize(got), normalize(want)
		case time.Duration:
			want = int64(x)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v, want %#v", w.T, got, want)
		}
	}
	bad := []any{func() {}, make(chan int), complex(1, 2), []any{1, func() {}},
		map[any]int{[2]int{1, 2}: 1}, struct{ point }{}}
	for _, b := range bad {
		if _, err := encodeValue(reflect.ValueOf(b)); !errors.Is(err, ErrNotWireable) {
			t.Errorf("%T: err = %v, want ErrNotWireable", b, err)
		} else {
			t.Logf("%T: %v", b, err)
		}
	}
}

// normalize compares structs of different (but identically laid out) types by their fields.
func normalize(v any) any {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		return []any{"ptr", normalize(rv.Elem().Interface())}
	case reflect.Slice:
		out := []any{}
		for i := range rv.Len() {
			out = append(out, normalize(rv.Index(i).Interface()))
		}
		return out
	case reflect.Struct:
		out := map[string]any{}
		for i := range rv.NumField() {
			if rv.Type().Field(i).IsExported() {
				out[rv.Type().Field(i).Name] = rv.Field(i).Interface()
			}
		}
		return out
	}
	return v
}

func TestBuildTypeRejects(t *testing.T) {
	for _, d := range []string{"", "func()", "chan int", "[1099511627776]float64", "[99999999]struct { A [999999]int }",
		"map[[]int]int", "struct { a int }", "struct { A int; A int }", "error", "interface { M() }", "os.File",
		"struct { int }", "[-1]int", "[1<<40]int"} {
		if _, err := buildType(d); err == nil {
			t.Errorf("buildType(%q): no error", d)
		}
	}
}

// FuzzLoad feeds arbitrary bytes to the Save file decoder: it must return a value or an error,
// never panic or allocate without bound, and what it accepts must survive a save/load round trip.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	for i, v := range []any{
		[]float64{1, 2}, map[string]any{"a": []int{1}, "b": "x"}, [][]float64{{1}},
		struct {
			A int
			B map[int]any
		}{1, map[int]any{2: 0.5}}, "s", nil,
	} {
		p := filepath.Join(dir, "seed")
		if err := Save(p, v); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if i == 1 {
			if err := SaveVars(p, map[string]any{"X": "Fnordic", "R": []int{1, 2, 3}}); err != nil {
				f.Fatal(err)
			}
			b, _ = os.ReadFile(p)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeFile(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error not matching ErrFormat: %v", err)
			}
			return
		}
		p := filepath.Join(t.TempDir(), "again")
		if vars, ok := v.(map[string]any); ok {
			err = SaveVars(p, vars)
		} else {
			err = Save(p, v)
		}
		if err != nil {
			t.Fatalf("accepted %#v but cannot save it again: %v", v, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeFile(b); err != nil {
			t.Fatalf("saved again, then: %v", err)
		}
	})
}

// FuzzUnpack feeds arbitrary bytes to the decoder of script.eval's replies (which arrive from
// other processes): it must return a value or an error, never panic.
func FuzzUnpack(f *testing.F) {
	for _, v := range []any{[]float64{1, 2, 3}, []int32{-1}, map[string]any{"a": 1}, "s", nil} {
		w, tail, isTail, err := describeForPack(reflect.ValueOf(v))
		if err != nil {
			f.Fatal(err)
		}
		b, err := pack(reply{Val: &w, Tail: isTail}, tail)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	b, _ := pack(reply{Err: &EvalError{Pid: 2, Kind: KindPanic, Line: 1, Col: 2, Msg: "boom"}}, nil)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := unpackReply(data)
		if err != nil || r.Val == nil {
			return
		}
		if v, err := decodeValue(*r.Val); err == nil && v.IsValid() && r.Tail && v.Len() > len(data) {
			t.Fatalf("a %d-element slice from %d bytes", v.Len(), len(data))
		}
	})
}
