package codec_test

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/codec"
)

var canon = func() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time = cbor.TimeRFC3339Nano // as codec encodes times: untagged text, decoded as a string into any
	em, err := opts.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

func FuzzCodecDecode(f *testing.F) {
	type target struct {
		A int
		B []string
	}
	for _, v := range []any{
		target{A: 1, B: []string{"x", "y"}},
		map[string]any{"a": 1, "b": []any{"c", 2.5, nil, true}},
		[]int{1, -2, 3},
		[][]int{{1}, {}},
		"text",
		-7,
		3.25,
		time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
		map[int]string{1: "a"},
		[]byte{1, 2},
	} {
		b, err := codec.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range hostileInputs() {
		if len(b) < 1024 {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0xc1})                         // tag 1: epoch time
	f.Add([]byte{0xc2, 0x42, 0x01, 0x00})       // bignum
	f.Add([]byte{0xd9, 0xd9, 0xf7, 0x01})       // self-described CBOR
	f.Add([]byte{0xf9, 0x7e, 0x00})             // float16 NaN
	f.Add([]byte{0xa1, 0x82, 0x01, 0x02, 0x03}) // map keyed by an array
	f.Fuzz(func(t *testing.T, data []byte) {
		indefinite := len(data) > 0 && (data[0] == 0x5f || data[0] == 0x7f || data[0] == 0x9f || data[0] == 0xbf)
		for _, dst := range []any{new(any), new(map[string]any), new([]int), new(target)} {
			err := codec.Decode(data, nil, dst)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "decode ") {
					t.Fatalf("error %q does not say what failed", err)
				}
				continue
			}
			if indefinite {
				t.Fatalf("indefinite-length item %x accepted into %T", data, dst)
			}
			// What was decoded encodes again, and that decodes to the same value.
			v := reflect.ValueOf(dst).Elem().Interface()
			b, err := codec.Marshal(v)
			if err != nil {
				// An epoch time far outside years 0–9999 decodes (tag 1 allows it) but has no
				// RFC 3339 form: encoding it is an error, which is all we ask of it.
				if strings.Contains(err.Error(), "time.Time") {
					continue
				}
				t.Fatalf("re-encoding %#v decoded from %x: %v", v, data, err)
			}
			again := reflect.New(reflect.TypeOf(dst).Elem())
			if err := codec.Decode(b, nil, again.Interface()); err != nil {
				t.Fatalf("decoding %x, the re-encoding of %#v decoded from %x: %v", b, v, data, err)
			}
			// Maps encode in random order: compare canonical encodings (NaN-safe, unlike DeepEqual).
			c1, err1 := canon.Marshal(v)
			c2, err2 := canon.Marshal(again.Elem().Interface())
			if err1 != nil || err2 != nil || !bytes.Equal(c1, c2) {
				t.Fatalf("round trip of %x changed the value: %#v became %#v (%v, %v)", data, v, again.Elem().Interface(), err1, err2)
			}
		}
	})
}
