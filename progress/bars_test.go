package progress_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/progress"
	"golang.org/x/sys/unix"
)

var square = dist.NewFunc("progress_test.square", func(_ context.Context, x int) (int, error) { return x * x, nil })

func ExampleBars() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	in := make([]int, 1000)
	for i := range in {
		in[i] = i
	}
	// Bars on a terminal; a summary line when stderr is a file or a pipe.
	out, err := dist.Pmap(ctx, c, square, in, dist.WithProgress(progress.Bars(os.Stderr)))
	fmt.Println(len(out), err)
}

func TestBarsSummaryOffTerminal(t *testing.T) {
	var buf bytes.Buffer
	r := progress.Bars(&buf).Begin("f", 3)
	r.Done(2, 2)
	r.Done(1, 1)
	r.End(nil)
	line := buf.String()
	if !strings.HasPrefix(line, "pmap f: 3/3 items in ") || !strings.HasSuffix(line, " (items by pid: 1:1 2:2)\n") || strings.Contains(line, "\x1b") {
		t.Fatalf("summary %q", line)
	}
}

func TestBarsOnTerminal(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want []string
	}{
		{"done", nil, []string{"pmap sq", "30 / 30", "worker 2", "worker 3"}},
		{"failed", errors.New("boom"), []string{"pmap sq", "worker 2", "pmap sq: failed: boom"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := onTerminal(t, func(term *os.File) {
				r := progress.Bars(term).Begin("sq", 30)
				r.Done(2, 10)
				if c.err == nil {
					r.Done(3, 20)
				}
				r.End(c.err)
			})
			for _, want := range c.want {
				if !strings.Contains(out, want) {
					t.Fatalf("terminal output lacks %q:\n%q", want, out)
				}
			}
		})
	}
}

// onTerminal runs draw with a pseudo-terminal and returns what was written to it.
func onTerminal(t *testing.T, draw func(term *os.File)) string {
	t.Helper()
	master, slave, err := openPty()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	var term bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			term.Write(b[:n])
			if err != nil {
				return
			}
		}
	}()
	draw(slave)
	slave.Close()
	// After the slave closes, reads fail once the output is drained; the deadline only
	// bounds a terminal that would never report it.
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-read
	return term.String()
}

// openPty opens a pseudo-terminal pair.
func openPty() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	// A new pseudo-terminal is 0×0 characters, where bars have no room.
	if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 100}); err != nil {
		m.Close()
		return nil, nil, err
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

// TestDistLinksNoBars checks the reason this package exists: a program that imports dist
// but not progress links none of the bar library.
func TestDistLinksNoBars(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no go command: %v", err)
		}
		t.Skipf("no go command: %v", err)
	}
	deps := func(pkg string) []string {
		out, err := exec.Command(goTool, "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	const mpb = "github.com/vbauerster/mpb"
	hasMpb := func(pkgs []string) bool {
		for _, p := range pkgs {
			if strings.HasPrefix(p, mpb) {
				return true
			}
		}
		return false
	}
	if !hasMpb(deps("github.com/godist/dist/progress")) {
		t.Fatalf("go list -deps of progress lacks %s: the check below would prove nothing", mpb)
	}
	if pkgs := deps("github.com/godist/dist"); hasMpb(pkgs) {
		t.Fatalf("package dist links %s:\n%s", mpb, strings.Join(pkgs, "\n"))
	}
}
