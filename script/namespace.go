package script

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"io"
	"os"
	"reflect"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/godist/dist"
	"github.com/godist/dist/shm"
	"github.com/traefik/yaegi/interp"
	yunsafe "github.com/traefik/yaegi/stdlib/unsafe"
)

// engine is what a namespace needs from an interpreter. It is small so that yaegi can be
// swapped for another interpreter without touching the rest of the package. Implementations
// need not be safe for concurrent use: the namespace serialises calls.
type engine interface {
	// eval runs code and returns the value of its last expression statement (invalid when
	// there is none). It may panic; the namespace recovers.
	eval(ctx context.Context, code string) (reflect.Value, error)
	// globals returns the namespace's variables and constants by name; variables are settable.
	globals() map[string]reflect.Value
	// bind makes v (of any type) available to the next evaluations as the package-qualified
	// name bindRef, so that code can assign a Go value received from the wire.
	bind(v reflect.Value) error
}

// unsafeAllowed is set by AllowUnsafe or by the environment variable EnvUnsafe.
var unsafeAllowed atomic.Bool

// EnvUnsafe is the environment variable that, set to "1" in a process's environment, allows
// unsafe evaluation there (as AllowUnsafe does). Local workers inherit the driver's environment,
// so setting it before dist.Start applies to the whole local cluster.
const EnvUnsafe = "GODIST_SCRIPT_UNSAFE"

// AllowUnsafe lets interpreted code of this process import os, os/exec, syscall and unsafe and
// read the real environment. By default those are absent: a namespace exposes only a curated,
// side-effect free part of the standard library. Unsafe evaluation is a property of the binary,
// the same in every process, so call AllowUnsafe before dist.Main (or in an init function); it
// affects only namespaces created after the call (see Clear).
func AllowUnsafe() { unsafeAllowed.Store(true) }

func unsafeEval() bool { return unsafeAllowed.Load() || os.Getenv(EnvUnsafe) == "1" }

// namespace is this process's interpreter state. sem (capacity 1) serialises evaluations; a
// caller waits for it only as long as its context allows.
type namespace struct {
	sem chan struct{}
	eng engine
	// ctx is the running evaluation's context, for call() in code; goroutines that the code
	// starts may read it after the evaluation, hence atomic.
	ctx    atomic.Pointer[context.Context]
	panics *panicLog
	// imports are the imports that files loaded here made ("name path"), which the
	// interpreter refuses to see again; guarded by sem.
	imports map[string]bool
}

var (
	nsMu sync.Mutex
	ns   *namespace // created on first use; Clear with no names drops it
)

// current returns this process's namespace, creating it on first use.
func current() *namespace {
	nsMu.Lock()
	defer nsMu.Unlock()
	if ns == nil {
		ns = &namespace{sem: make(chan struct{}, 1), panics: &panicLog{w: os.Stderr}}
	}
	return ns
}

// reset drops this process's namespace: the next use creates a fresh one. An evaluation still
// running keeps the old one until it ends.
func reset() {
	nsMu.Lock()
	ns = nil
	nsMu.Unlock()
}

// lock waits for the namespace; it gives up when ctx ends.
func (n *namespace) lock(ctx context.Context) error {
	select {
	case n.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *namespace) unlock() { <-n.sem }

// with runs f with the namespace locked and its engine created, in the caller's goroutine
// (a remote call's handler: no hand-off to another goroutine, which costs a cross-CPU wake-up),
// turning a panic into an error. Callers in this process that must stop waiting on
// cancellation run it in a goroutine of their own (see local).
func (n *namespace) with(ctx context.Context, f func(e engine) error) (err error) {
	if err := n.lock(ctx); err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			err = &EvalError{Kind: KindPanic, Msg: fmt.Sprint(p), Stack: string(debug.Stack())}
		}
		n.ctx.Store(nil)
		n.unlock()
	}()
	if n.eng == nil {
		if n.eng, err = newYaegi(n); err != nil {
			return err
		}
	}
	n.ctx.Store(&ctx)
	n.bindShared()
	return f(n.eng)
}

