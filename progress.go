package dist

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Progress shows how runs of Pmap advance (WithProgress). The root package only calls it;
// the drawing lives elsewhere, so that a program without progress bars links no bar library
// (package progress has bars for a terminal, backed by github.com/vbauerster/mpb). A Progress
// may be given to several runs, one after another or at once.
type Progress interface {
	// Begin is called when a run starts, with the name of its function and its number of
	// items, and returns what follows that run. It is called before any item is handed out.
	Begin(name string, total int) ProgressRun
}

// ProgressRun follows one run of Pmap.
type ProgressRun interface {
	// Done counts n more items finished by pid (this process's pid for items run here). It
	// is called from many goroutines at once, and must return quickly: it holds up a batch.
	Done(pid, n int)
	// End is called once, when the run is over, with its error or nil; Pmap returns after
	// End does, so End should return once its output is written.
	End(err error)
}

// ProgressSummary returns a Progress that writes one line on w when each run is over, so
// that logs stay readable: "pmap NAME: DONE/TOTAL items in ELAPSED (items by pid: PID:N …)",
// followed by ": failed: ERROR" if the run failed. Writes to w from different runs are not
// serialised.
func ProgressSummary(w io.Writer) Progress { return progressSummary{w} }

type progressSummary struct{ w io.Writer }

func (p progressSummary) Begin(name string, total int) ProgressRun {
	return &summaryRun{w: p.w, name: name, total: total, start: time.Now(), by: make(map[int]int)}
}

// summaryRun counts a run's items by pid for its summary line.
type summaryRun struct {
	w     io.Writer
	name  string
	total int
	start time.Time

	mu sync.Mutex
	by map[int]int // items done by pid
}

func (r *summaryRun) Done(pid, n int) {
	r.mu.Lock()
	r.by[pid] += n
	r.mu.Unlock()
}

func (r *summaryRun) End(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	done := 0
	pids := make([]int, 0, len(r.by))
	for pid, n := range r.by {
		done += n
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	var sb strings.Builder
	fmt.Fprintf(&sb, "pmap %s: %d/%d items in %s", r.name, done, r.total, time.Since(r.start).Round(time.Millisecond))
	if len(pids) > 0 {
		sb.WriteString(" (items by pid:")
		for _, pid := range pids {
			fmt.Fprintf(&sb, " %d:%d", pid, r.by[pid])
		}
		sb.WriteString(")")
	}
	if err != nil {
		fmt.Fprintf(&sb, ": failed: %v", err)
	}
	sb.WriteString("\n")
	// A progress report has no one to return its write error to.
	_, _ = io.WriteString(r.w, sb.String())
}
