package dist_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// tryCall calls square on another process from a worker and says how it went, so that the
// error's identity is checked where it happened.
var tryCall = dist.NewFunc("test.topology.try", func(ctx context.Context, to int) (string, error) {
	v, err := square.Call(ctx, dist.Current(ctx), to, 3)
	switch {
	case err == nil && v == 9:
		return "ok", nil
	case errors.Is(err, dist.ErrTopology):
		return "topology: " + err.Error(), nil
	}
	return "", fmt.Errorf("unexpected: %v, %v", v, err)
})

func TestTopologyAllToAllDefault(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2)
	if s, err := tryCall.Call(ctx, c, 2, 3); err != nil || s != "ok" {
		t.Fatalf("2→3 in the default topology: %q, %v", s, err)
	}
}

func TestTopologyMasterWorker(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	c, _ := disttest.Start(t, 2, dist.WithTopology(dist.MasterWorker()))
	s, err := tryCall.Call(ctx, c, 2, 3)
	if err != nil || !strings.HasPrefix(s, "topology: ") || !strings.Contains(s, "process 2 may not connect to process 3") || !strings.Contains(s, "master-worker") {
		t.Fatalf("2→3 under master-worker: %q, %v", s, err)
	}
	// worker→driver still works, and so does everything from the driver.
	if s, err := tryCall.Call(ctx, c, 3, 1); err != nil || s != "ok" {
		t.Fatalf("3→1: %q, %v", s, err)
	}
	// A worker added later is not connected to the others either, in either direction.
	pids, err := c.AddProcs(ctx, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]int{{pids[0], 2}, {3, pids[0]}} {
		if s, err := tryCall.Call(ctx, c, pair[0], pair[1]); err != nil || !strings.HasPrefix(s, "topology: ") {
			t.Fatalf("%d→%d: %q, %v", pair[0], pair[1], s, err)
		}
	}
	// The workers made no connection to each other: one connection each, to the driver.
	for _, pid := range c.Workers() {
		if st, err := connStats.Call(ctx, c, pid, struct{}{}); err != nil || st.Conns != 1 {
			t.Fatalf("worker %d: %+v, %v", pid, st, err)
		}
	}
	// Pmap, which only needs driver↔worker connections, runs.
	if out, err := dist.Pmap(ctx, c, square, []int{1, 2, 3, 4}); err != nil || out[3] != 16 {
		t.Fatalf("Pmap: %v, %v", out, err)
	}
}

var connStats = dist.NewFunc("test.topology.stats", func(ctx context.Context, _ struct{}) (dist.Stats, error) {
	return dist.Current(ctx).Stats(), nil
})

func TestTopologyCustom(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	// Workers of the same parity may connect: 2↔4, 3↔5, not 2↔3.
	parity := dist.CustomTopology("same-parity", func(a, b dist.ProcInfo) bool {
		if a.Pid >= b.Pid {
			panic("allow called with a.Pid >= b.Pid")
		}
		return a.Pid%2 == b.Pid%2
	})
	c, _ := disttest.Start(t, 4, dist.WithTopology(parity))
	for _, tc := range []struct {
		from, to int
		ok       bool
	}{{2, 4, true}, {4, 2, true}, {3, 5, true}, {2, 3, false}, {5, 2, false}, {3, 1, true}} {
		s, err := tryCall.Call(ctx, c, tc.from, tc.to)
		if err != nil || (s == "ok") != tc.ok {
			t.Fatalf("%d→%d: %q, %v (want allowed=%v)", tc.from, tc.to, s, err, tc.ok)
		}
		if !tc.ok && !strings.Contains(s, "same-parity") {
			t.Fatalf("%d→%d: error does not name the topology: %q", tc.from, tc.to, s)
		}
	}
}

// freeRange finds n consecutive free TCP ports on loopback.
func freeRange(t *testing.T, n int) int {
	for base := 41000 + int(time.Now().UnixNano()%2000)*10; base < 64000; base += 97 {
		ok := true
		var lns []net.Listener
		for p := base; p < base+n; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func TestPortRange(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	lo := freeRange(t, 3)
	hi := lo + 2
	c, _ := disttest.Start(t, 0, dist.WithPortRange(lo, hi), dist.WithLogger(quietLogger()))
	pids, err := c.AddProcs(ctx, nil, 2, dist.WithNetwork("tcp", "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		info, _ := c.ProcInfo(pid)
		_, port, _ := net.SplitHostPort(info.Addr)
		p, _ := strconv.Atoi(port)
		if p < lo || p > hi {
			t.Fatalf("worker %d listens on %s, outside %d-%d", pid, info.Addr, lo, hi)
		}
	}
	if s, err := tryCall.Call(ctx, c, pids[0], pids[1]); err != nil || s != "ok" {
		t.Fatalf("worker↔worker: %q, %v", s, err)
	}
	// The driver's own listeners take the range too: its last port.
	ln, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The range is full: a further worker fails, saying why.
	_, err = c.AddProcs(ctx, nil, 1, dist.WithNetwork("tcp", "127.0.0.1:0"))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("no free port in %d-%d", lo, hi)) {
		t.Fatalf("worker with the range full: %v", err)
	}
	// AddProcs may give another range.
	other := freeRange(t, 1)
	pids, err = c.AddProcs(ctx, nil, 1, dist.WithNetwork("tcp", "127.0.0.1:0"), dist.WithPortRange(other, other))
	if err != nil {
		t.Fatalf("a second range: %v", err)
	}
	if info, _ := c.ProcInfo(pids[0]); info.Addr != "127.0.0.1:"+strconv.Itoa(other) {
		t.Fatalf("worker in the second range listens on %s", info.Addr)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
