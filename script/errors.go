package script

import (
	"errors"
	"fmt"
)

// Kinds of EvalError.
const (
	KindParse   = "parse"   // the code is not Go
	KindCompile = "compile" // it is Go, but wrong: an undefined name, a type error, …
	KindPanic   = "panic"   // it panicked while running (index out of range, nil map, panic(…))
	KindValue   = "value"   // it ran, but its result cannot be sent back (see Value)
	KindTarget  = "target"  // a Sow target is not something that can be assigned
)

// ErrEval is matched (errors.Is) by every *EvalError.
var ErrEval = errors.New("script: evaluation failed")

// EvalError is a failure of interpreted code on one process. The process and its namespace
// live on: only that evaluation failed.
type EvalError struct {
	Pid       int    // the process the code ran on
	Kind      string // KindParse, KindCompile, KindPanic, KindValue or KindTarget
	Line, Col int    // the position in the code (1-based), 0 when unknown
	Msg       string // what went wrong
	Stack     string // for a panic, the interpreter's Go stack (for reporting bugs)
}

// Error says where the code failed: "script: pid 3: 2:5: panic: …".
func (e *EvalError) Error() string {
	pos := ""
	if e.Line > 0 {
		pos = fmt.Sprintf("%d:%d: ", e.Line, e.Col)
		if e.Col == 0 {
			pos = fmt.Sprintf("%d: ", e.Line)
		}
	}
	what := ""
	if e.Kind == KindPanic {
		what = "panic: "
	}
	return fmt.Sprintf("script: pid %d: %s%s%s", e.Pid, pos, what, e.Msg)
}

// Is makes errors.Is(err, ErrEval) hold.
func (e *EvalError) Is(target error) bool { return target == ErrEval }

// evalErrorOf turns any error of a local evaluation into an *EvalError of process pid, keeping
// context errors as they are (so errors.Is(err, context.Canceled) holds).
func evalErrorOf(pid int, err error) *EvalError {
	if err == nil {
		return nil
	}
	var ee *EvalError
	if errors.As(err, &ee) {
		c := *ee
		c.Pid = pid
		return &c
	}
	kind := KindCompile
	if errors.Is(err, ErrNotWireable) {
		kind = KindValue
	}
	return &EvalError{Pid: pid, Kind: kind, Msg: err.Error()}
}
