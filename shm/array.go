package shm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/internal/codec"
	"golang.org/x/sys/unix"
)

// ErrReleased is wrapped by the errors of operations on an array whose handle was released.
var ErrReleased = errors.New("shm: array released")

// ErrNotLocal is wrapped by the errors of operations that need the array's memory in a process
// that is not on the array's host (or has no way to reach it).
var ErrNotLocal = errors.New("shm: the array's memory is on another host")

// How an array's memory is shared and freed.
//
// The process that creates the segment (the owner: the creator, or the lowest participating pid
// when the creator is on another host) keeps its descriptor while any handle to the array
// exists anywhere. Handles are counted the way the core counts futures: by weight. The owner
// hands out a total weight; a handle that travels inside an argument gives half of its weight
// to the copy, without a message; a handle released (Release, or unreachable) sends its weight
// back. When all weight is back the owner closes its descriptor.
//
// A process on the owner's host that receives a handle maps the segment once (one mapping per
// array per process, shared by all its handles there) after getting the descriptor from the
// owner over a unix socket (SCM_RIGHTS): the receiver listens on a socket in a private
// directory, asks the owner by a cluster call, and the owner connects and sends the descriptor.
// This needs no server goroutine anywhere. The kernel frees the memory when the owner's
// descriptor and the last mapping are gone; no name ever exists in /dev/shm.
//
// Limit (as for futures): weight held by a process that crashes is lost, so the owner keeps its
// descriptor until it exits; the memory itself is still freed once every live process released
// it and the owner exited.
const initialWeight = 1 << 40

// arrayWire is an array handle as it travels.
type arrayWire struct {
	_        struct{} `cbor:",toarray"`
	Owner    int
	Num      uint64
	Token    []byte
	Dims     []int
	Elem     string
	ElemSize int
	Pids     []int
	Host     string
	Boot     string
	File     string
	Weight   int64
}

// meta is what every handle of one array knows, immutable.
type meta struct {
	owner    int
	num      uint64
	token    string // 16 random bytes: the array's identity and the proof a handle was received
	dims     []int
	length   int
	elem     string
	elemSize int
	pids     []int
	host     string
	boot     string
	file     string
}

func (m *meta) wire(weight int64) arrayWire {
	return arrayWire{Owner: m.owner, Num: m.num, Token: []byte(m.token), Dims: m.dims, Elem: m.elem,
		ElemSize: m.elemSize, Pids: m.pids, Host: m.host, Boot: m.boot, File: m.file, Weight: weight}
}

func metaOf(w *arrayWire) (*meta, error) {
	if len(w.Token) != 16 {
		return nil, errors.New("shm: array handle: bad token")
	}
	n, err := product(w.Dims)
	if err != nil {
		return nil, fmt.Errorf("shm: array handle: %w", err)
	}
	if w.ElemSize <= 0 || w.ElemSize > 1<<20 || w.Owner <= 0 || n > (1<<50)/w.ElemSize {
		return nil, errors.New("shm: array handle: bad element size, owner or size")
	}
	return &meta{owner: w.Owner, num: w.Num, token: string(w.Token), dims: slices.Clone(w.Dims), length: n,
		elem: w.Elem, elemSize: w.ElemSize, pids: slices.Clone(w.Pids), host: w.Host, boot: w.Boot, file: w.File}, nil
}

func (m *meta) bytes() int { return m.length * m.elemSize }

// product multiplies dims, refusing negative sizes and overflow.
func product(dims []int) (int, error) {
	n := 1
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in %v", d, dims)
		}
		if d != 0 && n > (1<<46)/d {
			return 0, fmt.Errorf("dimensions %v too large", dims)
		}
		n *= d
	}
	return n, nil
}

// state is one handle's share of an array: its weight and its claim on this process's mapping.
// It is apart from the handle so that a cleanup can release it when the handle is unreachable.
type state struct {
	mu       sync.Mutex
	c        *dist.Cluster
	owner    int
	num      uint64
	token    string
	weight   int64
	m        *mapping
	released bool
	local    atomic.Bool // m != nil: read without the lock on every element access
}

