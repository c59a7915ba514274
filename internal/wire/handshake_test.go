package wire_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist/internal/wire"
)

// Protocol constants, restated here so that a change to them is caught.
const (
	helloSize = 6 + 2 + 32 // magic, version, nonce
	macSize   = sha256.Size
)

func hello(version uint16) []byte {
	b := make([]byte, helloSize)
	copy(b, "godist")
	b[6], b[7] = byte(version>>8), byte(version)
	for i := 8; i < helloSize; i++ {
		b[i] = byte(i)
	}
	return b
}

func proof(cookie []byte, role string, first, second []byte) []byte {
	m := hmac.New(sha256.New, cookie)
	m.Write([]byte(role))
	m.Write(first)
	m.Write(second)
	return m.Sum(nil)
}

// handshake runs Accept on a and Dial on b concurrently; when Accept fails, a is closed, as a
// real server does.
func handshake(a, b net.Conn, acceptCookie, dialCookie []byte, timeout time.Duration) (acceptErr, dialErr error) {
	ch := make(chan error, 1)
	go func() {
		err := wire.Accept(a, acceptCookie, timeout)
		if err != nil {
			a.Close()
		}
		ch <- err
	}()
	dialErr = wire.Dial(b, dialCookie, timeout)
	if dialErr != nil {
		b.Close()
	}
	return <-ch, dialErr
}

func TestHandshakeOK(t *testing.T) {
	checkLeaks(t)
	a, b := unixPair(t)
	cookie := []byte("the cluster cookie")
	const timeout = 100 * time.Millisecond
	aerr, derr := handshake(a, b, cookie, cookie, timeout)
	if aerr != nil || derr != nil {
		t.Fatalf("Accept: %v, Dial: %v", aerr, derr)
	}
	// The handshake's deadline is cleared: the connection stays usable after it.
	time.Sleep(timeout + 50*time.Millisecond)
	go b.Write([]byte("after"))
	buf := make([]byte, 5)
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "after" {
		t.Fatalf("connection after handshake: %q, %v", buf, err)
	}
	// Both ends closed by unixPair's cleanup.
}

func TestHandshakeEmptyCookie(t *testing.T) {
	a, b := unixPair(t)
	if aerr, derr := handshake(a, b, nil, nil, 5*time.Second); aerr != nil || derr != nil {
		t.Fatalf("Accept: %v, Dial: %v", aerr, derr)
	}
}

func TestHandshakeWrongCookieAcceptSide(t *testing.T) {
	checkLeaks(t)
	a, b := unixPair(t)
	start := time.Now()
	aerr, _ := handshake(a, b, []byte("cookie one"), []byte("cookie two"), 5*time.Second)
	if !errors.Is(aerr, wire.ErrCookie) || !errors.Is(aerr, wire.ErrHandshake) {
		t.Fatalf("Accept: got %v, want ErrCookie", aerr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("rejecting a wrong cookie took %v", d)
	}
}

func TestHandshakeWrongCookieDialSide(t *testing.T) {
	checkLeaks(t)
	a, b := unixPair(t)
	start := time.Now()
	aerr, derr := handshake(a, b, []byte("cookie one"), []byte("cookie two"), 5*time.Second)
	if !errors.Is(aerr, wire.ErrCookie) {
		t.Fatalf("Accept: got %v, want ErrCookie", aerr)
	}
	if !errors.Is(derr, wire.ErrCookie) {
		t.Fatalf("Dial: got %v, want ErrCookie", derr)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("rejecting a wrong cookie took %v", d)
	}
}

// An acceptor that does not know the cookie cannot fake the verdict: the dialer checks the
// acceptor's proof too.
func TestHandshakeDialRejectsAcceptorWithoutCookie(t *testing.T) {
	checkLeaks(t)
	a, b := unixPair(t)
	go func() {
		a.Write(hello(wire.Version))
		io.ReadFull(a, make([]byte, helloSize+macSize))
		reply := make([]byte, 1+macSize)
		reply[0] = 0x01 // "OK", with a proof made up without the cookie
		a.Write(reply)
	}()
	err := wire.Dial(b, []byte("secret"), 5*time.Second)
	if !errors.Is(err, wire.ErrCookie) {
		t.Fatalf("Dial: got %v, want ErrCookie", err)
	}
}

// A fake dialer that knows the cookie and follows the protocol as documented is accepted, and
// the acceptor proves that it knows the cookie too.
func TestHandshakeAcceptProtocol(t *testing.T) {
	checkLeaks(t)
	a, b := unixPair(t)
	cookie := []byte("k")
	ch := make(chan error, 1)
	go func() { ch <- wire.Accept(a, cookie, 5*time.Second) }()
	b.SetDeadline(time.Now().Add(5 * time.Second))
	h := make([]byte, helloSize)
	if _, err := io.ReadFull(b, h); err != nil {
		t.Fatal(err)
	}
	if string(h[:6]) != "godist" || int(h[6])<<8|int(h[7]) != wire.Version {
		t.Fatalf("acceptor hello %x", h)
	}
	nonceA := h[8:]
	msg := hello(wire.Version)
	nonceD := msg[8:]
	msg = append(msg, proof(cookie, "dial", nonceA, nonceD)...)
	if _, err := b.Write(msg); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 1+macSize)
	if _, err := io.ReadFull(b, reply); err != nil {
		t.Fatal(err)
	}
	if err := <-ch; err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if reply[0] != 0x01 || !hmac.Equal(reply[1:], proof(cookie, "accept", nonceD, nonceA)) {
		t.Fatalf("verdict %x is not OK with the acceptor's proof", reply)
	}
	// Two acceptors use different nonces.
	a2, b2 := unixPair(t)
	go wire.Accept(a2, cookie, 100*time.Millisecond)
	h2 := make([]byte, helloSize)
	b2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(b2, h2); err != nil {
		t.Fatal(err)
	}
	if string(h2[8:]) == string(nonceA) {
		t.Fatal("two handshakes used the same nonce")
	}
	b2.Close()
}

