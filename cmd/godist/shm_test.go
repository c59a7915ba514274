package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/godist/dist/shm"
)

func TestShmLsAndClean(t *testing.T) {
	const prefix = "godisttest"
	// A segment whose creator is alive (this process) is listed and kept.
	seg, err := shm.CreateNamed(prefix, "alive", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer shm.Unlink(prefix, "alive")
	defer seg.Close()
	// One made by a process that has exited is a leftover.
	child := exec.Command(os.Args[0], "-test.run", "^TestShmHelperCreate$")
	child.Env = append(os.Environ(), "GODIST_SHM_HELPER="+prefix)
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	var out strings.Builder
	if code := runShm([]string{"-prefix", prefix, "ls"}, &out); code != 0 {
		t.Fatalf("ls exit %d", code)
	}
	if !strings.Contains(out.String(), "alive") || !strings.Contains(out.String(), "leftover") {
		t.Fatalf("ls output:\n%s", out.String())
	}
	out.Reset()
	if code := runShm([]string{"-prefix", prefix, "clean"}, &out); code != 0 {
		t.Fatalf("clean exit %d", code)
	}
	if !strings.Contains(out.String(), "leftover") || strings.Contains(out.String(), "alive") {
		t.Fatalf("clean output:\n%s", out.String())
	}
	infos, _ := shm.List(prefix)
	if len(infos) != 1 || infos[0].Name != "alive" {
		t.Fatalf("after clean: %+v", infos)
	}
	if code := runShm([]string{"frobnicate"}, &out); code != 2 {
		t.Fatalf("bad subcommand exit %d", code)
	}
}

// TestShmHelperCreate is the child of TestShmLsAndClean: it creates a named segment and exits
// without removing it, as a crashed process would.
func TestShmHelperCreate(t *testing.T) {
	prefix := os.Getenv("GODIST_SHM_HELPER")
	if prefix == "" {
		t.Skip("helper process only")
	}
	if _, err := shm.CreateNamed(prefix, "leftover", 4096); err != nil {
		t.Fatal(err)
	}
}
