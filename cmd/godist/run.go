package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path"
	"slices"
	"sort"
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

func runExample(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	procs := fs.Int("p", 0, "number of local workers (default: number of CPUs)")
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
	if strings.HasSuffix(fs.Arg(0), ".go") {
		return runScript(ctx, fs.Arg(0), *procs, fs.Args()[1:])
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

const runUsage = `usage: godist run [-p N] EXAMPLE [ARGS]
       godist run [-p N] FILE.go [ARGS]

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
func runScript(ctx context.Context, file string, procs int, args []string) int {
	var opts []dist.Option
	if procs > 0 {
		opts = append(opts, dist.WithWorkers(procs))
	}
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
	hasMain, err := includeFile(ctx, c, file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "godist run:", err)
		return 1
	}
	if !hasMain {
		fmt.Fprintf(os.Stderr, "godist run: %s has no func main\n", file)
		return 1
	}
	if _, err := script.EvalLocal(ctx, mainAlias+"()"); err != nil {
		fmt.Fprintf(os.Stderr, "godist run: %s: %v\n", file, err)
		return 1
	}
	return 0
}

// mainAlias is what a script's func main is renamed to when the file is loaded: loaded as
// declarations, a function named main would be run by the interpreter at every later
// evaluation, and workers must not run it at all.
const mainAlias = "_main"

// includeFile loads the declarations of a Go file into the namespace of every process of c
// and reports whether the file has a func main (renamed mainAlias, not run). The package
// clause is blanked out, not removed, so that positions in errors are the file's own: the
// interpreter takes declarations after a package clause only once per namespace, and the
// standard packages are imported already.
func includeFile(ctx context.Context, c *dist.Cluster, file string) (hasMain bool, err error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return false, err
	}
	code, hasMain, err := scriptSource(file, src)
	if err != nil {
		return false, err
	}
	if err := script.Everywhere(ctx, c, code); err != nil {
		return false, fmt.Errorf("%s: %w", file, err)
	}
	return hasMain, nil
}

// scriptSource turns a Go file into declarations for the interpreter: the package clause
// becomes blanks and func main becomes mainAlias.
func scriptSource(name string, src []byte) (code string, hasMain bool, err error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return "", false, err
	}
	out := bytes.Clone(src)
	tf := fset.File(f.Pos())
	for i := tf.Offset(f.Package); i < tf.Offset(f.Name.End()); i++ {
		if out[i] != '\n' {
			out[i] = ' '
		}
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv != nil || fd.Name.Name != "main" {
			continue
		}
		hasMain = true
		off := tf.Offset(fd.Name.Pos())
		out = slices.Concat(out[:off], []byte(mainAlias), out[off+len("main"):])
		break
	}
	return string(out), hasMain, nil
}
