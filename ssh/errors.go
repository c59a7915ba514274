package ssh

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/godist/dist"
)

// HostError is a failure on one host: ssh could not run there, or the worker did not start.
// Its text names the host first: "h2: ssh exited 255: Permission denied (publickey)".
type HostError struct {
	Host     string // the machine as given: [user@]host[:port]
	ExitCode int    // ssh's exit status (255: ssh itself failed), or -1 if it did not exit
	Msg      string // the last lines ssh or the remote side wrote on standard error, on one line
	// Err is the underlying cause when there was one: a timeout, a cancellation, or, from
	// Process.Wait, dist.ErrConnectionLost when ssh failed after the worker had started.
	Err error
}

// Error returns "HOST: ssh exited N: MESSAGE", or "HOST: CAUSE: MESSAGE" when ssh did not exit
// by itself.
func (e *HostError) Error() string {
	var b strings.Builder
	b.WriteString(e.Host)
	b.WriteString(": ")
	switch {
	case e.ExitCode >= 0:
		fmt.Fprintf(&b, "ssh exited %d", e.ExitCode)
		if errors.Is(e.Err, dist.ErrConnectionLost) {
			b.WriteString(": connection to the host lost")
		} else if e.Err != nil {
			fmt.Fprintf(&b, " (%v)", e.Err)
		}
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

// Unwrap returns the underlying cause, if any.
func (e *HostError) Unwrap() error { return e.Err }

func (m *Manager) hostErr(i, code int, stderr string, err error) *HostError {
	return &HostError{Host: m.machines[i].name(), ExitCode: code, Msg: sshSaid(stderr), Err: err}
}

// sshPrefix is how ssh starts an authentication failure: "root@10.0.0.2: Permission denied".
var sshPrefix = regexp.MustCompile(`^[^\s@]+@[^\s:]+: `)

// sshSaid condenses what ssh and the remote side wrote on standard error into one line: the
// last few non-empty lines, without ssh's "user@host: " prefix (the error names the host
// already) and without a final period.
func sshSaid(stderr string) string {
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(strings.TrimRight(l, "\r"))
		if l == "" {
			continue
		}
		lines = append(lines, sshPrefix.ReplaceAllString(l, ""))
	}
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.TrimSuffix(strings.Join(lines, " | "), ".")
}
