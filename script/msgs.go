package script

import (
	"context"
	"errors"
	"fmt"
	"go/token"
	"reflect"
	"sync"
	"time"

	"github.com/godist/dist"
)

// MessageDict is a set of messages by pid (ClusterUtils' MessageDict): slot k holds process k's
// message. In a namespace, any global map keyed by int serves as one (sow a MessageDict, or
// write map[int]any{} in code); by convention each process writes its own slot, somemsg[myid()],
// and SwapMsgs delivers every slot to every process.
type MessageDict map[int]any

// swapReq asks a process to send its own slot of the map variable Name to Pids.
type swapReq struct {
	Name string
	Pids []int
}

// putReq delivers process From's slot of the map variable Name.
type putReq struct {
	Name string
	From int
	Val  Value
}

var swapFn = dist.NewFunc("script.swapmsgs", func(ctx context.Context, r swapReq) (reply, error) {
	me := myPid(ctx)
	var own Value
	err := current().with(ctx, func(e engine) error {
		m, err := msgMap(e, r.Name)
		if err != nil {
			return err
		}
		el := m.MapIndex(reflect.ValueOf(me).Convert(m.Type().Key()))
		if !el.IsValid() {
			return &EvalError{Kind: KindValue, Msg: fmt.Sprintf("%s has no slot %d (this process's message)", r.Name, me)}
		}
		if el.Kind() == reflect.Interface {
			el = el.Elem()
		}
		own, err = encodeValue(el)
		return err
	})
	if err != nil {
		return finish(ctx, nil, err)
	}
	c := dist.Current(ctx)
	if c == nil {
		return reply{}, errors.New("script: no cluster in this process")
	}
	// Push our slot to every other process at once; the namespace is not held meanwhile, so
	// that the others' pushes to us get in.
	var wg sync.WaitGroup
	errs := make([]error, len(r.Pids))
	for i, p := range r.Pids {
		if p == me {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := putFn.Call(ctx, c, p, putReq{Name: r.Name, From: me, Val: own})
			if err == nil && rep.Err != nil {
				err = rep.Err
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return finish(ctx, nil, errors.Join(errs...))
})

var putFn = dist.NewFunc("script.putmsg", func(ctx context.Context, r putReq) (reply, error) {
	v, err := decodeValue(r.Val)
	if err != nil {
		return finish(ctx, nil, &EvalError{Kind: KindValue, Msg: err.Error()})
	}
	err = current().with(ctx, func(e engine) error {
		m, err := msgMap(e, r.Name)
		if err != nil {
			return err
		}
		el, ok := convert(v, m.Type().Elem())
		if !ok {
			return &EvalError{Kind: KindValue, Msg: fmt.Sprintf("a %s from pid %d does not fit %s (a %s)", v.Type(), r.From, r.Name, m.Type())}
		}
		m.SetMapIndex(reflect.ValueOf(r.From).Convert(m.Type().Key()), el)
		return nil
	})
	return finish(ctx, nil, err)
})

// msgMap returns the global map variable name of namespace e, which must be keyed by an integer
// type.
func msgMap(e engine, name string) (reflect.Value, error) {
	v, ok := e.globals()[name]
	if !ok {
		return reflect.Value{}, &EvalError{Kind: KindCompile, Msg: "undefined: " + name}
	}
	if v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() != reflect.Map || !numeric(v.Type().Key().Kind()) || v.Type().Key().Kind() == reflect.Float32 || v.Type().Key().Kind() == reflect.Float64 {
		return reflect.Value{}, &EvalError{Kind: KindValue, Msg: fmt.Sprintf("%s is a %s, not a map keyed by pid", name, v.Type())}
	}
	if v.IsNil() {
		return reflect.Value{}, &EvalError{Kind: KindValue, Msg: name + " is a nil map"}
	}
	return v, nil
}

func checkName(name string) error {
	if !token.IsIdentifier(name) {
		return &EvalError{Kind: KindTarget, Msg: fmt.Sprintf("%q is not a variable name", name)}
	}
	return nil
}

// SwapMsgs exchanges messages all-to-all among pids (ClusterUtils' swapmsgs): name is a global
// map keyed by pid (a MessageDict) on each of them, and each process sends its own slot
// (name[myid()]) directly to every other one. When SwapMsgs returns, every process of pids
// holds in slot k process k's message. The caller need not be among pids.
func SwapMsgs(ctx context.Context, c *dist.Cluster, pids []int, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	req := swapReq{Name: name, Pids: pids}
	_, err := call(ctx, c, pids, swapFn, func(int) swapReq { return req })
	return err
}

// CollectMsgs gathers on the caller each process's own slot of its MessageDict name
// (ClusterUtils' collectmsgs): slot k of the result is process k's name[k].
func CollectMsgs(ctx context.Context, c *dist.Cluster, name string, pids []int) (MessageDict, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m, err := Reap(ctx, c, pids, name+"[myid()]")
	if err != nil {
		return nil, err
	}
	return MessageDict(m), nil
}

// Timeit runs f n times and returns the mean time of a run (ClusterUtils' @timeit). It stops
// at f's first error and returns it.
func Timeit(n int, f func() error) (time.Duration, error) {
	if n <= 0 {
		return 0, fmt.Errorf("script: Timeit needs n > 0, got %d", n)
	}
	start := time.Now()
	for range n {
		if err := f(); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}
