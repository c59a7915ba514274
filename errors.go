package dist

import (
	"context"
	"errors"
	"fmt"

	"github.com/godist/dist/internal/codec"
)

// ErrProcessExited is matched (errors.Is) by every error caused by a process of the cluster that
// has exited or can no longer be reached. The error itself is a *ProcessExitedError naming the pid.
var ErrProcessExited = errors.New("dist: process exited")

// ErrNoSuchProcess is matched by the error of a call to a pid that was never a process of the
// cluster. The error is a *ProcessExitedError naming the pid (so that code that handles
// processes leaving handles it too), whose text says "no such process".
var ErrNoSuchProcess = errors.New("dist: no such process")

// ErrKilledWorker is matched by the error of a Pmap item or a TaskQueue task that was running
// on workers that died as many times as allowed (Pmap: WithAllowedFailures, default 3; tasks:
// 3): Dask's KilledWorker. It is not run again, so that it kills no more workers. The error
// also wraps the last worker's exit, so errors.Is(err, ErrProcessExited) holds as well.
var ErrKilledWorker = errors.New("dist: the work was running on every worker that died under it")

// ErrUnknownFunc is matched when a call names a function that the remote process never registered,
// usually because the binaries differ or the NewFunc call is not at package level.
var ErrUnknownFunc = errors.New("dist: unknown function")

// ErrTypeMismatch is matched when an argument or result cannot be decoded into the type the
// receiving side expects.
var ErrTypeMismatch = errors.New("dist: type mismatch")

// decodeError describes a failure to decode the what ("argument", "result") of fn: an error
// wrapping ErrTypeMismatch when the data does not fit the type, else the failure of the
// type's own decoder (a shared array that cannot be mapped here, say), wrapped so that
// errors.Is sees it, rather than a mismatch that would send users looking at their types.
func decodeError(what, fn string, err error) error {
	var de *codec.DecoderError
	if errors.As(err, &de) {
		return fmt.Errorf("dist: %s of %s: %w", what, fn, de)
	}
	return fmt.Errorf("%w: %s of %s: %v", ErrTypeMismatch, what, fn, err)
}

// ErrChannelClosed is matched by Put on a closed RemoteChannel and by Take/Fetch on a closed and
// drained one.
var ErrChannelClosed = errors.New("dist: channel closed")

// ErrReleased is matched by Fetch on a Future whose reference was released before its value arrived.
var ErrReleased = errors.New("dist: reference released")

// ErrNotDriver is matched when an operation that only the driver (pid 1) may do is tried elsewhere.
var ErrNotDriver = errors.New("dist: only the driver can do this")

// ErrNoWorkers is matched when a call asks for "any worker" and the cluster has none.
var ErrNoWorkers = errors.New("dist: no workers")

// ProcessExitedError reports that the process Pid exited or became unreachable. It matches
// ErrProcessExited with errors.Is.
type ProcessExitedError struct {
	Pid   int
	Cause error // what this process observed, e.g. the connection's end; may be nil
}

func (e *ProcessExitedError) Error() string {
	if errors.Is(e.Cause, ErrNoSuchProcess) {
		return fmt.Sprintf("dist: no such process: %d", e.Pid)
	}
	if e.Cause != nil {
		return fmt.Sprintf("dist: process %d exited: %v", e.Pid, e.Cause)
	}
	return fmt.Sprintf("dist: process %d exited", e.Pid)
}

// Is makes errors.Is(err, ErrProcessExited) true.
func (e *ProcessExitedError) Is(target error) bool { return target == ErrProcessExited }

// Unwrap returns the cause.
func (e *ProcessExitedError) Unwrap() error { return e.Cause }

// RemoteError is a failure of a function that ran in another process: an error it returned or a
// panic it raised. Stack is the remote goroutine's stack for panics. Unwrap returns the remote
// error's cause when it was one of this package's errors (so errors.Is(err, ErrProcessExited)
// holds across hops), or context.Canceled/DeadlineExceeded.
type RemoteError struct {
	Pid   int    // where the function ran
	Func  string // the registered name of the function
	Msg   string // the error's text, or "panic: ..." for a panic
	Stack string // the remote stack for a panic, else empty
	cause error
}

