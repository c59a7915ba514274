package rawbench_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist/internal/rawbench"
)

func TestMain(m *testing.M) {
	rawbench.ChildMain()
	os.Exit(m.Run())
}

// isolateTemp points the package's temp dirs at a fresh directory, so the
// test can check that nothing is left behind.
func isolateTemp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("leftover in temp dir: %s", filepath.Join(dir, e.Name()))
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds: %v", err)
	}
	return len(ents)
}

// checkNoLeaks returns a function that fails the test if goroutines or fds
// have grown since it was created (after giving exiting goroutines a moment).
func checkNoLeaks(t *testing.T) func() {
	t.Helper()
	// The runtime opens its netpoller fds (epoll, eventfd) on first network
	// use; make that happen before the baseline so it is not counted.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	g0, f0 := runtime.NumGoroutine(), countFDs(t)
	return func() {
		t.Helper()
		var g, f int
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			g, f = runtime.NumGoroutine(), countFDs(t)
			if g <= g0 && f <= f0 {
				return
			}
		}
		t.Errorf("leak: goroutines %d -> %d, fds %d -> %d", g0, g, f0, f)
	}
}

func TestPingPong(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			tmp := isolateTemp(t)
			leaks := checkNoLeaks(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := rawbench.PingPong(ctx, network, 200)
			if err != nil {
				t.Fatal(err)
			}
			if res.P50 <= 0 || res.P50 > res.P99 || res.Rounds != 200 {
				t.Fatalf("bad result %+v", res)
			}
			t.Logf("%s: p50=%v p99=%v rounds=%d", network, res.P50, res.P99, res.Rounds)
			leaks()
			assertEmptyDir(t, tmp)
		})
	}
}

