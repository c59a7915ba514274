package wire_test

import (
	"bytes"
	"reflect"
	"runtime"
	"testing"
	"unsafe"

	"github.com/godist/dist/internal/wire"
)

// Large raw parts are allocated without clearing; the slice and its byte view must still be
// the same memory, of the right length, aligned for the element type, and survive a GC.
func TestMakeRawLarge(t *testing.T) {
	for k := wire.RawBytes; k <= wire.RawInt8; k++ {
		n := (3 << 20) / k.Size()
		v, b := wire.MakeRaw(k, n)
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.Slice || rv.Len() != n || rv.Cap() != n || len(b) != n*k.Size() {
			t.Fatalf("kind %v: got %T of %d (cap %d), %d bytes", k, v, rv.Len(), rv.Cap(), len(b))
		}
		if unsafe.Pointer(rv.Pointer()) != unsafe.Pointer(unsafe.SliceData(b)) {
			t.Fatalf("kind %v: the byte view is not the slice's memory", k)
		}
		if rv.Pointer()%8 != 0 {
			t.Fatalf("kind %v: memory at %#x is not 8-byte aligned", k, rv.Pointer())
		}
		for i := range b {
			b[i] = byte(i * 7)
		}
		want := bytes.Clone(b)
		runtime.GC()
		_, kb, _ := wire.RawOf(v)
		if !bytes.Equal(kb, want) {
			t.Fatalf("kind %v: contents changed across a GC", k)
		}
	}
}
