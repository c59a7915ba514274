package script

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/godist/dist"
)

// ErrSelf is the failure of a cluster builtin of interpreted code (reap, sow, …) asked to
// evaluate on the process running that code: the namespace is busy with the calling code and
// would wait for itself, so the builtins refuse at once rather than deadlock. Compute the value
// directly instead (x rather than reap([]int{myid()}, "x")). The calling evaluation fails with
// an *EvalError whose message holds ErrSelf's text and the pid.
var ErrSelf = errors.New("script: cannot evaluate on the calling process: its namespace is busy running the calling code")

// notSelf fails when pids include this process (see ErrSelf).
func notSelf(c *dist.Cluster, pids ...int) error {
	if slices.Contains(pids, c.MyID()) {
		return fmt.Errorf("pid %d is this process: %w", c.MyID(), ErrSelf)
	}
	return nil
}

// remoteBuiltins is makeRemoteBuiltins, set by init: the registered functions (evalFn, …) run
// namespaces, whose builtins call the API that calls those functions, an initialization cycle
// for the compiler although nothing runs before init ends.
var remoteBuiltins func(cl func() *dist.Cluster, ctx func() context.Context) map[string]reflect.Value

func init() { remoteBuiltins = makeRemoteBuiltins }

// makeRemoteBuiltins returns the functions through which interpreted code reaches the other processes:
// the package's API with the cluster and the context of the running evaluation. Values come
// back with their types, as through Reap. A failure panics with the error, which the
// evaluation reports as its own.
func makeRemoteBuiltins(cl func() *dist.Cluster, ctx func() context.Context) map[string]reflect.Value {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	// on returns the cluster after checking that pids are other processes.
	on := func(pids ...int) *dist.Cluster {
		c := cl()
		must(notSelf(c, pids...))
		return c
	}
	return map[string]reflect.Value{
		// reap evaluates expr on each of pids and returns the values by pid.
		"reap": reflect.ValueOf(func(pids []int, expr string) map[int]any {
			m, err := Reap(ctx(), on(pids...), pids, expr)
			must(err)
			return m
		}),
		// fetchfrom evaluates expr on pid and returns its value (nil if it has none).
		"fetchfrom": reflect.ValueOf(func(pid int, expr string) any {
			v, err := EvalAt(ctx(), on(pid), pid, expr)
			must(err)
			return v
		}),
		// sow evaluates expr on each of pids and assigns it to target there.
		"sow": reflect.ValueOf(func(pids []int, target, expr string) {
			must(Sow(ctx(), on(pids...), pids, target, expr))
		}),
		// sowvalue assigns the value v, computed here, to target on each of pids.
		"sowvalue": reflect.ValueOf(func(pids []int, target string, v any) {
			must(SowValue(ctx(), on(pids...), pids, target, v))
		}),
		// stitch concatenates expr of each of pids in ascending pid order.
		"stitch": reflect.ValueOf(func(pids []int, expr string) any {
			v, err := Stitch(ctx(), on(pids...), pids, expr)
			must(err)
			return v
		}),
		// spawnat runs code on pid, waits for it and discards its value.
		"spawnat": reflect.ValueOf(func(pid int, code string) {
			must(RunAt(ctx(), on(pid), pid, code))
		}),
		// everywhereelse runs code on every process but this one.
		"everywhereelse": reflect.ValueOf(func(code string) {
			must(EverywhereElse(ctx(), cl(), code))
		}),
		// swapmsgs exchanges the slots of the message dict name all-to-all among pids.
		"swapmsgs": reflect.ValueOf(func(pids []int, name string) {
			must(SwapMsgs(ctx(), on(pids...), pids, name))
		}),
		// collectmsgs gathers slot k of name from each process k of pids.
		"collectmsgs": reflect.ValueOf(func(name string, pids []int) map[int]any {
			m, err := CollectMsgs(ctx(), on(pids...), name, pids)
			must(err)
			return m
		}),
	}
}
