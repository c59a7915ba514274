package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/godist/dist"
	"github.com/godist/dist/script"
)

// Interpreted code (a script's main, a loop typed at the prompt) reaches the
// workers through the functions of prelude: reap, sowat, stitch, fetchfrom, spawnat,
// everywhereelse, swapmsgs, collectmsgs. The script package gives interpreted code only
// call(name, args...) for compiled functions, so each of these is a compiled function
// registered here, which calls the script package's Go API, and an interpreted wrapper that
// calls it. Values come back through CallByName's generic decoding (positive integers as
// uint64, lists as []any, maps as map[any]any); the wrappers turn them back into int, typed
// slices and map[int]any, which is exact for the plain data scripts pass around (numbers,
// strings, slices and maps of them) but not for structs or named types.

// bridgeArgs is what the wrappers pass: call sends several arguments as a list.
type bridgeArgs struct {
	_    struct{} `cbor:",toarray"`
	Pids []int
	A, B string
}

// busy refuses pids that include the caller's own process: its namespace is the one running
// the interpreted code that called, and an evaluation there would wait for itself.
func busy(c *dist.Cluster, pids []int) error {
	if slices.Contains(pids, c.MyID()) {
		return fmt.Errorf("pid %d is this process, whose namespace is busy running this code: compute the value directly", c.MyID())
	}
	return nil
}

func bridgeCluster(ctx context.Context) (*dist.Cluster, error) {
	c := dist.Current(ctx)
	if c == nil {
		return nil, errors.New("no cluster in this process")
	}
	return c, nil
}

// The handles are unused: interpreted code calls the functions by name.
var (
	bridgeReap = dist.NewFunc("godist.repl.reap", func(ctx context.Context, a bridgeArgs) (map[int]any, error) {
		c, err := bridgeCluster(ctx)
		if err != nil {
			return nil, err
		}
		if err := busy(c, a.Pids); err != nil {
			return nil, err
		}
		return script.Reap(ctx, c, a.Pids, a.A)
	})
	bridgeSow = dist.NewFunc("godist.repl.sow", func(ctx context.Context, a bridgeArgs) (struct{}, error) {
		c, err := bridgeCluster(ctx)
		if err != nil {
			return struct{}{}, err
		}
		if err := busy(c, a.Pids); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, script.Sow(ctx, c, a.Pids, a.A, a.B)
	})
	bridgeStitch = dist.NewFunc("godist.repl.stitch", func(ctx context.Context, a bridgeArgs) (any, error) {
		c, err := bridgeCluster(ctx)
		if err != nil {
			return nil, err
		}
		if err := busy(c, a.Pids); err != nil {
			return nil, err
		}
		return script.Stitch(ctx, c, a.Pids, a.A)
	})
	bridgeRun = dist.NewFunc("godist.repl.run", func(ctx context.Context, a bridgeArgs) (struct{}, error) {
		c, err := bridgeCluster(ctx)
		if err != nil {
			return struct{}{}, err
		}
		if a.Pids == nil {
			for _, p := range c.Procs() {
				if p != c.MyID() {
					a.Pids = append(a.Pids, p)
				}
			}
		}
		if err := busy(c, a.Pids); err != nil {
			return struct{}{}, err
		}
		_, err = script.Eval(ctx, c, a.Pids, a.A)
		return struct{}{}, err
	})
	bridgeSwap = dist.NewFunc("godist.repl.swapmsgs", func(ctx context.Context, a bridgeArgs) (struct{}, error) {
		c, err := bridgeCluster(ctx)
		if err != nil {
			return struct{}{}, err
		}
		if err := busy(c, a.Pids); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, script.SwapMsgs(ctx, c, a.Pids, a.A)
	})
	bridgeCollect = dist.NewFunc("godist.repl.collectmsgs", func(ctx context.Context, a bridgeArgs) (map[int]any, error) {
		c, err := bridgeCluster(ctx)
		if err != nil {
			return nil, err
		}
		if err := busy(c, a.Pids); err != nil {
			return nil, err
		}
		return script.CollectMsgs(ctx, c, a.A, a.Pids)
	})
)

