// Package lines forwards the output of a worker process that is starting. A worker may print
// before it has joined the cluster (a package's init runs before dist.Main prints the
// handshake), when its pid is not known yet: such lines are kept, up to a bound, and
// forwarded labelled with the pid once it is. The readers of the worker's output never wait
// for the join, since the reader of its stdout is also the one that must see the handshake.
// Managers that start workers (dist's StartCmd, package ssh) share it.
package lines

import (
	"fmt"
	"strings"
	"sync"
)

// MaxPending bounds the lines kept from a worker that has not joined yet; later ones are
// counted, and the count is shown instead.
const MaxPending = 1000

// Forwarder holds a worker's label and where its lines go. The zero value keeps every line
// until Join. Its methods are safe for concurrent use.
type Forwarder struct {
	mu      sync.Mutex
	label   string
	joined  bool     // Join was called: lines go out as they come
	pending []string // lines before that
	dropped int      // lines beyond MaxPending
	out     func(label, line string)
}

// SetLabel sets the label of the lines until Join gives the pid (an OS pid, a host), and
// after it if the worker never joined.
func (f *Forwarder) SetLabel(label string) {
	f.mu.Lock()
	f.label = label
	f.mu.Unlock()
}

// SetOutput sets where lines go; lines that arrive while it is nil are dropped.
func (f *Forwarder) SetOutput(out func(label, line string)) {
	f.mu.Lock()
	f.out = out
	f.mu.Unlock()
}

// Line forwards one line, or keeps it until Join. It never blocks on the join.
func (f *Forwarder) Line(line string) {
	f.mu.Lock()
	defer f.mu.Unlock() // held while forwarding, so that kept lines go out first and in order
	if !f.joined {
		if len(f.pending) < MaxPending {
			f.pending = append(f.pending, line)
		} else {
			f.dropped++
		}
		return
	}
	if f.out != nil {
		f.out(f.label, line)
	}
}

// Join says that the worker joined as pid, or with pid 0 that it never will (its lines keep
// the label they had), and forwards the lines kept until now. Later calls only relabel.
func (f *Forwarder) Join(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pid > 0 {
		f.label = fmt.Sprintf("From worker %d", pid)
	}
	if f.joined {
		return
	}
	f.joined = true
	pending, dropped := f.pending, f.dropped
	f.pending, f.dropped = nil, 0
	if f.out == nil {
		return
	}
	for _, l := range pending {
		f.out(f.label, l)
	}
	if dropped > 0 {
		f.out(f.label, fmt.Sprintf("(%d more lines printed before the worker joined were dropped)", dropped))
	}
}

// Tail keeps the last lines a process printed, for error messages. Its zero value is ready
// to use and it is safe for concurrent use.
type Tail struct {
	mu    sync.Mutex
	lines []string
}

// tailLines is how many lines a Tail keeps.
const tailLines = 5

// Add records line, forgetting the oldest beyond the last few.
func (t *Tail) Add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > tailLines {
		t.lines = t.lines[1:]
	}
}

// Join returns the kept lines, oldest first, joined by sep.
func (t *Tail) Join(sep string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, sep)
}
