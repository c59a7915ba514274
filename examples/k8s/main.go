// Command k8s is the program of the Kubernetes example (see README.md): one image, two roles,
// as with ClusterManagers.jl's ElasticManager, where workers started by something else connect
// to a listening driver. With GODIST_DRIVER set it is an elastic worker that joins the driver at
// that address; otherwise it is the driver, which accepts workers on GODIST_LISTEN, waits for
// WORKERS of them, and sums the squares of 1..N over them with Pmap.
//
// Environment (defaults in brackets):
//
//	GODIST_DRIVER            worker: the driver's host:port (a Service name in the manifest)
//	GODIST_CONNECT_TIMEOUT   worker: how long to retry the driver [10m]; a lost driver is a clean exit
//	GODIST_LISTEN            driver: the address workers connect to [:9009]
//	WORKERS, N               driver: workers to wait for [2], squares to sum [1000]
//	GODIST_WAIT              driver: how long to wait for them [5m]
//	GODIST_COOKIE_FILE       both: the cluster cookie (or GODIST_COOKIE), the same for all pods
//
// The manifest (k8s.yaml) has not been run on Kubernetes; the program is tested as a driver and
// two worker processes over loopback (main_test.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/elastic"
)

var square = dist.NewFunc("examples/k8s.square", func(ctx context.Context, x int) (int, error) {
	return x * x, nil
})

func main() {
	dist.Main()
	// A pod being stopped gets SIGTERM: leave cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if addr := os.Getenv("GODIST_DRIVER"); addr != "" {
		if err := worker(ctx, addr); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := driver(ctx); err != nil {
		log.Fatal(err)
	}
}

// worker serves one driver. Losing it is a normal end: the pod restarts and waits for the
// next one.
func worker(ctx context.Context, addr string) error {
	timeout := envDuration("GODIST_CONNECT_TIMEOUT", 10*time.Minute)
	err := elastic.Serve(ctx, addr, elastic.WithConnectTimeout(timeout))
	if err == nil || errors.Is(err, dist.ErrDriverLost) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func driver(ctx context.Context) error {
	listen := envString("GODIST_LISTEN", ":9009")
	want := envInt("WORKERS", 2)
	n := envInt("N", 1000)
	c, err := dist.Start(ctx, dist.WithWorkers(0)) // cookie from GODIST_COOKIE or GODIST_COOKIE_FILE
	if err != nil {
		return err
	}
	defer c.Close()
	ln, err := elastic.Listen(ctx, c, listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("driver listening on %s, waiting for %d workers\n", ln.Addr(), want)
	wait, cancel := context.WithTimeout(ctx, envDuration("GODIST_WAIT", 5*time.Minute))
	defer cancel()
	for c.NWorkers() < want {
		select {
		case <-wait.Done():
			return fmt.Errorf("only %d of %d workers joined: %w", c.NWorkers(), want, wait.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	in := make([]int, n)
	for i := range in {
		in[i] = i + 1
	}
	out, err := dist.Pmap(ctx, c, square, in)
	if err != nil {
		return err
	}
	sum := 0
	for _, v := range out {
		sum += v
	}
	fmt.Printf("sum of squares 1..%d = %d on %d workers\n", n, sum, c.NWorkers())
	return nil
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
