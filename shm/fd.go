package shm

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// maxRecvFDs is how many descriptors RecvFD makes room for in one message: more than the one it
// expects, so that a peer sending several is detected and the extras closed rather than leaked
// or silently dropped.
const maxRecvFDs = 8

// SendFD sends msg with a copy of fd attached (SCM_RIGHTS) over c. msg must not be empty: on a
// stream socket the kernel attaches the descriptor to a byte of data, and the receiver's RecvFD
// returns msg (or its first part) with it. The caller still owns fd and may close it once
// SendFD returns; the receiver gets its own descriptor to the same file.
//
// On a stream socket, messages are not delimited: the receiver should read exactly len(msg)
// bytes with RecvFD (fixed-size messages) or use a SOCK_SEQPACKET socket.
func SendFD(c *net.UnixConn, fd int, msg []byte) error {
	if c == nil {
		return errors.New("shm: send fd: nil connection")
	}
	if fd < 0 {
		return fmt.Errorf("shm: send fd: invalid descriptor %d", fd)
	}
	if len(msg) == 0 {
		return errors.New("shm: send fd: empty message (a descriptor must travel with at least one byte)")
	}
	n, oobn, err := c.WriteMsgUnix(msg, unix.UnixRights(fd), nil)
	if err != nil {
		return fmt.Errorf("shm: send fd %d: %w", fd, err)
	}
	if n != len(msg) || oobn == 0 {
		return fmt.Errorf("shm: send fd %d: short write (%d of %d bytes, %d control bytes)", fd, n, len(msg), oobn)
	}
	return nil
}

// RecvFD reads one message into buf and returns the descriptor that came with it (close-on-exec,
// owned by the caller, who must close it) and the number of bytes read. buf must not be empty.
// It is an error, with fd -1, if the message carried no descriptor, more than one, or if the
// peer closed the connection; descriptors received with a failed message are closed. Deadlines
// set on c bound the wait.
func RecvFD(c *net.UnixConn, buf []byte) (fd int, n int, err error) {
	if c == nil {
		return -1, 0, errors.New("shm: recv fd: nil connection")
	}
	if len(buf) == 0 {
		return -1, 0, errors.New("shm: recv fd: empty buffer (the descriptor comes with at least one byte)")
	}
	oob := make([]byte, unix.CmsgSpace(4*maxRecvFDs))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	fds, perr := parseRights(oob[:oobn])
	fail := func(e error) (int, int, error) {
		for _, f := range fds {
			unix.Close(f)
		}
		return -1, n, e
	}
	if errors.Is(err, io.EOF) {
		return fail(fmt.Errorf("shm: recv fd: connection closed by peer before a descriptor arrived: %w", err))
	}
	if err != nil {
		return fail(fmt.Errorf("shm: recv fd: %w", err))
	}
	if perr != nil {
		return fail(fmt.Errorf("shm: recv fd: %w", perr))
	}
	if n == 0 && len(fds) == 0 {
		return fail(errors.New("shm: recv fd: connection closed by peer before a descriptor arrived"))
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fail(fmt.Errorf("shm: recv fd: control message truncated (more than %d descriptors sent)", maxRecvFDs))
	}
	switch len(fds) {
	case 0:
		return fail(fmt.Errorf("shm: recv fd: no descriptor came with the %d-byte message", n))
	case 1:
		return fds[0], n, nil
	default:
		return fail(fmt.Errorf("shm: recv fd: %d descriptors came with the message, want 1", len(fds)))
	}
}

// parseRights returns every descriptor in the control messages b.
func parseRights(b []byte) ([]int, error) {
	if len(b) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(b)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, fmt.Errorf("parse SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