// release gives the weight back to the owner and drops the mapping claim, once.
func (s *state) release() {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return
	}
	s.released = true
	s.local.Store(false)
	w, m := s.weight, s.m
	s.weight, s.m = 0, nil
	s.mu.Unlock()
	if m != nil {
		m.put()
	}
	if w > 0 {
		returnWeight(s.c, s.owner, s.num, s.token, w)
	}
}

// split takes half of the weight for a copy of the handle sent elsewhere.
func (s *state) split() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return 0, ErrReleased
	}
	if s.c == nil || s.weight == 0 {
		return 0, nil // a handle outside any cluster (a Fork child) holds no weight
	}
	if s.weight == 1 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := growWeight(ctx, s.c, s.owner, s.num, s.token, initialWeight); err != nil {
			return 0, fmt.Errorf("shm: more weight from process %d: %w", s.owner, err)
		}
		s.weight += initialWeight
	}
	give := s.weight / 2
	s.weight -= give
	if s.c.MyID() == s.owner {
		ownerLocal(s.num, s.token, -give)
	}
	return give, nil
}

// mapping is this process's one mapping of an array, shared by its handles here.
type mapping struct {
	token string
	seg   *Segment
	n     int // claims; guarded by mappings
}

var mappings = struct {
	sync.Mutex
	m map[string]*mapping // by token
}{m: make(map[string]*mapping)}

// getMapping returns the mapping of token with one more claim, opening it with open if this
// process has none. open runs without the lock (it may wait for another process).
func getMapping(token string, open func() (*Segment, error)) (*mapping, error) {
	mappings.Lock()
	if m := mappings.m[token]; m != nil {
		m.n++
		mappings.Unlock()
		return m, nil
	}
	mappings.Unlock()
	if open == nil {
		return nil, ErrNotLocal
	}
	seg, err := open()
	if err != nil {
		return nil, err
	}
	mappings.Lock()
	defer mappings.Unlock()
	if m := mappings.m[token]; m != nil { // someone else opened it meanwhile
		m.n++
		seg.Close()
		return m, nil
	}
	m := &mapping{token: token, seg: seg, n: 1}
	mappings.m[token] = m
	return m, nil
}

// put drops one claim; the last one unmaps.
func (m *mapping) put() {
	mappings.Lock()
	m.n--
	last := m.n == 0
	if last {
		delete(mappings.m, m.token)
	}
	mappings.Unlock()
	if last {
		m.seg.Close()
	}
}

// Mapped returns how many arrays this process maps now (for tests and diagnostics).
func Mapped() int {
	mappings.Lock()
	defer mappings.Unlock()
	return len(mappings.m)
}

// owned is what an owner keeps per array: the weight it has handed out and a claim on its
// mapping, which keeps the descriptor to send to other processes.
type ownedEntry struct {
	c      *dist.Cluster
	token  string
	weight int64 // handed out and not returned
	local  int64 // of which held by handles in this process
	m      *mapping
}

// watches records the clusters whose membership is watched: when every process but this one
// has left, the weight the others held can never come back, so owned arrays that only local
// handles still hold are freed as those go. One subscription per cluster, for its lifetime.
var watches sync.Map // *dist.Cluster -> struct{}

// watch subscribes to c's membership once. It must be called with no lock of this package
// held: events are delivered under the cluster's subscribers' lock, and the handler takes owned.
func watch(c *dist.Cluster) {
	if c == nil {
		return
	}
	if _, loaded := watches.LoadOrStore(c, struct{}{}); loaded {
		return
	}
	cur := dist.Current(context.Background())
	watches.Range(func(k, _ any) bool {
		if k != cur && k != c {
			watches.Delete(k) // a closed cluster: its subscriptions went with it
		}
		return true
	})
	c.Subscribe(func(e dist.Event) {
		if e.Kind != dist.Exited || len(c.Procs()) > 1 {
			return
		}
		var free []*mapping
		owned.Lock()
		for k, o := range owned.m {
			if o.c != c {
				continue
			}
			o.weight = o.local
			if o.weight <= 0 {
				delete(owned.m, k)
				free = append(free, o.m)
			}
		}
		owned.Unlock()
		for _, m := range free {
			m.put()
		}
	})
}

