// Package shm shares memory between the processes of a cluster that run on one host
// (Julia's SharedArrays, ClusterUtils' topology and broadcast_shared, PTools' pfork, server
// tasks and shared memory).
//
// SharedArray[T] is an N-dimensional array of fixed-size elements whose memory every process of
// its host maps: a handle passed to a remote function arrives as the same memory, writes are
// seen without copies, and the memory is freed when the last handle anywhere is released
// (weighted reference counting, as for futures). DescribePids groups processes by host;
// BroadcastShared puts one copy of a value on each host under a name (Lookup, Names);
// Fork runs a registered function in child processes that inherit the caller's arrays;
// StartTasks starts long-lived server tasks with configured segments. Server tasks live here
// rather than in package dist because their segments are shared arrays and dist must not
// import shm.
//
// Under them are segments. An anonymous segment (Create) is a memfd mapped MAP_SHARED. It has
// no name in /dev/shm, so a crash leaks nothing: the memory is freed when the last descriptor
// and the last mapping are gone. Other processes get it by receiving its descriptor, over a
// unix socket (SendFD, RecvFD) or as an inherited file (Segment.File with os/exec's
// ExtraFiles), and map it with Open.
//
// A named segment (CreateNamed) is a file in /dev/shm, for unrelated processes that cannot be
// handed a descriptor (PTools' shmpfx). Its file name records its creator, so that List can tell
// which ones a crash left behind and Clean can remove them (godist shm clean).
//
// Every segment's memory is reserved with fallocate when it is created, so that a full tmpfs is
// an error from Create (ErrNoSpace) rather than a SIGBUS at the first touch of a page
// (julia#26222). The package is Linux only.
//
// A typical use: a matrix that workers fill in parallel, each over its share of the indices,
// with no copy of the data crossing a socket (ExampleNewSharedArray has it in full):
//
//	fill := dist.NewFunc("fill", func(ctx context.Context, s *shm.SharedArray[float64]) (struct{}, error) {
//		r := s.LocalIndices() // this worker's share
//		for i := r.Lo; i < r.Hi; i++ {
//			s.Data()[i] = float64(i)
//		}
//		return struct{}{}, nil
//	})
//	...
//	s, err := shm.NewSharedArray[float64](ctx, c, []int{1000, 1000}, shm.WithInit(fill))
//	...
//	defer s.Release()
//	sum := 0.0
//	for _, v := range s.Data() { // the driver reads what the workers wrote
//		sum += v
//	}
//
// Limits: a SharedArray's participants are on one host (a handle that reaches another host
// can describe and Fetch the array, not index it); elements hold no pointers (no strings,
// slices, maps or interfaces); and the memory is not synchronized: processes order their
// accesses themselves (disjoint indices, or a call boundary between writer and reader).
package shm

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrNoSpace is wrapped by the errors of Create and CreateNamed when the tmpfs holding the segment
// cannot reserve its size (the error wraps syscall.ENOSPC too). Free memory, remove leftovers
// (Clean), or enlarge /dev/shm.
var ErrNoSpace = errors.New("shm: not enough space for the segment")

// Segment is a mapped shared-memory segment. Its methods are safe for concurrent use, but the
// memory returned by Bytes is not synchronized in any way: processes and goroutines sharing it
// must agree on their own ordering (channels, messages, atomics on the mapped words).
type Segment struct {
	mu     sync.Mutex
	data   []byte // nil after Close
	fd     int    // -1 after Close
	size   int
	path   string // "" for anonymous segments
	closed bool
}

// Create makes an anonymous segment of size bytes (size > 0), zero-filled, with its memory
// reserved now: if the system cannot provide it the error wraps ErrNoSpace. The segment is
// sealed against shrinking and growing, so no process it is passed to can truncate it under the
// others' mappings (which would SIGBUS them). The caller must Close it.
func Create(size int) (*Segment, error) {
	if size <= 0 {
		return nil, fmt.Errorf("shm: create: size %d: must be positive", size)
	}
	fd, err := unix.MemfdCreate("godist", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: create: memfd_create: %w", err)
	}
	if err := reserve(fd, size); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: create %d bytes: %w", size, err)
	}
	// Seal after fallocate: F_SEAL_GROW would forbid the reservation itself.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: create: seal memfd: %w", err)
	}
	s, err := mapFD(fd, size, "")
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: create: %w", err)
	}
	return s, nil
}

