// Package jobs is the Julia manual's jobs/results example: workers take jobs from one remote
// channel and put results on another, until the jobs channel is closed.
package jobs

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/godist/dist"
)

// Result is what a worker reports for one job.
type Result struct {
	Job     int
	Seconds float64
	Pid     int
}

// DoWork takes jobs until the jobs channel is closed and drained, simulating each by sleeping
// job milliseconds, and puts a Result for each. It returns the number of jobs it did.
var DoWork = dist.NewFunc("examples/jobs.dowork", func(ctx context.Context, chs Channels) (int, error) {
	me := dist.Current(ctx).MyID()
	n := 0
	for job, err := range chs.Jobs.All(ctx) {
		if err != nil {
			return n, err
		}
		t := time.Now()
		select {
		case <-time.After(time.Duration(job) * time.Millisecond):
		case <-ctx.Done():
			return n, ctx.Err()
		}
		if err := chs.Results.Put(ctx, Result{Job: job, Seconds: time.Since(t).Seconds(), Pid: me}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
})

// Channels is the argument of DoWork.
type Channels struct {
	Jobs    *dist.RemoteChannel[int]
	Results *dist.RemoteChannel[Result]
}

// Run makes -n jobs, lets every worker take them, and prints each result as it arrives.
func Run(ctx context.Context, c *dist.Cluster, w io.Writer, args []string) error {
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	n := fs.Int("n", 12, "number of jobs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	jobs, err := dist.NewRemoteChannel[int](ctx, c, c.MyID(), 32)
	if err != nil {
		return err
	}
	results, err := dist.NewRemoteChannel[Result](ctx, c, c.MyID(), 32)
	if err != nil {
		return err
	}
	var workers []*dist.Future[int]
	for _, pid := range c.Workers() {
		workers = append(workers, DoWork.Go(ctx, c, pid, Channels{Jobs: jobs, Results: results}))
	}
	go func() {
		for i := 1; i <= *n; i++ {
			jobs.Put(ctx, 10+(i*37)%90) // a job is a duration in ms
		}
		jobs.Close(ctx)
	}()
	for range *n {
		r, err := results.Take(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "job of %d ms done on worker %d in %.3f s\n", r.Job, r.Pid, r.Seconds)
	}
	for _, f := range workers {
		if err := f.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}
