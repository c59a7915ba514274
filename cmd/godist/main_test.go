package main

import (
	"os"
	"testing"

	"github.com/godist/dist"
)

// TestMain makes the test binary usable as a worker: tests start clusters whose workers are
// this binary re-executed. It removes the godist binary the REPL tests built.
func TestMain(m *testing.M) {
	dist.Main()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}
