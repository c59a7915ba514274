package dist_test

import (
	"os"
	"testing"

	"github.com/godist/dist"
)

// TestMain makes the test binary usable as a worker: the local manager re-executes it. The
// check for the driver role comes after dist.Main, so that workers, which inherit the
// environment, never take it.
func TestMain(m *testing.M) {
	dist.Main()
	if os.Getenv(envBusyDriver) != "" {
		os.Unsetenv(envBusyDriver)
		os.Exit(runBusyDriver())
	}
	if os.Getenv("GODIST_TEST_DRIVER") != "" {
		os.Unsetenv("GODIST_TEST_DRIVER")
		os.Exit(runTestDriver())
	}
	os.Exit(m.Run())
}
