package dist

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// WithPortRange makes TCP listeners that are asked for port 0 take a port in [lo, hi]
// instead of any free one: the workers launched with this option, and the driver's own
// listeners (Cluster.Listen, package elastic). A firewall then needs only that range open
// between hosts (julia#24722). A listener that finds no free port in the range fails with an
// error naming the range.
func WithPortRange(lo, hi int) Option {
	return func(c *config) { c.portMin, c.portMax = lo, hi }
}

// applyWorker takes into a worker's configuration what its WorkerConfig says about the
// network.
func (cfg *config) applyWorker(wc WorkerConfig) error {
	if wc.PortMin != 0 {
		if err := checkPortRange(wc.PortMin, wc.PortMax); err != nil {
			return err
		}
		cfg.portMin, cfg.portMax = wc.PortMin, wc.PortMax
	}
	if wc.DialTimeout > 0 {
		cfg.connTimeout = wc.DialTimeout
	}
	if wc.RecvBudget > 0 {
		cfg.recvBudget = wc.RecvBudget
	}
	if wc.RecvStall > 0 {
		cfg.limits.Stall = wc.RecvStall
	}
	if wc.ExitGrace > 0 {
		cfg.exitGrace = wc.ExitGrace
	}
	if wc.HeartbeatInterval != 0 {
		cfg.hbInterval, cfg.hbTimeout = wc.HeartbeatInterval, wc.HeartbeatTimeout
	}
	if !wc.TLS.isZero() {
		t, err := LoadTLS(wc.TLS)
		if err != nil {
			return err
		}
		cfg.tlsFiles, cfg.tls = wc.TLS, t
	}
	return nil
}

func checkPortRange(lo, hi int) error {
	if lo < 1 || hi > 65535 || lo > hi {
		return fmt.Errorf("dist: bad port range %d-%d", lo, hi)
	}
	return nil
}

// listen opens the listener a worker accepts connections on, as wc says, and returns it with
// the network and address to announce.
func (c *Cluster) listen(wc WorkerConfig) (net.Listener, string, string, error) {
	switch wc.Network {
	case "unix":
		dir := wc.Bind
		if dir == "" {
			dir = os.TempDir()
		}
		path := filepath.Join(dir, fmt.Sprintf("w%d.sock", os.Getpid()))
		if strings.HasPrefix(dir, "@") { // an abstract name's prefix (Linux)
			path = fmt.Sprintf("%s-w%d", dir, os.Getpid())
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return nil, "", "", err
		}
		return ln, "unix", path, nil
	case "tcp":
		bind := wc.Bind
		if bind == "" {
			bind = ":0"
		}
		ln, err := c.Listen("tcp", bind)
		if err != nil {
			return nil, "", "", err
		}
		return ln, "tcp", ln.Addr().String(), nil
	}
	return nil, "", "", fmt.Errorf("unknown network %q (want unix or tcp)", wc.Network)
}

// Listen opens a listener for connections into this cluster's processes, with the cluster's
// network settings applied: network "unix" (address a socket path) or "tcp" (address
// host:port; with port 0 and WithPortRange, a port of the range; with WithTLS, connections
// accepted are TLS servers). Package elastic listens
// with it; other helpers that accept connections for the cluster should too.
func (c *Cluster) Listen(network, address string) (net.Listener, error) {
	ln, err := c.listenPorts(network, address)
	if err != nil || network != "tcp" || c.cfg.tls == nil {
		return ln, err
	}
	// The TLS handshake runs on the connection's first read or write, which the cookie
	// handshake's deadline bounds.
	return tls.NewListener(ln, c.cfg.tls), nil
}

func (c *Cluster) listenPorts(network, address string) (net.Listener, error) {
	if network != "tcp" || c.cfg.portMin == 0 {
		return net.Listen(network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if port != "0" && port != "" {
		return net.Listen(network, address)
	}
	lo, hi := c.cfg.portMin, c.cfg.portMax
	if err := checkPortRange(lo, hi); err != nil {
		return nil, err
	}
	// From a random point of the range, so that processes starting together do not all
	// race for its first port.
	n := hi - lo + 1
	start := rand.IntN(n)
	var last error
	for i := range n {
		p := lo + (start+i)%n
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return ln, nil
		}
		last = err
		if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EACCES) {
			return nil, err // not a matter of this port: another would fail the same way
		}
	}
	return nil, fmt.Errorf("dist: no free port in %d-%d on %q: %w", lo, hi, host, last)
}
