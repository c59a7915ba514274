package dist

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Environment variables naming the TLS files of a process that is not given them otherwise:
// elastic and MPI workers read them (see package elastic).
const (
	EnvTLSCert = "GODIST_TLS_CERT"
	EnvTLSKey  = "GODIST_TLS_KEY"
	EnvTLSCA   = "GODIST_TLS_CA"
)

// TLSFiles names the PEM files of mutual TLS: this process's certificate and key, and the
// certificate authority every other process's certificate must be signed by.
type TLSFiles struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
	CA   string `json:"ca"`
}

// TLSFilesFromEnv returns the TLS files the environment names (EnvTLSCert, EnvTLSKey,
// EnvTLSCA), or a zero TLSFiles if EnvTLSCert is not set.
func TLSFilesFromEnv() TLSFiles {
	return TLSFiles{Cert: os.Getenv(EnvTLSCert), Key: os.Getenv(EnvTLSKey), CA: os.Getenv(EnvTLSCA)}
}

func (f TLSFiles) isZero() bool { return f == TLSFiles{} }

// WithTLS makes every TCP connection of the cluster mutual TLS (1.3): each process presents
// files.Cert and accepts only peers whose certificate files.CA signed. Unix-socket
// connections, which never leave the host, stay plain. The cookie handshake still runs inside
// TLS. Workers are given the same file names (WorkerConfig.TLS), so the files must be at those
// paths on every host. Host names are not checked: a worker's address is whatever it listens
// on, and membership is proven by the CA's signature and the cookie. Start fails if the files
// cannot be loaded.
func WithTLS(files TLSFiles) Option {
	return func(c *config) { c.tlsFiles = files }
}

// LoadTLS builds the configuration WithTLS uses, for both ends of a connection: for helpers
// that make their own connections into a cluster (package elastic).
func LoadTLS(files TLSFiles) (*tls.Config, error) {
	if files.Cert == "" || files.Key == "" || files.CA == "" {
		return nil, fmt.Errorf("dist: TLS needs a certificate, a key and a CA file (got %+v)", files)
	}
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		return nil, fmt.Errorf("dist: TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(files.CA)
	if err != nil {
		return nil, fmt.Errorf("dist: TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("dist: TLS CA: no certificate in %s", files.CA)
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("dist: TLS: the other end presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return fmt.Errorf("dist: TLS: the other end's certificate is not signed by our CA: %w", err)
		}
		return nil
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// The chain is checked by VerifyConnection, without host names (see WithTLS).
		InsecureSkipVerify: true,
		ClientAuth:         tls.RequireAnyClientCert,
		VerifyConnection:   verify,
	}, nil
}
