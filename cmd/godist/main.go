// Command godist runs distributed Go programs and measures godist itself.
//
//	godist run [-p N] EXAMPLE [ARGS]      run a built-in example (pi, jobs, sweep) on a local cluster
//	godist run [-p N] FILE.go [ARGS]      load a Go script on every process, run its main on the driver
//	godist repl [-p N] [-L FILE.go] [-history FILE]
//	                                      interactive Go on a local cluster (sow, reap, stitch, …)
//	godist bench [-json] [-quick] [PREFIX...]
//	                                      measure latency, throughput, startup and memory
//	godist shm [-prefix P] ls|clean       list named shared-memory segments, or remove leftovers
//	godist version                        print the wire protocol version, Go's, and GODEBUG
//
// run FILE.go and repl are the counterparts of "julia -p N -L FILE" and of Julia's REPL with
// Distributed and ClusterUtils loaded: N local workers (default: the number of CPUs) are
// started, and the code is Go interpreted by package script on every process, so a script or a
// REPL session uses the same builtins (myid, workers, reap, sow, …) and has the same limits as
// that package's namespaces (see its documentation). godist repl -h and godist run -h show
// examples, and :help inside the REPL lists its commands.
//
// The cluster is always local: for workers on other hosts, write a program with package ssh,
// slurm, mpi or elastic. Heavy work belongs in compiled functions (dist.NewFunc) of such a
// program; the scripts are glue.
//
// godist shm clean removes the named segments (package shm) whose creating process has
// exited, which a crash leaves in /dev/shm; segments of running processes are kept.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/bench"
	"github.com/godist/dist/internal/rawbench"
)

func main() {
	dist.Main()
	rawbench.ChildMain()
	reexecWithMadvFree()
	os.Exit(run(os.Args[1:]))
}

// reexecWithMadvFree runs the command again, once, with GODEBUG's madvdontneed=0, as its
// workers run (dist.WorkerEnv): the runtime then hands freed memory back lazily, and a driver
// that fetches one large array after another reuses its pages instead of faulting fresh ones
// in. The runtime reads the setting only at start, and //go:debug does not accept it. A
// GODEBUG that already sets madvdontneed is left alone; if the exec fails, the command runs
// as it is.
func reexecWithMadvFree() {
	godebug := os.Getenv("GODEBUG")
	for _, f := range strings.Split(godebug, ",") {
		if strings.HasPrefix(f, "madvdontneed=") {
			return
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	set := "madvdontneed=0"
	if godebug != "" {
		set = godebug + "," + set
	}
	os.Setenv("GODEBUG", set)
	syscall.Exec(exe, os.Args, os.Environ())
	os.Setenv("GODEBUG", godebug) // the exec failed: run as we are
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: godist COMMAND [ARGS]

commands:
  run [-p N] EXAMPLE [ARGS]   run a built-in example on a local cluster of N workers
                              (examples: `+exampleNames()+`)
  run [-p N] FILE.go [ARGS]   load a Go script's declarations on every process (Julia's
                              julia -p N -L FILE), then run its main on the driver
  repl [-p N] [-L FILE.go]    an interactive Go prompt on the driver of a local cluster,
                              with commands to run code on workers (:help inside)
  bench [-json] [-quick] [PREFIX...]
                              measure godist beside raw socket baselines; with prefixes,
                              only the figures whose names start with one of them
  shm [-prefix P] ls|clean    list named shared-memory segments, or remove those whose
                              creator has exited
  version                     print the protocol version, Go's version, and GODEBUG
`)
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	switch args[0] {
	case "bench":
		fs := flag.NewFlagSet("bench", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "print one JSON object per figure")
		quick := fs.Bool("quick", false, "fewer iterations (for smoke tests; figures are noisier)")
		cpuprofile := fs.String("cpuprofile", "", "write the driver's CPU profile to this file")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if *cpuprofile != "" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "godist bench:", err)
				return 1
			}
			defer f.Close()
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
		err := bench.Run(ctx, bench.Options{Prefixes: fs.Args(), Quick: *quick}, bench.Print(os.Stdout, *asJSON))
		if err != nil {
			fmt.Fprintln(os.Stderr, "godist bench:", err)
			return 1
		}
		return 0
	case "run":
		return runExample(ctx, args[1:])
	case "repl":
		return runRepl(ctx, args[1:])
	case "shm":
		return runShm(args[1:], os.Stdout)
	case "version":
		fmt.Println("godist protocol", dist.ProtocolVersion)
		fmt.Println(runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
		fmt.Println("GODEBUG=" + os.Getenv("GODEBUG"))
		return 0
	case "help", "-h", "-help", "--help":
		usage()
		return 0
	}
	fmt.Fprintf(os.Stderr, "godist: unknown command %q\n", args[0])
	usage()
	return 2
}
