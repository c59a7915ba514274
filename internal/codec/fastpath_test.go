package codec_test

import (
	"bytes"
	"testing"

	"github.com/godist/dist/internal/codec"
)

// struct{} (no argument, no result) skips the CBOR library both ways; it must still encode
// after the prefix, decode only what it encodes, and leave other values to the full decoder.
func TestEmptyStructFastPath(t *testing.T) {
	prefix := []byte{0x83, 0x61, 'f', 0x00, 0x00}
	m, err := codec.Encode(prefix[:2:5], struct{}{})
	if err != nil || !bytes.Equal(m.CBOR, []byte{0x83, 0x61, 0xa0}) {
		t.Fatalf("Encode(struct{}{}) = %x, %v", m.CBOR, err)
	}
	full, err := codec.Marshal(struct{}{})
	if err != nil || !bytes.Equal(full, []byte{0xa0}) {
		t.Fatalf("the CBOR library encodes struct{} as %x (%v); the fast path assumes a0", full, err)
	}
	var v struct{}
	if err := codec.Decode([]byte{0xa0}, nil, &v); err != nil {
		t.Fatalf("Decode(a0) into struct{}: %v", err)
	}
	if err := codec.Decode([]byte{0x63, 'a', 'b', 'c'}, nil, &v); err == nil {
		t.Fatal("a string decoded into struct{}")
	}
	// A prefix with spare capacity is encoded into; the value follows it.
	m, err = codec.Encode(append(make([]byte, 0, 64), 0x81), "hi")
	if err != nil || !bytes.Equal(m.CBOR, []byte{0x81, 0x62, 'h', 'i'}) {
		t.Fatalf("Encode after a prefix = %x, %v", m.CBOR, err)
	}
}
