// Package hostsenv reads the description of the test hosts that scripts/hosts.sh brings up:
// network namespaces, each with its own hostname and sshd, joined by a bridge. It is apart
// from disttest, which wraps it for tests (disttest.Hosts), so that programs such as
// `godist bench` can read it without linking package testing.
package hostsenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Env is what scripts/hosts.sh wrote in its env file.
type Env struct {
	Names      []string // host names, in order (GODIST_HOSTS)
	Addrs      []string // their addresses on the bridge, by position in Names (GODIST_HOST_ADDRS)
	SSHConfig  string   // ssh_config: ssh -F SSHConfig NAME runs commands on NAME (SSH_CONFIG)
	SSHKey     string   // the private key that config uses (SSH_KEY)
	KnownHosts string   // known_hosts with every host's key (SSH_KNOWN_HOSTS)
	Prefix     string   // prefix of the namespaces' and the root-side veths' names (GODIST_NS_PREFIX)
	Bridge     string   // the bridge in the root namespace (GODIST_BRIDGE)
}

// File returns where scripts/hosts.sh leaves its env file: env in $GODIST_HOSTS_DIR, by
// default /run/godist/hosts, as in the script.
func File() string {
	dir := os.Getenv("GODIST_HOSTS_DIR")
	if dir == "" {
		dir = "/run/godist/hosts"
	}
	return dir + "/env"
}

// ErrIncomplete is wrapped by Read's error when the file lacks hosts or their ssh config, or
// names a different number of addresses than hosts.
var ErrIncomplete = errors.New("hostsenv: env file is incomplete")

// Read reads File. When the hosts are not up the error wraps fs.ErrNotExist; when the file
// does not describe at least one host with an address each and an ssh config, ErrIncomplete.
func Read() (Env, error) {
	f, err := os.Open(File())
	if err != nil {
		return Env{}, fmt.Errorf("hostsenv: test hosts are not up (run scripts/hosts.sh as root): %w", err)
	}
	defer f.Close()
	// The file is shell, as the script writes it: `export KEY=VALUE` lines, values maybe quoted.
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = strings.Trim(v, `"`)
		}
	}
	if err := sc.Err(); err != nil {
		return Env{}, fmt.Errorf("hostsenv: %s: %w", File(), err)
	}
	e := Env{
		Names:      strings.Fields(vars["GODIST_HOSTS"]),
		Addrs:      strings.Fields(vars["GODIST_HOST_ADDRS"]),
		SSHConfig:  vars["SSH_CONFIG"],
		SSHKey:     vars["SSH_KEY"],
		KnownHosts: vars["SSH_KNOWN_HOSTS"],
		Prefix:     vars["GODIST_NS_PREFIX"],
		Bridge:     vars["GODIST_BRIDGE"],
	}
	if len(e.Names) == 0 || len(e.Addrs) != len(e.Names) || e.SSHConfig == "" {
		return e, fmt.Errorf("%w: %s has %d hosts, %d addresses, SSH_CONFIG %q", ErrIncomplete, File(), len(e.Names), len(e.Addrs), e.SSHConfig)
	}
	return e, nil
}
