package disttest

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/godist/dist/disttest/hostsenv"
)

// HostsEnv describes the test hosts of scripts/hosts.sh (network namespaces with their own
// hostname and sshd).
type HostsEnv = hostsenv.Env

// Hosts returns the test hosts that scripts/hosts.sh brought up, at least n of them. When
// they are not up, or fewer than n, it skips the test with the reason, except under
// CI=true, where the hosts must be up and it fails the test instead. An env file that is
// there but incomplete or unreadable always fails the test: the set-up is broken.
func Hosts(t testing.TB, n int) HostsEnv {
	t.Helper()
	e, err := hostsenv.Read()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("disttest: %v", err)
	}
	var why string
	switch {
	case err != nil:
		why = err.Error()
	case len(e.Names) < n:
		why = fmt.Sprintf("%s describes %d test hosts, the test needs %d: run scripts/hosts.sh with more in GODIST_HOSTS",
			hostsenv.File(), len(e.Names), n)
	default:
		return e
	}
	Missing(t, why)
	return e
}
