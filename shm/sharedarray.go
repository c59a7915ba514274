package shm

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"unsafe"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/codec"
)

// SharedArray is an N-dimensional array of fixed-size elements (numbers, bools, arrays and
// structs of those: no pointers, strings, slices, maps or interfaces) whose memory is shared by
// every process of one host that holds a handle to it (Julia's SharedArray). Writes by one
// process are seen by the others without copies; like any shared memory, the processes must
// order their accesses themselves (disjoint parts, or a call boundary between writer and reader).
//
// Elements are stored in column-major order, as in Julia: the first index varies fastest.
// Indices are 0-based.
//
// A *SharedArray may be put inside the arguments of remote functions: a receiver on the same
// host gets the same memory, not a copy; one on another host gets a handle that describes and
// prints the array (fetching its contents from the host), but cannot index it (Local is false).
// The embedded *Array carries the untyped methods (Dims, Len, Procs, Release, …).
type SharedArray[T any] struct {
	*Array
	data []T
}

// Range is a half-open range of linear indices [Lo, Hi).
type Range struct {
	Lo int // the first index in the range
	Hi int // one past the last index; Hi == Lo is an empty range
}

// Len returns Hi-Lo.
func (r Range) Len() int { return r.Hi - r.Lo }

// String formats the range as lo:hi (half-open).
func (r Range) String() string { return fmt.Sprintf("%d:%d", r.Lo, r.Hi) }

// Option configures NewSharedArray.
type Option func(*options)

type options struct {
	pids []int
	init interface{ Name() string }
	file string
}

// WithPids sets the participating processes: they must all be on one host. By default they are
// the workers on the caller's host, or the caller alone if there are none.
func WithPids(pids ...int) Option { return func(o *options) { o.pids = slices.Clone(pids) } }

// WithInit runs f on every participating process, concurrently, with the new array as argument,
// before NewSharedArray returns. f must be a *dist.Func[*SharedArray[T], struct{}] (registered,
// since code moves by registration); each process typically fills its LocalIndices.
func WithInit[T any](f *dist.Func[*SharedArray[T], struct{}]) Option {
	return func(o *options) { o.init = f }
}

// WithFile backs the array by a file instead of anonymous memory (Julia's
// SharedArray(filename, …)): the file is created or extended as needed (its pages reserved),
// its existing contents are kept, and it stays after the array is freed. The path is opened by
// the array's owner, a process on the participating host.
func WithFile(path string) Option { return func(o *options) { o.file = path } }

// elemInfo checks that T can live in shared memory and names it.
func elemInfo[T any]() (key string, size int, err error) {
	t := reflect.TypeFor[T]()
	if err := checkElem(t); err != nil {
		return "", 0, fmt.Errorf("shm: element type %v: %w", t, err)
	}
	key = typeKey(t)
	registerType(key, t)
	return key, int(t.Size()), nil
}

func checkElem(t reflect.Type) error {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return nil
	case reflect.Array:
		return checkElem(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if err := checkElem(t.Field(i).Type); err != nil {
				return fmt.Errorf("field %s: %w", t.Field(i).Name, err)
			}
		}
		if t.Size() == 0 {
			return errors.New("zero size")
		}
		return nil
	}
	return fmt.Errorf("%v holds pointers or has no fixed size", t.Kind())
}

func typeKey(t reflect.Type) string {
	if t.Name() != "" && t.PkgPath() != "" {
		return t.PkgPath() + "." + t.Name()
	}
	return t.String()
}

// types maps element keys to types, for printing arrays whose handle is untyped here.
var types sync.Map

func registerType(key string, t reflect.Type) { types.LoadOrStore(key, t) }

func init() {
	for _, v := range []any{false, int(0), int8(0), int16(0), int32(0), int64(0), uint(0), uint8(0), uint16(0),
		uint32(0), uint64(0), float32(0), float64(0), complex64(0), complex128(0)} {
		t := reflect.TypeOf(v)
		registerType(typeKey(t), t)
	}
}

