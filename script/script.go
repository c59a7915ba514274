package script

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"maps"
	"reflect"
	"slices"

	"github.com/godist/dist"
)

// evalReq asks a process to evaluate code in its namespace.
type evalReq struct {
	Code string
	Want int // wantValue, wantAny or wantNone
}

const (
	wantAny   = iota // the value if there is one, else nil (Eval)
	wantValue        // a value is required (Reap)
	wantNone         // discard the value (RunAt, Everywhere)
)

// reply carries either a value or an evaluation error. Evaluation errors travel as data, not
// as the remote function's error, so that the caller gets a typed *EvalError back.
type reply struct {
	Val  *Value
	Err  *EvalError
	Tail bool `cbor:",omitempty"` // Val's bytes are the packed message's tail (script.eval only)
}

func myPid(ctx context.Context) int {
	if c := dist.Current(ctx); c != nil {
		return c.MyID()
	}
	return 0
}

// finish turns the outcome of a local operation into a reply: context errors stay errors of
// the remote call (the caller has given up), others become an *EvalError in the reply.
func finish(ctx context.Context, val *Value, err error) (reply, error) {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return reply{}, err
		}
		return reply{Err: evalErrorOf(myPid(ctx), err)}, nil
	}
	return reply{Val: val}, nil
}

// evalFn replies with a packed reply (see pack): a numeric slice result travels as raw bytes.
var evalFn = dist.NewFunc("script.eval", func(ctx context.Context, r evalReq) ([]byte, error) {
	var packed []byte
	err := current().with(ctx, func(e engine) error {
		v, err := e.eval(ctx, r.Code)
		if err != nil {
			return err
		}
		switch r.Want {
		case wantNone:
			packed, err = pack(reply{}, nil)
			return err
		case wantValue:
			if !v.IsValid() {
				return &EvalError{Kind: KindValue, Msg: "the code has no value (a declaration or a statement)"}
			}
		}
		w, tail, isTail, err := describeForPack(v)
		if err != nil {
			return &EvalError{Kind: KindValue, Msg: err.Error()}
		}
		// Packed while the namespace is held: pack copies the tail, which the namespace may
		// change once we let go of it.
		packed, err = pack(reply{Val: &w, Tail: isTail}, tail)
		return err
	})
	if err == nil {
		return packed, nil
	}
	rep, err := finish(ctx, nil, err)
	if err != nil {
		return nil, err
	}
	return pack(rep, nil)
})

// unpackReply undoes evalFn's packing.
func unpackReply(b []byte) (reply, error) {
	var r reply
	tail, err := unpack(b, &r)
	if err != nil {
		return reply{}, err
	}
	if r.Tail {
		if r.Val == nil {
			return reply{}, errors.New("script: malformed reply: a tail without a value")
		}
		r.Val.tail, r.Val.raw = true, tail
	}
	return r, nil
}

// sowReq asks a process to assign to target the value of Expr, or Val when Expr is empty. It
// travels packed (see pack): with Tail, Val's bytes are the message's tail.
type sowReq struct {
	Target string
	Expr   string
	Val    *Value
	Tail   bool `cbor:",omitempty"`
}

var sowFn = dist.NewFunc("script.sow", func(ctx context.Context, b []byte) (reply, error) {
	var r sowReq
	tail, err := unpack(b, &r)
	if err != nil {
		return reply{}, err
	}
	var v reflect.Value
	if r.Expr == "" {
		if r.Val == nil {
			return reply{}, errors.New("script: sow without a value")
		}
		if r.Tail {
			r.Val.tail, r.Val.raw = true, tail
		}
		var err error
		if v, err = decodeValue(*r.Val); err != nil {
			return finish(ctx, nil, &EvalError{Kind: KindValue, Msg: err.Error()})
		}
		if v.Kind() == reflect.Interface && !v.IsNil() {
			v = v.Elem()
		}
		if r.Tail && dist.CallerPid(ctx) == myPid(ctx) {
			// A local call shares the caller's memory: the namespace must not alias it.
			v = cloneSlice(v)
		}
	}
	err = current().with(ctx, func(e engine) error {
		if r.Expr != "" {
			var err error
			if v, err = e.eval(ctx, r.Expr); err != nil {
				return err
			}
			if !v.IsValid() {
				return &EvalError{Kind: KindValue, Msg: "the expression has no value"}
			}
		}
		return assign(ctx, e, r.Target, v)
	})
	return finish(ctx, nil, err)
})

