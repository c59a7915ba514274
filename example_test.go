package dist_test

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/godist/dist"
)

// Functions that workers run are registered at package level, so every process of the
// binary knows them.
var double = dist.NewFunc("example.double", func(ctx context.Context, x int) (int, error) {
	return 2 * x, nil
})

func ExampleStart() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println("procs:", c.Procs(), "workers:", c.Workers(), "me:", c.MyID())
	// Output: procs: [1 2 3] workers: [2 3] me: 1
}

func ExampleFunc_Call() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	v, err := double.Call(ctx, c, 2, 21) // remotecall_fetch(double, 2, 21)
	fmt.Println(v, err)
	// Output: 42 <nil>
}

func ExampleFunc_Go() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	// remotecall on every worker, then fetch the futures.
	var futs []*dist.Future[int]
	for i, pid := range c.Workers() {
		futs = append(futs, double.Go(ctx, c, pid, i+1))
	}
	for _, f := range futs {
		v, err := f.Fetch(ctx)
		fmt.Println("from", f.Where(), v, err)
	}
	// Output:
	// from 2 2 <nil>
	// from 3 4 <nil>
}

func ExampleFunc_Everywhere() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ids, err := whoami.Everywhere(ctx, c, struct{}{})
	var pids []int
	for pid, id := range ids {
		if pid == id {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	fmt.Println(pids, err)
	// Output: [1 2 3] <nil>
}

func ExampleRemoteError() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, err = boom.Call(ctx, c, 2, "bad input")
	var re *dist.RemoteError
	if errors.As(err, &re) {
		fmt.Println("worker", re.Pid, "failed in", re.Func+":", re.Msg)
	}
	// The worker survives its panic.
	v, err := double.Call(ctx, c, 2, 5)
	fmt.Println(v, err)
	// Output:
	// worker 2 failed in test.boom: panic: bad input
	// 10 <nil>
}

// The Julia manual's jobs/results example: workers take jobs from one remote channel and put
// results on another.
var doWork = dist.NewFunc("example.dowork", func(ctx context.Context, chs [2]*dist.RemoteChannel[int]) (struct{}, error) {
	jobs, results := chs[0], chs[1]
	for job, err := range jobs.All(ctx) {
		if err != nil {
			return struct{}{}, err
		}
		if err := results.Put(ctx, job*10); err != nil {
			return struct{}{}, err
		}
	}
	return struct{}{}, nil
})

func ExampleRemoteChannel() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	const n = 12
	jobs, _ := dist.NewRemoteChannel[int](ctx, c, 1, 32)    // hosted by the driver
	results, _ := dist.NewRemoteChannel[int](ctx, c, 1, 32) // likewise
	for _, pid := range c.Workers() {
		doWork.Go(ctx, c, pid, [2]*dist.RemoteChannel[int]{jobs, results})
	}
	for i := 1; i <= n; i++ {
		jobs.Put(ctx, i)
	}
	jobs.Close(ctx) // workers finish when the jobs run out
	var got []int
	for range n {
		v, err := results.Take(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		got = append(got, v)
	}
	sort.Ints(got)
	fmt.Println(got)
	// Output: [10 20 30 40 50 60 70 80 90 100 110 120]
}

// A manager of one's own (a batch system, a container runtime) launches the driver's binary
// with the environment WorkerEnv makes: the worker marker, and the runtime's lazy return of
// freed memory unless the user's GODEBUG says otherwise.
func ExampleWorkerEnv() {
	for _, kv := range dist.WorkerEnv([]string{"HOME=/home/me", "GODEBUG=gctrace=1"}) {
		fmt.Println(kv)
	}
	// Output:
	// HOME=/home/me
	// GODEBUG=gctrace=1
	// GODIST_WORKER=1
	// GODEBUG=gctrace=1,madvdontneed=0
}

// Grid is a struct with arrays, as programs pass them: its numeric slices cross as raw
// bytes beside the struct's CBOR, not element by element.
type Grid struct {
	Name  string
	Shape [2]int
	Cells []float64
}

var smooth = dist.NewFunc("example.smooth", func(ctx context.Context, g Grid) (Grid, error) {
	out := make([]float64, len(g.Cells))
	for i := range g.Cells {
		lo, hi := max(i-1, 0), min(i+1, len(g.Cells)-1)
		out[i] = (g.Cells[lo] + g.Cells[i] + g.Cells[hi]) / 3
	}
	g.Name, g.Cells = g.Name+" (smoothed)", out
	return g, nil
})

// Structs with large numeric slices move as fast as the slices alone: between processes of a
// host, from 1 MiB on, through a shared-memory ring (see Cluster.Stats).
func ExampleFunc_Call_arraysInStructs() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	g := Grid{Name: "heat", Shape: [2]int{1024, 1024}, Cells: make([]float64, 1024*1024)}
	g.Cells[512*1024] = 3
	for range 2 { // the first 8 MiB array offers the connection's ring; the second uses it
		if g, err = smooth.Call(ctx, c, 2, g); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(g.Name, g.Shape, g.Cells[512*1024-1], g.Cells[512*1024], g.Cells[512*1024+2])
	// Output: heat (smoothed) (smoothed) [1024 1024] 0.6666666666666666 1 0.3333333333333333
}
