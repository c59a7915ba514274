package dist_test

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/godist/dist"
)

// Functions every process of the test binary knows.
var (
	square = dist.NewFunc("test.square", func(ctx context.Context, x int) (int, error) { return x * x, nil })
	whoami = dist.NewFunc("test.whoami", func(ctx context.Context, _ struct{}) (int, error) {
		return dist.Current(ctx).MyID(), nil
	})
	osPid = dist.NewFunc("test.ospid", func(ctx context.Context, _ struct{}) (int, error) { return os.Getpid(), nil })
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