func cloneSlice(v reflect.Value) reflect.Value {
	c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
	reflect.Copy(c, v)
	return c
}

// call runs f on every pid concurrently and returns the values by pid (see callEach).
func call[In any](ctx context.Context, c *dist.Cluster, pids []int, f *dist.Func[In, reply], in func(pid int) In) (map[int]*Value, error) {
	return callEach(ctx, c, pids, func(p int) (*Value, error) {
		r, err := f.Call(ctx, c, p, in(p))
		if err == nil && r.Err != nil {
			err = r.Err
		}
		return r.Val, err
	})
}

// callEval runs evalFn with r on every pid. To many processes, the evaluation goes as one
// call of dist's over its tree of processes (see dist.Func.On); this process and Any are
// evaluated as callEach does.
func callEval(ctx context.Context, c *dist.Cluster, pids []int, r evalReq) (map[int]*Value, error) {
	one := func(p int) (*Value, error) {
		b, err := evalFn.Call(ctx, c, p, r)
		if err != nil {
			return nil, err
		}
		rep, err := unpackReply(b)
		if err == nil && rep.Err != nil {
			err = rep.Err
		}
		return rep.Val, err
	}
	var remote, rest []int
	for _, p := range pids {
		if p != c.MyID() && p != dist.Any && !slices.Contains(remote, p) {
			remote = append(remote, p)
		} else {
			rest = append(rest, p)
		}
	}
	if len(remote) < manyPids {
		return callEach(ctx, c, pids, one)
	}
	type treeOut struct {
		m   map[int][]byte
		err error
	}
	done := make(chan treeOut, 1)
	go func() {
		m, err := evalFn.On(ctx, c, remote, r)
		done <- treeOut{m, err}
	}()
	out, err := callEach(ctx, c, rest, one)
	errs := map[int]error{}
	if err != nil {
		errs[errPid(err)] = err
	}
	var t treeOut
	select {
	case t = <-done:
	case <-ctx.Done():
		return out, ctx.Err()
	}
	if t.err != nil {
		errs[errPid(t.err)] = t.err
	}
	for p, b := range t.m {
		rep, err := unpackReply(b)
		if err == nil && rep.Err != nil {
			err = rep.Err
		}
		if err != nil {
			errs[p] = err
			continue
		}
		out[p] = rep.Val
	}
	if len(errs) > 0 {
		return out, errs[slices.Min(slices.Collect(maps.Keys(errs)))]
	}
	return out, nil
}

// manyPids is the number of processes from which an evaluation goes over dist's tree.
const manyPids = 8

// errPid returns the pid an error of a call names, or 0.
func errPid(err error) int {
	var re *dist.RemoteError
	var pe *dist.ProcessExitedError
	var ee *EvalError
	switch {
	case errors.As(err, &ee):
		return ee.Pid
	case errors.As(err, &pe):
		return pe.Pid
	case errors.As(err, &re):
		return re.Pid
	}
	return 0
}

