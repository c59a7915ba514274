// Package script keeps named values on the processes of a cluster and computes on them with
// interpreted Go: Julia's ClusterUtils (sow, reap, stitch, message dicts, save/load) and the
// helpers of the IPC notebook (memstats, whos, @runat, @everywhereelse).
//
// Every process has one namespace, created on first use: an interpreter
// (github.com/traefik/yaegi) whose globals live as long as the process or until Clear.
// Code is Go source: statements (x := myid()), expressions (math.Sqrt(x)) and declarations
// (func f(…) …, type T …); each evaluation sees the globals of the earlier ones.
//
//	script.Reap(ctx, c, []int{2}, "x := myid()")      // map[2:2]
//	script.Reap(ctx, c, []int{2}, "math.Sqrt(float64(x))")
//	script.SowValue(ctx, c, []int{2}, "y", c.MyID())   // y = 1 on pid 2
//	script.Sow(ctx, c, pids, "bar[0:2]", "0")          // zero the first rows of bar
//	script.Stitch(ctx, c, pids, "x")                   // x of each pid, concatenated
//
// In scope in every namespace:
//
//   - a curated part of the standard library, imported implicitly (math.Sqrt works without
//     import "math"): bufio, bytes, container/heap, container/list, context, encoding/binary,
//     encoding/json, errors, fmt, hash/fnv, io, math, math/bits, math/cmplx, math/rand, regexp,
//     sort, strconv, strings, sync, sync/atomic, time, unicode, unicode/utf8. os, os/exec,
//     syscall and unsafe only with AllowUnsafe (or GODIST_SCRIPT_UNSAFE=1). Not the whole
//     standard library: its symbol tables cost every process ~14 MiB (DESIGN.md); these tables
//     are built when a namespace is created, not when the process starts.
//   - myid(), nprocs(), nworkers(), procs(), workers(): this process's view of the cluster.
//   - call(name, args...) and callat(pid, name, args...): a compiled function registered with
//     dist.NewFunc, by name, in this process or on pid; funcs() lists them. Heavy work belongs
//     in compiled functions; the interpreter is glue.
//   - reap(pids, expr), fetchfrom(pid, expr), sow(pids, target, expr), sowvalue(pids, target,
//     v), stitch(pids, expr), spawnat(pid, code), everywhereelse(code), swapmsgs(pids, name)
//     and collectmsgs(name, pids): Reap, EvalAt, Sow, SowValue, Stitch, RunAt,
//     EverywhereElse, SwapMsgs and CollectMsgs, for code on any process to reach the others,
//     with the values' types kept (reap(workers(), "v")[2].([]float64)). A failure is an error
//     of the calling evaluation. The calling process itself is refused at once (ErrSelf): its
//     namespace is busy running the caller, so compute such a value directly. Two processes
//     whose code reaches each other at the same time each wait for the other's namespace until
//     their contexts end.
//   - every shared array bound in this process (shm.BroadcastShared), as a global under its
//     name: a []T over the shared memory (column-major), so that a write is seen by every
//     process of the host; shared(name) returns the shm handle itself.
//
// fmt.Println and println in a worker's code print there; the worker forwards its output to the
// driver ("From worker N: …").
//
// Failures of code (parse and type errors, panics, an os.Exit) are *EvalError values naming the
// process and the position; the process and its namespace live on. As in compiled Go, a panic in
// a goroutine that the code starts ends the process. Cancelling the caller's context stops
// waiting, and stops the code at its next interpreted step.
//
// The package's functions are safe for concurrent use. A namespace runs one evaluation at a
// time, so evaluations sent to one process at once run one after the other, each waiting for
// its turn within its own context (goroutines that code starts are not serialised: they run on
// beside later evaluations).
//
// Values cross processes with their types (see Value): a [][]float64 reaped from a worker is a
// [][]float64, an int an int, a struct defined by interpreted code a struct with the same fields.
// Save and Load use the same form in a versioned file.
//
// Known limits of the interpreter (yaegi 0.16): range over an integer (for i := range 10) works
// through a rewrite of the code, except in code that also ranges over a slice, map or string
// without a value variable (for i := range s: write for i, _ := range s there); the builtins
// min, max and clear are not available; of the generic packages slices, maps and cmp,
// which yaegi interprets from their Go 1.21 source, some functions work (slices.Contains,
// slices.Index, cmp.Compare) and others do not (slices.Sort, slices.Max, maps.Keys: use sort
// and loops). Positions of runtime panics are those of the statement of the evaluated code
// that was running, which may be approximate.
package script
