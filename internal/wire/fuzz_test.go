package wire_test

import (
	"bytes"
	"crypto/hmac"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/godist/dist/internal/wire"
)

func FuzzParseHeader(f *testing.F) {
	f.Add(encodeHeader(wire.Header{Kind: wire.KindRequest, CBORLen: 10, ID: 1}), uint32(100), uint32(100))
	f.Add(encodeHeader(wire.Header{Kind: wire.KindReply, Raw: wire.RawFloat64, RawLen: 64, ID: 1 << 60}), uint32(0), uint32(64))
	f.Add(encodeHeader(wire.Header{Kind: wire.KindCancel, Flags: 0xffff}), uint32(0), uint32(0))
	f.Add(encodeHeader(wire.Header{Kind: wire.KindOneWay, Raw: wire.RawInt16, RawLen: 3}), uint32(10), uint32(10))
	f.Add(encodeHeader(wire.Header{Kind: 9}), uint32(10), uint32(10))
	f.Add(encodeHeader(wire.Header{Kind: wire.KindRing, Raw: wire.RawBytes, RawLen: 24, ID: 7}), uint32(0), uint32(64))
	f.Add(encodeHeader(wire.Header{Kind: wire.KindRequest, Raw: wire.RawFloat64, RawLen: 8, Flags: wire.FlagRing}), uint32(0), uint32(64))
	f.Add(bytes.Repeat([]byte{0xff}, 24), uint32(1<<31), uint32(1<<31))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), uint32(1<<20), uint32(1<<20))
	f.Add([]byte{}, uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, b []byte, maxCBOR, maxRaw uint32) {
		lim := wire.Limits{MaxCBOR: int(maxCBOR), MaxRaw: int(maxRaw)}
		h, err := wire.ParseHeader(b, lim)
		if err != nil {
			if !errors.Is(err, wire.ErrFrame) {
				t.Fatalf("error %v does not wrap ErrFrame", err)
			}
			return
		}
		if len(b) < wire.HeaderSize {
			t.Fatalf("accepted a %d-byte header", len(b))
		}
		if h.Kind < wire.KindRequest || h.Kind > wire.KindRingAck {
			t.Fatalf("accepted kind %d", h.Kind)
		}
		if h.Flags&wire.FlagRing != 0 && h.RawLen == 0 {
			t.Fatalf("accepted the shared-memory flag without a raw part: %+v", h)
		}
		if int(h.CBORLen) > lim.MaxCBOR || h.RawLen > uint64(lim.MaxRaw) {
			t.Fatalf("accepted %+v over %+v", h, lim)
		}
		if h.Raw == wire.RawNone {
			if h.RawLen != 0 {
				t.Fatalf("accepted a raw part without a kind: %+v", h)
			}
		} else if h.Raw.Size() == 0 || h.RawLen%uint64(h.Raw.Size()) != 0 {
			t.Fatalf("accepted raw kind %d with %d bytes", h.Raw, h.RawLen)
		}
		if re := encodeHeader(h); !bytes.Equal(re, b[:wire.HeaderSize]) {
			t.Fatalf("PutHeader(ParseHeader(%x)) = %x", b[:wire.HeaderSize], re)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	_, raw, _ := wire.RawOf([]float64{1, 2, 3})
	f.Add(frameBytes(wire.Header{Kind: wire.KindRequest, Raw: wire.RawFloat64, ID: 1}, []byte{0x83, 1, 2, 3}, raw))
	f.Add(frameBytes(wire.Header{Kind: wire.KindReply, ID: 2}, []byte("abc"), nil))
	f.Add(append(frameBytes(wire.Header{Kind: wire.KindCancel, ID: 3}, nil, nil),
		frameBytes(wire.Header{Kind: wire.KindOneWay, Raw: wire.RawUint16, ID: 4}, nil, []byte{1, 2, 3, 4})...))
	f.Add(frameBytes(wire.Header{Kind: wire.KindRequest, Raw: wire.RawFloat64, ID: 1}, []byte{0x83, 1, 2, 3}, raw)[:30])
	f.Add(encodeHeader(wire.Header{Kind: wire.KindRequest, CBORLen: 1 << 30}))
	f.Add(encodeHeader(wire.Header{Kind: wire.KindRequest, Raw: wire.RawBytes, RawLen: 1 << 62}))
	f.Add(frameBytes(wire.Header{Kind: wire.KindRequest, Raw: wire.RawBytes, Flags: wire.FlagRing, ID: 5}, nil, []byte("12345678")))
	f.Add(frameBytes(wire.Header{Kind: wire.KindRing, Raw: wire.RawBytes, ID: 6}, nil, make([]byte, 24)))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{1, 2, 3})
	f.Add([]byte{})
	lim := wire.Limits{MaxCBOR: 512, MaxRaw: 1024}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var re []byte
		for {
			fr, err := wire.ReadFrame(r, lim)
			if err != nil {
				switch {
				case err == io.EOF:
					if len(re) != len(data) {
						t.Fatalf("io.EOF after %d of %d bytes", len(re), len(data))
					}
				case errors.Is(err, wire.ErrFrame), errors.Is(err, io.ErrUnexpectedEOF):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(fr.CBOR) != int(fr.CBORLen) {
				t.Fatalf("CBOR part of %d bytes, header says %d", len(fr.CBOR), fr.CBORLen)
			}
			re = append(re, encodeHeader(fr.Header)...)
			re = append(re, fr.CBOR...)
			if fr.Header.Raw == wire.RawNone {
				if fr.Raw != nil {
					t.Fatalf("raw part %T without a raw kind", fr.Raw)
				}
			} else {
				k, b, ok := wire.RawOf(fr.Raw)
				if !ok || k != fr.Header.Raw || uint64(len(b)) != fr.RawLen {
					t.Fatalf("raw part %T (%d bytes) for header %+v", fr.Raw, len(b), fr.Header)
				}
				re = append(re, b...)
			}
			if !bytes.HasPrefix(data, re) {
				t.Fatalf("re-encoded frames are not a prefix of the input:\n got %x\n  in %x", re, data)
			}
		}
	})
}

