package wire_test

import (
	"context"
	"sync"
	"testing"

	"github.com/godist/dist/internal/wire"
)

// benchPair returns two connected Conns over a unix socket; b echoes requests inline.
func benchPair(b *testing.B) (a *wire.Conn) {
	na, nb := wire.UnixPair(b)
	a = wire.NewConn(na, wire.DefaultLimits, nil, nil)
	peer := wire.NewConn(nb, wire.DefaultLimits, func(c *wire.Conn, f *wire.Frame) {
		if f.Kind == wire.KindRequest {
			c.Send(wire.KindReply, f.ID, wire.Msg{CBOR: f.CBOR})
		}
	}, nil)
	b.Cleanup(func() {
		a.Close()
		peer.Close()
	})
	return a
}

// BenchmarkConnCall is a synchronous round trip: the figure behind call.p50_us.
func BenchmarkConnCall(b *testing.B) {
	a := benchPair(b)
	ctx := context.Background()
	m := wire.Msg{CBOR: []byte{0xf6}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Call(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnStartLazy is requests started without waiting, 64 in flight: the figure behind
// call.async_per_s.
func BenchmarkConnStartLazy(b *testing.B) {
	a := benchPair(b)
	m := wire.Msg{CBOR: []byte{0xf6}}
	var wg sync.WaitGroup
	done := wire.ReplyFunc(func(*wire.Frame, error) { wg.Done() })
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(64)
		for range 64 {
			if _, err := a.StartLazy(m, done); err != nil {
				b.Fatal(err)
			}
		}
		a.Flush()
		wg.Wait()
	}
}