// ownerLocal adds delta to the weight that handles in this process hold of an owned array.
func ownerLocal(num uint64, token string, delta int64) {
	owned.Lock()
	defer owned.Unlock()
	if e := owned.m[num]; e != nil && e.token == token {
		e.local += delta
	}
}

var owned = struct {
	sync.Mutex
	m map[uint64]*ownedEntry
}{m: make(map[uint64]*ownedEntry)}

var nextNum atomic.Uint64

// Owned returns how many arrays this process keeps descriptors of for other processes (for tests
// and diagnostics).
func Owned() int {
	owned.Lock()
	defer owned.Unlock()
	return len(owned.m)
}

// purgeClosed drops the entries of clusters that are no longer this process's cluster: nobody
// can return their weight any more.
func purgeClosedLocked() []*mapping {
	cur := dist.Current(context.Background())
	var drop []*mapping
	for k, e := range owned.m {
		if e.c != cur {
			delete(owned.m, k)
			drop = append(drop, e.m)
		}
	}
	return drop
}

func ownerDrop(num uint64, token string, w int64, local bool) {
	owned.Lock()
	e := owned.m[num]
	if e == nil || e.token != token {
		owned.Unlock()
		return
	}
	e.weight -= w
	if local {
		e.local -= w
	}
	done := e.weight <= 0
	if done {
		delete(owned.m, num)
	}
	owned.Unlock()
	if done {
		e.m.put()
	}
}

func ownerGrow(num uint64, token string, w int64) error {
	owned.Lock()
	defer owned.Unlock()
	e := owned.m[num]
	if e == nil || e.token != token {
		return ErrReleased
	}
	e.weight += w
	return nil
}

func ownerGrowLocal(num uint64, token string, w int64) error {
	if err := ownerGrow(num, token, w); err != nil {
		return err
	}
	ownerLocal(num, token, w)
	return nil
}

type weightMsg struct {
	_      struct{} `cbor:",toarray"`
	Num    uint64
	Token  []byte
	Weight int64
}

var dropFunc = dist.NewFunc("godist.shm.drop", func(ctx context.Context, m weightMsg) (struct{}, error) {
	ownerDrop(m.Num, string(m.Token), m.Weight, false)
	return struct{}{}, nil
})

var growFunc = dist.NewFunc("godist.shm.grow", func(ctx context.Context, m weightMsg) (struct{}, error) {
	return struct{}{}, ownerGrow(m.Num, string(m.Token), m.Weight)
})

