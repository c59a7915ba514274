package dist_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/internal/wire"
)

// TestHostileInputToWorker sends what a confused or hostile process might to a worker's
// socket. Each connection must be closed with a clear log line on the worker, and the worker
// must go on serving its real peers.
func TestHostileInputToWorker(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, out := disttest.Start(t, 2, dist.WithCookie("the-right-cookie"))
	info, ok := c.ProcInfo(2)
	if !ok {
		t.Fatal("no worker 2")
	}
	dial := func() net.Conn {
		nc, err := net.DialTimeout(info.Network, info.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(15 * time.Second))
		return nc
	}
	// The worker must close the connection on its side.
	expectClosed := func(nc net.Conn, what string) {
		t.Helper()
		buf := make([]byte, 4096)
		for {
			_, err := nc.Read(buf)
			if err != nil {
				if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
					t.Fatalf("%s: connection not closed by the worker: %v", what, err)
				}
				nc.Close()
				return
			}
		}
	}
	alive := func(what string) {
		t.Helper()
		if v, err := square.Call(ctx, c, 2, 9); err != nil || v != 81 {
			t.Fatalf("after %s: worker 2 answers %v, %v", what, v, err)
		}
		if v, err := relay.Call(ctx, c, 3, [2]int{2, 3}); err != nil || v != 9 {
			t.Fatalf("after %s: worker 3 → 2 answers %v, %v", what, v, err)
		}
	}

	// 1. garbage bytes, like an HTTP probe
	nc := dial()
	nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	expectClosed(nc, "garbage")
	alive("garbage")

	// 2. a wrong cookie
	nc = dial()
	if err := wire.Dial(nc, []byte("wrong"), 5*time.Second); !errors.Is(err, wire.ErrCookie) {
		t.Fatalf("wrong cookie: %v", err)
	}
	nc.Close()
	alive("wrong cookie")

	// 3. an oversized frame after a good handshake
	nc = dial()
	if err := wire.Dial(nc, []byte("the-right-cookie"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var h [wire.HeaderSize]byte
	wire.PutHeader(h[:], wire.Header{CBORLen: 1 << 31, Kind: wire.KindRequest, ID: 1})
	nc.Write(h[:])
	expectClosed(nc, "oversized frame")
	alive("oversized frame")

	// 4. a truncated frame: the header promises more than comes
	nc = dial()
	if err := wire.Dial(nc, []byte("the-right-cookie"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wire.PutHeader(h[:], wire.Header{CBORLen: 100, Kind: wire.KindRequest, ID: 1})
	nc.Write(append(h[:], "short"...))
	nc.(interface{ CloseWrite() error }).CloseWrite()
	expectClosed(nc, "truncated frame")
	alive("truncated frame")

	// 5. a well-formed frame with an undecodable call, then an unknown kind
	nc = dial()
	if err := wire.Dial(nc, []byte("the-right-cookie"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wire.PutHeader(h[:], wire.Header{CBORLen: 3, Kind: wire.KindRequest, ID: 7})
	nc.Write(append(h[:], 0xff, 0xff, 0xff))
	var reply [wire.HeaderSize]byte
	if _, err := io.ReadFull(nc, reply[:]); err != nil {
		t.Fatalf("no error reply to an undecodable call: %v", err)
	}
	if rh, err := wire.ParseHeader(reply[:], wire.DefaultLimits); err != nil || rh.Kind != wire.KindError || rh.ID != 7 {
		t.Fatalf("reply to an undecodable call: %+v, %v", rh, err)
	}
	body := make([]byte, binary.LittleEndian.Uint32(reply[0:]))
	io.ReadFull(nc, body)
	h[12] = 99 // unknown kind
	nc.Write(h[:])
	expectClosed(nc, "unknown kind")
	alive("unknown kind")

	for _, want := range []string{"rejected connection", "not a godist process", "wrong cookie", "malformed input", "exceeds the limit", "truncated"} {
		if !out.WaitFor(want, 5*time.Second) {
			t.Errorf("worker log lacks %q; output:\n%s", want, out.String())
		}
	}
}
