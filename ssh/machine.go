package ssh

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Auto as a Machine's Count means the host's CPU count, asked over ssh.
const Auto = -1

// Machine is one host to start workers on, in the terms of Julia's machine specification
// "[user@]host[:port] [bind_addr[:port]]".
type Machine struct {
	User string // login user; empty: ssh's default (ssh_config, then the local user)
	Host string // what ssh is given: a name, an ssh_config alias or an address
	Port int    // ssh port; 0: ssh's default
	// BindAddr is the address the host's workers listen on, which the driver and the other
	// hosts must reach. Empty: the address the driver's ssh connection reached the host on.
	BindAddr string
	// BindPort is the port of the host's first worker; the next ones take the following
	// ports. 0: any free port.
	BindPort int
	// Count is how many workers the host takes: a positive number, or Auto.
	Count int
}

// ParseMachine parses "[user@]host[:port] [bind_addr[:port]]" (an IPv6 address goes in
// brackets when a port follows it) into a Machine with the given count, which is a positive
// number or Auto.
func ParseMachine(spec string, count int) (Machine, error) {
	m := Machine{Count: count}
	if count <= 0 && count != Auto {
		return m, fmt.Errorf("ssh: machine %q: count %d is neither positive nor Auto", spec, count)
	}
	f := strings.Fields(spec)
	if len(f) == 0 || len(f) > 2 {
		return m, fmt.Errorf("ssh: machine %q: want \"[user@]host[:port] [bind_addr[:port]]\"", spec)
	}
	login := f[0]
	if i := strings.LastIndexByte(login, '@'); i >= 0 {
		m.User, login = login[:i], login[i+1:]
		if m.User == "" {
			return m, fmt.Errorf("ssh: machine %q: empty user", spec)
		}
	}
	var err error
	if m.Host, m.Port, err = hostPort(login); err != nil {
		return m, fmt.Errorf("ssh: machine %q: %w", spec, err)
	}
	if len(f) == 2 {
		if m.BindAddr, m.BindPort, err = hostPort(f[1]); err != nil {
			return m, fmt.Errorf("ssh: machine %q: bind address: %w", spec, err)
		}
	}
	return m, nil
}

// hostPort splits "host", "host:port", "[v6]" or "[v6]:port"; a bare IPv6 address has no port.
func hostPort(s string) (string, int, error) {
	if s == "" {
		return "", 0, fmt.Errorf("empty host")
	}
	if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
		return s, 0, nil // bare IPv6 address
	}
	if !strings.Contains(s, ":") {
		return strings.Trim(s, "[]"), 0, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return s[1 : len(s)-1], 0, nil
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if h == "" {
		return "", 0, fmt.Errorf("empty host")
	}
	return h, n, nil
}

// String returns the machine in the form ParseMachine reads (without the count).
func (m Machine) String() string {
	s := m.Host
	if m.Port != 0 {
		s = net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
	}
	if m.User != "" {
		s = m.User + "@" + s
	}
	if m.BindAddr != "" {
		b := m.BindAddr
		if m.BindPort != 0 {
			b = net.JoinHostPort(b, strconv.Itoa(m.BindPort))
		}
		s += " " + b
	}
	return s
}

// name is how messages and output labels refer to the machine: its host, with the user and
// port when they were given.
func (m Machine) name() string {
	s := m.Host
	if m.Port != 0 {
		s = net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
	}
	if m.User != "" {
		s = m.User + "@" + s
	}
	return s
}

// sshArgs are the arguments that select the machine on ssh's command line.
func (m Machine) sshArgs() []string {
	var a []string
	if m.Port != 0 {
		a = append(a, "-p", strconv.Itoa(m.Port))
	}
	if m.User != "" {
		a = append(a, "-l", m.User)
	}
	// "--" keeps a host that starts with '-' from being read as an option.
	return append(a, "--", m.Host)
}

// ParseMachines reads a machine file in the form of Julia's --machine-file: one machine a
// line, "[count*][user@]host[:port] [bind_addr[:port]]", where count is a positive number or
// "auto" (default 1). Blank lines and lines starting with '#' are skipped.
func ParseMachines(r io.Reader) ([]Machine, error) {
	var ms []Machine
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		count := 1
		if c, rest, ok := strings.Cut(line, "*"); ok && !strings.ContainsAny(c, " \t@") {
			line = strings.TrimSpace(rest)
			if c == "auto" {
				count = Auto
			} else if v, err := strconv.Atoi(c); err == nil && v > 0 {
				count = v
			} else {
				return nil, fmt.Errorf("ssh: machine file line %d: count %q is neither a positive number nor auto", n, c)
			}
		}
		m, err := ParseMachine(line, count)
		if err != nil {
			return nil, fmt.Errorf("ssh: machine file line %d: %w", n, err)
		}
		ms = append(ms, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ssh: reading machine file: %w", err)
	}
	return ms, nil
}