// Open maps the segment behind fd, a descriptor received from another process (RecvFD, an
// inherited file) or taken from Segment.FD. Open duplicates fd: the caller keeps ownership of
// its fd and should close it when it no longer needs it; the Segment closes only its own
// copy. The size is the file's size at the time of the call. The caller must Close the result.
func Open(fd int) (*Segment, error) {
	own, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: open fd %d: dup: %w", fd, err)
	}
	s, err := openOwned(own, "")
	if err != nil {
		unix.Close(own)
		return nil, fmt.Errorf("shm: open fd %d: %w", fd, err)
	}
	return s, nil
}

// openOwned maps fd, which the new Segment will own, at the file's current size.
func openOwned(fd int, path string) (*Segment, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, errors.New("not a regular file (memfd or shm file expected)")
	}
	if st.Size <= 0 {
		return nil, fmt.Errorf("segment is empty (size %d)", st.Size)
	}
	if int64(int(st.Size)) != st.Size {
		return nil, fmt.Errorf("segment size %d does not fit in int", st.Size)
	}
	return mapFD(fd, int(st.Size), path)
}

// reserve sets the size of fd and allocates its pages. ftruncate alone makes a sparse file on
// tmpfs: a full tmpfs would then show as a SIGBUS on first touch, which is why fallocate follows.
func reserve(fd, size int) error {
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fmt.Errorf("ftruncate: %w", err)
	}
	for {
		err := unix.Fallocate(fd, 0, 0, int64(size))
		// tmpfs gives up a long fallocate with EINTR when a signal is pending, and the Go
		// runtime sends signals (preemption) at any time; the kernel undoes the partial
		// allocation, so retrying is safe.
		if err == unix.EINTR {
			continue
		}
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("fallocate: %w: %w", ErrNoSpace, err)
		}
		if err != nil {
			return fmt.Errorf("fallocate: %w", err)
		}
		return nil
	}
}

// mapFD maps size bytes of fd, which the new Segment owns from then on.
func mapFD(fd, size int, path string) (*Segment, error) {
	data, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return &Segment{data: data, fd: fd, size: size, path: path}, nil
}

// Bytes returns the mapped memory, len Size. It aliases the segment: writes are seen by every
// process that maps it. Using the slice (or anything derived from it) after Close is a bug of
// the caller and faults (SIGSEGV) or reads another mapping; Bytes returns nil after Close.
func (s *Segment) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data
}

// Size returns the size of the segment in bytes, as mapped.
func (s *Segment) Size() int { return s.size }

// Path returns the file of a named segment in /dev/shm (or the backing file of a file-backed
// array), or "" for an anonymous segment.
func (s *Segment) Path() string { return s.path }

// FD returns the segment's descriptor, to pass with SendFD or to a child process. It stays
// owned by the Segment: do not close it, and do not wrap it in an *os.File (which closes it when
// collected); use File for that. It is -1 after Close.
func (s *Segment) FD() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fd
}

// File returns a new *os.File on a duplicate of the segment's descriptor, for os/exec's
// ExtraFiles: the child finds the segment at descriptor 3+i and maps it with Open. The caller
// closes the file (after the child has started); the Segment is unaffected.
func (s *Segment) File() (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("shm: file: segment is closed")
	}
	fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: file: dup: %w", err)
	}
	name := s.path
	if name == "" {
		name = "godist-shm"
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Close unmaps the segment and closes its descriptor. Other mappings, in this process or others,
// stay valid; an anonymous segment's memory is freed when the last one goes, a named one's when
// it is also unlinked. Close is idempotent: calls after the first return nil.
func (s *Segment) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if err := unix.Munmap(s.data); err != nil {
		errs = append(errs, fmt.Errorf("shm: close: munmap: %w", err))
	}
	if err := unix.Close(s.fd); err != nil {
		errs = append(errs, fmt.Errorf("shm: close: %w", err))
	}
	s.data, s.fd = nil, -1
	return errors.Join(errs...)
}
