package script

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/godist/dist"
)

// ProcStats is one process's resource use (the notebook's memstats, from ps).
type ProcStats struct {
	Pid     int           // cluster pid
	Host    string        // hostname
	OSPid   int           // operating-system process id
	RSS     int64         // resident memory, bytes
	CPU     time.Duration // user + system CPU time used so far
	CPUPct  float64       // CPU time over wall time since the process started, in percent (ps's %cpu)
	Uptime  time.Duration // wall time since the process started
	HeapUse uint64        // bytes of live Go heap (no GC is forced)
}

var started = time.Now()

var statsFn = dist.NewFunc("script.memstats", func(ctx context.Context, _ struct{}) (ProcStats, error) {
	return localStats(ctx)
})

func localStats(ctx context.Context) (ProcStats, error) {
	host, _ := os.Hostname()
	st := ProcStats{Pid: myPid(ctx), Host: host, OSPid: os.Getpid(), Uptime: time.Since(started)}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		st.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if st.Uptime > 0 {
		st.CPUPct = 100 * float64(st.CPU) / float64(st.Uptime)
	}
	rss, err := readRSS()
	if err != nil {
		return st, err
	}
	st.RSS = rss
	if c := dist.Current(ctx); c != nil {
		st.HeapUse = c.Stats().HeapAlloc
	}
	return st, nil
}

// readRSS reads VmRSS from /proc/self/status (Linux).
func readRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("script: resident memory: %w", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(string(f[0]), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("script: resident memory: %w", err)
				}
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("script: no VmRSS in /proc/self/status")
}

// MemStats returns the resource use of each of pids (all processes when pids is nil), sorted by
// pid. The error is the lowest failing pid's; the slice holds the others.
func MemStats(ctx context.Context, c *dist.Cluster, pids []int) ([]ProcStats, error) {
	if pids == nil {
		pids = c.Procs()
	}
	m, err := statsFn.On(ctx, c, pids, struct{}{})
	out := make([]ProcStats, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b ProcStats) int { return a.Pid - b.Pid })
	return out, err
}

// VarInfo describes a global of a namespace (a line of Julia's whos).
type VarInfo struct {
	Name  string // the global's name
	Type  string // Go syntax, as the interpreter knows it
	Bytes int64  // memory the value reaches (shared backing arrays counted once)
	Const bool   // a constant rather than a variable
}

var varsFn = dist.NewFunc("script.vars", func(ctx context.Context, _ struct{}) ([]VarInfo, error) {
	return localVars(ctx)
})

func localVars(ctx context.Context) ([]VarInfo, error) {
	var out []VarInfo
	err := current().with(ctx, func(e engine) error {
		for name, v := range e.globals() {
			if !v.IsValid() {
				continue
			}
			out = append(out, VarInfo{Name: name, Type: v.Type().String(), Bytes: sizeOf(v), Const: !v.CanSet()})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b VarInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, err
}

// Vars lists the globals defined in the namespace of each of pids, sorted by name, by pid
// (Julia's whos on each worker). A process whose namespace was never used has none.
func Vars(ctx context.Context, c *dist.Cluster, pids []int) (map[int][]VarInfo, error) {
	return varsFn.On(ctx, c, pids, struct{}{})
}

// sizeOf estimates the memory v reaches: its own size plus what its pointers, slices, maps and
// strings refer to, each distinct block counted once.
func sizeOf(v reflect.Value) int64 {
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value, depth int) int64
	walk = func(v reflect.Value, depth int) int64 {
		if depth > 64 || !v.IsValid() {
			return 0
		}
		var n int64
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return 0
			}
			seen[v.Pointer()] = true
			n += int64(v.Type().Elem().Size()) + walkInner(v.Elem(), depth, walk)
		case reflect.Slice:
			if v.IsNil() || v.Cap() == 0 || seen[v.Pointer()] {
				return 0
			}
			seen[v.Pointer()] = true
			n += int64(v.Cap()) * int64(v.Type().Elem().Size())
			for i := range v.Len() {
				n += walkInner(v.Index(i), depth, walk)
			}
		case reflect.String:
			if v.Len() > 0 {
				p := uintptr(unsafe.Pointer(unsafe.StringData(v.String())))
				if !seen[p] {
					seen[p] = true
					n += int64(v.Len())
				}
			}
		case reflect.Map:
			if v.IsNil() || seen[v.Pointer()] {
				return 0
			}
			seen[v.Pointer()] = true
			kt, et := v.Type().Key(), v.Type().Elem()
			n += int64(v.Len()) * int64(kt.Size()+et.Size()+8) // entries plus some overhead each
			for it := v.MapRange(); it.Next(); {
				n += walkInner(it.Key(), depth, walk) + walkInner(it.Value(), depth, walk)
			}
		case reflect.Interface:
			if !v.IsNil() {
				e := v.Elem()
				n += int64(e.Type().Size()) + walkInner(e, depth, walk)
			}
		case reflect.Array:
			for i := range v.Len() {
				n += walkInner(v.Index(i), depth, walk)
			}
		case reflect.Struct:
			for i := range v.NumField() {
				n += walkInner(v.Field(i), depth, walk)
			}
		}
		return n
	}
	return int64(v.Type().Size()) + walk(v, 0)
}

// walkInner counts what an element refers to beyond its own (already counted) size.
func walkInner(v reflect.Value, depth int, walk func(reflect.Value, int) int64) int64 {
	switch v.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.String, reflect.Map, reflect.Interface, reflect.Array, reflect.Struct:
		return walk(v, depth+1)
	}
	return 0
}

type clearReq struct{ Names []string }

var clearFn = dist.NewFunc("script.clear", func(ctx context.Context, r clearReq) (reply, error) {
	return finish(ctx, nil, clearLocal(ctx, r.Names))
})

func clearLocal(ctx context.Context, names []string) error {
	if len(names) == 0 {
		n := current()
		// Wait for a running evaluation so that the fresh namespace never overlaps it.
		if err := n.lock(ctx); err != nil {
			return err
		}
		reset()
		n.unlock()
		return nil
	}
	return current().with(ctx, func(e engine) error {
		g := e.globals()
		for _, name := range names {
			v, ok := g[name]
			if !ok {
				continue // already clear
			}
			if !v.CanSet() {
				return &EvalError{Kind: KindTarget, Msg: name + " is a constant"}
			}
			v.SetZero()
		}
		return nil
	})
}

// Clear frees memory in the namespaces of pids (all processes when pids is nil). With names,
// each named global is set to its zero value, dropping what it referred to (Julia's clear!);
// names not defined are ignored. Without names, the whole namespace is dropped: the next
// evaluation there starts from a fresh one, as on first use (and sees AllowUnsafe if it was
// called since).
func Clear(ctx context.Context, c *dist.Cluster, pids []int, names ...string) error {
	if pids == nil {
		pids = c.Procs()
	}
	for _, n := range names {
		if err := checkName(n); err != nil {
			return err
		}
	}
	req := clearReq{Names: names}
	_, err := call(ctx, c, pids, clearFn, func(int) clearReq { return req })
	return err
}
