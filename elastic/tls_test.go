package elastic_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/elastic"
)

// makeTLS writes a CA and a certificate it signs (for client and server use, no host name
// needed) into dir and returns the file names.
func makeTLS(t *testing.T, dir, name string) dist.TLSFiles {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: name + " node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	f := dist.TLSFiles{
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
		CA:   filepath.Join(dir, name+"-ca.crt"),
	}
	write := func(path, typ string, b []byte) {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(f.Cert, "CERTIFICATE", der)
	write(f.Key, "EC PRIVATE KEY", keyDER)
	write(f.CA, "CERTIFICATE", caDER)
	return f
}

func tlsEnv(f dist.TLSFiles) []string {
	return []string{dist.EnvTLSCert + "=" + f.Cert, dist.EnvTLSKey + "=" + f.Key, dist.EnvTLSCA + "=" + f.CA}
}

func TestJoinOverTLS(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	dir := t.TempDir()
	files := makeTLS(t, dir, "cluster")
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
	stranger := makeTLS(t, dir, "stranger")
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
