package dist_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
)

// Functions every process of the test binary knows.
var (
	square = dist.NewFunc("test.square", func(ctx context.Context, x int) (int, error) { return x * x, nil })
	whoami = dist.NewFunc("test.whoami", func(ctx context.Context, _ struct{}) (int, error) {
		return dist.Current(ctx).MyID(), nil
	})
	procsOf = dist.NewFunc("test.procs", func(ctx context.Context, _ struct{}) ([]int, error) {
		return dist.Current(ctx).Procs(), nil
	})
	boom  = dist.NewFunc("test.boom", func(ctx context.Context, msg string) (int, error) { panic(msg) })
	fail  = dist.NewFunc("test.fail", func(ctx context.Context, msg string) (int, error) { return 0, errors.New(msg) })
	sleep = dist.NewFunc("test.sleep", func(ctx context.Context, d time.Duration) (string, error) {
		select {
		case <-time.After(d):
			return "slept", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	sumF64 = dist.NewFunc("test.sumf64", func(ctx context.Context, xs []float64) (float64, error) {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s, nil
	})
	makeF64 = dist.NewFunc("test.makef64", func(ctx context.Context, n int) ([]float64, error) {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(i)
		}
		return xs, nil
	})
	// relay calls square on another worker: worker↔worker traffic.
	relay = dist.NewFunc("test.relay", func(ctx context.Context, a [2]int) (int, error) {
		return square.Call(ctx, dist.Current(ctx), a[0], a[1])
	})
	echoLine = dist.NewFunc("test.print", func(ctx context.Context, s string) (struct{}, error) {
		println(s) // stderr
		os.Stdout.WriteString(s + "\n")
		return struct{}{}, nil
	})
)

var (
	// waitCancel arrives at started, then waits for its context to end.
	waitCancel = dist.NewFunc("test.waitcancel", func(ctx context.Context, started *disttest.Barrier) (struct{}, error) {
		// The test may cancel as soon as the arrival is recorded, before Arrive returns here:
		// a cancellation during Arrive is counted below like any other.
		if err := started.Arrive(ctx); err != nil && ctx.Err() == nil {
			return struct{}{}, err
		}
		select {
		case <-ctx.Done():
			cancelSeenMu.Lock()
			cancelSeenN++
			cancelSeenMu.Unlock()
			return struct{}{}, ctx.Err()
		case <-time.After(20 * time.Second):
			return struct{}{}, nil
		}
	})
	// doWaitOnDriver sends a one-way waitCancel to the driver and returns.
	doWaitOnDriver = dist.NewFunc("test.dowaitondriver", func(ctx context.Context, started *disttest.Barrier) (struct{}, error) {
		return struct{}{}, waitCancel.Do(ctx, dist.Current(ctx), 1, started)
	})
	godebugOf = dist.NewFunc("test.godebug", func(ctx context.Context, _ struct{}) (string, error) {
		return os.Getenv("GODEBUG"), nil
	})
	cancelCount = dist.NewFunc("test.cancelcount", func(ctx context.Context, _ struct{}) (int, error) {
		cancelSeenMu.Lock()
		defer cancelSeenMu.Unlock()
		return cancelSeenN, nil
	})
	kib = dist.NewFunc("test.kib", func(ctx context.Context, i int) ([]byte, error) {
		b := make([]byte, 1024)
		b[0] = byte(i)
		return b, nil
	})
	stats = dist.NewFunc("test.stats", func(ctx context.Context, gc bool) (dist.Stats, error) {
		if gc {
			runtime.GC()
			runtime.GC()
		}
		return dist.Current(ctx).Stats(), nil
	})
	fetchFuture = dist.NewFunc("test.fetchfuture", func(ctx context.Context, f *dist.Future[int]) (int, error) {
		return f.Fetch(ctx)
	})
	// readiness asks whether a received future is ready: first without the network (Ready),
	// then the owner under a context that has ended, then under ctx (until it says yes, if
	// q.Poll), then Ready again.
	readiness = dist.NewFunc("test.readiness", func(ctx context.Context, q readinessQuery) (futureReadiness, error) {
		var r futureReadiness
		r.Before = q.F.Ready()
		ended, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := q.F.ReadyCtx(ended); err != nil {
			r.EndedErr = err.Error()
		}
		for {
			var err error
			if r.Asked, err = q.F.ReadyCtx(ctx); err != nil || r.Asked || !q.Poll {
				r.After = q.F.Ready()
				return r, err
			}
			time.Sleep(time.Millisecond)
		}
	})
	// worker pulls jobs from one remote channel and puts results on another, as in the
	// manual's example.
	jobWorker = dist.NewFunc("test.jobworker", func(ctx context.Context, chs [2]*dist.RemoteChannel[int]) (int, error) {
		done := 0
		for job, err := range chs[0].All(ctx) {
			if err != nil {
				return done, err
			}
			if err := chs[1].Put(ctx, job*job); err != nil {
				return done, err
			}
			done++
		}
		return done, nil
	})
)

// readinessQuery is readiness's argument.
type readinessQuery struct {
	F    *dist.Future[string]
	Poll bool
}

// futureReadiness is what readiness saw.
type futureReadiness struct {
	Before, Asked, After bool
	EndedErr             string
}

var (
	cancelSeenMu sync.Mutex
	cancelSeenN  int
)
