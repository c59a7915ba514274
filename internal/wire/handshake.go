package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Version is the protocol version. Both ends of a connection must speak the same one.
// 2: reference releases travel as a raw []int64.
// 3: large raw parts between processes of a host travel through shared memory (ring.go).
const Version = 3

// magic opens every connection: a stray client (an HTTP probe, a port scanner) fails on it
// at once instead of being read as a frame header.
var magic = [6]byte{'g', 'o', 'd', 'i', 's', 't'}

const (
	nonceSize = 32
	macSize   = sha256.Size
	helloSize = len(magic) + 2 + nonceSize
	// verdict bytes the acceptor sends after checking the dialer's proof
	verdictOK       = 0x01
	verdictBadProof = 0x02
)

// ErrHandshake is wrapped by every handshake failure.
var ErrHandshake = errors.New("wire: handshake failed")

// ErrCookie is wrapped when the other end does not know the cluster cookie.
var ErrCookie = fmt.Errorf("%w: wrong cookie", ErrHandshake)

// The handshake is a mutual HMAC challenge–response, so the cookie itself never crosses the
// wire (Julia sends it in clear):
//
//	acceptor → dialer: magic, version, nonceA
//	dialer → acceptor: magic, version, nonceD, HMAC(cookie, "dial" ‖ nonceA ‖ nonceD)
//	acceptor → dialer: verdict, HMAC(cookie, "accept" ‖ nonceD ‖ nonceA)
//
// Every message has a fixed size, so a peer cannot make us read more than a few bytes.

// Dial runs the dialer's side of the handshake on c within timeout.
func Dial(c net.Conn, cookie []byte, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	defer c.SetDeadline(time.Time{})
	var hello [helloSize]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		return fmt.Errorf("%w: reading hello: %w", ErrHandshake, err)
	}
	nonceA, err := checkHello(hello[:])
	if err != nil {
		return err
	}
	var msg [helloSize + macSize]byte
	nonceD := putHello(msg[:])
	copy(msg[helloSize:], proof(cookie, "dial", nonceA, nonceD))
	if _, err := c.Write(msg[:]); err != nil {
		return fmt.Errorf("%w: writing proof: %w", ErrHandshake, err)
	}
	var reply [1 + macSize]byte
	if _, err := io.ReadFull(c, reply[:1]); err != nil {
		return fmt.Errorf("%w: reading verdict: %w", ErrHandshake, err)
	}
	switch reply[0] {
	case verdictOK:
	case verdictBadProof:
		return fmt.Errorf("%w: the other end rejected our cookie", ErrCookie)
	default:
		return fmt.Errorf("%w: unknown verdict %#x", ErrHandshake, reply[0])
	}
	if _, err := io.ReadFull(c, reply[1:]); err != nil {
		return fmt.Errorf("%w: reading verdict: %w", ErrHandshake, err)
	}
	if !hmac.Equal(reply[1:], proof(cookie, "accept", nonceD, nonceA)) {
		return fmt.Errorf("%w: the other end does not know our cookie", ErrCookie)
	}
	return nil
}

// Accept runs the acceptor's side of the handshake on c within timeout.
func Accept(c net.Conn, cookie []byte, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	defer c.SetDeadline(time.Time{})
	var hello [helloSize]byte
	nonceA := putHello(hello[:])
	if _, err := c.Write(hello[:]); err != nil {
		return fmt.Errorf("%w: writing hello: %w", ErrHandshake, err)
	}
	// The hello is checked before the proof is read, so that a stranger sending a few bytes
	// (an HTTP probe) is refused at once instead of holding us until the timeout.
	var msg [helloSize + macSize]byte
	if _, err := io.ReadFull(c, msg[:len(magic)]); err != nil {
		return fmt.Errorf("%w: reading hello: %w", ErrHandshake, err)
	}
	if err := checkMagic(msg[:len(magic)]); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, msg[len(magic):helloSize]); err != nil {
		return fmt.Errorf("%w: reading hello: %w", ErrHandshake, err)
	}
	nonceD, err := checkHello(msg[:helloSize])
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(c, msg[helloSize:]); err != nil {
		return fmt.Errorf("%w: reading proof: %w", ErrHandshake, err)
	}
	if !hmac.Equal(msg[helloSize:], proof(cookie, "dial", nonceA, nonceD)) {
		// Best effort, full size: the dialer learns why before the close.
		var reply [1 + macSize]byte
		reply[0] = verdictBadProof
		c.Write(reply[:])
		return ErrCookie
	}
	var reply [1 + macSize]byte
	reply[0] = verdictOK
	copy(reply[1:], proof(cookie, "accept", nonceD, nonceA))
	if _, err := c.Write(reply[:]); err != nil {
		return fmt.Errorf("%w: writing verdict: %w", ErrHandshake, err)
	}
	return nil
}

func putHello(b []byte) []byte {
	copy(b, magic[:])
	b[len(magic)] = byte(Version >> 8)
	b[len(magic)+1] = byte(Version)
	nonce := b[len(magic)+2 : helloSize]
	rand.Read(nonce)
	return nonce
}

func checkMagic(b []byte) error {
	if !bytes.Equal(b[:len(magic)], magic[:]) {
		return fmt.Errorf("%w: the other end is not a godist process (got %q)", ErrHandshake, b[:len(magic)])
	}
	return nil
}

func checkHello(b []byte) ([]byte, error) {
	if err := checkMagic(b); err != nil {
		return nil, err
	}
	if v := int(b[len(magic)])<<8 | int(b[len(magic)+1]); v != Version {
		return nil, fmt.Errorf("%w: protocol version %d, this process speaks %d", ErrHandshake, v, Version)
	}
	return b[len(magic)+2 : helloSize], nil
}

func proof(cookie []byte, role string, first, second []byte) []byte {
	m := hmac.New(sha256.New, cookie)
	m.Write([]byte(role))
	m.Write(first)
	m.Write(second)
	return m.Sum(nil)
}