func TestPingPonger(t *testing.T) {
	tmp := isolateTemp(t)
	leaks := checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pp, err := rawbench.StartPingPong(ctx, "unix")
	if err != nil {
		t.Fatal(err)
	}
	// Rounds in separate blocks, as a caller interleaving its own measurements does.
	for block := range 3 {
		for range 50 {
			d, err := pp.Round(ctx)
			if err != nil || d <= 0 {
				t.Fatalf("block %d: round took %v: %v", block, d, err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := pp.Close(); err != nil {
		t.Fatal(err)
	}
	leaks()
	assertEmptyDir(t, tmp)
}

func TestBulker(t *testing.T) {
	tmp := isolateTemp(t)
	leaks := checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := rawbench.StartBulk(ctx, "unix", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	for run := range 3 {
		if mb, err := b.Run(ctx); err != nil || mb <= 0 {
			t.Fatalf("run %d: %v MB/s: %v", run, mb, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rawbench.StartBulk(ctx, "unix", 0); err == nil {
		t.Fatal("StartBulk of 0 bytes: no error")
	}
	a, err := rawbench.StartArray(ctx, "unix", 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	for run := range 3 {
		if mb, err := a.Run(ctx); err != nil || mb <= 0 {
			t.Fatalf("array run %d: %v MB/s: %v", run, mb, err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	leaks()
	assertEmptyDir(t, tmp)
}

func TestBulk(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			tmp := isolateTemp(t)
			leaks := checkNoLeaks(t)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			mbps, err := rawbench.Bulk(ctx, network, 64<<20, 2)
			if err != nil {
				t.Fatal(err)
			}
			if !(mbps > 0) {
				t.Fatalf("bulk = %v MB/s", mbps)
			}
			t.Logf("%s: %.0f MB/s", network, mbps)
			leaks()
			assertEmptyDir(t, tmp)
		})
	}
}

func TestMemcpy(t *testing.T) {
	if got := rawbench.Memcpy(1<<20, 3); !(got > 0) {
		t.Fatalf("Memcpy = %v", got)
	}
	if got := rawbench.Memcpy(0, 3); got != 0 {
		t.Fatalf("Memcpy(0) = %v, want 0", got)
	}
}

func TestBadArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := rawbench.PingPong(ctx, "udp", 10); err == nil {
		t.Error("PingPong over udp: no error")
	}
	if _, err := rawbench.PingPong(ctx, "unix", 0); err == nil {
		t.Error("PingPong with 0 rounds: no error")
	}
	if _, err := rawbench.Bulk(ctx, "unix", 0, 1); err == nil {
		t.Error("Bulk of 0 bytes: no error")
	}
	if _, err := rawbench.Bulk(ctx, "unix", 1, 0); err == nil {
		t.Error("Bulk with 0 repeats: no error")
	}
}

// processGone reports whether pid no longer exists (it has been reaped).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestPeerExitsWhenConnCloses(t *testing.T) {
	tmp := isolateTemp(t)
	leaks := checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := rawbench.StartTestPeer(ctx, "unix")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.CloseConn(); err != nil {
		t.Fatal(err)
	}
	// Stdin stays open: only the socket EOF can make it exit.
	st := p.WaitExit(3 * time.Second)
	if st == nil {
		t.Fatal("peer still running 3s after the connection closed")
	}
	if !st.Exited() || st.ExitCode() != 0 {
		t.Fatalf("peer ended with %v, want clean exit 0", st)
	}
	if !processGone(p.Pid()) {
		t.Fatalf("pid %d still exists", p.Pid())
	}
	p.Close()
	leaks()
	assertEmptyDir(t, tmp)
}

func TestPeerExitsWhenStdinCloses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := rawbench.StartTestPeer(ctx, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	// The socket stays open: this is what a killed parent looks like to
	// the peer, minus the socket reset.
	st := p.WaitExit(3 * time.Second)
	if st == nil {
		t.Fatal("peer still running 3s after stdin closed")
	}
	if st.ExitCode() != rawbench.ExitStdinGone {
		t.Fatalf("peer ended with %v, want exit %d", st, rawbench.ExitStdinGone)
	}
}

func TestCancel(t *testing.T) {
	tmp := isolateTemp(t)
	leaks := checkNoLeaks(t)
	for _, network := range []string{"unix", "tcp"} {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		t0 := time.Now()
		_, err := rawbench.PingPong(ctx, network, 1<<30)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: PingPong err = %v, want DeadlineExceeded", network, err)
		}
		if el := time.Since(t0); el > 3*time.Second {
			t.Fatalf("%s: cancelled PingPong took %v", network, el)
		}

		ctx, cancel = context.WithTimeout(context.Background(), 150*time.Millisecond)
		_, err = rawbench.Bulk(ctx, network, 1<<40, 1)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: Bulk err = %v, want DeadlineExceeded", network, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := rawbench.PingPong(ctx, "unix", 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("PingPong on cancelled ctx: err = %v", err)
	}
	leaks()
	assertEmptyDir(t, tmp)
}

// TestReport prints the baseline figures at the sizes `godist bench` uses.
// Run with -v to see them.
func TestReport(t *testing.T) {
	if testing.Short() {
		t.Skip("figures only; skipped in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	t0 := time.Now()
	for _, network := range []string{"unix", "tcp"} {
		res, err := rawbench.PingPong(ctx, network, 20000)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("(%v) pingpong %-4s 64B: p50=%v p99=%v (%d rounds)", time.Since(t0), network, res.P50, res.P99, res.Rounds)
	}
	for _, network := range []string{"unix", "tcp"} {
		mbps, err := rawbench.Bulk(ctx, network, 256<<20, 3)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("(%v) bulk     %-4s 256MiB: %.0f MB/s (best of 3)", time.Since(t0), network, mbps)
	}
	t.Logf("(%v) memcpy        256MiB: %.0f MB/s (best of 3)", time.Since(t0), rawbench.Memcpy(256<<20, 3))
	t.Logf("(%v) end", time.Since(t0))
}