func returnWeight(c *dist.Cluster, owner int, num uint64, token string, w int64) {
	if c == nil || c.MyID() == owner {
		ownerDrop(num, token, w, true)
		return
	}
	if dist.Current(context.Background()) != c {
		return // that cluster is closed: its processes are gone
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// One way; an owner that is gone has nothing left to free.
	dropFunc.Do(ctx, c, owner, weightMsg{Num: num, Token: []byte(token), Weight: w})
}

func growWeight(ctx context.Context, c *dist.Cluster, owner int, num uint64, token string, w int64) error {
	if c.MyID() == owner {
		return ownerGrowLocal(num, token, w)
	}
	_, err := growFunc.Call(ctx, c, owner, weightMsg{Num: num, Token: []byte(token), Weight: w})
	return err
}

// --- host identity ---

var hostID = sync.OnceValues(func() (string, string) {
	h, _ := os.Hostname()
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return h, strings.TrimSpace(string(b))
})

// sameHost reports whether an array created on host/boot can be mapped here. The hostname is
// what topology goes by (network-namespace hosts share a kernel but not a hostname); the boot id
// guards against two machines with one name.
func sameHost(host, boot string) bool {
	h, b := hostID()
	return h == host && b == boot
}

// --- creating segments (owner side) ---

// newOwned creates the segment of an array in this process, files it as owned, and returns its
// meta and mapping. The owner's entry holds weight total (the caller gives it out).
func newOwned(c *dist.Cluster, dims []int, elem string, elemSize int, pids []int, file string) (*meta, *mapping, error) {
	n, err := product(dims)
	if err != nil {
		return nil, nil, fmt.Errorf("shm: %w", err)
	}
	size := max(n*elemSize, 1)
	var seg *Segment
	if file != "" {
		seg, err = openFileSegment(file, size)
	} else {
		seg, err = Create(size)
	}
	if err != nil {
		return nil, nil, err
	}
	var tok [16]byte
	rand.Read(tok[:])
	host, boot := hostID()
	md := &meta{owner: c.MyID(), num: nextNum.Add(1), token: string(tok[:]), dims: slices.Clone(dims), length: n,
		elem: elem, elemSize: elemSize, pids: slices.Clone(pids), host: host, boot: boot, file: file}
	m := &mapping{token: md.token, seg: seg, n: 1} // the owner entry's claim
	mappings.Lock()
	mappings.m[md.token] = m
	mappings.Unlock()
	owned.Lock()
	stale := purgeClosedLocked()
	owned.m[md.num] = &ownedEntry{c: c, token: md.token, weight: initialWeight, m: m}
	owned.Unlock()
	watch(c)
	for _, s := range stale {
		s.put()
	}
	return md, m, nil
}

// openFileSegment maps the first size bytes of file, creating it or extending it (with its
// pages reserved, as for memfd segments) when it is shorter. Existing contents are kept.
func openFileSegment(file string, size int) (*Segment, error) {
	fd, err := unix.Open(file, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shm: open %s: %w", file, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: %s: fstat: %w", file, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: %s: not a regular file", file)
	}
	if st.Size < int64(size) {
		if err := reserve(fd, size); err != nil {
			unix.Close(fd)
			if st.Size == 0 {
				os.Remove(file) // ours, and useless
			}
			return nil, fmt.Errorf("shm: %s: %d bytes: %w", file, size, err)
		}
	}
	s, err := mapFD(fd, size, file)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: %s: %w", file, err)
	}
	return s, nil
}

// --- passing descriptors (SCM_RIGHTS) ---

type fdReq struct {
	_     struct{} `cbor:",toarray"`
	Num   uint64
	Token []byte
	Path  string
}

var fdFunc = dist.NewFunc("godist.shm.fd", func(ctx context.Context, r fdReq) (struct{}, error) {
	owned.Lock()
	e := owned.m[r.Num]
	if e == nil || e.token != string(r.Token) {
		owned.Unlock()
		return struct{}{}, fmt.Errorf("shm: array %d of process %d: %w", r.Num, dist.Current(ctx).MyID(), ErrReleased)
	}
	mappings.Lock()
	e.m.n++ // keep the descriptor open while it is sent (put below)
	mappings.Unlock()
	owned.Unlock()
	defer e.m.put()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "unix", r.Path)
	if err != nil {
		return struct{}{}, fmt.Errorf("shm: send descriptor: %w", err)
	}
	defer conn.Close()
	return struct{}{}, SendFD(conn.(*net.UnixConn), e.m.seg.FD(), []byte{'k'})
})

// fetchSegment gets the segment of md from its owner and maps it.
func fetchSegment(ctx context.Context, c *dist.Cluster, md *meta) (*Segment, error) {
	dir, err := os.MkdirTemp("", "godist-shmfd-")
	if err != nil {
		return nil, fmt.Errorf("shm: receive descriptor: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("shm: receive descriptor: %w", err)
	}
	defer ln.Close()
	if _, err := fdFunc.Call(ctx, c, md.owner, fdReq{Num: md.num, Token: []byte(md.token), Path: path}); err != nil {
		return nil, fmt.Errorf("shm: descriptor of array %d from process %d: %w", md.num, md.owner, err)
	}
	// The owner connected and sent before its call returned: the connection waits in the backlog.
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	conn, err := ln.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("shm: receive descriptor: %w", err)
	}
	defer conn.Close()
	if err := checkPeer(conn); err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fd, _, err := RecvFD(conn, make([]byte, 1))
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	seg, err := Open(fd)
	if err != nil {
		return nil, fmt.Errorf("shm: map array %d of process %d: %w", md.num, md.owner, err)
	}
	if seg.Size() < md.bytes() {
		seg.Close()
		return nil, fmt.Errorf("shm: array %d of process %d: segment of %d bytes, want %d", md.num, md.owner, seg.Size(), md.bytes())
	}
	return seg, nil
}

