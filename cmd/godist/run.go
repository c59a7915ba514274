package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/godist/dist"
	"github.com/godist/dist/examples/jobs"
	"github.com/godist/dist/examples/pi"
	"github.com/godist/dist/examples/sweep"
)

// examples are the programs `godist run` knows, by name; "examples/NAME" works too.
var examples = map[string]func(context.Context, *dist.Cluster, io.Writer, []string) error{
	"pi":    pi.Run,
	"jobs":  jobs.Run,
	"sweep": sweep.Run,
}

func exampleNames() string {
	var names []string
	for n := range examples {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func runExample(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	procs := fs.Int("p", 0, "number of local workers (default: number of CPUs)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "godist run: name an example:", exampleNames())
		return 2
	}
	name := path.Base(strings.TrimSuffix(fs.Arg(0), "/"))
	ex, ok := examples[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "godist run: no example %q (have: %s)\n", fs.Arg(0), exampleNames())
		return 2
	}
	var opts []dist.Option
	if *procs > 0 {
		opts = append(opts, dist.WithWorkers(*procs))
	}
	c, err := dist.Start(ctx, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 1
	}
	defer c.Close()
	if err := ex(ctx, c, os.Stdout, fs.Args()[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 1
	}
	return 0
}
