// Package progress shows the progress of dist.Pmap runs as bars on a terminal, drawn with
// github.com/vbauerster/mpb: one bar for the run's total and one per worker, showing the
// items each has finished. It is apart from package dist so that a program that shows no bars
// links none of the bar library:
//
//	out, err := dist.Pmap(ctx, c, f, in, dist.WithProgress(progress.Bars(os.Stderr)))
package progress

import (
	"fmt"
	"io"
	"sync"

	"github.com/godist/dist"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// Bars returns a dist.Progress that draws bars on w while each run goes on, when w is a
// terminal; otherwise (a file, a pipe, a buffer) it writes one summary line per run when the
// run is over, as dist.ProgressSummary does, so that logs stay readable. A run's End returns
// once its bars are drawn for the last time; when the run failed, a line naming the error
// follows them.
func Bars(w io.Writer) dist.Progress { return bars{w} }

type bars struct{ w io.Writer }

func (b bars) Begin(name string, total int) dist.ProgressRun {
	if !isTerminal(b.w) {
		return dist.ProgressSummary(b.w).Begin(name, total)
	}
	r := &barsRun{w: b.w, name: name, total: total, bars: make(map[int]*mpb.Bar)}
	// Auto refresh is asked for explicitly: mpb only detects terminals that are *os.File.
	r.p = mpb.New(mpb.WithOutput(b.w), mpb.WithWidth(40), mpb.WithAutoRefresh())
	r.bar = r.p.AddBar(int64(total),
		mpb.PrependDecorators(decor.Name("pmap "+name, decor.WCSyncSpaceR), decor.CountersNoUnit("%d / %d", decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Name(" "), decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO), "done")),
	)
	return r
}

// isTerminal reports whether w writes to a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// barsRun draws one run: a bar for the total, and one per worker in the order they first
// finished an item.
type barsRun struct {
	w     io.Writer
	name  string
	total int
	p     *mpb.Progress
	bar   *mpb.Bar

	mu    sync.Mutex
	bars  map[int]*mpb.Bar
	order []int
}

func (r *barsRun) Done(pid, n int) {
	r.mu.Lock()
	b := r.bars[pid]
	if b == nil {
		// A worker's bar shows its share of all the items.
		b = r.p.AddBar(int64(r.total),
			mpb.PrependDecorators(decor.Name(fmt.Sprintf("  worker %d", pid), decor.WCSyncSpaceR), decor.CurrentNoUnit("%d items", decor.WCSyncSpace)),
		)
		r.bars[pid] = b
		r.order = append(r.order, pid)
	}
	r.mu.Unlock()
	b.IncrBy(n)
	r.bar.IncrBy(n)
}

func (r *barsRun) End(err error) {
	r.mu.Lock()
	bs := make([]*mpb.Bar, 0, len(r.bars))
	for _, pid := range r.order {
		bs = append(bs, r.bars[pid])
	}
	r.mu.Unlock()
	for _, b := range bs {
		b.Abort(false) // ends the bar where it is: a share, not a completion
	}
	if err != nil {
		r.bar.Abort(false)
	} else {
		r.bar.SetTotal(-1, true)
	}
	r.p.Wait()
	if err != nil {
		// A progress report has no one to return its write error to.
		_, _ = fmt.Fprintf(r.w, "pmap %s: failed: %v\n", r.name, err)
	}
}
