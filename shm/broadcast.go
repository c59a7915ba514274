package shm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/godist/dist"
)

// clone makes another handle of a in this process, with its own weight and mapping claim.
func (a *Array) clone() (*Array, error) {
	w, err := a.st.split()
	if err != nil {
		return nil, err
	}
	var m *mapping
	a.st.mu.Lock()
	if a.st.m != nil {
		m = a.st.m
		mappings.Lock()
		m.n++
		mappings.Unlock()
	}
	c := a.st.c
	a.st.mu.Unlock()
	return newArray(c, a.md, w, m), nil
}

// Bind makes a reachable under name in this process (Lookup, LookupArray, Names; Fork's
// children see it too). The binding holds its own handle, so a's caller may release a. A
// previous binding of name is released.
func Bind(name string, a *Array) error {
	if a == nil {
		return errors.New("shm: Bind: nil array")
	}
	h, err := a.clone()
	if err != nil {
		return fmt.Errorf("shm: Bind %q: %w", name, err)
	}
	if old, ok := bind(name, h).(*Array); ok && old != nil {
		old.Release()
	}
	return nil
}

// Unbind removes name from this process's bindings and releases the array it held; it reports
// whether there was one.
func Unbind(name string) bool {
	v, ok := Lookup(name)
	if !ok || !unbind(name, v) {
		return false
	}
	if a, ok := v.(*Array); ok {
		a.Release()
	}
	return true
}

type bindReq struct {
	_    struct{} `cbor:",toarray"`
	Name string
	A    *Array // nil: unbind
}

// bindFunc binds (or unbinds) a name in the process it runs on.
var bindFunc = dist.NewFunc("godist.shm.bind", func(ctx context.Context, r bindReq) (struct{}, error) {
	if r.A == nil {
		Unbind(r.Name)
		return struct{}{}, nil
	}
	err := Bind(r.Name, r.A)
	if c := dist.Current(ctx); c != nil && dist.CallerPid(ctx) != 0 && dist.CallerPid(ctx) != c.MyID() {
		r.A.Release() // received for this call only; the binding has its own handle
	}
	return struct{}{}, err
})

type fillReq struct {
	_     struct{} `cbor:",toarray"`
	A     *Array
	Bytes []byte
}

// fillFunc copies bytes into an array on its host, for a caller elsewhere.
var fillFunc = dist.NewFunc("godist.shm.fill", func(ctx context.Context, r fillReq) (struct{}, error) {
	defer r.A.Release()
	b := r.A.Bytes()
	if b == nil {
		return struct{}{}, fmt.Errorf("shm: fill: %w", ErrNotLocal)
	}
	if len(b) != len(r.Bytes) {
		return struct{}{}, fmt.Errorf("shm: fill: %d bytes for a %d-byte array", len(r.Bytes), len(b))
	}
	copy(b, r.Bytes)
	return struct{}{}, nil
})

// BroadcastShared makes, on each host of topo, one SharedArray holding a copy of value (shaped
// dims, column-major; nil dims means a vector), and binds it under name in every process of
// topo on that host, so that each of them reaches its host's copy with Lookup(name) or
// LookupArray[T](name), and the interpreter by name (ClusterUtils' broadcast_shared). value
// crosses to each host once. It returns the caller's handle of each host's array, by
// representative: the caller owns them and Releases them when done; the bindings hold their
// own handles until UnbindShared. Writes through a host's array are seen by every process of
// that host and by no other host. It is all or nothing: on failure no handle is returned and
// name is left unbound in every process of topo, even where something was bound to it before.
func BroadcastShared[T any](ctx context.Context, c *dist.Cluster, topo Topology, value []T, dims []int, name string) (map[int]*SharedArray[T], error) {
	if c == nil {
		return nil, errors.New("shm: BroadcastShared: nil cluster")
	}
	if dims == nil {
		dims = []int{len(value)}
	}
	if n, err := product(dims); err != nil || n != len(value) {
		return nil, fmt.Errorf("shm: BroadcastShared: dims %v for %d values", dims, len(value))
	}
	out := make(map[int]*SharedArray[T], len(topo))
	fail := func(err error) (map[int]*SharedArray[T], error) {
		UnbindShared(context.WithoutCancel(ctx), c, topo, name)
		for _, s := range out {
			s.Release()
		}
		return nil, fmt.Errorf("shm: BroadcastShared %q: %w", name, err)
	}
	var raw []byte
	if len(value) > 0 {
		raw = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(value))), len(value)*int(unsafe.Sizeof(value[0])))
	}
	for _, rep := range topo.Reps() {
		pids := topo[rep]
		s, err := NewSharedArray[T](ctx, c, dims, WithPids(pids...))
		if err != nil {
			return fail(err)
		}
		out[rep] = s
		if s.Local() {
			copy(s.Data(), value)
		} else if _, err := fillFunc.Call(ctx, c, s.Owner(), fillReq{A: s.Array, Bytes: raw}); err != nil {
			return fail(err)
		}
		if _, err := bindFunc.On(ctx, c, pids, bindReq{Name: name, A: s.Array}); err != nil {
			return fail(err)
		}
	}
	return out, nil
}

// UnbindShared removes name from every process of topo and releases their handles; an array's
// memory is freed once its last handle anywhere, the caller's from BroadcastShared included,
// is released. A process where name is not bound is no error.
func UnbindShared(ctx context.Context, c *dist.Cluster, topo Topology, name string) error {
	var pids []int
	for _, ps := range topo {
		pids = append(pids, ps...)
	}
	slices.Sort(pids)
	_, err := bindFunc.On(ctx, c, pids, bindReq{Name: name})
	return err
}
