package wire_test

import (
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/godist/dist/internal/wire"
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

// unixPair returns the two ends of a real unix stream socket (wire.UnixPair).
func unixPair(t *testing.T) (a, b net.Conn) { return wire.UnixPair(t) }

// tcpPair returns the two ends of a TCP connection on loopback (wire.TCPPair).
func tcpPair(t *testing.T) (a, b net.Conn) { return wire.TCPPair(t) }
