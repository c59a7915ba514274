package shm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/shm"
	"golang.org/x/sys/unix"
)

// fillMine is the seed's init: every participant writes its pid over its LocalIndices.
var fillMine = dist.NewFunc("shmtest.fillMine", func(ctx context.Context, s *shm.SharedArray[int64]) (struct{}, error) {
	s.Fill(int64(dist.Current(ctx).MyID()), s.LocalIndices())
	return struct{}{}, nil
})

// stripes is the seed's second init: participant k writes elements k, k+n, k+2n, …
var stripes = dist.NewFunc("shmtest.stripes", func(ctx context.Context, s *shm.SharedArray[int64]) (struct{}, error) {
	d := s.Data()
	for i := s.IndexPids(); i < len(d); i += len(s.Procs()) {
		d[i] = int64(dist.Current(ctx).MyID())
	}
	return struct{}{}, nil
})

type at struct {
	A   *shm.SharedArray[int64]
	Idx []int
	V   int64
}

var readAt = dist.NewFunc("shmtest.readAt", func(ctx context.Context, a at) (int64, error) {
	if !a.A.Local() {
		return 0, errors.New("not local")
	}
	return a.A.At(a.Idx...), nil
})

var writeAt = dist.NewFunc("shmtest.writeAt", func(ctx context.Context, a at) (struct{}, error) {
	a.A.Set(a.V, a.Idx...)
	return struct{}{}, nil
})

// kept holds handles a worker was asked to keep, to test lifetimes.
var kept []*shm.SharedArray[int64]

var keep = dist.NewFunc("shmtest.keep", func(ctx context.Context, s *shm.SharedArray[int64]) (int, error) {
	kept = append(kept, s)
	return shm.Mapped(), nil
})

// dropAll releases the kept handles (or, with gc, only forgets them and collects) and reports
// how many arrays the process still maps and owns, and the memfd mappings in /proc/self/maps.
var dropAll = dist.NewFunc("shmtest.dropAll", func(ctx context.Context, gc bool) ([3]int, error) {
	if !gc {
		for _, s := range kept {
			s.Release()
		}
	}
	kept = nil
	runtime.GC()
	runtime.GC()
	return [3]int{shm.Mapped(), shm.Owned(), memfdMaps(os.Getpid())}, nil
})

var counts = dist.NewFunc("shmtest.counts", func(ctx context.Context, _ struct{}) ([3]int, error) {
	runtime.GC()
	runtime.GC()
	return [3]int{shm.Mapped(), shm.Owned(), memfdMaps(os.Getpid())}, nil
})

// memfdMaps counts the mappings of godist memfds in process pid.
func memfdMaps(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return -1
	}
	return strings.Count(string(b), "/memfd:godist ")
}

// start starts a cluster of n workers and, after it is closed, checks that the test left no
// array mapped or owned in this process.
func start(t *testing.T, n int) (*dist.Cluster, *disttest.Output) { return startWith(t, n) }

