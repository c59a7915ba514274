package wire

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// UnixPair returns the two ends of a real unix stream socket. Both are closed when the test
// ends.
func UnixPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	// A short directory: socket paths are limited to 108 bytes and test names can be long.
	dir, err := os.MkdirTemp("", "wt")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	b, err = net.DialTimeout("unix", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		b.Close()
		t.Fatal(r.err)
	}
	a = r.c
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// TCPPair returns the two ends of a TCP connection on loopback. Both are closed when the test
// ends.
func TCPPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	b, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a = <-ch
	if a == nil {
		b.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}