func (e *RemoteError) Error() string {
	if e.Pid == 1 {
		return fmt.Sprintf("dist: on the driver (process 1): %s: %s", e.Func, e.Msg)
	}
	return fmt.Sprintf("dist: on worker %d: %s: %s", e.Pid, e.Func, e.Msg)
}

// Unwrap returns the reconstructed cause, if the remote error carried a known one.
func (e *RemoteError) Unwrap() error { return e.cause }

// errRecord is the wire form of an error. Code names a sentinel that is rebuilt on arrival.
type errRecord struct {
	_      struct{} `cbor:",toarray"`
	Code   string
	Pid    int
	Func   string
	Msg    string
	Stack  string
	Exited int        // the pid for code "exited"
	Cause  *errRecord // a nested RemoteError
}

const (
	codeNone     = ""
	codeExited   = "exited"
	codeNoSuch   = "no_such_process"
	codeUnknown  = "unknown_func"
	codeType     = "type"
	codeCanceled = "canceled"
	codeDeadline = "deadline"
	codeClosed   = "chan_closed"
	codeReleased = "released"
	codeTopology = "topology"
	codeRemote   = "remote"
)

// recordOf describes err, which happened in function fn on process pid, for the wire.
// A RemoteError passes through unchanged, so the pid and stack of the original failure survive
// any number of hops.
func recordOf(pid int, fn string, err error) *errRecord {
	if re, ok := err.(*RemoteError); ok {
		return remoteRecord(re)
	}
	r := &errRecord{Pid: pid, Func: fn, Msg: err.Error()}
	setCause(r, err)
	return r
}

func remoteRecord(re *RemoteError) *errRecord {
	r := &errRecord{Pid: re.Pid, Func: re.Func, Msg: re.Msg, Stack: re.Stack}
	if re.cause != nil {
		setCause(r, re.cause)
	}
	return r
}

// setCause records which of this package's errors (or context's) err wraps.
func setCause(r *errRecord, err error) {
	var re *RemoteError
	var pe *ProcessExitedError
	switch {
	case errors.As(err, &re):
		r.Code, r.Cause = codeRemote, remoteRecord(re)
	case errors.As(err, &pe):
		r.Code, r.Exited = codeExited, pe.Pid
		if errors.Is(pe.Cause, ErrNoSuchProcess) {
			r.Code = codeNoSuch
		}
	case errors.Is(err, ErrNoSuchProcess):
		r.Code = codeNoSuch
	case errors.Is(err, ErrUnknownFunc):
		r.Code = codeUnknown
	case errors.Is(err, ErrTypeMismatch):
		r.Code = codeType
	case errors.Is(err, ErrChannelClosed):
		r.Code = codeClosed
	case errors.Is(err, ErrReleased):
		r.Code = codeReleased
	case errors.Is(err, ErrTopology):
		r.Code = codeTopology
	case errors.Is(err, context.Canceled):
		r.Code = codeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		r.Code = codeDeadline
	}
}

// toError rebuilds the RemoteError a record describes, with its cause.
func (r *errRecord) toError() error {
	re := &RemoteError{Pid: r.Pid, Func: r.Func, Msg: r.Msg, Stack: r.Stack}
	switch r.Code {
	case codeExited:
		re.cause = &ProcessExitedError{Pid: r.Exited}
	case codeNoSuch:
		re.cause = ErrNoSuchProcess
		if r.Exited != 0 {
			re.cause = &ProcessExitedError{Pid: r.Exited, Cause: ErrNoSuchProcess}
		}
	case codeUnknown:
		re.cause = ErrUnknownFunc
	case codeType:
		re.cause = ErrTypeMismatch
	case codeClosed:
		re.cause = ErrChannelClosed
	case codeReleased:
		re.cause = ErrReleased
	case codeTopology:
		re.cause = ErrTopology
	case codeCanceled:
		re.cause = context.Canceled
	case codeDeadline:
		re.cause = context.DeadlineExceeded
	case codeRemote:
		if r.Cause != nil {
			re.cause = r.Cause.toError()
		}
	}
	return re
}
