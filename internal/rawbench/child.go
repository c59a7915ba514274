package rawbench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// envPeer carries "mode:token:network:address" from parent to peer.
// The address goes last because a unix path or host:port may contain ':'.
const envPeer = "GODIST_RAWBENCH_PEER"

const (
	modePingPong = "pingpong"
	modeBulk     = "bulk"
	modeArray    = "bulkarray"
	bulkAck      = 0x06
)

// Peer exit codes, distinct so a parent (or a human) can tell why it ended.
const (
	exitOK        = 0 // parent closed the connection
	exitFailed    = 1 // protocol or socket error
	exitBadEnv    = 2 // GODIST_RAWBENCH_PEER malformed
	exitStdinGone = 3 // parent went away (stdin EOF) without closing the socket
)

// ChildMain must be called early in main() (and in TestMain) of any binary
// that uses this package, because the measurements re-execute that binary as
// their peer process. If the environment variable GODIST_RAWBENCH_PEER is
// set, this process is a benchmark peer: it unsets the variable (so that
// anything it might start is not a peer too), serves, and exits with
// os.Exit; otherwise it returns at once and costs nothing.
func ChildMain() {
	spec, ok := os.LookupEnv(envPeer)
	if !ok {
		return
	}
	os.Unsetenv(envPeer)
	os.Exit(runChild(spec))
}

func runChild(spec string) int {
	parts := strings.SplitN(spec, ":", 4)
	if len(parts) != 4 || len(parts[1]) != tokenLen {
		fmt.Fprintf(os.Stderr, "rawbench peer: malformed %s=%q\n", envPeer, spec)
		return exitBadEnv
	}
	mode, token, network, addr := parts[0], parts[1], parts[2], parts[3]
	var serve func(net.Conn) error
	switch mode {
	case modePingPong:
		serve = servePingPong
	case modeBulk:
		serve = serveBulk
	case modeArray:
		serve = serveArray
	default:
		fmt.Fprintf(os.Stderr, "rawbench peer: unknown mode %q\n", mode)
		return exitBadEnv
	}

	// The parent holds the write end of our stdin. If it dies, even by
	// SIGKILL, the kernel closes it, we see EOF and must not outlive it.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(exitStdinGone)
	}()

	conn, err := net.DialTimeout(network, addr, startupTimeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rawbench peer: dial %s %s: %v\n", network, addr, err)
		return exitFailed
	}
	defer conn.Close()
	tune(conn)
	if _, err := io.WriteString(conn, token); err != nil {
		fmt.Fprintf(os.Stderr, "rawbench peer: handshake: %v\n", err)
		return exitFailed
	}
	if err := serve(conn); err != nil {
		if errors.Is(err, io.EOF) {
			return exitOK // the normal end: parent closed the connection
		}
		fmt.Fprintf(os.Stderr, "rawbench peer: %s: %v\n", mode, err)
		return exitFailed
	}
	return exitOK
}

// servePingPong echoes fixed-size messages until the parent hangs up; it
// returns io.EOF only on a clean hang-up between messages.
func servePingPong(conn net.Conn) error {
	buf := make([]byte, msgSize)
	for {
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if _, err := conn.Write(buf); err != nil {
			return err
		}
	}
}

// serveBulk swallows length-prefixed streams and acks each one, so the
// parent's clock stops only when every byte has reached this process.
func serveBulk(conn net.Conn) error {
	buf := make([]byte, bulkChunk)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return err
		}
		left := int64(binary.LittleEndian.Uint64(hdr[:]))
		for left > 0 {
			n, err := conn.Read(buf[:min(left, int64(len(buf)))])
			left -= int64(n)
			if err != nil {
				if errors.Is(err, io.EOF) {
					return io.ErrUnexpectedEOF
				}
				return err
			}
		}
		if _, err := conn.Write([]byte{bulkAck}); err != nil {
			return err
		}
	}
}

// serveArray is serveBulk receiving each stream whole into one buffer of the stream's size,
// kept from one stream to the next, as a program receiving an array must land it in memory.
func serveArray(conn net.Conn) error {
	var buf []byte
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return err
		}
		n := binary.LittleEndian.Uint64(hdr[:])
		if n > maxArray {
			return fmt.Errorf("array stream of %d bytes exceeds %d", n, maxArray)
		}
		if uint64(len(buf)) < n {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if _, err := conn.Write([]byte{bulkAck}); err != nil {
			return err
		}
	}
}

// maxArray bounds what serveArray allocates on a length from the wire.
const maxArray = 4 << 30
