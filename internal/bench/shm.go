package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/shm"
)

// The worker side of shm.fetch_mb_per_s: an array the worker made and filled, held until
// dropped.
var (
	shmHeldMu sync.Mutex
	shmHeld   *shm.SharedArray[float64]

	shmMake = dist.NewFunc("bench.shm.make", func(ctx context.Context, n int) (struct{}, error) {
		c := dist.Current(ctx)
		s, err := shm.NewSharedArray[float64](ctx, c, []int{n}, shm.WithPids(c.MyID()))
		if err != nil {
			return struct{}{}, err
		}
		d := s.Data()
		for i := range d {
			d[i] = float64(i)
		}
		shmHeldMu.Lock()
		shmHeld = s
		shmHeldMu.Unlock()
		return struct{}{}, nil
	})
	shmGet = dist.NewFunc("bench.shm.get", func(ctx context.Context, _ struct{}) (*shm.SharedArray[float64], error) {
		shmHeldMu.Lock()
		defer shmHeldMu.Unlock()
		if shmHeld == nil {
			return nil, fmt.Errorf("no array made")
		}
		return shmHeld, nil
	})
	shmDrop = dist.NewFunc("bench.shm.drop", func(ctx context.Context, _ struct{}) (struct{}, error) {
		shmHeldMu.Lock()
		if shmHeld != nil {
			shmHeld.Release()
			shmHeld = nil
		}
		shmHeldMu.Unlock()
		return struct{}{}, nil
	})
)

// sum reads every element, with four accumulators so that the loop is bound by memory, not by
// the latency of one chain of additions.
func sum(xs []float64) float64 {
	var a, b, c, d float64
	i := 0
	for ; i+4 <= len(xs); i += 4 {
		a += xs[i]
		b += xs[i+1]
		c += xs[i+2]
		d += xs[i+3]
	}
	for ; i < len(xs); i++ {
		a += xs[i]
	}
	return a + b + c + d
}

// ShmFigures measures shm.create_256mib_ms (a 256 MiB SharedArray made and released by the
// driver) and shm.fetch_mb_per_s: worker 2 makes and fills a 256 MiB SharedArray; each round
// the driver gets the handle by a call, maps it and reads every element, then releases it, so
// that every round pays the descriptor passing, the mapping and its page faults. Compared with
// raw.memcpy_mb_per_s (fetch.mb_per_s is the same data copied over the socket).
func ShmFigures(ctx context.Context, c *dist.Cluster, quick bool, emit func(name string, value float64, unit, baseline string)) error {
	size, reps := 256<<20, 5
	if quick {
		size, reps = 32<<20, 2
	}
	n := size / 8
	var times []float64
	for range reps {
		t := time.Now()
		s, err := shm.NewSharedArray[float64](ctx, c, []int{n}, shm.WithPids(c.MyID()))
		if err != nil {
			return err
		}
		times = append(times, float64(time.Since(t).Microseconds())/1e3)
		s.Release()
	}
	sort.Float64s(times)
	emit("shm.create_256mib_ms", times[len(times)/2], "ms", "")

	if _, err := shmMake.Call(ctx, c, 2, n); err != nil {
		return err
	}
	defer shmDrop.Call(context.WithoutCancel(ctx), c, 2, struct{}{})
	want := float64(n) * float64(n-1) / 2
	best := 0.0
	for range reps {
		t := time.Now()
		s, err := shmGet.Call(ctx, c, 2, struct{}{})
		if err != nil {
			return err
		}
		got := sum(s.Data())
		el := time.Since(t)
		s.Release()
		if got != want {
			return fmt.Errorf("read a sum of %g through the shared array, want %g", got, want)
		}
		best = math.Max(best, float64(size)/el.Seconds()/1e6)
	}
	emit("shm.fetch_mb_per_s", best, "MB/s", "raw.memcpy_mb_per_s")
	return nil
}