// local runs f in a goroutine and waits for it or for ctx: a caller in this process stops
// waiting when ctx ends, while the evaluation finishes (or stops) on its own.
func local[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := f()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// bindShared keeps the namespace's globals for this process's named shared arrays (shm.Names,
// filled by shm.BroadcastShared) in step with the bindings: each array is a global under its
// name. It runs before every evaluation.
func (n *namespace) bindShared() {
	y, ok := n.eng.(*yaegiEngine)
	if !ok {
		return
	}
	changed := false
	names := shm.Names()
	for _, name := range names {
		if !token.IsIdentifier(name) {
			continue
		}
		v, ok := shm.Lookup(name)
		if !ok {
			continue
		}
		if y.setShared(name, v) {
			changed = true
		}
	}
	for name := range y.shared {
		if !slices.Contains(names, name) && y.setShared(name, nil) {
			changed = true
		}
	}
	if changed {
		y.refreshShared()
	}
}

// sharedVar is a global standing for a shared array. The holder is the variable interpreted code
// compiled against; it is updated in place, so that code compiled earlier never reads an array
// that was unbound (and unmapped).
type sharedVar struct {
	handle any           // what shm.Lookup returned
	holder reflect.Value // settable: a []T view of the array's memory, or the handle itself
}

// setShared points the global name at v (nil: unbound) and reports whether a new holder was
// made (the package of shared globals must then be loaded again).
func (y *yaegiEngine) setShared(name string, v any) bool {
	cur, had := y.shared[name]
	if had && cur.handle == v {
		return false
	}
	val := sharedView(v)
	if had {
		if v == nil {
			cur.holder.SetZero()
			cur.handle = nil
			y.shared[name] = cur
			return false
		}
		if val.Type() == cur.holder.Type() {
			cur.holder.Set(val)
			cur.handle = v
			y.shared[name] = cur
			return false
		}
		cur.holder.SetZero() // code compiled against the old type sees an empty array
	}
	if v == nil {
		return false
	}
	h := reflect.New(val.Type()).Elem()
	h.Set(val)
	y.shared[name] = sharedVar{handle: v, holder: h}
	return true
}

// sharedView returns what interpreted code sees for a bound value: for a shared array of a
// numeric element type mapped here, a []T over its memory (column-major, as the array stores it;
// writes are seen by every process of the host); for anything else, the value itself.
func sharedView(v any) reflect.Value {
	a, ok := v.(*shm.Array)
	if !ok {
		return reflect.ValueOf(v)
	}
	t, ok := basicTypes[a.ElemType()]
	b := a.Bytes()
	if !ok || t.Kind() == reflect.Interface || t.Kind() == reflect.String || t.Kind() == reflect.Bool ||
		int(t.Size()) != a.ElemSize() || b == nil || len(b) < a.Len()*a.ElemSize() {
		return reflect.ValueOf(v)
	}
	if a.Len() == 0 {
		return reflect.MakeSlice(reflect.SliceOf(t), 0, 0)
	}
	return reflect.SliceAt(t, unsafe.Pointer(&b[0]), a.Len())
}

// The package through which a value received from the wire is assigned (see bind). Its name
// is in the interpreter's universe scope, where any global of the user's code of the same name
// would hide it: hence a name no code plausibly defines.
const (
	bindPkg = "_godist_sow"
	bindKey = "godist/" + bindPkg + "/" + bindPkg // yaegi's key: import path, then package name
	bindRef = bindPkg + ".V"
)

// yaegiEngine is the engine over github.com/traefik/yaegi.
type yaegiEngine struct {
	in     *interp.Interpreter
	runID  *uint64 // the interpreter's run counter (see run), nil if yaegi changed its layout
	ns     *namespace
	shared map[string]sharedVar
	// callees caches valueless's answer by the text of the called expression: a compile per
	// evaluation costs more than the evaluation. Types are static, so the answer holds until
	// code defines something (see valueless).
	callees map[string]bool
}

func newYaegi(n *namespace) (*yaegiEngine, error) {
	allow := unsafeEval()
	// A worker's stdin is its control channel from the driver: fmt.Scan in code must not
	// read it.
	in := interp.New(interp.Options{Stdin: strings.NewReader(""), Stdout: os.Stdout, Stderr: n.panics, Unrestricted: allow})
	exports := interp.Exports{}
	for k, f := range safeTables {
		exports[k] = f()
	}
	if allow {
		for k, f := range unsafeTables {
			exports[k] = f()
		}
	}
	if err := in.Use(exports); err != nil {
		return nil, fmt.Errorf("script: loading symbols: %w", err)
	}
	if allow {
		if err := in.Use(yunsafe.Symbols); err != nil {
			return nil, fmt.Errorf("script: loading unsafe: %w", err)
		}
	}
	y := &yaegiEngine{in: in, ns: n, shared: map[string]sharedVar{}}
	// yaegi stops a run by bumping an unexported counter, and only from its *WithContext
	// functions, which return before the run has stopped. We bump it ourselves to be able to
	// wait (see run); the version is pinned in go.mod, and a change of layout falls back to
	// EvalWithContext.
	if f := reflect.ValueOf(in).Elem().FieldByName("id"); f.IsValid() && f.Kind() == reflect.Uint64 {
		y.runID = (*uint64)(unsafe.Pointer(f.UnsafeAddr()))
	}
	if err := in.Use(interp.Exports{"godist/godist": y.builtins(), bindKey: {"V": reflect.ValueOf(new(any)).Elem()}}); err != nil {
		return nil, fmt.Errorf("script: loading builtins: %w", err)
	}
	// Standard packages are imported implicitly (math.Sqrt works without import "math"), the
	// cluster builtins are in scope unqualified (myid()).
	in.ImportUsed()
	if _, err := in.Eval(`import . "godist"`); err != nil {
		return nil, fmt.Errorf("script: importing builtins: %w", err)
	}
	return y, nil
}

func (y *yaegiEngine) eval(ctx context.Context, code string) (reflect.Value, error) {
	if name := strings.TrimSpace(code); token.IsIdentifier(name) {
		// Reaping a global is the common case: read it without compiling anything.
		if v, ok := y.in.Globals()[name]; ok {
			return v, nil
		}
	}
	decl, src, off := classify(code)
	y.ns.panics.start()
	v, err := y.run(ctx, src)
	var cp compilePanic
	if errors.As(err, &cp) {
		// yaegi 0.16 cannot range over an integer (Go 1.22) and panics compiling it. Try
		// again with each range over an expression that could be an integer (no value
		// variable) ranging over make([]struct{}, expr) instead, which yields the same
		// indices; if that is not it, the first error stands.
		if alt, ok := rangeOverInt(src, decl); ok {
			if v2, err2 := y.run(ctx, alt); err2 == nil {
				v, err, src = v2, nil, alt
			}
		}
	}
	if err != nil || decl {
		// A declaration may change what a name refers to; a failed evaluation may have
		// declared part of its code.
		y.callees = nil
	}
	if err != nil {
		return v, y.ns.panics.wrap(err, code, off)
	}
	if decl || y.valueless(src) {
		// yaegi returns an internal placeholder for declarations, and whatever value it
		// last computed for a statement without one.
		return reflect.Value{}, nil
	}
	return v, nil
}

// valueless reports whether statements src, which yaegi ran and which gave v, have no value
// although yaegi gave one: when the last statement is not an expression or an assignment
// (a loop, an if, a send: yaegi gives a stale value), or is a call of a function without
// results (yaegi gives a *interface{} of its own for an interpreted function, a stale value for
// a compiled one: only the function's type tells).
func (y *yaegiEngine) valueless(src string) bool {
	const prefix = "package main; func main() {"
	f, err := parser.ParseFile(token.NewFileSet(), "", prefix+src+"\n}", parser.SkipObjectResolution)
	if err != nil || len(f.Decls) != 1 {
		return false
	}
	body := f.Decls[0].(*ast.FuncDecl).Body.List
	for len(body) > 0 {
		if _, empty := body[len(body)-1].(*ast.EmptyStmt); !empty {
			break
		}
		body = body[:len(body)-1]
	}
	if len(body) == 0 {
		return true
	}
	var x ast.Expr
	switch s := body[len(body)-1].(type) {
	case *ast.AssignStmt, *ast.IncDecStmt:
		return false
	case *ast.ExprStmt:
		x = ast.Unparen(s.X)
	default:
		return true
	}
	call, ok := x.(*ast.CallExpr)
	if !ok {
		return false
	}
	for _, st := range body {
		// Top-level statements that define globals may give a name a new type.
		if a, ok := st.(*ast.AssignStmt); (ok && a.Tok == token.DEFINE) || isDecl(st) {
			y.callees = nil
			break
		}
	}
	text := func(n ast.Node) string { return src[int(n.Pos())-1-len(prefix) : int(n.End())-1-len(prefix)] }
	fun := text(call.Fun)
	if none, ok := y.callees[fun]; ok {
		return none
	}
	// Compiled, not run: yaegi refuses to return the value of a call without results.
	_, err = y.compile("func _() any { return " + text(call) + " }")
	none := err != nil && strings.Contains(err.Error(), "not enough arguments to return")
	if y.callees == nil || len(y.callees) >= 1024 {
		y.callees = map[string]bool{}
	}
	y.callees[fun] = none
	return none
}

func isDecl(st ast.Stmt) bool {
	_, ok := st.(*ast.DeclStmt)
	return ok
}

// run compiles and executes src in the caller's goroutine. Cancelling ctx stops the code:
// yaegi's EvalWithContext would run it in a goroutine of its own and return before it has
// stopped; top-level code runs in the interpreter's global frame, and the next evaluation would
// re-arm a stopped run that had not yet noticed its stop, leaving it running alongside. So we
// bump yaegi's run counter ourselves (what its stop does; every frame checks it at each step)
// and return once the code has really stopped. Interpreted loops stop at their next step; a
// compiled call (time.Sleep) runs to its end first.
func (y *yaegiEngine) run(ctx context.Context, src string) (reflect.Value, error) {
	if y.runID == nil {
		return y.in.EvalWithContext(ctx, src) // cannot stop a run ourselves: yaegi's way
	}
	prog, err := y.compile(src)
	if err != nil {
		return reflect.Value{}, err
	}
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		atomic.AddUint64(y.runID, 1)
		close(stopped)
	})
	v, err := y.in.Execute(prog) // recovers panics of the code into interp.Panic
	if !stop() {
		<-stopped
		return reflect.Value{}, ctx.Err()
	}
	return v, err
}

