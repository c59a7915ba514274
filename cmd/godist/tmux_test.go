package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist/disttest"
)

// The REPL tests drive the real binary in a real terminal: tmux runs `godist repl` in a pane,
// keys are typed with send-keys and the screen is read back with capture-pane.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// godistBinary builds cmd/godist once per test run and returns the binary's path.
func godistBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "godistbin")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "godist"), ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "godist")
}

// needTmux skips the test when tmux is absent, except under CI where it must be there.
func needTmux(t *testing.T) {
	t.Helper()
	disttest.Need(t, disttest.Tmux) // the REPL tests drive the REPL in a tmux pane
}

// pane is one tmux server (on its own socket, so that the user's tmux is untouched) running
// one command in one pane.
type pane struct {
	t      *testing.T
	socket string
	seen   int // lines of the pane already looked at by expect
}

// startPane runs argv in a new 200×50 tmux pane with env added to the environment. The pane
// stays after the command exits, so that its exit status and last output can be read.
func startPane(t *testing.T, env []string, argv ...string) *pane {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g history-limit 100000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pane{t: t, socket: filepath.Join(dir, "tmux.sock")}
	args := []string{"-S", p.socket, "-f", conf, "new-session", "-d", "-x", "200", "-y", "50", "--", "env"}
	args = append(args, env...)
	args = append(args, argv...)
	if out, err := exec.Command("tmux", args...).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if pid := p.pid(); pid > 0 && !p.dead() {
			syscallKill(pid)
		}
		exec.Command("tmux", "-S", p.socket, "kill-server").Run()
	})
	return p
}

func (p *pane) tmux(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// typeLine types s literally, then Enter.
func (p *pane) typeLine(s string) {
	p.t.Helper()
	if s != "" {
		p.tmux("send-keys", "-l", "--", s)
	}
	p.tmux("send-keys", "Enter")
}

// keys sends tmux key names (Up, C-d, Enter, …).
func (p *pane) keys(names ...string) {
	p.t.Helper()
	p.tmux(append([]string{"send-keys"}, names...)...)
}

// lines returns the whole pane, scroll-back included, wrapped lines joined, without the
// blank lines at the bottom of the screen.
func (p *pane) lines() []string {
	p.t.Helper()
	out := p.tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-")
	lines := strings.Split(strings.TrimRight(out, "\n "), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return lines
}

// expect waits until the output after what earlier calls consumed ends with a fresh prompt
// and matches every pattern, and returns that output. The prompt line the input was typed on
// is part of it.
func (p *pane) expect(timeout time.Duration, patterns ...string) string {
	p.t.Helper()
	res := make([]*regexp.Regexp, len(patterns))
	for i, s := range patterns {
		res[i] = regexp.MustCompile(s)
	}
	deadline := time.Now().Add(timeout)
	for {
		lines := p.lines()
		start := max(p.seen-1, 0)
		if start > len(lines) {
			start = len(lines)
		}
		text := strings.Join(lines[start:], "\n")
		// A fresh prompt is an empty one on a line not seen before: the REPL is waiting again.
		ok := len(lines) > p.seen && lines[len(lines)-1] == "godist>"
		for _, re := range res {
			ok = ok && re.MatchString(text)
		}
		if ok {
			p.seen = len(lines)
			return text
		}
		if time.Now().After(deadline) || p.dead() {
			p.t.Fatalf("pane did not show %q within %v; it shows:\n%s", patterns, timeout, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLast waits until the pane's last line is s.
func (p *pane) waitLast(s string) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := p.lines()
		if lines[len(lines)-1] == s {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the last line is not %q; the pane shows:\n%s", s, strings.Join(lines, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shows reports whether the output after what expect consumed matches pattern.
func (p *pane) shows(pattern string) bool {
	p.t.Helper()
	lines := p.lines()
	start := min(max(p.seen-1, 0), len(lines))
	return regexp.MustCompile(pattern).MatchString(strings.Join(lines[start:], "\n"))
}

// run types one entry (lines joined by Enter) and waits for its output.
func (p *pane) run(entry string, patterns ...string) string {
	p.t.Helper()
	for _, line := range strings.Split(entry, "\n") {
		p.typeLine(line)
	}
	return p.expect(30*time.Second, patterns...)
}

func (p *pane) format(f string) string {
	return strings.TrimSpace(p.tmux("display-message", "-p", f))
}

// pid is the process id of the pane's command, 0 if unknown.
func (p *pane) pid() int {
	n, _ := strconv.Atoi(p.format("#{pane_pid}"))
	return n
}

func (p *pane) dead() bool { return p.format("#{pane_dead}") == "1" }

// waitExit waits for the pane's command to end and returns its exit status.
func (p *pane) waitExit(timeout time.Duration) int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !p.dead() {
		if time.Now().After(deadline) {
			p.t.Fatalf("the command did not exit within %v; pane:\n%s", timeout, strings.Join(p.lines(), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, _ := strconv.Atoi(p.format("#{pane_dead_status}"))
	return n
}

func syscallKill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }

// processAlive reports whether the process exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