// garbage sends p to an acceptor, keeps the connection open while reading whatever comes
// back, and returns Accept's error and how long it took.
func acceptGarbage(t *testing.T, p []byte, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	a, b := unixPair(t)
	go func() {
		b.Write(p)
		io.Copy(io.Discard, b) // stays connected, like a client waiting for a response
	}()
	start := time.Now()
	err := wire.Accept(a, []byte("cookie"), timeout)
	d := time.Since(start)
	a.Close()
	return d, err
}

func TestHandshakeAcceptGarbage(t *testing.T) {
	checkLeaks(t)
	long := "GET / HTTP/1.1\r\nHost: localhost:9000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"
	if len(long) < helloSize+macSize {
		t.Fatal("probe too short for this test")
	}
	d, err := acceptGarbage(t, []byte(long), 5*time.Second)
	if !errors.Is(err, wire.ErrHandshake) || !strings.Contains(err.Error(), "not a godist process") {
		t.Fatalf("Accept of an HTTP request: got %v", err)
	}
	if !strings.Contains(err.Error(), `"GET / "`) {
		t.Errorf("error %q does not show what was received", err)
	}
	if d > time.Second {
		t.Fatalf("rejecting an HTTP request took %v", d)
	}
}

func TestHandshakeAcceptShortGarbage(t *testing.T) {
	checkLeaks(t)
	d, err := acceptGarbage(t, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 1500*time.Millisecond)
	if !errors.Is(err, wire.ErrHandshake) || !strings.Contains(err.Error(), "not a godist process") {
		t.Fatalf("Accept of a short HTTP request: got %v", err)
	}
	if d > 500*time.Millisecond {
		t.Fatalf("rejecting a short HTTP request took %v", d)
	}
}

func TestHandshakeSilentPeer(t *testing.T) {
	checkLeaks(t)
	const timeout = 200 * time.Millisecond
	t.Run("accept", func(t *testing.T) {
		a, b := unixPair(t)
		go io.Copy(io.Discard, b) // reads the hello, never answers
		start := time.Now()
		err := wire.Accept(a, []byte("c"), timeout)
		d := time.Since(start)
		if !errors.Is(err, wire.ErrHandshake) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Accept with a silent peer: got %v, want ErrHandshake wrapping a deadline error", err)
		}
		if d < timeout-10*time.Millisecond || d > timeout+time.Second {
			t.Fatalf("Accept with a %v timeout returned after %v", timeout, d)
		}
		a.Close()
		b.Close()
	})
	t.Run("dial", func(t *testing.T) {
		a, b := unixPair(t)
		start := time.Now()
		err := wire.Dial(b, []byte("c"), timeout) // a never says hello
		d := time.Since(start)
		if !errors.Is(err, wire.ErrHandshake) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Dial with a silent peer: got %v, want ErrHandshake wrapping a deadline error", err)
		}
		if d < timeout-10*time.Millisecond || d > timeout+time.Second {
			t.Fatalf("Dial with a %v timeout returned after %v", timeout, d)
		}
		a.Close()
		b.Close()
	})
}

func TestHandshakePeerHangsUp(t *testing.T) {
	checkLeaks(t)
	a, b := unixPair(t)
	go func() {
		io.ReadFull(b, make([]byte, helloSize))
		b.Write([]byte("godi"))
		b.Close()
	}()
	err := wire.Accept(a, []byte("c"), 5*time.Second)
	if !errors.Is(err, wire.ErrHandshake) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Accept when the peer hangs up: got %v", err)
	}
}

func TestHandshakeWrongVersion(t *testing.T) {
	checkLeaks(t)
	other := uint16(wire.Version + 1)
	t.Run("dialer", func(t *testing.T) {
		a, b := unixPair(t)
		go func() {
			io.ReadFull(b, make([]byte, helloSize))
			b.Write(append(hello(other), make([]byte, macSize)...))
			io.Copy(io.Discard, b)
		}()
		err := wire.Accept(a, []byte("c"), 5*time.Second)
		if !errors.Is(err, wire.ErrHandshake) || errors.Is(err, wire.ErrCookie) {
			t.Fatalf("Accept from a dialer of version %d: got %v", other, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("protocol version %d", other)) || !strings.Contains(err.Error(), fmt.Sprintf("speaks %d", wire.Version)) {
			t.Fatalf("error %q does not name both versions", err)
		}
		a.Close()
	})
	t.Run("acceptor", func(t *testing.T) {
		a, b := unixPair(t)
		go func() {
			a.Write(hello(other))
			io.Copy(io.Discard, a)
		}()
		err := wire.Dial(b, []byte("c"), 5*time.Second)
		if !errors.Is(err, wire.ErrHandshake) || errors.Is(err, wire.ErrCookie) {
			t.Fatalf("Dial to an acceptor of version %d: got %v", other, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("protocol version %d", other)) || !strings.Contains(err.Error(), fmt.Sprintf("speaks %d", wire.Version)) {
			t.Fatalf("error %q does not name both versions", err)
		}
		b.Close()
	})
	t.Run("acceptor not godist", func(t *testing.T) {
		a, b := unixPair(t)
		go func() {
			a.Write([]byte("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"))
			io.Copy(io.Discard, a)
		}()
		err := wire.Dial(b, []byte("c"), 5*time.Second)
		if !errors.Is(err, wire.ErrHandshake) || !strings.Contains(err.Error(), "not a godist process") {
			t.Fatalf("Dial to an ssh server: got %v", err)
		}
		b.Close()
	})
}