// FuzzHandshakeAccept plays a dialer that sends data after reading the acceptor's hello. When
// fixProof is set and data is long enough, the proof part of data is replaced by the right
// HMAC, so that the fuzzer can reach the acceptor's success path.
func FuzzHandshakeAccept(f *testing.F) {
	good := append(hello(wire.Version), make([]byte, macSize)...)
	f.Add(good, true)
	f.Add(good, false)
	f.Add(append(good, "trailing"...), true)
	f.Add(append(hello(wire.Version+1), make([]byte, macSize)...), true)
	f.Add(good[:50], true)
	f.Add([]byte("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"), false)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), false)
	f.Add([]byte{}, false)
	cookie := []byte("fuzz cookie")
	const timeout = time.Second
	f.Fuzz(func(t *testing.T, data []byte, fixProof bool) {
		a, d := net.Pipe()
		data = bytes.Clone(data)
		canSucceed := false
		var nonceA []byte
		nonces := make(chan []byte, 1)
		verdict := make(chan []byte, 1)
		go func() { // the dialer's reader: the hello, then everything else until the end
			h := make([]byte, helloSize)
			if _, err := io.ReadFull(d, h); err != nil {
				close(nonces)
				verdict <- nil
				return
			}
			nonceA = h[8:]
			nonces <- nonceA
			rest, _ := io.ReadAll(d)
			verdict <- rest
		}()
		wrote := make(chan struct{})
		go func() { // the dialer's writer
			defer close(wrote)
			nonceA, ok := <-nonces
			if !ok {
				return
			}
			if fixProof && len(data) >= helloSize+macSize {
				copy(data[helloSize:], proof(cookie, "dial", nonceA, data[8:helloSize]))
				canSucceed = string(data[:8]) == string(hello(wire.Version)[:8])
			}
			d.Write(data)
			if len(data) < helloSize+macSize {
				d.Close() // nothing more is coming
			}
		}()
		start := time.Now()
		err := wire.Accept(a, cookie, timeout)
		elapsed := time.Since(start)
		a.Close()
		<-wrote
		d.Close()
		got := <-verdict
		if elapsed > timeout+time.Second {
			t.Fatalf("Accept took %v with a timeout of %v", elapsed, timeout)
		}
		if err != nil {
			if !errors.Is(err, wire.ErrHandshake) {
				t.Fatalf("error %v does not wrap ErrHandshake", err)
			}
			if canSucceed {
				t.Fatalf("a dialer with the right cookie was rejected: %v", err)
			}
			return
		}
		if !canSucceed {
			t.Fatalf("accepted %x without a valid proof", data)
		}
		if len(got) != 1+macSize || got[0] != 0x01 || !hmac.Equal(got[1:], proof(cookie, "accept", data[8:helloSize], nonceA)) {
			t.Fatalf("verdict %x is not OK with the acceptor's proof", got)
		}
	})
}