// callEach runs one on every pid concurrently and returns the values by pid. Like dist's
// Func.On, the error, if any, is the failure of the lowest pid, and the map holds the results
// that arrived. It stops waiting when ctx ends, also for a pid that is this process (whose
// evaluation runs here, in a goroutine of its own).
func callEach(ctx context.Context, c *dist.Cluster, pids []int, one func(p int) (*Value, error)) (map[int]*Value, error) {
	if len(pids) == 1 && pids[0] != c.MyID() && pids[0] != dist.Any {
		// A remote call returns on cancellation by itself; no goroutine hop needed.
		v, err := one(pids[0])
		if err != nil {
			return map[int]*Value{}, err
		}
		return map[int]*Value{pids[0]: v}, nil
	}
	type res struct {
		pid int
		val *Value
		err error
	}
	ch := make(chan res, len(pids))
	for _, p := range pids {
		go func() {
			v, err := one(p)
			ch <- res{p, v, err}
		}()
	}
	out := make(map[int]*Value, len(pids))
	var first *res
	for range pids {
		select {
		case r := <-ch:
			if r.err != nil {
				if first == nil || r.pid < first.pid {
					first = &r
				}
				continue
			}
			out[r.pid] = r.val
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	if first != nil {
		return out, first.err
	}
	return out, nil
}

func decodeAll(vals map[int]*Value, err error) (map[int]any, error) {
	out := make(map[int]any, len(vals))
	for pid, w := range vals {
		if w == nil {
			out[pid] = nil
			continue
		}
		v, derr := decodeAny(*w)
		if derr != nil {
			if err == nil {
				err = fmt.Errorf("script: result of pid %d: %w", pid, derr)
			}
			continue
		}
		out[pid] = v
	}
	return out, err
}

// Eval runs code in the namespace of each of pids, concurrently, and returns the value of each
// one's last expression statement by pid: nil where the code has no value, that is where it
// ends with a declaration, a statement that is neither an expression nor an assignment (a
// loop, an if, a send), or a call of a function without results. code is Go: statements (x := myid()), expressions
// (math.Sqrt(x)), or declarations (func f(x int) int { … }, type T struct{…}); standard
// packages are imported implicitly. A failure of the code is an *EvalError naming the pid and
// the position; the error returned is the lowest failing pid's, and the map holds the results
// of the others. Cancelling ctx stops waiting and stops the interpreted code at its next step
// (a compiled call it is inside, like time.Sleep, runs to its end).
func Eval(ctx context.Context, c *dist.Cluster, pids []int, code string) (map[int]any, error) {
	return decodeAll(callEval(ctx, c, pids, evalReq{Code: code, Want: wantAny}))
}

// EvalAt is Eval on one process (Julia's @fetchfrom pid expr).
func EvalAt(ctx context.Context, c *dist.Cluster, pid int, code string) (any, error) {
	m, err := Eval(ctx, c, []int{pid}, code)
	if err != nil {
		return nil, err
	}
	return m[pid], nil
}

// Reap evaluates expr on each of pids and returns the values by pid, like Eval, except that
// code without a value is an error (ClusterUtils' reap). Reap(ctx, c, pids, "x") fetches the
// global x of each process.
func Reap(ctx context.Context, c *dist.Cluster, pids []int, expr string) (map[int]any, error) {
	return decodeAll(callEval(ctx, c, pids, evalReq{Code: expr, Want: wantValue}))
}

// RunAt runs code on process pid and discards its value (the notebook's @runat): unlike Eval,
// a value that cannot cross processes is no error.
func RunAt(ctx context.Context, c *dist.Cluster, pid int, code string) error {
	_, err := callEval(ctx, c, []int{pid}, evalReq{Code: code, Want: wantNone})
	return err
}

// Everywhere runs code on every process of the cluster, the caller included, concurrently,
// and discards the values (Julia's @everywhere): the way to define functions and types in all
// namespaces.
func Everywhere(ctx context.Context, c *dist.Cluster, code string) error {
	_, err := callEval(ctx, c, c.Procs(), evalReq{Code: code, Want: wantNone})
	return err
}

// EverywhereElse runs code on every worker but not on the caller (the notebook's
// @everywhereelse).
func EverywhereElse(ctx context.Context, c *dist.Cluster, code string) error {
	var pids []int
	for _, p := range c.Procs() {
		if p != c.MyID() {
			pids = append(pids, p)
		}
	}
	_, err := callEval(ctx, c, pids, evalReq{Code: code, Want: wantNone})
	return err
}

// Sow evaluates expr on each of pids and assigns the result to target there (ClusterUtils'
// sow). target is Go syntax:
//
//   - a name (x): defines or redefines the global variable x, with expr's type;
//   - an index or field expression into an existing value (bar[2][3], dict["k"], p.F,
//     dict["k"][1]): assigns that element, converting between numeric types;
//   - a slice expression anywhere in it (bar[0:2], dict["buzz"].([][]float64)[:], foo[0:4] of a
//     shared array foo): assigns
//     into every element of the range. If the value is a slice or array of the range's length it
//     is copied element by element; otherwise it is broadcast to every element, and into
//     nested slices to the innermost ones: with bar a [][]float64, Sow(…, "bar[0:2]", "0")
//     zeroes the first two rows (Julia's bar[1:2,:] = 0).
//
// The error is the lowest failing pid's, as for Eval.
func Sow(ctx context.Context, c *dist.Cluster, pids []int, target, expr string) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	b, err := pack(sowReq{Target: target, Expr: expr}, nil)
	if err != nil {
		return err
	}
	_, err = call(ctx, c, pids, sowFn, func(int) []byte { return b })
	return err
}

// SowValue assigns the local value v to target on each of pids, as Sow does with a value
// computed there. v must be able to cross processes (see Value).
func SowValue(ctx context.Context, c *dist.Cluster, pids []int, target string, v any) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	w, tail, isTail, err := describeForPack(reflect.ValueOf(v))
	if err != nil {
		return err
	}
	b, err := pack(sowReq{Target: target, Val: &w, Tail: isTail}, tail)
	if err != nil {
		return err
	}
	_, err = call(ctx, c, pids, sowFn, func(int) []byte { return b })
	return err
}