// checkPeer refuses a descriptor from another user (the socket's directory is private, so this
// is defence in depth).
func checkPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return fmt.Errorf("shm: peer credentials: %w", cerr)
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("shm: descriptor offered by uid %d, not ours", cred.Uid)
	}
	return nil
}

// --- handles ---

// Array is the untyped handle of a shared array: its shape, element type, participating
// processes, and (in a process on its host) its memory. SharedArray[T] is the typed view most
// code uses; Array is what Lookup returns for interpreters and generic tools, and As turns it
// into a SharedArray[T].
//
// A handle may be put inside the arguments of remote functions: a receiving process on the
// array's host gets the same memory (no copy); one on another host gets a handle that can
// describe and print the array but not index it. Release gives the handle's claim back early;
// an unreachable handle releases itself. The memory is freed when every process has released
// its handles (and the owner has closed its descriptor).
type Array struct {
	md *meta
	st *state
}

func newArray(c *dist.Cluster, md *meta, weight int64, m *mapping) *Array {
	a := &Array{md: md, st: &state{c: c, owner: md.owner, num: md.num, token: md.token, weight: weight, m: m}}
	a.st.local.Store(m != nil)
	if c != nil && weight > 0 && c.MyID() == md.owner {
		ownerLocal(md.num, md.token, weight)
	}
	runtime.AddCleanup(a, func(s *state) { s.release() }, a.st)
	return a
}

// attach makes a handle for a received wire form in this process: mapped if on the array's host.
func attach(ctx context.Context, w *arrayWire) (*Array, error) {
	md, err := metaOf(w)
	if err != nil {
		return nil, err
	}
	c := dist.Current(ctx)
	var m *mapping
	if sameHost(md.host, md.boot) {
		var open func() (*Segment, error)
		if c != nil && c.MyID() != md.owner {
			open = func() (*Segment, error) { return fetchSegment(ctx, c, md) }
		}
		m, err = getMapping(md.token, open)
		if err == nil && m.seg.Size() < md.bytes() {
			size := m.seg.Size()
			m.put()
			m, err = nil, fmt.Errorf("shm: array handle: %d bytes for a %d-byte segment", md.bytes(), size)
		}
		if err != nil && !errors.Is(err, ErrNotLocal) {
			if w.Weight > 0 && c != nil {
				returnWeight(c, md.owner, md.num, md.token, w.Weight)
			}
			return nil, err
		}
	}
	weight := w.Weight
	if c == nil {
		weight = 0
	}
	return newArray(c, md, weight, m), nil
}

func (a *Array) marshal() ([]byte, error) {
	if a == nil || a.md == nil {
		return nil, errors.New("shm: marshal: nil array")
	}
	w, err := a.st.split()
	if err != nil {
		return nil, err
	}
	return codec.Marshal(a.md.wire(w))
}

// MarshalCBOR lets an *Array travel inside a remote call's argument.
func (a *Array) MarshalCBOR() ([]byte, error) { return a.marshal() }

// UnmarshalCBOR is the receiving side of MarshalCBOR: on the array's host it maps the memory
// (the error says why when it cannot).
func (a *Array) UnmarshalCBOR(data []byte) error {
	var w arrayWire
	if err := codec.Unmarshal(data, &w); err != nil {
		return err
	}
	b, err := attach(context.Background(), &w)
	if err != nil {
		return err
	}
	*a = *b
	return nil
}

// Dims returns the dimensions (a copy).
func (a *Array) Dims() []int { return slices.Clone(a.md.dims) }

// Len returns the number of elements.
func (a *Array) Len() int { return a.md.length }

// ElemType names the element type (a Go type, package-qualified when it is named).
func (a *Array) ElemType() string { return a.md.elem }

// ElemSize returns the size of one element in bytes.
func (a *Array) ElemSize() int { return a.md.elemSize }

// Procs returns the participating pids (a copy), sorted.
func (a *Array) Procs() []int { return slices.Clone(a.md.pids) }

