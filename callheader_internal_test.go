package dist

import (
	"math"
	"testing"

	"github.com/godist/dist/internal/codec"
)

func TestCallHeaderRoundTrip(t *testing.T) {
	for _, h := range []callHeader{
		{Fn: "f"},
		{Fn: "examples/pi.hits", Store: 1 << 40, Timeout: int64(3e9)},
		{Fn: string(make([]byte, 300)), Store: math.MaxUint64, Timeout: math.MaxInt64},
		{Fn: "", Store: 23, Timeout: 24},
		{Fn: "neg", Timeout: -5},
	} {
		b := h.appendCBOR(nil)
		b = append(b, 0xa0) // the argument that follows
		got, rest, err := parseCallHeader(b)
		if err != nil || got.Fn != h.Fn || got.Store != h.Store || got.Timeout != h.Timeout || len(rest) != 1 {
			t.Fatalf("%+v: got %+v rest %x err %v", h, got, rest, err)
		}
		// It is ordinary CBOR: the generic decoder reads it too.
		var g callHeader
		if _, err := codec.UnmarshalFirst(b, &g); err != nil || g.Fn != h.Fn || g.Store != h.Store || g.Timeout != h.Timeout {
			t.Fatalf("generic decode of %+v: %+v, %v", h, g, err)
		}
	}
	for _, bad := range [][]byte{nil, {0x83}, {0x82, 0x61, 'f', 0}, {0x83, 0x7f}, {0x83, 0x65, 'a'}, {0x83, 0x61, 'f', 0x40, 0}, {0x83, 0x61, 'f', 0, 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, _, err := parseCallHeader(bad); err == nil {
			t.Fatalf("accepted %x", bad)
		}
	}
}

func FuzzCallHeader(f *testing.F) {
	f.Add((&callHeader{Fn: "x", Store: 7, Timeout: 100}).appendCBOR(nil))
	f.Add([]byte{0x83, 0x60, 0, 0})
	f.Add([]byte{0x83, 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, rest, err := parseCallHeader(b)
		if err != nil {
			return
		}
		again := h.appendCBOR(nil)
		h2, _, err := parseCallHeader(append(again, rest...))
		if err != nil || h2 != h {
			t.Fatalf("re-encoding %+v gave %+v, %v", h, h2, err)
		}
	})
}
