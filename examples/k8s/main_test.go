package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProgram runs what the manifest runs, without Kubernetes: the built program as a driver
// and as two workers in separate processes, over loopback TCP, the cookie from a file as the
// Secret provides it.
func TestProgram(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "k8s")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cookie := filepath.Join(dir, "cookie")
	os.WriteFile(cookie, []byte("test-cookie\n"), 0o600)
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := probe.Addr().String()
	probe.Close()
	env := append(os.Environ(), "GODIST_COOKIE=", "GODIST_COOKIE_FILE="+cookie)

	// Workers first, as a Deployment may start them before the driver's Job.
	var workers []*exec.Cmd
	var wout []*syncBuf
	for range 2 {
		w := exec.Command(bin)
		w.Env = append(env, "GODIST_DRIVER="+addr, "GODIST_CONNECT_TIMEOUT=30s")
		b := &syncBuf{}
		w.Stdout, w.Stderr = b, b
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		defer w.Process.Kill()
		workers = append(workers, w)
		wout = append(wout, b)
	}
	d := exec.Command(bin)
	d.Env = append(env, "GODIST_LISTEN="+addr, "WORKERS=2", "N=1000", "GODIST_WAIT=30s")
	var dout syncBuf
	d.Stdout, d.Stderr = &dout, &dout
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("driver: %v\n%s", err, dout.String())
		}
	case <-time.After(60 * time.Second):
		d.Process.Kill()
		t.Fatalf("driver did not finish:\n%s", dout.String())
	}
	if !strings.Contains(dout.String(), "sum of squares 1..1000 = 333833500 on 2 workers") {
		t.Fatalf("driver said:\n%s", dout.String())
	}
	// The driver is gone: the workers end cleanly.
	for i, w := range workers {
		wd := make(chan error, 1)
		go func() { wd <- w.Wait() }()
		select {
		case err := <-wd:
			if err != nil {
				t.Fatalf("worker %d: %v\n%s", i, err, wout[i].String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("worker %d still running after the driver exited:\n%s", i, wout[i].String())
		}
	}
}
