package mpi_test

import (
	"context"
	"fmt"
	"log"

	"github.com/godist/dist"
	"github.com/godist/dist/mpi"
)

var double = dist.NewFunc("example.double", func(ctx context.Context, x float64) (float64, error) {
	return 2 * x, nil
})

// The main of a program run as `mpirun -np 8 ./prog`: rank 0 gets a cluster of all 8 ranks,
// the other ranks serve inside mpi.Start until rank 0 closes the cluster, then exit. The
// example is compiled but not run by go test (it needs mpirun; the package's tests start real
// mpirun launches).
func Example() {
	// dist.Main() is the first line of main().
	ctx := context.Background()
	c, err := mpi.Start(ctx)
	if err != nil {
		log.Fatal(err) // not under mpirun, or the ranks could not meet
	}
	defer c.Close()

	ranks, err := mpi.Ranks(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rank of each pid:", ranks)
	out, err := dist.Pmap(ctx, c, double, []float64{1, 2, 3, 4})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out)
}
