package codec_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/godist/dist/internal/codec"
)

var errCannotMap = errors.New("cannot map")

// picky decodes an int and fails, although the data fits, when it is negative: a type's own
// decoder that needs something the data does not give (as a shared array its memory).
type picky struct{ N int }

func (p *picky) UnmarshalCBOR(b []byte) error {
	if err := cbor.Unmarshal(b, &p.N); err != nil {
		return err // the data does not fit
	}
	if p.N < 0 {
		return fmt.Errorf("%w: segment %d", errCannotMap, -p.N)
	}
	return nil
}

func TestDecoderError(t *testing.T) {
	enc := func(v any) []byte {
		m, err := codec.Encode(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		return m.CBOR
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		into    any
		decoder bool // the type's decoder failed (else a mismatch or malformed data)
	}{
		{"custom decoder fails", enc(-3), new(picky), true},
		{"custom decoder in a struct field", enc(struct{ P int }{-1}), new(struct{ P picky }), true},
		{"custom decoder sees a mismatch", enc("x"), new(picky), false},
		{"plain mismatch", enc("x"), new(int), false},
		{"truncated", enc([]string{"abc", "def"})[:5], new([]string), false},
	} {
		err := codec.Decode(tc.data, nil, tc.into)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		var de *codec.DecoderError
		if got := errors.As(err, &de); got != tc.decoder {
			t.Fatalf("%s: %v: DecoderError %v, want %v", tc.name, err, got, tc.decoder)
		}
		if tc.decoder && !errors.Is(err, errCannotMap) {
			t.Fatalf("%s: %v does not wrap the decoder's error", tc.name, err)
		}
	}
}