// startWith is start with options.
func startWith(t *testing.T, n int, opts ...dist.Option) (*dist.Cluster, *disttest.Output) {
	t.Cleanup(func() {
		runtime.GC()
		if m, o, f := shm.Mapped(), shm.Owned(), memfdMaps(os.Getpid()); m+o+f != 0 {
			t.Errorf("left behind: %d mapped, %d owned, %d memfd mappings", m, o, f)
		}
	})
	return disttest.Start(t, n, opts...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestSeedSharedArray is the Julia manual's example: a 3×4 array initialised by three workers,
// each over its localindices, then one element written by the driver.
func TestSeedSharedArray(t *testing.T) {
	c, _ := start(t, 3)
	ctx := ctxT(t)
	s, err := shm.NewSharedArray[int64](ctx, c, []int{3, 4}, shm.WithInit(fillMine))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if got := s.Procs(); !slices.Equal(got, []int{2, 3, 4}) {
		t.Fatalf("procs %v", got)
	}
	if want := []int64{2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4}; !slices.Equal(s.Data(), want) {
		t.Fatalf("after init: %v, want %v", s.Data(), want)
	}
	s.Set(7, 2, 1) // S[3,2] = 7
	v, err := readAt.Call(ctx, c, 4, at{A: s, Idx: []int{2, 1}})
	if err != nil || v != 7 {
		t.Fatalf("worker 4 reads %d, %v; want the driver's 7", v, err)
	}
	host, _ := os.Hostname()
	want := "3×4 SharedArray[int64] on " + host + ", pids [2 3 4]:\n  2  2  3  4\n  2  3  3  4\n  2  7  4  4"
	if got := s.String(); got != want {
		t.Errorf("printed\n%s\nwant\n%s", got, want)
	}
	t.Logf("\n%v", s)

	s2, err := shm.NewSharedArray[int64](ctx, c, []int{3, 4}, shm.WithInit(stripes))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Release()
	if want := []int64{2, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 4}; !slices.Equal(s2.Data(), want) {
		t.Fatalf("striped init: %v, want %v", s2.Data(), want)
	}
	if r := s2.LocalIndicesOf(1); r.Len() != 0 || s2.IndexOf(1) != -1 {
		t.Errorf("the driver does not participate, yet has %v, %d", r, s2.IndexOf(1))
	}
}

func TestIndexing(t *testing.T) {
	c, _ := start(t, 0)
	ctx := ctxT(t)
	s, err := shm.NewSharedArray[float64](ctx, c, []int{2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if !slices.Equal(s.Procs(), []int{1}) || s.IndexPids() != 0 || s.LocalIndices() != (shm.Range{Lo: 0, Hi: 24}) {
		t.Fatalf("alone: procs %v, index %d, local %v", s.Procs(), s.IndexPids(), s.LocalIndices())
	}
	for lin := range s.Len() {
		idx := s.Coords(lin)
		if s.Index(idx...) != lin {
			t.Fatalf("Index(Coords(%d)) = %d", lin, s.Index(idx...))
		}
	}
	if s.Index(1, 2, 3) != 1+2*2+3*6 {
		t.Fatalf("column-major: Index(1,2,3) = %d", s.Index(1, 2, 3))
	}
	s.Set(5.5, 1, 2, 3)
	if s.Data()[23] != 5.5 || s.At(1, 2, 3) != 5.5 {
		t.Fatal("Set/At disagree with Data")
	}
	for _, bad := range [][]int{{2, 0, 0}, {0, 0}, {-1, 0, 0}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Index%v did not panic", bad)
				}
			}()
			s.Index(bad...)
		}()
	}
	if out := fmt.Sprintf("%.1f", s); !strings.Contains(out, "[:, :, 3] =\n  0.0  0.0  0.0\n  0.0  0.0  5.5") {
		t.Errorf("3-d print:\n%s", out)
	}
}

func TestChunk(t *testing.T) {
	for n := range 30 {
		for k := 1; k < 8; k++ {
			rs := shm.Chunk(n, k)
			if len(rs) != k {
				t.Fatalf("Chunk(%d,%d): %d ranges", n, k, len(rs))
			}
			lo, mn, mx := 0, n, 0
			for _, r := range rs {
				if r.Lo != lo || r.Hi < r.Lo {
					t.Fatalf("Chunk(%d,%d) = %v: not contiguous", n, k, rs)
				}
				lo = r.Hi
				mn, mx = min(mn, r.Len()), max(mx, r.Len())
			}
			if lo != n || mx-mn > 1 {
				t.Fatalf("Chunk(%d,%d) = %v", n, k, rs)
			}
		}
	}
}

func TestElementTypes(t *testing.T) {
	c, _ := start(t, 0)
	ctx := ctxT(t)
	if _, err := shm.NewSharedArray[string](ctx, c, []int{4}); err == nil {
		t.Error("a SharedArray of strings was made")
	}
	if _, err := shm.NewSharedArray[struct{ P *int }](ctx, c, []int{4}); err == nil {
		t.Error("a SharedArray of pointers was made")
	}
	type point struct {
		X, Y float32
		Tag  [2]uint8
	}
	p, err := shm.NewSharedArray[point](ctx, c, []int{3})
	if err != nil {
		t.Fatal(err)
	}
	p.Set(point{1, 2, [2]uint8{3, 4}}, 1)
	if p.At(1).Tag[1] != 4 {
		t.Error("struct element lost")
	}
	if _, err := shm.As[float64](p.Array); err == nil {
		t.Error("As accepted the wrong element type")
	}
	p.Release()
	if _, err := shm.NewSharedArray[int64](ctx, c, []int{-1}); err == nil {
		t.Error("negative dimension accepted")
	}
	if _, err := shm.NewSharedArray[int64](ctx, c, []int{3}, shm.WithInit(readAtAsInit)); err == nil {
		t.Error("init of the wrong type accepted")
	}
	if _, err := shm.NewSharedArray[int64](ctx, c, []int{3}, shm.WithPids(1, 99)); err == nil {
		t.Error("unknown pid accepted")
	}
}

var readAtAsInit = dist.NewFunc("shmtest.wrongInit", func(ctx context.Context, s *shm.SharedArray[int32]) (struct{}, error) {
	return struct{}{}, nil
})

// TestSameMemory: a handle passed to a worker maps the same memory (each side sees the other's
// writes with no further message), once per process however often it arrives.
func TestSameMemory(t *testing.T) {
	c, _ := start(t, 2)
	ctx := ctxT(t)
	s, err := shm.NewSharedArray[int64](ctx, c, []int{1000}, shm.WithPids(2, 3))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	for i := range 3 {
		if _, err := writeAt.Call(ctx, c, 2, at{A: s, Idx: []int{i}, V: int64(100 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Data()[:3]; !slices.Equal(got, []int64{100, 101, 102}) {
		t.Fatalf("driver sees %v", got)
	}
	s.Data()[999] = -5
	if v, err := readAt.Call(ctx, c, 3, at{A: s, Idx: []int{999}}); err != nil || v != -5 {
		t.Fatalf("worker 3 reads %d, %v", v, err)
	}
	// Two handles kept on worker 2 share one mapping.
	for range 2 {
		if n, err := keep.Call(ctx, c, 2, s); err != nil || n != 1 {
			t.Fatalf("worker 2 maps %d arrays (%v), want 1", n, err)
		}
	}
	if n, err := dropAll.Call(ctx, c, 2, false); err != nil || n[0] != 0 || n[2] != 0 {
		t.Fatalf("after release, worker 2 maps %v (%v)", n, err)
	}
}

// TestFreedWhenLastReleases: the owner keeps the segment while any process holds a handle,
// released explicitly or collected, and every mapping is gone at the end.
func TestFreedWhenLastReleases(t *testing.T) {
	c, _ := start(t, 2)
	ctx := ctxT(t)
	before := memfdMaps(os.Getpid())
	s, err := shm.NewSharedArray[int64](ctx, c, []int{1 << 16}, shm.WithInit(fillMine))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{2, 3} {
		if _, err := keep.Call(ctx, c, p, s); err != nil {
			t.Fatal(err)
		}
	}
	s.Release()
	if shm.Owned() != 1 {
		t.Fatalf("the owner freed the array while workers hold it (owned %d)", shm.Owned())
	}
	// Worker 2 releases explicitly, worker 3 just forgets (the collector releases).
	if _, err := dropAll.Call(ctx, c, 2, false); err != nil {
		t.Fatal(err)
	}
	if shm.Owned() != 1 {
		t.Fatal("freed while worker 3 still holds the array")
	}
	if v, err := counts.Call(ctx, c, 3, struct{}{}); err != nil || v[0] != 1 {
		t.Fatalf("worker 3: %v, %v", v, err)
	}
	if _, err := dropAll.Call(ctx, c, 3, true); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 10*time.Second, "owner frees the segment", func() bool {
		t.Logf("owned %d mapped %d maps %d (before %d)", shm.Owned(), shm.Mapped(), memfdMaps(os.Getpid()), before)
		return shm.Owned() == 0 && shm.Mapped() == 0 && memfdMaps(os.Getpid()) == before
	})
	for _, p := range []int{2, 3} {
		if v, err := counts.Call(ctx, c, p, struct{}{}); err != nil || v != [3]int{} {
			t.Errorf("worker %d still has %v (%v)", p, v, err)
		}
	}
}

// TestRemoteHost: from a process on another host (a fake hostname in the driver, real workers)
// the array is made by the lowest participant, is not local, and prints by fetching.
func TestRemoteHost(t *testing.T) {
	c, _ := start(t, 2)
	ctx := ctxT(t)
	restore := shm.SetHostID("elsewhere", "x")
	defer restore()
	s, err := shm.NewSharedArray[int64](ctx, c, []int{2, 2})
	if err != nil || !slices.Equal(s.Procs(), []int{1}) || !s.Local() {
		t.Fatalf("default pids with no workers on the caller's host: want the caller alone, got %v", err)
	}
	s.Release()
	s, err = shm.NewSharedArray[int64](ctx, c, []int{2, 2}, shm.WithPids(2, 3), shm.WithInit(fillMine))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if s.Local() || s.Data() != nil || s.Owner() != 2 {
		t.Fatalf("local %v, owner %d", s.Local(), s.Owner())
	}
	got, err := s.Fetch(ctx)
	if err != nil || !slices.Equal(got, []int64{2, 2, 3, 3}) {
		t.Fatalf("fetched %v, %v", got, err)
	}
	host, _ := os.Hostname()
	want := "2×2 SharedArray[int64] on " + host + ", pids [2 3]:\n  2  3\n  2  3"
	if s.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", s.String(), want)
	}
	if !strings.Contains(s.Array.String(), "  2  3\n  2  3") {
		t.Errorf("untyped print\n%s", s.Array.String())
	}
	// A big one prints its corners, fetched alone, as a process on its host prints it.
	big, err := shm.NewSharedArray[int64](ctx, c, []int{30, 40, 8}, shm.WithPids(2, 3), shm.WithInit(fillMine))
	if err != nil {
		t.Fatal(err)
	}
	defer big.Release()
	there, err := printed.Call(ctx, c, 2, big)
	if err != nil {
		t.Fatal(err)
	}
	if here := big.String(); here != there || here != big.Array.String() || !strings.Contains(here, "⋮") || !strings.Contains(here, "…") {
		t.Errorf("printed here\n%s\nthere\n%s\nuntyped\n%s", here, there, big.Array.String())
	}
}

func TestFileBacked(t *testing.T) {
	c, _ := start(t, 2)
	ctx := ctxT(t)
	file := filepath.Join(t.TempDir(), "a.bin")
	s, err := shm.NewSharedArray[int64](ctx, c, []int{4}, shm.WithFile(file), shm.WithInit(fillMine))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.String(), "file "+file) {
		t.Errorf("print: %s", s)
	}
	s.Release()
	b, err := os.ReadFile(file)
	if err != nil || len(b) != 32 || b[0] != 2 || b[16] != 3 {
		t.Fatalf("file holds %v (%v)", b, err)
	}
	// Reopened: the contents are kept.
	s, err = shm.NewSharedArray[int64](ctx, c, []int{4}, shm.WithFile(file))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if !slices.Equal(s.Data(), []int64{2, 2, 3, 3}) {
		t.Fatalf("reopened: %v", s.Data())
	}
}

// TestFullTmpfsArray: a file-backed array too big for its tmpfs is ErrNoSpace at creation, and
// the workers that would have touched it live on (julia#26222 was a SIGBUS here).
func TestFullTmpfsArray(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		disttest.Missing(t, fmt.Sprintf("cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): %v", err))
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	c, _ := start(t, 2)
	ctx := ctxT(t)
	_, err := shm.NewSharedArray[int64](ctx, c, []int{1 << 20}, shm.WithFile(filepath.Join(dir, "big")), shm.WithInit(fillMine))
	if !errors.Is(err, shm.ErrNoSpace) {
		t.Fatalf("error %v, want ErrNoSpace", err)
	}
	// Created by a worker for a caller elsewhere: the error comes back the same way.
	restore := shm.SetHostID("elsewhere", "x")
	_, err = shm.NewSharedArray[int64](ctx, c, []int{1 << 20}, shm.WithPids(2, 3), shm.WithFile(filepath.Join(dir, "big2")))
	restore()
	if err == nil || !strings.Contains(err.Error(), "not enough space") {
		t.Fatalf("remote creation: error %v, want no space", err)
	}
	if v, err := counts.Call(ctx, c, 2, struct{}{}); err != nil || v != [3]int{} {
		t.Fatalf("worker 2 after the failures: %v, %v", v, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the tmpfs: %v", ents)
	}
}

// TestWeightGrows passes one handle more often than its weight can be halved: the handle asks
// the owner for more, and the array is still freed at the end.
func TestWeightGrows(t *testing.T) {
	c, _ := start(t, 1)
	ctx := ctxT(t)
	s, err := shm.NewSharedArray[int64](ctx, c, []int{8}, shm.WithPids(2))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 45 {
		if _, err := writeAt.Call(ctx, c, 2, at{A: s, Idx: []int{i % 8}, V: int64(i)}); err != nil {
			t.Fatalf("pass %d: %v", i, err)
		}
	}
	if s.Data()[4] != 44 {
		t.Fatalf("data %v", s.Data())
	}
	s.Release()
	if _, err := counts.Call(ctx, c, 2, struct{}{}); err != nil {
		t.Fatal(err)
	}
	disttest.Eventually(t, 10*time.Second, "array freed", func() bool { return shm.Owned() == 0 && shm.Mapped() == 0 })
}

// limitAS caps (extra > 0) or uncaps (extra == 0) this process's address space a little above
// what it uses now, so that mapping a large array fails.
var limitAS = dist.NewFunc("shmtest.limitAS", func(ctx context.Context, extra int) (struct{}, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_AS, &rl); err != nil {
		return struct{}{}, err
	}
	rl.Cur = rl.Max
	if extra > 0 {
		b, err := os.ReadFile("/proc/self/statm")
		if err != nil {
			return struct{}{}, err
		}
		var pages uint64
		fmt.Sscan(string(b), &pages)
		rl.Cur = pages*uint64(os.Getpagesize()) + uint64(extra)
	}
	return struct{}{}, unix.Setrlimit(unix.RLIMIT_AS, &rl)
})

// TestFailedMapIsAnError: a worker that cannot map an array it receives fails that call with
// an error saying so, and lives on.
func TestFailedMapIsAnError(t *testing.T) {
	c, _ := start(t, 1)
	ctx := ctxT(t)
	s, err := shm.NewSharedArray[int64](ctx, c, []int{64 << 20 / 8}, shm.WithPids(2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if _, err := limitAS.Call(ctx, c, 2, 16<<20); err != nil {
		t.Fatal(err)
	}
	_, err = readAt.Call(ctx, c, 2, at{A: s, Idx: []int{0}})
	if _, uerr := limitAS.Call(ctx, c, 2, 0); uerr != nil {
		t.Fatal(uerr)
	}
	if err == nil || !strings.Contains(err.Error(), "mmap") {
		t.Fatalf("error %v, want a failed mmap", err)
	}
	t.Logf("error: %v", err)
	s.Data()[7] = 9
	if v, err := readAt.Call(ctx, c, 2, at{A: s, Idx: []int{7}}); err != nil || v != 9 {
		t.Fatalf("after the limit is lifted: %d, %v", v, err)
	}
}

// TestUntypedValues: Value and SetValue, the interpreter's access to arrays it finds by name.
func TestUntypedValues(t *testing.T) {
	c, _ := start(t, 0)
	ctx := ctxT(t)
	s, err := shm.NewSharedArray[float32](ctx, c, []int{2, 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if err := shm.Bind("u", s.Array); err != nil {
		t.Fatal(err)
	}
	defer shm.Unbind("u")
	v, _ := shm.Lookup("u")
	a := v.(*shm.Array)
	if err := a.SetValue(3, 2); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Value(3); err != nil || got != float32(2) || s.At(1, 1) != 2 {
		t.Fatalf("Value(3) = %v, %v", got, err)
	}
	if err := a.SetValue(4, 1); err == nil {
		t.Error("out of range accepted")
	}
	if err := a.SetValue(0, "x"); err == nil {
		t.Error("a string stored in a float32 array")
	}
	if a.ElemType() != "float32" || a.Len() != 4 || !slices.Equal(a.Dims(), []int{2, 2}) {
		t.Errorf("describes itself as %s %d %v", a.ElemType(), a.Len(), a.Dims())
	}
}
