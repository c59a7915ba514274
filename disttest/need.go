package disttest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// A Component is a real part of the test environment that the project's scripts set up (sshd
// hosts, Slurm, mpirun, tmux, chromium, ...): tests use it for real rather than a stand-in.
type Component struct {
	// Name says what is missing, in the message of a skipped or failed test.
	Name string
	// Setup says how to get it: the script or package that installs or starts it.
	Setup string
	// Check returns nil when the component is there, or why it is not.
	Check func() error
}

// Program is the component of an executable found on PATH.
func Program(name, setup string) Component {
	return Component{Name: name, Setup: setup, Check: func() error {
		_, err := exec.LookPath(name)
		return err
	}}
}

// File is the component whose presence is the file at path, typically the configuration a
// set-up script writes once the service it starts is up.
func File(name, path, setup string) Component {
	return Component{Name: name, Setup: setup, Check: func() error {
		_, err := os.Stat(path)
		return err
	}}
}

// Components the project's tests need; scripts/setup.sh brings all of them up.
var (
	Tmux   = Program("tmux", "apt-get install tmux")
	Mpirun = Program("mpirun", "scripts/openmpi.sh as root (installs openmpi-bin)")
	Srun   = Program("srun", "scripts/slurm.sh as root")
)

// CI reports whether the tests run under continuous integration (CI=true), where every
// component must be there: a test that would skip fails instead.
func CI() bool { return os.Getenv("CI") == "true" }

// Need checks c and, when it is absent, skips the test saying what is missing and how to set
// it up; under CI=true it fails the test instead, so that a broken set-up cannot pass as a
// run of skipped tests. Like t.Skip, it stops the test's goroutine.
func Need(t testing.TB, c Component) {
	t.Helper()
	if c.Check == nil {
		t.Fatalf("disttest: component %q has no Check", c.Name)
	}
	err := c.Check()
	if err == nil {
		return
	}
	Missing(t, fmt.Sprintf("%s is not available (%v): set it up with %s", c.Name, err, c.Setup))
}

// Missing is Need for a test that found out itself that a component is absent: it skips the
// test with why, or fails it under CI=true.
func Missing(t testing.TB, why string) {
	t.Helper()
	if CI() {
		t.Fatalf("disttest: %s (CI=true: every component must be set up)", why)
	}
	t.Skipf("disttest: %s", why)
}
