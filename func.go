package dist

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"sync"

	"github.com/godist/dist/internal/codec"
	"github.com/godist/dist/internal/wire"
)

// Any, passed as a pid, picks a worker round robin, like Julia's @spawnat :any.
const Any = 0

// handler serves one registered name: it decodes the argument from the frame (arg is the CBOR
// after the call header, f.Raw the raw part) and returns the encoded result.
type handler func(ctx context.Context, f *wire.Frame, arg []byte) (wire.Msg, error)

var registry = struct {
	sync.RWMutex
	m map[string]handler
}{m: make(map[string]handler)}

func register(name string, h handler) {
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.m[name]; dup {
		// Registration happens at package initialisation, where two functions under one name
		// are a programming error that every run would hit: fail loudly, like http.Handle.
		panic(fmt.Sprintf("dist: function %q registered twice", name))
	}
	registry.m[name] = h
}

func lookup(name string) (handler, bool) {
	registry.RLock()
	defer registry.RUnlock()
	h, ok := registry.m[name]
	return h, ok
}

// RegisteredFuncs returns the names of all functions registered with NewFunc, sorted.
func RegisteredFuncs() []string {
	registry.RLock()
	defer registry.RUnlock()
	var names []string
	for n := range registry.m {
		if len(n) > 0 && n[0] != '_' {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Func is a function that any process of the cluster can run, known to every process of the
// binary by its name. Create it with NewFunc in a package-level variable so that workers,
// which run the same binary, have it too (Go's answer to Julia's @everywhere).
type Func[In, Out any] struct {
	name string
	fn   func(context.Context, In) (Out, error)
}

// NewFunc registers fn under name and returns a handle for calling it remotely. Call it at
// package level (var f = dist.NewFunc(...)); registering one name twice panics. Names starting
// with '_' are reserved. In and Out must be encodable as CBOR; a top-level numeric slice
// ([]float64, []int64, []byte, …) travels as raw bytes without per-element encoding.
func NewFunc[In, Out any](name string, fn func(context.Context, In) (Out, error)) *Func[In, Out] {
	if name == "" || name[0] == '_' {
		panic(fmt.Sprintf("dist: function name %q is empty or reserved", name))
	}
	f := &Func[In, Out]{name: name, fn: fn}
	register(name, func(ctx context.Context, fr *wire.Frame, arg []byte) (wire.Msg, error) {
		var in In
		if err := codec.Decode(arg, fr.Raw, &in); err != nil {
			return wire.Msg{}, decodeError("argument", name, err)
		}
		out, err := f.run(ctx, in)
		if err != nil {
			return wire.Msg{}, err
		}
		return codec.Encode(nil, out)
	})
	return f
}

// Name returns the name fn was registered under.
func (f *Func[In, Out]) Name() string { return f.name }

// run calls the user function, turning a panic into a *RemoteError so the process lives on.
func (f *Func[In, Out]) run(ctx context.Context, in In) (out Out, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &RemoteError{Pid: myPid(), Func: f.name, Msg: fmt.Sprintf("panic: %v", p), Stack: string(debug.Stack())}
		}
	}()
	return f.fn(ctx, in)
}

// local runs f in this process with the error shape of a remote call.
func (f *Func[In, Out]) local(ctx context.Context, in In) (Out, error) {
	out, err := f.run(ctx, in)
	if err != nil {
		if _, ok := err.(*RemoteError); !ok {
			err = recordOf(myPid(), f.name, err).toError()
		}
	}
	return out, err
}

// Call runs f(in) on process pid and waits for the result (Julia's remotecall_fetch). pid may
// be Any. A call to this process's own pid runs in-process without copying in. A failure of the
// function is a *RemoteError; a process that exits during the call fails it with an error
// matching ErrProcessExited; cancelling ctx cancels the remote function's context.
func (f *Func[In, Out]) Call(ctx context.Context, c *Cluster, pid int, in In) (Out, error) {
	var zero Out
	pid, err := c.resolve(pid)
	if err != nil {
		return zero, err
	}
	if pid == c.MyID() {
		return f.local(ctx, in)
	}
	fr, err := c.call(ctx, pid, callHeader{Fn: f.name}, in)
	if err != nil {
		return zero, err
	}
	return decodeReply[Out](f.name, fr)
}

// Go starts f(in) on process pid and returns at once with a Future for the result (Julia's
// remotecall). The result is kept on pid while any process holds a reference to the Future.
// Cancelling ctx cancels the remote function.
func (f *Func[In, Out]) Go(ctx context.Context, c *Cluster, pid int, in In) *Future[Out] {
	pid, err := c.resolve(pid)
	if err != nil {
		return failedFuture[Out](c, pid, err)
	}
	if pid == c.MyID() {
		fut, set := newLocalFuture[Out](c)
		if !c.goLocal(ctx, func(ctx context.Context) {
			out, err := f.local(ctx, in)
			set(out, err)
		}) {
			var zero Out
			set(zero, errClusterClosed)
		}
		return fut
	}
	return goRemote[Out](ctx, c, pid, f.name, in)
}

// Do runs f(in) on process pid without waiting for or returning its result (Julia's
// remote_do). The error is about sending only; a failure of the function is logged by the
// process that ran it.
func (f *Func[In, Out]) Do(ctx context.Context, c *Cluster, pid int, in In) error {
	pid, err := c.resolve(pid)
	if err != nil {
		return err
	}
	if pid == c.MyID() {
		if !c.goLocal(context.WithoutCancel(ctx), func(ctx context.Context) {
			if _, err := f.local(ctx, in); err != nil {
				c.log.Error("remote_do failed", "func", f.name, "err", err)
			}
		}) {
			return errClusterClosed
		}
		return nil
	}
	return c.send(ctx, pid, callHeader{Fn: f.name}, in)
}

// Everywhere runs f(in) on every process of the cluster, the caller included, concurrently,
// and returns the results by pid. If any call fails, the error names the first failure by pid
// and the map holds the results that succeeded.
func (f *Func[In, Out]) Everywhere(ctx context.Context, c *Cluster, in In) (map[int]Out, error) {
	return f.On(ctx, c, c.Procs(), in)
}

// On runs f(in) on each of pids concurrently and returns the results by pid, like Everywhere.
// To many processes (a few dozen or more), the call travels over a tree of them, each
// forwarding it to a few others and combining their results, unless the argument holds
// references (futures, channels, shared values), which must be sent to each process apart.
// A process that dies during the call fails only its own result.
func (f *Func[In, Out]) On(ctx context.Context, c *Cluster, pids []int, in In) (map[int]Out, error) {
	type res struct {
		pid int
		out Out
		err error
	}
	others := make([]int, 0, len(pids))
	for _, p := range pids {
		if p != c.MyID() && !slices.Contains(others, p) {
			others = append(others, p)
		}
	}
	direct, expect := pids, len(pids)
	ch := make(chan res, len(pids))
	if len(others) >= treeMin && c.allToAll() && treeSafe(reflect.TypeFor[In]()) {
		direct = nil
		if slices.Contains(pids, c.MyID()) {
			direct = []int{c.MyID()}
		}
		expect = len(others) + len(direct)
		frames, errs, err := c.callTree(ctx, f.name, in, others)
		if err != nil {
			return nil, err
		}
		for _, p := range others {
			r := res{pid: p, err: errs[p]}
			if fr := frames[p]; fr != nil {
				r.out, r.err = decodeReply[Out](f.name, fr)
			}
			ch <- r
		}
	}
	for _, p := range direct {
		go func() {
			out, err := f.Call(ctx, c, p, in)
			ch <- res{p, out, err}
		}()
	}
	outs := make(map[int]Out, len(pids))
	var first *res
	for range expect {
		r := <-ch
		if r.err != nil {
			if first == nil || r.pid < first.pid {
				first = &r
			}
			continue
		}
		outs[r.pid] = r.out
	}
	if first != nil {
		return outs, first.err
	}
	return outs, nil
}

// CallByName calls the function registered under name on pid with an untyped argument, for
// dynamic use (the REPL, scripts). With one arg, that value is the argument; with none, the
// argument is the zero value; with several, they are sent as a list. The result is decoded
// generically (maps as map[any]any, numeric slices as their slice type).
func (c *Cluster) CallByName(ctx context.Context, pid int, name string, args ...any) (any, error) {
	pid, err := c.resolve(pid)
	if err != nil {
		return nil, err
	}
	var arg any
	switch len(args) {
	case 0:
		arg = nil
	case 1:
		arg = args[0]
	default:
		arg = args
	}
	var fr *wire.Frame
	if pid == c.MyID() {
		fr, err = c.callLocalEncoded(ctx, name, arg)
	} else {
		fr, err = c.call(ctx, pid, callHeader{Fn: name}, arg)
	}
	if err != nil {
		return nil, err
	}
	return decodeReply[any](name, fr)
}

// decodeReply turns a reply frame into a value or the remote error it carries.
func decodeReply[T any](fn string, fr *wire.Frame) (T, error) {
	var out T
	if fr.Kind == wire.KindError {
		var r errRecord
		if err := codec.Unmarshal(fr.CBOR, &r); err != nil {
			return out, fmt.Errorf("dist: %s: undecodable error reply: %w", fn, err)
		}
		return out, r.toError()
	}
	if err := codec.Decode(fr.CBOR, fr.Raw, &out); err != nil {
		return out, decodeError("result", fn, err)
	}
	return out, nil
}