// prelude defines the wrappers in the driver's namespace. unwire undoes the generic decoding
// (see above); tight gives a list whose elements share one plain type that slice type.
const prelude = `
func unwire(v any) any {
	switch x := v.(type) {
	case uint64:
		return int(x)
	case int64:
		return int(x)
	case []any:
		for i := range x {
			x[i] = unwire(x[i])
		}
		return tight(x)
	case map[any]any:
		m := make(map[any]any, len(x))
		for k, e := range x {
			m[unwire(k)] = unwire(e)
		}
		return m
	}
	return v
}

func tight(x []any) any {
	if len(x) == 0 {
		return x
	}
	switch x[0].(type) {
	case int:
		out := make([]int, len(x))
		for i, e := range x {
			n, ok := e.(int)
			if !ok {
				return x
			}
			out[i] = n
		}
		return out
	case float64:
		out := make([]float64, len(x))
		for i, e := range x {
			f, ok := e.(float64)
			if !ok {
				return x
			}
			out[i] = f
		}
		return out
	case string:
		out := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return x
			}
			out[i] = s
		}
		return out
	case []float64:
		out := make([][]float64, len(x))
		for i, e := range x {
			f, ok := e.([]float64)
			if !ok {
				return x
			}
			out[i] = f
		}
		return out
	case []int:
		out := make([][]int, len(x))
		for i, e := range x {
			n, ok := e.([]int)
			if !ok {
				return x
			}
			out[i] = n
		}
		return out
	}
	return x
}

func byPid(v any) map[int]any {
	out := map[int]any{}
	for k, e := range unwire(v).(map[any]any) {
		out[k.(int)] = e
	}
	return out
}

// reap returns the value of expr evaluated on each of pids, by pid (ClusterUtils' reap).
func reap(pids []int, expr string) map[int]any {
	return byPid(call("godist.repl.reap", pids, expr, ""))
}

// fetchfrom returns the value of expr evaluated on process pid (Julia's @fetchfrom).
func fetchfrom(pid int, expr string) any {
	return reap([]int{pid}, expr)[pid]
}

// sowat evaluates expr on each of pids and assigns it to target there (ClusterUtils' sow; the
// name sow is the script package's own, for the values it assigns).
func sowat(pids []int, target, expr string) {
	call("godist.repl.sow", pids, target, expr)
}

// stitch concatenates expr from each of pids in ascending pid order (ClusterUtils' stitch).
func stitch(pids []int, expr string) any {
	return unwire(call("godist.repl.stitch", pids, expr, ""))
}

// spawnat runs code on process pid and waits for it; the value is discarded.
func spawnat(pid int, code string) {
	call("godist.repl.run", []int{pid}, code, "")
}

// everywhereelse runs code on every process but this one.
func everywhereelse(code string) {
	call("godist.repl.run", nil, code, "")
}

// swapmsgs exchanges the slots of the MessageDict name all-to-all among pids.
func swapmsgs(pids []int, name string) {
	call("godist.repl.swapmsgs", pids, name, "")
}

// collectmsgs gathers slot k of name from each process k of pids.
func collectmsgs(name string, pids []int) map[int]any {
	return byPid(call("godist.repl.collectmsgs", pids, name, ""))
}
`

// loadPrelude defines the wrappers in the namespaces of pids (nil: every process of c; a
// script's main is loaded everywhere and so must compile everywhere, and a worker may reap from
// the others too), unless the interpreter already has a reap: a later script package may give
// interpreted code these functions itself.
func loadPrelude(ctx context.Context, c *dist.Cluster, pids []int) error {
	if _, err := script.EvalLocal(ctx, "reap"); err == nil {
		return nil
	}
	if pids == nil {
		pids = c.Procs()
	}
	if _, err := script.Eval(ctx, c, pids, prelude); err != nil {
		return fmt.Errorf("defining reap, sowat, …: %w", err)
	}
	return nil
}
