package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/godist/dist"
	"github.com/godist/dist/examples/jobs"
	"github.com/godist/dist/examples/pi"
	"github.com/godist/dist/examples/sweep"
	"github.com/godist/dist/script"
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

// clusterFlags are the flags of the commands that start a local cluster.
type clusterFlags struct {
	procs  *procsFlag
	output *string
}

// procsFlag is -p: a number of workers, told apart from its absence so that -p 0 is refused
// rather than taken for the default.
type procsFlag struct {
	n   int
	set bool
}

func (p *procsFlag) String() string {
	if p == nil || !p.set {
		return ""
	}
	return strconv.Itoa(p.n)
}

func (p *procsFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	p.n, p.set = n, true
	return nil
}

func addClusterFlags(fs *flag.FlagSet) clusterFlags {
	f := clusterFlags{
		procs:  &procsFlag{},
		output: fs.String("worker-output", "stdout", "where workers' output lines (\"From worker N: ...\") go: stdout or stderr"),
	}
	fs.Var(f.procs, "p", "number of local workers, at least 1 (default: number of CPUs)")
	return f
}

// options turns the flags into Start's options, or says what is wrong with them.
func (f clusterFlags) options() ([]dist.Option, error) {
	var opts []dist.Option
	if f.procs.set {
		if f.procs.n < 1 {
			return nil, fmt.Errorf("-p %d: a cluster needs at least 1 worker (leave -p out for one per CPU)", f.procs.n)
		}
		opts = append(opts, dist.WithWorkers(f.procs.n))
	}
	switch *f.output {
	case "stdout":
		opts = append(opts, dist.WithOutput(os.Stdout))
	case "stderr":
		// Keeps the program's own output on stdout apart, for a pipeline to read.
		opts = append(opts, dist.WithOutput(os.Stderr))
	default:
		return nil, fmt.Errorf("-worker-output %q: want stdout or stderr", *f.output)
	}
	return opts, nil
}

func runExample(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cf := addClusterFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, runUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "godist run: name an example or a .go script:", exampleNames())
		return 2
	}
	opts, err := cf.options()
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 2
	}
	if strings.HasSuffix(fs.Arg(0), ".go") {
		return runScript(ctx, fs.Arg(0), opts, fs.Args()[1:])
	}
	name := path.Base(strings.TrimSuffix(fs.Arg(0), "/"))
	ex, ok := examples[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "godist run: no example %q (have: %s)\n", fs.Arg(0), exampleNames())
		return 2
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

const runUsage = `usage: godist run [-p N] [-worker-output stdout|stderr] EXAMPLE [ARGS]
       godist run [-p N] [-worker-output stdout|stderr] FILE.go [ARGS]

With an EXAMPLE name (pi, jobs, sweep, or examples/NAME), runs that compiled example on a
local cluster of N workers.

With a Go file, runs it as a script, as "julia -p N -L FILE" would: a local cluster of N
workers starts, the file's declarations (imports, constants, types, variables, functions) are
loaded into the interpreter namespace of every process, the driver included, and then its
func main runs on the driver. The file is ordinary Go (package main, the standard library's
common packages, func main) interpreted as Go 1.20 (yaegi: no min and max builtins);
a build constraint "//go:build ignore" keeps the go command from building it. In the
interpreter, myid(), nprocs() and workers() describe the cluster, args holds ARGS on every
process, and on the driver main reaches the workers with reap, sow, sowvalue, stitch,
fetchfrom, spawnat, everywhereelse, swapmsgs and collectmsgs (godist repl -h lists them), e.g.

  counts := reap(workers(), "countPrimes(block[0], block[1])") // map[int]any, by pid

Example: godist run -p 4 examples/scripts/primes.go

`

// runScript is `godist run FILE.go`.
func runScript(ctx context.Context, file string, opts []dist.Option, args []string) int {
	c, err := dist.Start(ctx, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 1
	}
	defer c.Close()
	// args is defined before the file, which may use it, on every process: Julia's ARGS.
	if args == nil {
		args = []string{}
	}
	if err := script.SowValue(ctx, c, c.Procs(), "args", args); err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 1
	}
	hasMain, err := script.LoadFile(ctx, c, c.Procs(), file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 1
	}
	if !hasMain {
		fmt.Fprintf(os.Stderr, "godist run: %s has no func main\n", file)
		return 1
	}
	if _, err := script.EvalLocal(ctx, script.MainName+"()"); err != nil {
		fmt.Fprintf(os.Stderr, "godist run: %s: %v\n", file, err)
		return 1
	}
	return 0
}
