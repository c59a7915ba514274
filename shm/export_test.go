package shm

import "github.com/godist/dist"

// Test-only access to the directory-parameterized variants, so that tests can use a small
// tmpfs (full-disk behaviour) and fake dead creators.

// CreateNamedIn is CreateNamed in dir, recording pid as the creator.
func CreateNamedIn(dir, prefix, name string, size, pid int) (*Segment, error) {
	return createNamedIn(dir, prefix, name, size, pid)
}

// ListIn, CleanIn, OpenNamedIn and UnlinkIn are List, Clean, OpenNamed and Unlink in dir.
var (
	ListIn      = listIn
	CleanIn     = cleanIn
	OpenNamedIn = openNamedIn
	UnlinkIn    = unlinkIn
)

// SetHostID makes this process believe it runs on host (boot id boot) until restore is
// called, so that a test can see arrays from "another host" with real workers.
func SetHostID(host, boot string) (restore func()) {
	old := hostID
	hostID = func() (string, string) { return host, boot }
	return func() { hostID = old }
}

// RememberHost is the store of Hosts' cache: pid of c runs on host.
var RememberHost = rememberHost

// HostsCached returns the number of hostnames Hosts' cache holds for c.
func HostsCached(c *dist.Cluster) int {
	hostCache.Lock()
	defer hostCache.Unlock()
	return len(hostCache.m[c])
}