// compilePanic is a panic of yaegi's compiler (its way to fail on some valid Go).
type compilePanic struct{ v any }

func (c compilePanic) Error() string { return fmt.Sprint(c.v) }

func (y *yaegiEngine) compile(src string) (prog *interp.Program, err error) {
	defer func() {
		if p := recover(); p != nil {
			prog, err = nil, compilePanic{p}
		}
	}()
	return y.in.Compile(src)
}

// rangeOverInt rewrites, in src (declarations if decl, else statements as yaegi wraps them),
// every range statement without a value variable so that it ranges over
// make([]struct{}, X) rather than X. It reports whether there was one.
func rangeOverInt(src string, decl bool) (string, bool) {
	prefix := "package main; func main() {"
	if decl {
		prefix = "package main;"
	}
	full := prefix + src + "\n}"
	if decl {
		full = prefix + src
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "", full, 0)
	if err != nil {
		return "", false
	}
	type edit struct {
		at   int
		text string
	}
	var edits []edit
	ast.Inspect(f, func(n ast.Node) bool {
		r, ok := n.(*ast.RangeStmt)
		if !ok || r.Value != nil {
			return true
		}
		if _, lit := r.X.(*ast.CompositeLit); lit {
			return true
		}
		edits = append(edits,
			edit{fs.Position(r.X.Pos()).Offset - len(prefix), "make([]struct{}, "},
			edit{fs.Position(r.X.End()).Offset - len(prefix), ")"})
		return true
	})
	if len(edits) == 0 {
		return "", false
	}
	slices.SortStableFunc(edits, func(a, b edit) int { return b.at - a.at })
	out := src
	for _, e := range edits {
		if e.at < 0 || e.at > len(out) {
			return "", false
		}
		out = out[:e.at] + e.text + out[e.at:]
	}
	return out, true
}

