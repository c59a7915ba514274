package payload_test

import (
	"strconv"
	"testing"

	"github.com/godist/dist/internal/payload"
)

// Of and Make agree: the slice Make returns for a kind is one Of recognizes as that kind, and
// its byte view is the slice's memory.
func TestOfMakeAgree(t *testing.T) {
	for k := payload.Bytes; k < payload.NumKinds; k++ {
		for _, n := range []int{0, 3, 1 << 20} { // 1 Mi elements: Make skips clearing
			v, b := payload.Make(k, n)
			if len(b) != n*k.Size() {
				t.Fatalf("kind %d, %d elements: %d bytes, want %d", k, n, len(b), n*k.Size())
			}
			got, view, ok := payload.Of(v)
			if !ok || got != k || len(view) != len(b) {
				t.Fatalf("Of(Make(%d, %d)) = %d, %d bytes, %v", k, n, got, len(view), ok)
			}
			if n > 0 {
				b[0] = 7
				if view[0] != 7 {
					t.Fatalf("kind %d: the byte view is not the slice's memory", k)
				}
			}
		}
	}
	if _, _, ok := payload.Of([]string{"x"}); ok {
		t.Fatal("a []string travels raw")
	}
	if v, b := payload.Make(payload.None, 3); v != nil || b != nil {
		t.Fatalf("Make(None) = %v, %v", v, b)
	}
	if k, _, ok := payload.Of([]int{1}); strconv.IntSize == 64 && (!ok || k != payload.Int64) {
		t.Fatalf("[]int travels as %d, %v; want Int64", k, ok)
	}
}