func checkTarget(target string) error {
	if _, err := parser.ParseExpr(target); err != nil {
		return &EvalError{Kind: KindTarget, Msg: fmt.Sprintf("target %q: %v", target, err)}
	}
	return nil
}

// Stitch reaps expr from pids and concatenates the values in ascending pid order
// (ClusterUtils' stitch). Slices of one type are appended into one slice of that type; values
// of one other type are collected into a slice of that type; anything else into a []any.
func Stitch(ctx context.Context, c *dist.Cluster, pids []int, expr string) (any, error) {
	m, err := Reap(ctx, c, pids, expr)
	if err != nil {
		return nil, err
	}
	return stitch(m), nil
}

func stitch(m map[int]any) any {
	pids := make([]int, 0, len(m))
	for p := range m {
		pids = append(pids, p)
	}
	slices.Sort(pids)
	var t reflect.Type
	for i, p := range pids {
		vt := reflect.TypeOf(m[p])
		if i == 0 {
			t = vt
		} else if vt != t {
			t = nil
			break
		}
	}
	switch {
	case t != nil && t.Kind() == reflect.Slice:
		out := reflect.MakeSlice(t, 0, 0)
		for _, p := range pids {
			out = reflect.AppendSlice(out, reflect.ValueOf(m[p]))
		}
		return out.Interface()
	case t != nil:
		out := reflect.MakeSlice(reflect.SliceOf(t), 0, len(pids))
		for _, p := range pids {
			out = reflect.Append(out, reflect.ValueOf(m[p]))
		}
		return out.Interface()
	}
	out := make([]any, 0, len(pids))
	for _, p := range pids {
		out = append(out, m[p])
	}
	return out
}

// EvalLocal evaluates code in this process's namespace and returns its value as it is, without
// the restrictions of crossing processes (a function value, a channel): for a REPL or a program
// running on the driver. It returns nil for code without a value (as Eval defines it: a call of
// a function without results has none).
func EvalLocal(ctx context.Context, code string) (any, error) {
	return local(ctx, func() (any, error) {
		var out any
		err := current().with(ctx, func(e engine) error {
			v, err := e.eval(ctx, code)
			if err != nil || !v.IsValid() {
				return err
			}
			if v.CanInterface() {
				out = v.Interface()
			}
			return nil
		})
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, evalErrorOf(myPid(ctx), err)
		}
		return out, err
	})
}

