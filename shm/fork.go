package shm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/codec"
)

// envFork marks a child process started by Fork.
const envFork = "GODIST_SHM_FORK"

func init() { dist.OnMain(forkChild) }

// ForkError is the failure of one child of Fork.
type ForkError struct {
	Index int   // the child's index, 0-based
	OSPid int   // its operating-system pid, 0 if it never started
	Err   error // what went wrong: the function's error, or how the child ended
}

// Error says which child failed and how.
func (e *ForkError) Error() string {
	return fmt.Sprintf("shm: fork child %d (os pid %d): %v", e.Index, e.OSPid, e.Err)
}

// Unwrap returns the cause, for errors.Is and errors.As.
func (e *ForkError) Unwrap() error { return e.Err }

// forkSpec is what a child reads on its standard input.
type forkSpec struct {
	_      struct{} `cbor:",toarray"`
	Fn     string
	Index  int
	Arrays []forkArray
}

type forkArray struct {
	_    struct{} `cbor:",toarray"`
	Name string
	A    arrayWire
	FD   int
}

type forkResult struct {
	_   struct{} `cbor:",toarray"`
	Val []byte   // CBOR of the result
	Err string
}

// Fork runs f(i) for i in [0, n) in n child processes of this binary, concurrently, and returns
// the results in index order (PTools' pfork). The children see every array bound in the caller
// (Bind, BroadcastShared) under the same names, as the same memory, and may write it: large
// results belong there rather than in the return value. A child has no cluster of its own
// beyond itself, so f should compute, not call other processes. Every child is waited for
// (none is left a zombie, even when ctx is cancelled, which kills them). A child that fails or
// dies is a *ForkError for its index, joined into the error; the other results are still
// returned. The binary's main must call dist.Main first, as for workers.
func Fork[Out any](ctx context.Context, n int, f *dist.Func[int, Out]) ([]Out, error) {
	if f == nil || n < 0 {
		return nil, errors.New("shm: Fork: nil function or negative count")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("shm: Fork: %w", err)
	}
	// The caller's bound arrays, each given to the children as an inherited descriptor.
	var arrays []forkArray
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, name := range Names() {
		v, _ := Lookup(name)
		a, ok := v.(*Array)
		if !ok || !a.Local() {
			continue
		}
		a.st.mu.Lock()
		m := a.st.m
		a.st.mu.Unlock()
		if m == nil {
			continue
		}
		file, err := m.seg.File()
		if err != nil {
			return nil, fmt.Errorf("shm: Fork: array %q: %w", name, err)
		}
		files = append(files, file)
		arrays = append(arrays, forkArray{Name: name, A: a.md.wire(0), FD: 3 + len(files)})
	}
	// The children's temporary files (their one-process clusters make a directory) go in a
	// directory removed once they are all reaped, so that a killed child leaves nothing.
	tmp, err := os.MkdirTemp("", "godist-fork-")
	if err != nil {
		return nil, fmt.Errorf("shm: Fork: %w", err)
	}
	defer os.RemoveAll(tmp)
	outs := make([]Out, n)
	errs := make([]error, n)
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			b, pid, err := runChild(ctx, exe, tmp, forkSpec{Fn: f.Name(), Index: i, Arrays: arrays}, files)
			if err == nil {
				err = codec.Unmarshal(b, &outs[i])
			}
			if err != nil {
				errs[i] = &ForkError{Index: i, OSPid: pid, Err: err}
			}
		}()
	}
	for range n {
		<-done
	}
	return outs, errors.Join(slices.DeleteFunc(errs, func(e error) bool { return e == nil })...)
}

// runChild starts one child, waits for it and returns the CBOR of its result.
func runChild(ctx context.Context, exe, tmp string, spec forkSpec, files []*os.File) ([]byte, int, error) {
	in, err := codec.Marshal(&spec)
	if err != nil {
		return nil, 0, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, 0, err
	}
	defer pr.Close()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), envFork+"=1", "TMPDIR="+tmp)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = append([]*os.File{pw}, files...)
	err = cmd.Start()
	pw.Close() // the child has its copy; EOF comes when it exits
	if err != nil {
		return nil, 0, err
	}
	out, rerr := io.ReadAll(pr)
	werr := cmd.Wait() // always reaped
	pid := cmd.Process.Pid
	var res forkResult
	if rerr == nil && len(out) > 0 {
		if err := codec.Unmarshal(out, &res); err != nil {
			return nil, pid, fmt.Errorf("undecodable result: %w", err)
		}
		if werr == nil {
			if res.Err != "" {
				return nil, pid, errors.New(res.Err)
			}
			return res.Val, pid, nil
		}
	}
	if werr != nil {
		if ctx.Err() != nil {
			return nil, pid, fmt.Errorf("%w (%v)", ctx.Err(), werr)
		}
		return nil, pid, fmt.Errorf("child ended without a result: %w", werr)
	}
	if rerr != nil {
		return nil, pid, rerr
	}
	return nil, pid, errors.New("child exited without a result")
}

// forkChild runs in a child started by Fork: map the caller's arrays, bind them, run the
// function, write the result to descriptor 3 and exit.
func forkChild() {
	if os.Getenv(envFork) == "" {
		return
	}
	os.Unsetenv(envFork)
	out := os.NewFile(3, "result")
	res := runForkChild()
	b, err := codec.Marshal(&res)
	if err != nil {
		b, _ = codec.Marshal(&forkResult{Err: fmt.Sprintf("result not encodable: %v", err)})
	}
	if _, err := out.Write(b); err != nil {
		os.Exit(3)
	}
	out.Close()
	os.Exit(0)
}

func runForkChild() forkResult {
	fail := func(err error) forkResult { return forkResult{Err: err.Error()} }
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fail(err)
	}
	var spec forkSpec
	if err := codec.Unmarshal(in, &spec); err != nil {
		return fail(fmt.Errorf("fork spec: %w", err))
	}
	for _, fa := range spec.Arrays {
		seg, err := Open(fa.FD)
		os.NewFile(uintptr(fa.FD), "").Close()
		if err != nil {
			return fail(fmt.Errorf("array %q: %w", fa.Name, err))
		}
		tok := string(fa.A.Token)
		m, err := getMapping(tok, func() (*Segment, error) { return seg, nil })
		if err != nil {
			return fail(err)
		}
		md, err := metaOf(&fa.A)
		if err != nil {
			return fail(err)
		}
		bind(fa.Name, newArray(nil, md, 0, m))
	}
	ctx := context.Background()
	c, err := dist.Start(ctx, dist.WithWorkers(0))
	if err != nil {
		return fail(err)
	}
	defer c.Close()
	v, err := c.CallByName(ctx, c.MyID(), spec.Fn, spec.Index)
	if re := (*dist.RemoteError)(nil); errors.As(err, &re) {
		return forkResult{Err: re.Func + ": " + re.Msg}
	}
	if err != nil {
		return fail(err)
	}
	b, err := codec.Marshal(v)
	if err != nil {
		return fail(fmt.Errorf("result: %w", err))
	}
	return forkResult{Val: b}
}
