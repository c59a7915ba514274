package lines_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/godist/dist/internal/lines"
)

func Example() {
	var f lines.Forwarder
	f.SetLabel("From worker (os pid 4242)")
	f.SetOutput(func(label, line string) { fmt.Printf("%s: %s\n", label, line) })
	f.Line("printed in a package's init") // kept: the worker has no pid yet
	f.Join(2)
	f.Line("printed by a remote call")
	// Output:
	// From worker 2: printed in a package's init
	// From worker 2: printed by a remote call
}

type sink struct {
	mu  sync.Mutex
	got []string
}

func (s *sink) out(label, line string) {
	s.mu.Lock()
	s.got = append(s.got, label+": "+line)
	s.mu.Unlock()
}

func TestKeptUntilJoin(t *testing.T) {
	var s sink
	var f lines.Forwarder
	f.SetLabel("os pid 7")
	f.SetOutput(s.out)
	for i := range lines.MaxPending + 3 {
		f.Line(fmt.Sprint(i))
	}
	if len(s.got) != 0 {
		t.Fatalf("forwarded before the join: %v", s.got)
	}
	f.Join(5)
	f.Line("after")
	if len(s.got) != lines.MaxPending+2 {
		t.Fatalf("%d lines forwarded", len(s.got))
	}
	for i, l := range s.got[:lines.MaxPending] {
		if l != fmt.Sprintf("From worker 5: %d", i) {
			t.Fatalf("line %d: %q", i, l)
		}
	}
	if l := s.got[lines.MaxPending]; !strings.Contains(l, "3 more lines") {
		t.Fatalf("drop note: %q", l)
	}
	if l := s.got[lines.MaxPending+1]; l != "From worker 5: after" {
		t.Fatalf("last: %q", l)
	}
}

func TestNeverJoined(t *testing.T) {
	var s sink
	var f lines.Forwarder
	f.SetLabel("From worker h1 (pid 9 there)")
	f.Line("before")
	f.SetOutput(s.out) // the cluster sets it after the launch
	f.Join(0)
	f.Line("after")
	want := []string{"From worker h1 (pid 9 there): before", "From worker h1 (pid 9 there): after"}
	if !slices.Equal(s.got, want) {
		t.Fatalf("got %q", s.got)
	}
	// Without an output, lines go nowhere and nothing blocks.
	var g lines.Forwarder
	g.Line("x")
	g.Join(3)
	g.Line("y")
}

func TestTailKeepsTheLastLines(t *testing.T) {
	var tail lines.Tail
	if got := tail.Join("|"); got != "" {
		t.Fatalf("empty tail joined to %q", got)
	}
	for _, l := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		tail.Add(l)
	}
	if got := tail.Join("|"); got != "c|d|e|f|g" {
		t.Fatalf("tail = %q, want the last five lines", got)
	}
}