// assign stores v into target in namespace e (Sow's rules).
func assign(ctx context.Context, e engine, target string, v reflect.Value) error {
	x, err := parser.ParseExpr(target)
	if err != nil {
		return &EvalError{Kind: KindTarget, Msg: fmt.Sprintf("target %q: %v", target, err)}
	}
	if id, ok := x.(*ast.Ident); ok {
		if cur, ok := e.globals()[id.Name]; ok && cur.CanSet() && v.Type().AssignableTo(cur.Type()) {
			cur.Set(v)
			return nil
		}
		if err := e.bind(v); err != nil {
			return err
		}
		// The variable is declared with its type written out when it can be: yaegi treats a
		// variable typed from a compiled value differently, and loses some assignments into
		// it (m[k] = 2*k into a map[int]any does nothing).
		if desc, err := typeDesc(v.Type(), 0); err == nil && desc != "any" {
			if _, err := e.eval(ctx, "var "+id.Name+" "+desc+" = "+bindRef); err == nil {
				return nil
			}
		}
		_, err := e.eval(ctx, "var "+id.Name+" = "+bindRef)
		return err
	}
	if hasSlice(x) {
		s, err := e.eval(ctx, target)
		if err != nil {
			return err
		}
		if s.Kind() == reflect.Interface {
			s = s.Elem()
		}
		if s.Kind() != reflect.Slice {
			return &EvalError{Kind: KindTarget, Msg: fmt.Sprintf("target %s is a %s, not a slice", target, s.Type())}
		}
		return fill(target, s, v)
	}
	cur, err := e.eval(ctx, target)
	if err != nil {
		return err
	}
	if cur.IsValid() && cur.Kind() != reflect.Interface {
		if c, ok := convert(v, cur.Type()); ok {
			v = c
		}
	}
	if err := e.bind(v); err != nil {
		return err
	}
	_, err = e.eval(ctx, target+" = "+bindRef)
	return err
}

// hasSlice reports whether a slice expression occurs in the target's chain.
func hasSlice(x ast.Expr) bool {
	found := false
	ast.Inspect(x, func(n ast.Node) bool {
		if _, ok := n.(*ast.SliceExpr); ok {
			found = true
		}
		return !found
	})
	return found
}

// convert returns v as type t when Go would assign it (or convert it between numeric types).
func convert(v reflect.Value, t reflect.Type) (reflect.Value, bool) {
	if v.Type().AssignableTo(t) {
		return v, true
	}
	if numeric(v.Kind()) && numeric(t.Kind()) {
		return v.Convert(t), true
	}
	if v.Type().ConvertibleTo(t) && v.Type().Kind() == t.Kind() && v.Kind() != reflect.Interface {
		return v.Convert(t), true
	}
	return reflect.Value{}, false
}

func numeric(k reflect.Kind) bool {
	return (k >= reflect.Int && k <= reflect.Uint64) || k == reflect.Float32 || k == reflect.Float64
}

// fill assigns v into every element of slice s: element by element when v is a slice or array
// of s's length, else broadcast, recursing into nested slices and arrays.
func fill(target string, s, v reflect.Value) error {
	if v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	if (v.Kind() == reflect.Slice || v.Kind() == reflect.Array) && v.Len() == s.Len() {
		for i := range s.Len() {
			if err := setElem(target, s.Index(i), v.Index(i)); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range s.Len() {
		if err := setElem(target, s.Index(i), v); err != nil {
			return err
		}
	}
	return nil
}

func setElem(target string, el, v reflect.Value) error {
	if v.Kind() == reflect.Interface && !v.IsNil() {
		v = v.Elem()
	}
	if c, ok := convert(v, el.Type()); ok && !(el.Kind() == reflect.Interface && (el.Elem().Kind() == reflect.Slice)) {
		if (el.Kind() == reflect.Slice || el.Kind() == reflect.Array) && c.Kind() == el.Kind() {
			// a nested slice gets its contents replaced, not its header: the target may alias
			// memory (a shared array's rows).
			if c.Len() == el.Len() {
				for i := range el.Len() {
					if err := setElem(target, el.Index(i), c.Index(i)); err != nil {
						return err
					}
				}
				return nil
			}
		}
		el.Set(c)
		return nil
	}
	if el.Kind() == reflect.Interface && !el.IsNil() {
		el = el.Elem()
	}
	if el.Kind() == reflect.Slice || el.Kind() == reflect.Array {
		return fill(target, el, v)
	}
	return &EvalError{Kind: KindTarget, Msg: fmt.Sprintf("cannot assign a %s to an element of %s (a %s)", v.Type(), target, el.Type())}
}