// NewSharedArray creates an array of the given dimensions, zero-filled (or with a backing
// file's contents), shared by the participating processes (WithPids), and runs the WithInit
// function on each of them. The participants must be on one host; the caller may be elsewhere,
// in which case the lowest participating pid creates the segment. A full /dev/shm, a full file
// system or a failed map is an error (ErrNoSpace for the first two), never a SIGBUS later. If
// the init function fails anywhere, the array is released and the error names the function.
// The caller owns the returned handle: Release it when done (an unreachable handle releases
// itself, but only when the garbage collector gets to it).
func NewSharedArray[T any](ctx context.Context, c *dist.Cluster, dims []int, opts ...Option) (*SharedArray[T], error) {
	if c == nil {
		return nil, errors.New("shm: NewSharedArray: nil cluster")
	}
	elem, size, err := elemInfo[T]()
	if err != nil {
		return nil, err
	}
	var o options
	for _, f := range opts {
		f(&o)
	}
	var init *dist.Func[*SharedArray[T], struct{}]
	if o.init != nil {
		f, ok := o.init.(*dist.Func[*SharedArray[T], struct{}])
		if !ok {
			return nil, fmt.Errorf("shm: NewSharedArray: init %s is a %T, want a *dist.Func[*shm.SharedArray[%v], struct{}]", o.init.Name(), o.init, reflect.TypeFor[T]())
		}
		init = f
	}
	if _, err := product(dims); err != nil {
		return nil, fmt.Errorf("shm: NewSharedArray: %w", err)
	}
	pids, host, err := participants(ctx, c, o.pids)
	if err != nil {
		return nil, fmt.Errorf("shm: NewSharedArray: %w", err)
	}
	req := createReq{Dims: dims, Elem: elem, ElemSize: size, Pids: pids, File: o.file}
	var a *Array
	if myHost, _ := hostID(); host == myHost {
		a, err = createHere(c, req)
	} else {
		var w arrayWire
		w, err = createFunc.Call(ctx, c, pids[0], req)
		if err == nil {
			a, err = attach(ctx, &w)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("shm: NewSharedArray %v of %s: %w", dims, elem, err)
	}
	s, err := typed[T](a)
	if err != nil {
		a.Release()
		return nil, err
	}
	if init != nil {
		if _, err := init.On(ctx, c, pids, s); err != nil {
			s.Release()
			return nil, fmt.Errorf("shm: NewSharedArray: init %s: %w", init.Name(), err)
		}
	}
	return s, nil
}

type createReq struct {
	_        struct{} `cbor:",toarray"`
	Dims     []int
	Elem     string
	ElemSize int
	Pids     []int
	File     string
}

func createHere(c *dist.Cluster, r createReq) (*Array, error) {
	md, m, err := newOwned(c, r.Dims, r.Elem, r.ElemSize, r.Pids, r.File)
	if err != nil {
		return nil, err
	}
	mappings.Lock()
	m.n++ // the handle's claim
	mappings.Unlock()
	return newArray(c, md, initialWeight, m), nil
}

// createFunc creates an array's segment on a participating host for a caller elsewhere; all
// the weight goes to the caller's handle.
var createFunc = dist.NewFunc("godist.shm.create", func(ctx context.Context, r createReq) (arrayWire, error) {
	c := dist.Current(ctx)
	md, _, err := newOwned(c, r.Dims, r.Elem, r.ElemSize, r.Pids, r.File)
	if err != nil {
		return arrayWire{}, err
	}
	return md.wire(initialWeight), nil
})

// participants checks pids (default: the workers on the caller's host, or the caller) and
// returns them sorted with their host.
func participants(ctx context.Context, c *dist.Cluster, pids []int) ([]int, string, error) {
	me, _ := hostID()
	if len(pids) == 0 {
		local, err := LocalPids(ctx, c)
		if err != nil {
			return nil, "", err
		}
		for _, p := range local {
			if p != 1 {
				pids = append(pids, p)
			}
		}
		if len(pids) == 0 {
			pids = []int{c.MyID()}
		}
		return pids, me, nil
	}
	pids = slices.Clone(pids)
	slices.Sort(pids)
	pids = slices.Compact(pids)
	hosts, err := Hosts(ctx, c, pids...)
	if err != nil {
		return nil, "", err
	}
	host := hosts[pids[0]]
	for _, p := range pids[1:] {
		if hosts[p] != host {
			return nil, "", fmt.Errorf("participating processes on several hosts (pid %d on %q, pid %d on %q): a SharedArray lives on one host", pids[0], host, p, hosts[p])
		}
	}
	return pids, host, nil
}

// typed makes the typed view of a.
func typed[T any](a *Array) (*SharedArray[T], error) {
	elem, size, err := elemInfo[T]()
	if err != nil {
		return nil, err
	}
	if a.md.elem != elem || a.md.elemSize != size {
		return nil, fmt.Errorf("shm: array of %s (%d bytes), not of %s (%d bytes)", a.md.elem, a.md.elemSize, elem, size)
	}
	s := &SharedArray[T]{Array: a}
	if b := a.Bytes(); b != nil && a.md.length > 0 {
		s.data = unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), a.md.length)
	}
	return s, nil
}

// As returns the typed view of an untyped handle (from Lookup, for example). It fails if the
// element type is not T. The view shares a's handle rather than making a new claim: releasing
// either one releases both.
func As[T any](a *Array) (*SharedArray[T], error) {
	if a == nil {
		return nil, errors.New("shm: As: nil array")
	}
	return typed[T](a)
}