func (y *yaegiEngine) globals() map[string]reflect.Value { return y.in.Globals() }

func (y *yaegiEngine) bind(v reflect.Value) error {
	h := reflect.New(v.Type()).Elem()
	h.Set(v)
	return y.in.Use(interp.Exports{bindKey: {"V": h}})
}

// refreshShared exposes the holders of y.shared as package godist/bound, dot-imported, so that
// each array is a global under its own name.
func (y *yaegiEngine) refreshShared() {
	y.callees = nil // a bound name may have a new type
	syms := map[string]reflect.Value{}
	for name, sv := range y.shared {
		syms[name] = sv.holder
	}
	if err := y.in.Use(interp.Exports{"godist/bound/bound": syms}); err != nil {
		return
	}
	// A second import of the same package is refused as a redeclaration, but the new
	// symbols are visible anyway: yaegi resolves dot-imported names at each compilation.
	y.in.Eval(`import . "godist/bound"`)
}

// builtins are the cluster functions in scope in every namespace.
func (y *yaegiEngine) builtins() map[string]reflect.Value {
	cl := func() *dist.Cluster {
		c := dist.Current(context.Background())
		if c == nil {
			panic("no cluster in this process")
		}
		return c
	}
	ctx := func() context.Context {
		if p := y.ns.ctx.Load(); p != nil {
			return *p
		}
		return context.Background()
	}
	b := remoteBuiltins(cl, ctx)
	for k, v := range map[string]reflect.Value{
		// myid returns this process's pid.
		"myid": reflect.ValueOf(func() int { return cl().MyID() }),
		// nprocs returns the number of processes, the driver included.
		"nprocs": reflect.ValueOf(func() int { return len(cl().Procs()) }),
		// nworkers returns the number of workers.
		"nworkers": reflect.ValueOf(func() int { return cl().NWorkers() }),
		// procs and workers return pids, ascending (workers() is [1] with no workers).
		"procs":   reflect.ValueOf(func() []int { return cl().Procs() }),
		"workers": reflect.ValueOf(func() []int { return cl().Workers() }),
		// call runs the compiled function registered under name in this process and returns
		// its result; a failure panics, which the evaluation reports as its error.
		"call": reflect.ValueOf(func(name string, args ...any) any {
			c := cl()
			v, err := c.CallByName(ctx(), c.MyID(), name, args...)
			if err != nil {
				panic(err)
			}
			return plain(v)
		}),
		// callat runs a registered function on process pid (remotecall_fetch).
		"callat": reflect.ValueOf(func(pid int, name string, args ...any) any {
			v, err := cl().CallByName(ctx(), pid, name, args...)
			if err != nil {
				panic(err)
			}
			return plain(v)
		}),
		// funcs lists the registered functions' names.
		"funcs": reflect.ValueOf(dist.RegisteredFuncs),
		// shared returns the named shared array of this process, or nil.
		"shared": reflect.ValueOf(func(name string) any {
			v, _ := shm.Lookup(name)
			return v
		}),
	} {
		b[k] = v
	}
	return b
}

