package script_test

import (
	"os"
	"testing"

	"github.com/godist/dist"
)

// TestMain makes the test binary usable as a worker: the local manager re-executes it, and
// dist.Main serves (and exits) in a worker before any test runs.
func TestMain(m *testing.M) {
	dist.Main()
	os.Exit(m.Run())
}
