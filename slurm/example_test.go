package slurm_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/slurm"
)

var cube = dist.NewFunc("example.cube", func(ctx context.Context, x int) (int, error) {
	return x * x * x, nil
})

// A program run with sbatch (or inside salloc) gets its workers as steps of its own job; run
// anywhere else, it requests an allocation of 4 tasks for at most 30 minutes and releases it
// at Close. Its main must start with dist.Main(), as every godist program's. The example is
// compiled but not run by go test (it needs Slurm; the package's tests use the one set up by
// scripts/slurm.sh).
func Example() {
	ctx := context.Background()
	m := slurm.New(slurm.WithTimeLimit(30 * time.Minute))
	defer m.Close() // releases the allocation it requested, if any

	c, err := dist.Start(ctx, dist.WithManager(m), dist.WithWorkers(4))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	cubes, err := dist.Pmap(ctx, c, cube, []int{1, 2, 3, 4, 5, 6, 7, 8})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cubes)
}