// plain turns the integers of a generically decoded result (uint64, int64) into int where they
// fit, the type an interpreted integer literal has, so that results compare and print as code
// expects.
func plain(v any) any {
	switch x := v.(type) {
	case uint64:
		if x <= 1<<62 {
			return int(x)
		}
	case int64:
		return int(x)
	case []any:
		for i := range x {
			x[i] = plain(x[i])
		}
	case map[any]any:
		out := make(map[any]any, len(x))
		for k, e := range x {
			out[plain(k)] = plain(e)
		}
		return out
	}
	return v
}

// classify tells how yaegi will take code: as declarations (evaluated as a file, no value) or
// as statements (wrapped in a function). It returns the source to give yaegi and how many
// columns yaegi's wrapping adds before the first line, to report positions in the user's code.
func classify(code string) (decl bool, src string, off int) {
	const stmtWrap, declWrap = len("package main; func main() {"), len("package main;")
	switch firstToken(code) {
	case token.PACKAGE:
		return true, code, 0
	case token.CONST, token.IMPORT, token.TYPE, token.VAR, token.FUNC:
		if _, err := parser.ParseFile(token.NewFileSet(), "", "package main;"+code, 0); err == nil {
			return true, code, declWrap
		}
		if _, err := parser.ParseFile(token.NewFileSet(), "", "package main; func main() {;"+code+"\n}", 0); err != nil {
			return true, code, declWrap // neither: let yaegi report the declaration's error
		}
		// Statements after all: a function literal (func() T { … }()), or a declaration
		// followed by statements (var s string; fmt.Sscan(…, &s)). yaegi decides on the first
		// token and would fail, or lose the value; a leading empty statement makes it take
		// the code as statements.
		return false, ";" + code, stmtWrap + 1
	}
	return false, code, stmtWrap
}

