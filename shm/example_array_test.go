package shm_test

import (
	"context"
	"fmt"
	"log"

	"github.com/godist/dist"
	"github.com/godist/dist/shm"
)

// initWithPid fills the caller's share of the array with its pid: an init function for
// NewSharedArray, registered so that workers have it.
var initWithPid = dist.NewFunc("example.initWithPid", func(ctx context.Context, s *shm.SharedArray[int64]) (struct{}, error) {
	s.Fill(int64(dist.Current(ctx).MyID()), s.LocalIndices())
	return struct{}{}, nil
})

// scale multiplies the array it is given in place: the array arrives as the same memory.
var scale = dist.NewFunc("example.scale", func(ctx context.Context, s *shm.SharedArray[int64]) (struct{}, error) {
	for i, v := range s.Data() {
		s.Data()[i] = 10 * v
	}
	return struct{}{}, nil
})

// The Julia manual's SharedArray example: three workers initialise a 3×4 array in parallel,
// each over its local indices; the driver writes one element, and a worker scales it all in
// place.
func ExampleNewSharedArray() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(3))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s, err := shm.NewSharedArray[int64](ctx, c, []int{3, 4}, shm.WithInit(initWithPid))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Release()
	s.Set(7, 2, 1) // S[3,2] = 7 in Julia's 1-based indexing
	fmt.Println(s.Data())
	fmt.Println(s.Procs(), s.LocalIndicesOf(3))

	if _, err := scale.Call(ctx, c, 2, s); err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.At(2, 1), s.At(0, 0))
	// Output:
	// [2 2 2 2 3 7 3 3 4 4 4 4]
	// [2 3 4] 4:8
	// 70 20
}

// BroadcastShared binds one copy of a value per host under a name; every process of the host
// finds it with LookupArray.
func ExampleBroadcastShared() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	topo, err := shm.DescribePids(ctx, c, shm.Query{Select: shm.All})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(topo)
	arrs, err := shm.BroadcastShared(ctx, c, topo, []float32{1, 2, 3, 4}, []int{2, 2}, "foo")
	if err != nil {
		log.Fatal(err)
	}
	defer shm.UnbindShared(ctx, c, topo, "foo")
	defer arrs[1].Release()
	rows, err := firstRow.Call(ctx, c, 2, "foo")
	fmt.Println(rows, err)
	// Output:
	// map[1:[1 2 3]]
	// [1 3] <nil>
}

var firstRow = dist.NewFunc("example.firstRow", func(ctx context.Context, name string) ([]float32, error) {
	a, err := shm.LookupArray[float32](name)
	if err != nil {
		return nil, err
	}
	return []float32{a.At(0, 0), a.At(0, 1)}, nil
})

// square runs in a child process of Fork.
var square = dist.NewFunc("example.square", func(ctx context.Context, i int) (int, error) {
	a, err := shm.LookupArray[int64]("out")
	if err != nil {
		return 0, err
	}
	a.Data()[i] = int64(i * i)
	return i * i, nil
})

// Fork runs a registered function in child processes that write into the caller's bound
// arrays.
func ExampleFork() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(0))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	out, err := shm.NewSharedArray[int64](ctx, c, []int{4})
	if err != nil {
		log.Fatal(err)
	}
	defer out.Release()
	shm.Bind("out", out.Array)
	defer shm.Unbind("out")

	res, err := shm.Fork(ctx, 4, square)
	fmt.Println(res, err, out.Data())
	// Output:
	// [0 1 4 9] <nil> [0 1 4 9]
}

// stripe writes the task's pid into every ntasks-th element of svar1 from offset, and counts
// its calls in the task's own storage.
var stripe = dist.NewFunc("example.stripe", func(ctx context.Context, args []int) (int, error) {
	t := shm.CurrentTask(ctx)
	svar1, err := shm.TaskArray[int32](t, "svar1")
	if err != nil {
		return 0, err
	}
	offset, ntasks := args[0], args[1]
	d := svar1.Data()
	for x := offset; x < len(d); x += ntasks {
		d[x] = int32(dist.Current(ctx).MyID())
	}
	calls, _ := t.Store["calls"].(int)
	t.Store["calls"] = calls + 1
	return calls + 1, nil
})

// PTools' server-task example: a segment shared by one task per worker and the caller, and a
// call of every task with element i of each list.
func ExampleStartTasks() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h, err := shm.StartTasks(ctx, c, shm.Seg[int32]("svar1", 8), shm.Seg[uint8]("svar2", 10, 10))
	if err != nil {
		log.Fatal(err)
	}
	defer h.Stop(ctx)
	n := h.Count()
	offsets, counts := []int{0, 1}, []int{n, n}
	shm.PmapTasks(ctx, h, stripe, offsets, counts)
	calls, err := shm.PmapTasks(ctx, h, stripe, offsets, counts)
	svar1, _ := shm.As[int32](h.Array("svar1"))
	fmt.Println(n, calls, err, svar1.Data())
	// Output:
	// 2 [2 2] <nil> [2 3 2 3 2 3 2 3]
}
