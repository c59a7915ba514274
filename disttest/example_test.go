package disttest_test

import (
	"testing"

	"github.com/godist/dist/disttest"
)

// A test that drives a real mpirun: skipped with how to set it up where mpirun is missing,
// failed under CI=true.
func ExampleNeed() {
	_ = func(t *testing.T) {
		disttest.Need(t, disttest.Mpirun)
		disttest.Need(t, disttest.File("a Slurm cluster", "/run/godist/slurm/slurm.conf", "scripts/slurm.sh as root"))
		// ... run mpirun ...
	}
}
