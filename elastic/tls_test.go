package elastic_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/elastic"
)

func tlsEnv(f dist.TLSFiles) []string {
	return []string{dist.EnvTLSCert + "=" + f.Cert, dist.EnvTLSKey + "=" + f.Key, dist.EnvTLSCA + "=" + f.CA}
}

func TestJoinOverTLS(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	dir := t.TempDir()
	files := disttest.TLS(t, dir, "cluster")
	c, _ := disttest.Start(t, 0, dist.WithTLS(files), dist.WithLogger(quietLogger()))
	local, err := c.AddProcs(ctx, nil, 1, dist.WithNetwork("tcp", "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := elastic.Listen(ctx, c, "127.0.0.1:0", elastic.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// Another CA's certificate: refused at once, saying so.
	stranger := disttest.TLS(t, dir, "stranger")
	bad := startWorker(t, ln.Addr(), c.Cookie(), tlsEnv(stranger)...)
	if code := bad.exit(t, 10*time.Second); code != 2 || !strings.Contains(bad.output(), "TLS") {
		t.Fatalf("stranger: exit %d, said %q", code, bad.output())
	}
	// No TLS at all: refused within the connect timeout, with a hint.
	plain := startWorker(t, ln.Addr(), c.Cookie(), envTimeout+"=1s")
	if code := plain.exit(t, 10*time.Second); code != 2 || !strings.Contains(plain.output(), "does its listener use TLS") {
		t.Fatalf("plain worker: exit %d, said %q", code, plain.output())
	}
	if n := c.NWorkers(); n != 1 {
		t.Fatalf("%d workers after refused ones", n)
	}

	w := startWorker(t, ln.Addr(), c.Cookie(), tlsEnv(files)...)
	added := joined(t, c, 2, local)
	for _, pair := range [][2]int{{added[0], local[0]}, {local[0], added[0]}} {
		if id, err := relay.Call(ctx, c, pair[0], pair[1]); err != nil || id != pair[1] {
			t.Fatalf("relay %d→%d over TLS: %d, %v", pair[0], pair[1], id, err)
		}
	}
	c.Close()
	if code := w.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("worker after Close: exit %d, said %q", code, w.output())
	}
}

var _ = os.Getpid
var _ = filepath.Join
