package launcher_test

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/launcher"
)

// TestMain makes the test binary a worker program: the launcher's children are this binary.
func TestMain(m *testing.M) {
	dist.Main()
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	k, tag, rest, ok := launcher.Parse("12 out hello world")
	if !ok || k != 12 || tag != launcher.TagOut || rest != "hello world" {
		t.Errorf("Parse = %d %q %q %v", k, tag, rest, ok)
	}
	if _, tag, rest, ok := launcher.Parse("3 exit"); !ok || tag != "exit" || rest != "" {
		t.Errorf("Parse without rest = %q %q %v", tag, rest, ok)
	}
	for _, bad := range []string{"", "x out y", "-1 out y", "7", "7 "} {
		if _, _, _, ok := launcher.Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if code, how := launcher.ParseExit("-1 signal: killed"); code != -1 || how != "signal: killed" {
		t.Errorf("ParseExit = %d %q", code, how)
	}
}

// TestRun drives a launcher in this process: three workers start and print their addresses;
// one is killed, one interrupted, and the last ends when the launcher's input does. Each end
// is reported for its worker alone, and Run returns only when all have been reaped.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	cfg := dist.WorkerConfig{Cookie: "c", Network: "unix", Bind: dir, ConnectTimeout: time.Minute}
	spec, _ := json.Marshal(launcher.Spec{Workers: []dist.WorkerConfig{cfg, cfg, cfg}})
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ret := make(chan int, 1)
	go func() {
		ret <- launcher.Run(inR, outW)
		outW.Close()
	}()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the launcher's output ended, waiting for %s", what)
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("no line from the launcher while waiting for %s", what)
		}
		return ""
	}
	if l := next("hello"); l != launcher.Hello {
		t.Fatalf("first line %q, want %q", l, launcher.Hello)
	}
	io.WriteString(inW, string(spec)+"\n")
	pids, hs := map[int]bool{}, map[int]bool{}
	for len(hs) < 3 {
		l := next("the handshakes")
		k, tag, rest, ok := launcher.Parse(l)
		if !ok {
			t.Fatalf("unparsable line %q", l)
		}
		switch tag {
		case launcher.TagPid:
			pids[k] = true
		case launcher.TagHS:
			if !pids[k] || !strings.HasPrefix(rest, "godist-worker ") || !strings.Contains(rest, " unix "+dir) {
				t.Errorf("worker %d: handshake %q (pid seen: %v)", k, rest, pids[k])
			}
			hs[k] = true
		case launcher.TagExit, launcher.TagFail:
			t.Fatalf("worker %d ended before its handshake: %q", k, l)
		}
	}
	exits := map[int]string{}
	waitExit := func(k int) {
		t.Helper()
		for exits[k] == "" {
			l := next("an exit")
			if j, tag, rest, ok := launcher.Parse(l); ok && tag == launcher.TagExit {
				exits[j] = rest
			}
		}
	}
	io.WriteString(inW, "kill 0\n")
	waitExit(0)
	io.WriteString(inW, "int 1\n")
	waitExit(1)
	if len(exits) != 2 {
		t.Errorf("exits %v after ending workers 0 and 1", exits)
	}
	inW.Close()
	waitExit(2)
	for k, want := range []string{"-1 signal: killed", "-1 signal: interrupt", "0 exit status 0"} {
		if exits[k] != want {
			t.Errorf("worker %d: exit %q, want %q", k, exits[k], want)
		}
	}
	select {
	case code := <-ret:
		if code != 0 {
			t.Errorf("Run returned %d", code)
		}
	case <-time.After(2 * launcher.Grace):
		t.Fatal("Run did not return after its input ended")
	}
	for l := range lines {
		t.Errorf("line after the end: %q", l)
	}
}
