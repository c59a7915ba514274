package elastic_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/elastic"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A driver accepts a worker that was started by something else: here a shell command, in a
// container the same binary with the driver's address and the cookie in its environment.
func Example() {
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(0))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ln, err := elastic.Listen(ctx, c, "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()

	// The worker: this binary, whose TestMain calls elastic.Serve(ctx, addr) when told to.
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), envAddr+"="+ln.Addr(), dist.EnvCookie+"="+c.Cookie())
	if err := cmd.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		c.Close() // asks the worker to exit
		cmd.Wait()
	}()

	for c.NWorkers() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	pid := c.Workers()[0]
	id, err := whoami.Call(ctx, c, pid, struct{}{})
	fmt.Println(id == pid, err)
	// Output: true <nil>
}
