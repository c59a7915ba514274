package dist_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

func TestTLS(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	dir := t.TempDir()
	files := disttest.TLS(t, dir, "cluster")
	c, _ := disttest.Start(t, 0, dist.WithTLS(files), dist.WithLogger(quietLogger()))
	pids, err := c.AddProcs(ctx, nil, 2, dist.WithNetwork("tcp", "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := square.Call(ctx, c, pids[0], 7); err != nil || v != 49 {
		t.Fatalf("call over TLS: %v, %v", v, err)
	}
	if v, err := relay.Call(ctx, c, pids[0], [2]int{pids[1], 5}); err != nil || v != 25 {
		t.Fatalf("worker↔worker over TLS: %v, %v", v, err)
	}
	info, _ := c.ProcInfo(pids[1])

	// A plain connection gets no cookie hello: the worker waits for a TLS ClientHello.
	nc, err := net.Dial("tcp", info.Addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [6]byte
	n, err := nc.Read(b[:])
	nc.Close()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("plain read from a TLS worker: %q, %v", b[:n], err)
	}

	// A certificate from another CA is refused.
	stranger := disttest.TLS(t, dir, "stranger")
	cert, err := tls.LoadX509KeyPair(stranger.Cert, stranger.Key)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.Dial("tcp", info.Addr, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true})
	if err == nil {
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = tc.Read(b[:])
		tc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("stranger's certificate: %v", err)
	}
	// And the worker still serves.
	if v, err := relay.Call(ctx, c, pids[1], [2]int{pids[0], 3}); err != nil || v != 9 {
		t.Fatalf("after the stranger: %v, %v", v, err)
	}
}

func TestTLSBadFiles(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	_, err := dist.Start(ctx, dist.WithWorkers(0), dist.WithTLS(dist.TLSFiles{Cert: "/nonexistent.crt", Key: "/nonexistent.key", CA: "/nonexistent-ca.crt"}))
	if err == nil || !strings.Contains(err.Error(), "TLS certificate") {
		t.Fatalf("missing files: %v", err)
	}
	_, err = dist.Start(ctx, dist.WithWorkers(0), dist.WithTLS(dist.TLSFiles{Cert: "x"}))
	if err == nil || !strings.Contains(err.Error(), "needs a certificate, a key and a CA") {
		t.Fatalf("incomplete files: %v", err)
	}
}

func TestCookieFile(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	path := filepath.Join(t.TempDir(), "cookie")
	os.WriteFile(path, []byte("  s3cret-from-file\n"), 0o600)
	c, _ := disttest.Start(t, 1, dist.WithCookieFile(path))
	if c.Cookie() != "s3cret-from-file" {
		t.Fatalf("cookie %q", c.Cookie())
	}
	if v, err := square.Call(ctx, c, 2, 4); err != nil || v != 16 {
		t.Fatalf("call: %v, %v", v, err)
	}
	c.Close()

	t.Setenv(dist.EnvCookie, "")
	t.Setenv(dist.EnvCookieFile, path)
	if got, err := dist.CookieFromEnv(); err != nil || got != "s3cret-from-file" {
		t.Fatalf("CookieFromEnv: %q, %v", got, err)
	}
	t.Setenv(dist.EnvCookie, "from-env")
	if got, _ := dist.CookieFromEnv(); got != "from-env" {
		t.Fatalf("CookieFromEnv with %s set: %q", dist.EnvCookie, got)
	}
	t.Setenv(dist.EnvCookie, "")
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv(dist.EnvCookieFile, empty)
	if _, err := dist.Start(ctx, dist.WithWorkers(0)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty cookie file: %v", err)
	}
	if _, err := dist.Start(ctx, dist.WithWorkers(0), dist.WithCookieFile("/nonexistent/cookie")); err == nil || !strings.Contains(err.Error(), "cookie file") {
		t.Fatalf("missing cookie file: %v", err)
	}
}

// silentProcess is a "worker" that accepts connections and never says a word.
type silentProcess struct{ addr string }

func (p silentProcess) Addr() (string, string) { return "tcp", p.addr }
func (silentProcess) SetPid(int)               {}
func (silentProcess) Kill() error              { return nil }
func (silentProcess) Interrupt() error         { return nil }
func (silentProcess) Wait() error              { return nil }

func TestConnectTimeout(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	c, _ := disttest.Start(t, 0, dist.WithConnectTimeout(300*time.Millisecond))
	start := time.Now()
	_, err = c.AddProcess(ctx, silentProcess{ln.Addr().String()})
	if !errors.Is(err, dist.ErrConnectTimeout) || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "300ms") {
		t.Fatalf("silent worker: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	if c.NWorkers() != 0 {
		t.Fatal("a silent worker joined")
	}
}
