package wire_test

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// checkLeaks records the number of goroutines and open file descriptors and, when the test
// ends, fails it if they have not come back to that level within a few seconds. Call it first,
// so that its cleanup runs after every other cleanup of the test.
func checkLeaks(t *testing.T) {
	t.Helper()
	g0, fd0 := runtime.NumGoroutine(), countFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, fd := runtime.NumGoroutine(), countFDs(t)
			if g <= g0 && fd <= fd0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("leak: goroutines %d -> %d, open fds %d -> %d\n%s", g0, g, fd0, fd, buf)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting fds: %v", err)
	}
	return len(ents)
}

// unixPair returns the two ends of a real unix stream socket. Both are closed when the test
// ends.
func unixPair(t *testing.T) (a, b net.Conn) {
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

// tcpPair returns the two ends of a TCP connection on loopback. Both are closed when the test
// ends.
func tcpPair(t *testing.T) (a, b net.Conn) {
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
