package wire

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ringName names rings' memfds, as /proc shows them.
const ringName = "godist-ring"

// ringPoll bounds each sleep of a transfer waiting for its peer, so that it looks at its
// connection's state that often even if a wake-up is lost to a dying peer.
const ringPoll = 10 * time.Millisecond

// ringsSupported reports whether a connection over nc may carry rings: only a unix socket
// joins two processes known to share the host's memory.
func ringsSupported(nc net.Conn) bool {
	_, ok := nc.(*net.UnixConn)
	return ok
}

// newRingOut makes a ring for this side to send through. Its memory is a memfd sealed at its
// size, so that a peer that maps it cannot shrink it under this process (which would then
// fault on the missing pages).
func newRingOut() (*ring, ringOffer, error) {
	o := ringOffer{slot: ringSlot, slots: ringSlots}
	if _, err := rand.Read(o.token[:]); err != nil {
		return nil, o, err
	}
	fd, err := unix.MemfdCreate(ringName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, o, fmt.Errorf("memfd: %w", err)
	}
	fail := func(what string, err error) (*ring, ringOffer, error) {
		unix.Close(fd)
		return nil, o, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.Ftruncate(fd, int64(o.size())); err != nil {
		return fail("size ring", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		return fail("seal ring", err)
	}
	// Populated now, while the first large part goes through the socket, rather than by
	// ~2,000 page faults in the middle of the first transfer through the ring.
	mem, err := unix.Mmap(fd, 0, o.size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("map ring", err)
	}
	r := newRing(mem, o, fd)
	r.hdr.magic = ringMagic
	r.hdr.token = o.token
	return r, o, nil
}

// openRingIn maps the ring a peer offered: descriptor fd of the process at the other end of
// nc. The process is the socket's peer as the kernel knows it, not as the offer says; the
// token then proves that the memory found is the one offered.
func openRingIn(nc net.Conn, fd uint64, o ringOffer) (*ring, error) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix socket")
	}
	if fd > 1<<30 {
		return nil, fmt.Errorf("descriptor %d out of range", fd)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(s uintptr) { cred, cerr = unix.GetsockoptUcred(int(s), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Pid <= 0 {
		return nil, errors.New("peer process not visible from here")
	}
	// Opening another process's descriptor through /proc needs the same permission as
	// reading its memory (ptrace read mode): a peer of another user is refused here. The
	// descriptor is the peer's choice, so it is first opened as a path only, which runs no
	// code of the file's (a tty, a FIFO or a device may block or take over on open), and
	// opened for real only if it is a ring's memfd.
	path := fmt.Sprintf("/proc/%d/fd/%d", cred.Pid, fd)
	pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(pfd)
	self := fmt.Sprintf("/proc/self/fd/%d", pfd)
	if target, err := os.Readlink(self); err != nil || !strings.HasPrefix(target, "/memfd:"+ringName+" ") {
		return nil, fmt.Errorf("%s: not a ring's memory (%q)", path, target)
	}
	mfd, err := unix.Open(self, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(mfd)
	// Seals first: once the memory cannot shrink, the size checked next is the size it keeps,
	// and no page of the mapping can vanish under this process (which would then die of SIGBUS).
	seals, err := unix.FcntlInt(uintptr(mfd), unix.F_GET_SEALS, 0)
	if err != nil || seals&unix.F_SEAL_SHRINK == 0 {
		return nil, fmt.Errorf("%s: ring memory not sealed against shrinking", path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(mfd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != int64(o.size()) {
		return nil, fmt.Errorf("%s: not a ring of %d bytes (mode %#o, %d bytes)", path, o.size(), st.Mode, st.Size)
	}
	mem, err := unix.Mmap(mfd, 0, o.size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("map ring: %w", err)
	}
	r := newRing(mem, o, -1)
	if r.hdr.magic != ringMagic || r.hdr.token != o.token {
		unix.Munmap(mem)
		return nil, fmt.Errorf("%s: not the ring offered", path)
	}
	return r, nil
}

func unmapRing(mem []byte) { unix.Munmap(mem) }

// releasePages frees the memory behind part of a ring, for both processes that map it.
func releasePages(mem []byte) { unix.Madvise(mem, unix.MADV_REMOVE) }

func (r *ring) closeFD() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// The futex operations, without FUTEX_PRIVATE_FLAG: the ring is shared between processes.
const (
	futexWaitOp = 0
	futexWakeOp = 1
)

// futexWait sleeps while *addr is seen, for at most ringPoll. The ring is shared memory: the
// futex must not be the process-private kind.
func futexWait(addr *atomic.Uint32, seen uint32) {
	ts := unix.NsecToTimespec(int64(ringPoll))
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitOp, uintptr(seen), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWake wakes whoever sleeps on addr, in any process.
func futexWake(addr *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, 1<<30, 0, 0, 0)
}

// peerGone reports whether the other end of nc has closed or died: a receiver waiting on the
// ring reads nothing from the socket meanwhile, so it asks the socket directly.
func peerGone(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	cerr := rc.Control(func(s uintptr) {
		p := []unix.PollFd{{Fd: int32(s), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(p, 0); err == nil && n > 0 {
			gone = p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
		}
	})
	return gone || cerr != nil
}
