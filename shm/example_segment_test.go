package shm_test

import (
	"fmt"
	"log"
	"net"
	"os"
	"syscall"

	"github.com/godist/dist/shm"
)

// An anonymous segment and a second mapping of it, as another process would make from the
// descriptor it received: a write through one mapping is seen through the other.
func ExampleCreate() {
	seg, err := shm.Create(4096)
	if err != nil {
		log.Fatal(err) // wraps shm.ErrNoSpace when /dev/shm is full
	}
	defer seg.Close()

	other, err := shm.Open(seg.FD()) // Open duplicates the descriptor: seg keeps its own
	if err != nil {
		log.Fatal(err)
	}
	defer other.Close()

	copy(seg.Bytes(), "hello")
	fmt.Println(other.Size(), string(other.Bytes()[:5]))
	// Output: 4096 hello
}

// Passing a segment's descriptor over a unix socket, here a connected pair within one
// process; across processes the receiver does the same with its end.
func ExampleSendFD() {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close() // FileConn makes its own copy
		c, err := net.FileConn(f)
		if err != nil {
			log.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	defer a.Close()
	defer b.Close()

	seg, err := shm.Create(1 << 20)
	if err != nil {
		log.Fatal(err)
	}
	defer seg.Close()
	seg.Bytes()[0] = 42
	if err := shm.SendFD(a, seg.FD(), []byte("matrix")); err != nil { // msg must not be empty
		log.Fatal(err)
	}

	buf := make([]byte, 64)
	fd, n, err := shm.RecvFD(b, buf)
	if err != nil {
		log.Fatal(err)
	}
	got, err := shm.Open(fd)
	syscall.Close(fd) // the receiver owns fd; the Segment has its own copy
	if err != nil {
		log.Fatal(err)
	}
	defer got.Close()
	fmt.Println(string(buf[:n]), got.Size(), got.Bytes()[0])
	// Output: matrix 1048576 42
}