// Owner returns the pid of the process that created the segment and keeps its descriptor.
func (a *Array) Owner() int { return a.md.owner }

// Host returns the hostname of the machine whose memory holds the array.
func (a *Array) Host() string { return a.md.host }

// File returns the backing file of a file-backed array, or "".
func (a *Array) File() string { return a.md.file }

// Local reports whether this handle has the array's memory mapped (it is on the array's host
// and not released).
func (a *Array) Local() bool { return a.st.local.Load() }

// Bytes returns the array's memory, or nil where it is not Local. Writes are seen at once by
// every process that maps the array. The slice is valid while the handle is reachable and not
// released: keep the handle alive (runtime.KeepAlive) while using it.
func (a *Array) Bytes() []byte {
	a.st.mu.Lock()
	defer a.st.mu.Unlock()
	if a.st.m == nil {
		return nil
	}
	return a.st.m.seg.Bytes()[:a.md.bytes()]
}

// Release gives this handle's claim back: the process unmaps the array when its last handle
// is released, and the owner frees the segment when every handle everywhere is. Using the
// handle's memory after Release is a bug. Release is idempotent.
func (a *Array) Release() { a.st.release() }

// Same reports whether a and b are handles of the same array.
func (a *Array) Same(b *Array) bool { return a != nil && b != nil && a.md.token == b.md.token }

// contents returns a copy of the array's bytes from this process or, where it is not local,
// from a process on its host: all of them, or only the elements at the linear indices idx
// (in that order) when idx is not nil.
func (a *Array) contents(ctx context.Context, idx []int) ([]byte, error) {
	want := a.md.bytes()
	if idx != nil {
		want = len(idx) * a.md.elemSize
	}
	if b := a.Bytes(); b != nil {
		return pick(b, a.md.elemSize, idx)
	}
	c := a.st.c
	if c == nil {
		c = dist.Current(ctx)
	}
	if c == nil {
		return nil, fmt.Errorf("shm: contents: %w, and no cluster to ask", ErrNotLocal)
	}
	var errs []error
	for _, p := range append([]int{a.md.owner}, a.md.pids...) {
		if p == c.MyID() {
			continue
		}
		b, err := contentsFunc.Call(ctx, c, p, contentsReq{Token: []byte(a.md.token), Size: a.md.bytes(), ElemSize: a.md.elemSize, Idx: idx})
		if err == nil {
			if len(b) != want {
				return nil, fmt.Errorf("shm: contents from process %d: %d bytes, want %d", p, len(b), want)
			}
			return b, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("shm: contents of the array on %s: %w", a.md.host, errors.Join(errs...))
}

// pick copies the elements of b (each size bytes) at idx, or all of b when idx is nil.
func pick(b []byte, size int, idx []int) ([]byte, error) {
	if idx == nil {
		return bytes.Clone(b), nil
	}
	out := make([]byte, 0, len(idx)*size)
	for _, i := range idx {
		if i < 0 || (i+1)*size > len(b) {
			return nil, fmt.Errorf("shm: contents: element %d out of range", i)
		}
		out = append(out, b[i*size:(i+1)*size]...)
	}
	return out, nil
}

type contentsReq struct {
	_        struct{} `cbor:",toarray"`
	Token    []byte
	Size     int
	ElemSize int
	Idx      []int // nil: every element
}

// contentsFunc answers with a copy of an array this process maps, or of some of its elements
// (for printing elsewhere).
var contentsFunc = dist.NewFunc("godist.shm.contents", func(ctx context.Context, r contentsReq) ([]byte, error) {
	mappings.Lock()
	m := mappings.m[string(r.Token)]
	if m != nil {
		m.n++
	}
	mappings.Unlock()
	if m == nil {
		return nil, fmt.Errorf("shm: contents: %w: this process does not map the array", ErrNotLocal)
	}
	defer m.put()
	b := m.seg.Bytes()
	if r.Size < 0 || r.Size > len(b) || r.ElemSize <= 0 {
		return nil, fmt.Errorf("shm: contents: %d bytes asked of a %d-byte segment", r.Size, len(b))
	}
	return pick(b[:r.Size], r.ElemSize, r.Idx)
})
