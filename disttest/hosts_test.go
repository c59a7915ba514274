package disttest_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/disttest/hostsenv"
)

// envFile is an env file as scripts/hosts.sh writes it.
const envFile = `export GODIST_HOSTS="h1 h2 h3"
export GODIST_HOST_ADDRS="10.232.0.11 10.232.0.12 10.232.0.13"
export GODIST_NS_PREFIX=gd-
export GODIST_BRIDGE=gdbr0
export SSH_CONFIG=/run/godist/hosts/ssh_config
export SSH_KEY=/run/godist/hosts/id_ed25519
export SSH_KNOWN_HOSTS=/run/godist/hosts/known_hosts
`

// hostsDir points GODIST_HOSTS_DIR at a new directory holding content as env (none if nil).
func hostsDir(t *testing.T, content *string) {
	dir := t.TempDir()
	t.Setenv("GODIST_HOSTS_DIR", dir)
	if content != nil {
		if err := os.WriteFile(filepath.Join(dir, "env"), []byte(*content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadHostsEnv(t *testing.T) {
	s := envFile
	hostsDir(t, &s)
	e, err := hostsenv.Read()
	if err != nil {
		t.Fatal(err)
	}
	want := hostsenv.Env{
		Names: []string{"h1", "h2", "h3"}, Addrs: []string{"10.232.0.11", "10.232.0.12", "10.232.0.13"},
		SSHConfig: "/run/godist/hosts/ssh_config", SSHKey: "/run/godist/hosts/id_ed25519",
		KnownHosts: "/run/godist/hosts/known_hosts", Prefix: "gd-", Bridge: "gdbr0",
	}
	if fmt.Sprint(e) != fmt.Sprint(want) {
		t.Fatalf("read %+v\nwant %+v", e, want)
	}

	short := `export GODIST_HOSTS="h1 h2"` + "\nexport GODIST_HOST_ADDRS=10.0.0.1\nexport SSH_CONFIG=/x\n"
	hostsDir(t, &short)
	if _, err := hostsenv.Read(); !errors.Is(err, hostsenv.ErrIncomplete) {
		t.Fatalf("two hosts, one address: %v", err)
	}
	hostsDir(t, nil)
	if _, err := hostsenv.Read(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no file: %v", err)
	}
}

// recorder is a testing.TB whose Skipf and Fatalf record the outcome and end the goroutine,
// as the real ones do.
type recorder struct {
	testing.TB
	outcome, msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.outcome, r.msg = "skip", fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.outcome, r.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// hosts runs disttest.Hosts(n) and says how it ended: "ok", "skip" or "fatal".
func hosts(t *testing.T, n int) (string, disttest.HostsEnv, string) {
	r := &recorder{TB: t, outcome: "ok"}
	var e disttest.HostsEnv
	done := make(chan struct{})
	go func() {
		defer close(done)
		e = disttest.Hosts(r, n)
	}()
	<-done
	return r.outcome, e, r.msg
}

func TestHosts(t *testing.T) {
	t.Setenv("CI", "")
	s := envFile
	hostsDir(t, &s)
	if out, e, msg := hosts(t, 3); out != "ok" || !slices.Equal(e.Names, []string{"h1", "h2", "h3"}) || e.SSHConfig == "" {
		t.Fatalf("three hosts up, three wanted: %s %q, %+v", out, msg, e)
	}
	if out, _, msg := hosts(t, 4); out != "skip" {
		t.Fatalf("four wanted of three: %s %q", out, msg)
	}
	hostsDir(t, nil)
	out, _, msg := hosts(t, 1)
	if out != "skip" {
		t.Fatalf("hosts down: %s %q", out, msg)
	}
	t.Logf("skip reason: %s", msg)
	t.Setenv("CI", "true")
	if out, _, msg := hosts(t, 1); out != "fatal" {
		t.Fatalf("hosts down under CI=true: %s %q", out, msg)
	}
	s = "export GODIST_HOSTS=h1\n"
	hostsDir(t, &s)
	t.Setenv("CI", "")
	if out, _, msg := hosts(t, 1); out != "fatal" {
		t.Fatalf("incomplete env file: %s %q", out, msg)
	}
}
