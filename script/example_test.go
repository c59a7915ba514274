package script_test

import (
	"context"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"

	"github.com/godist/dist"
	"github.com/godist/dist/script"
)

// The map-reduce example of ClusterUtils' README: add together 3 vectors of 5 squared uniform
// random numbers, each computed on a worker (reduce(+, values(reap(pids, :(rand(5).^2))))).
// Each worker seeds its generator with its pid, so that the output is reproducible.
func Example_mapReduce() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(3))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	pids := []int{2, 3, 4}
	vecs, err := script.Reap(ctx, c, pids, `func() []float64 {
		r := rand.New(rand.NewSource(int64(myid())))
		v := make([]float64, 5)
		for i := range v {
			x := r.Float64()
			v[i] = x * x
		}
		return v
	}()`)
	if err != nil {
		log.Fatal(err)
	}
	sum := make([]float64, 5)
	for _, v := range vecs {
		for i, x := range v.([]float64) {
			sum[i] += x
		}
	}
	for _, x := range sum {
		fmt.Printf("%.5f\n", x)
	}
	// Output:
	// 0.60559
	// 0.50661
	// 1.00876
	// 1.50241
	// 1.28672
}

// Sow a value computed on each worker, then reap it back by pid; Stitch concatenates in pid
// order.
func ExampleSow() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(3))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	pids := c.Workers()

	// sow([2,3,4], :morebob, :(100 + myid()))
	if err := script.Sow(ctx, c, pids, "morebob", "100 + myid()"); err != nil {
		log.Fatal(err)
	}
	got, err := script.Reap(ctx, c, pids, "morebob")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got)

	// Assign into part of an existing value: the first two rows of a 4×4 matrix.
	script.Sow(ctx, c, pids, "bar", "[][]float64{{1, 1, 1, 1}, {2, 2, 2, 2}, {3, 3, 3, 3}, {4, 4, 4, 4}}")
	if err := script.Sow(ctx, c, pids, "bar[0:2]", "0"); err != nil {
		log.Fatal(err)
	}
	bar, _ := script.EvalAt(ctx, c, 2, "bar")
	fmt.Println(bar)

	x, err := script.Stitch(ctx, c, pids, "[]int{myid(), myid() * myid()}")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(x)
	// Output:
	// map[2:102 3:103 4:104]
	// [[0 0 0 0] [0 0 0 0] [3 3 3 3] [4 4 4 4]]
	// [2 4 3 9 4 16]
}

// An error in interpreted code names the process and the position; the worker lives on.
func ExampleEval() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	script.Eval(ctx, c, []int{2}, "x := 1")
	_, err = script.Eval(ctx, c, []int{2}, "y := 2\nz := x + \"one\"")
	fmt.Println(err)
	v, _ := script.EvalAt(ctx, c, 2, "math.Sqrt(float64(x + 3))")
	fmt.Println(v, math.Sqrt(4))
	// Output:
	// script: pid 2: 2:6: invalid operation: mismatched types int and untyped string
	// 2 2
}

// Load a Go program into every namespace and run its main on the driver, as godist run does:
// main reaches the workers with the builtins reap and sow.
func ExampleLoadFile() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(2))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "squares.go")
	src := `package main

func square(x int) int { return x * x }

var total int

func main() {
	sow(workers(), "n", "square(myid())")
	for _, n := range reap(workers(), "n") {
		total += n.(int)
	}
}
`
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		log.Fatal(err)
	}
	hasMain, err := script.LoadFile(ctx, c, c.Procs(), file)
	if err != nil || !hasMain {
		log.Fatal(hasMain, err)
	}
	if _, err := script.EvalLocal(ctx, script.MainName+"()"); err != nil {
		log.Fatal(err)
	}
	total, err := script.EvalLocal(ctx, "total")
	fmt.Println(total, err)
	// Output: 13 <nil>
}