// LookupArray returns the array bound to name in this process (see Lookup) as a SharedArray[T].
// It is an error if nothing is bound to name or the element type is not T. The result shares
// the binding's handle, with the same lifetime rules as Lookup's: do not Release it.
func LookupArray[T any](name string) (*SharedArray[T], error) {
	v, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("shm: no array bound to %q in this process", name)
	}
	switch a := v.(type) {
	case *Array:
		return As[T](a)
	case *SharedArray[T]:
		return a, nil
	case interface{ untyped() *Array }:
		return As[T](a.untyped())
	}
	return nil, fmt.Errorf("shm: %q is bound to a %T, not an array", name, v)
}

func (s *SharedArray[T]) untyped() *Array { return s.Array }

// MarshalCBOR lets a *SharedArray travel inside a remote call's argument (as the same memory on
// the same host).
func (s *SharedArray[T]) MarshalCBOR() ([]byte, error) {
	if s == nil || s.Array == nil {
		return nil, errors.New("shm: marshal: nil SharedArray")
	}
	return s.Array.marshal()
}

// UnmarshalCBOR is the receiving side of MarshalCBOR. It fails if the array's element type is
// not T, or if this process is on the array's host and cannot map it.
func (s *SharedArray[T]) UnmarshalCBOR(data []byte) error {
	var w arrayWire
	if err := codec.Unmarshal(data, &w); err != nil {
		return err
	}
	a, err := attach(context.Background(), &w)
	if err != nil {
		return err
	}
	t, err := typed[T](a)
	if err != nil {
		a.Release()
		return err
	}
	*s = *t
	return nil
}

// Data returns the elements in column-major order, aliasing the shared memory, or nil where
// the array is not Local. Valid while the handle is reachable and not released.
func (s *SharedArray[T]) Data() []T {
	if !s.Local() {
		return nil
	}
	return s.data
}

// Index returns the linear index of the element at idx (one index per dimension, 0-based,
// column-major). It panics if idx is out of range, as slice indexing does.
func (s *SharedArray[T]) Index(idx ...int) int {
	d := s.md.dims
	if len(idx) != len(d) {
		panic(fmt.Sprintf("shm: %d indices for a %d-dimensional array", len(idx), len(d)))
	}
	lin, stride := 0, 1
	for k, i := range idx {
		if i < 0 || i >= d[k] {
			panic(fmt.Sprintf("shm: index %d out of range [0,%d) in dimension %d", i, d[k], k))
		}
		lin += i * stride
		stride *= d[k]
	}
	return lin
}

// Coords returns the per-dimension indices of linear index lin (the inverse of Index).
func (s *SharedArray[T]) Coords(lin int) []int {
	if lin < 0 || lin >= s.md.length {
		panic(fmt.Sprintf("shm: linear index %d out of range [0,%d)", lin, s.md.length))
	}
	out := make([]int, len(s.md.dims))
	for k, d := range s.md.dims {
		out[k] = lin % d
		lin /= d
	}
	return out
}

// At returns the element at idx. Where the array is not Local it panics, as indexing a nil
// slice does.
func (s *SharedArray[T]) At(idx ...int) T { return s.Data()[s.Index(idx...)] }

// Set stores v at idx (see At).
func (s *SharedArray[T]) Set(v T, idx ...int) { s.Data()[s.Index(idx...)] = v }

// Fill stores v in every element of r. Like slicing, it panics if r is out of range or, for a
// non-empty r, where the array is not Local.
func (s *SharedArray[T]) Fill(v T, r Range) {
	d := s.Data()[r.Lo:r.Hi]
	for i := range d {
		d[i] = v
	}
}

// IndexPids returns the position of this process among Procs, or -1 if it does not participate
// (Julia's indexpids, 0-based).
func (a *Array) IndexPids() int { return a.IndexOf(a.me()) }

// LocalIndices returns the linear indices assigned to this process (see LocalIndicesOf).
func (a *Array) LocalIndices() Range { return a.LocalIndicesOf(a.me()) }

// me is this process's pid in the handle's cluster (0 outside any).
func (a *Array) me() int {
	if a.st.c == nil {
		return 0
	}
	return a.st.c.MyID()
}

// IndexOf returns the position of pid among Procs, or -1 if it does not participate.
func (a *Array) IndexOf(pid int) int {
	i, ok := slices.BinarySearch(a.md.pids, pid)
	if !ok {
		return -1
	}
	return i
}

// LocalIndicesOf returns the linear indices assigned to pid: Chunk(Len, len(Procs)) at pid's
// position, or an empty range for a process that does not participate (Julia's localindices).
func (a *Array) LocalIndicesOf(pid int) Range {
	i := a.IndexOf(pid)
	if i < 0 {
		return Range{}
	}
	return Chunk(a.md.length, len(a.md.pids))[i]
}

// Fetch returns a copy of the elements, from this process's mapping or, elsewhere, from a
// process on the array's host.
func (s *SharedArray[T]) Fetch(ctx context.Context) ([]T, error) {
	b, err := s.contents(ctx, nil)
	if err != nil {
		return nil, err
	}
	out := make([]T, s.md.length)
	if len(out) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out))), len(b)), b)
	}
	return out, nil
}