func firstToken(code string) token.Token {
	var s scanner.Scanner
	fs := token.NewFileSet()
	s.Init(fs.AddFile("", fs.Base(), len(code)), []byte(code), nil, 0)
	_, tok, _ := s.Scan()
	return tok
}

// panicLog is the interpreter's stderr. yaegi prints "L:C: panic: F(...)" there for each
// interpreted frame a panic unwinds, innermost first. The last such line since an evaluation
// started is the statement of the evaluated code that panicked (inner frames may belong to code
// evaluated earlier, so their positions would mislead), and the first names the function where
// the panic happened. Other output goes to w.
type panicLog struct {
	w     io.Writer
	mu    sync.Mutex
	pos   string // of the outermost frame
	inner string // function of the innermost frame
}

var panicLine = regexp.MustCompile(`^(?:\S*?:)?(\d+):(\d+): panic: (\S*?)\(\.\.\.\)`)

func (p *panicLog) start() {
	p.mu.Lock()
	p.pos, p.inner = "", ""
	p.mu.Unlock()
}

func (p *panicLog) Write(b []byte) (int, error) {
	var rest bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if m := panicLine.FindSubmatch(line); m != nil {
			p.mu.Lock()
			p.pos = string(m[1]) + ":" + string(m[2])
			if p.inner == "" {
				p.inner = string(m[3])
			}
			p.mu.Unlock()
			continue
		}
		rest.Write(line)
	}
	if rest.Len() > 0 {
		if _, err := p.w.Write(rest.Bytes()); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

var posPrefix = regexp.MustCompile(`^(?:\S*?\.go:)?(\d+):(\d+): ?`)

// wrap turns an error of yaegi into an *EvalError with the position in the user's code.
func (p *panicLog) wrap(err error, code string, off int) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := &EvalError{Kind: KindCompile}
	var pe interp.Panic
	var sl scanner.ErrorList
	switch {
	case errors.As(err, &pe):
		e.Kind = KindPanic
		e.Msg = fmt.Sprint(pe.Value)
		if inner, ok := pe.Value.(error); ok {
			e.Msg = inner.Error()
		}
		e.Stack = string(pe.Stack)
		p.mu.Lock()
		pos, inner := p.pos, p.inner
		p.mu.Unlock()
		if inner != "" && inner != "main" {
			e.Msg += " (in " + strings.TrimPrefix(inner, "main.") + ")"
		}
		if pos != "" {
			l, c, _ := strings.Cut(pos, ":")
			e.Line, _ = strconv.Atoi(l)
			e.Col, _ = strconv.Atoi(c)
		}
	case errors.As(err, &sl) && len(sl) > 0:
		e.Kind = KindParse
		e.Line, e.Col, e.Msg = sl[0].Pos.Line, sl[0].Pos.Column, sl[0].Msg
	default:
		msg := err.Error()
		if m := posPrefix.FindStringSubmatch(msg); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Col, _ = strconv.Atoi(m[2])
			msg = msg[len(m[0]):]
		}
		if msg == "constant definition loop" {
			// yaegi's words for a global definition it cannot resolve, which is nearly always
			// a name that is not defined.
			msg = "undefined name in definition (or a definition that depends on itself)"
		}
		e.Msg = msg
	}
	if e.Line == 1 && e.Col > off {
		e.Col -= off
	}
	// Code is wrapped in one more line than the user wrote ("\n}"): an error at the
	// wrapper's end means the input ended early.
	if n := strings.Count(code, "\n") + 1; e.Line > n {
		e.Line, e.Col = n, 0
	}
	return e
}
