package shm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godist/dist"
	"github.com/godist/dist/disttest"
	"github.com/godist/dist/shm"
	"golang.org/x/sys/unix"
)

// childEnv selects, in a re-executed test binary, the child role to play instead of the tests.
const childEnv = "GODIST_SHM_TEST_CHILD"

// testPrefix keeps this run's named segments apart from anyone else's in /dev/shm.
var testPrefix = fmt.Sprintf("godisttest%d", os.Getpid())

func TestMain(m *testing.M) {
	dist.Main() // workers of the cluster tests are this binary re-executed
	if role := os.Getenv(childEnv); role != "" {
		if err := child(role); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Open the runtime's poller descriptors now, so per-test descriptor counts compare like
	// with like.
	if a, b, err := socketPair(); err == nil {
		a.Close()
		b.Close()
	}
	code := m.Run()
	if left := shmLeftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "left in /dev/shm: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

// child runs in a re-executed test binary; it finds its descriptor at 3.
func child(role string) error {
	switch role {
	case "write-inherited":
		// The segment is descriptor 3: map it and write a marker.
		s, err := shm.Open(3)
		if err != nil {
			return err
		}
		copy(s.Bytes(), "hello from child")
		return s.Close()
	case "recv-fd":
		// Descriptor 3 is a unix socket: receive the segment, write, answer.
		f := os.NewFile(3, "sock")
		fc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return err
		}
		c := fc.(*net.UnixConn)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 3)
		fd, n, err := shm.RecvFD(c, buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "seg" {
			return fmt.Errorf("message %q", buf[:n])
		}
		s, err := shm.Open(fd)
		unix.Close(fd)
		if err != nil {
			return err
		}
		copy(s.Bytes()[100:], "child was here")
		if err := s.Close(); err != nil {
			return err
		}
		_, err = c.Write([]byte("ok"))
		return err
	}
	return fmt.Errorf("unknown role %q", role)
}

// shmLeftovers lists this run's files in /dev/shm.
func shmLeftovers() []string {
	m, _ := filepath.Glob("/dev/shm/" + testPrefix + "*")
	return m
}

// checkFDs fails the test if it ends with more open descriptors or goroutines than it started
// with.
func checkFDs(t *testing.T) {
	t.Helper()
	before, gBefore := countFDs(t), runtime.NumGoroutine()
	t.Cleanup(func() {
		// Descriptors of exited children and closed conns go at once, but exec's copying
		// goroutines and the like may need a moment to finish.
		var after, gAfter int
		for i := 0; i < 100; i++ {
			after, gAfter = countFDs(t), runtime.NumGoroutine()
			if after <= before && gAfter <= gBefore {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("leak: %d descriptors open before, %d after; %d goroutines before, %d after", before, after, gBefore, gAfter)
	})
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: %v", err)
	}
	return len(ents) - 1 // ReadDir's own descriptor
}

// socketPair returns two connected unix stream sockets.
func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	conn := func(fd int) (*net.UnixConn, error) {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	a, err := conn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := conn(fds[1])
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

func mustCreate(t *testing.T, size int) *shm.Segment {
	t.Helper()
	s, err := shm.Create(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCreateOpenShareWrites(t *testing.T) {
	checkFDs(t)
	a := mustCreate(t, 1<<20)
	if a.Size() != 1<<20 || len(a.Bytes()) != 1<<20 || a.Path() != "" {
		t.Fatalf("size %d, len %d, path %q", a.Size(), len(a.Bytes()), a.Path())
	}
	b, err := shm.Open(a.FD())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != a.Size() {
		t.Fatalf("opened size %d, want %d", b.Size(), a.Size())
	}
	copy(a.Bytes()[10:], "from a")
	copy(b.Bytes()[1<<19:], "from b")
	if got := string(b.Bytes()[10:16]); got != "from a" {
		t.Errorf("b sees %q", got)
	}
	if got := string(a.Bytes()[1<<19 : 1<<19+6]); got != "from b" {
		t.Errorf("a sees %q", got)
	}
	// The memfd is sealed: no holder can shrink it under the others' mappings.
	if err := unix.Ftruncate(a.FD(), 4096); !errors.Is(err, unix.EPERM) {
		t.Errorf("ftruncate of a sealed segment: %v, want EPERM", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if b.Bytes() != nil || b.FD() != -1 {
		t.Error("closed segment still exposes memory or descriptor")
	}
}

func TestCreateErrors(t *testing.T) {
	checkFDs(t)
	for _, n := range []int{0, -1} {
		if _, err := shm.Create(n); err == nil {
			t.Errorf("Create(%d) succeeded", n)
		}
	}
	if _, err := shm.Open(-1); err == nil {
		t.Error("Open(-1) succeeded")
	}
	// An empty file is not a segment.
	fd, err := unix.MemfdCreate("empty", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := shm.Open(fd); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("Open(empty memfd) = %v, want an 'empty' error", err)
	}
}

// runChild re-executes the test binary in role with extra descriptors starting at 3.
func runChild(t *testing.T, role string, files ...*os.File) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestChildWritesInheritedSegment(t *testing.T) {
	checkFDs(t)
	s := mustCreate(t, 4096)
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := runChild(t, "write-inherited", f)
	f.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if got := string(s.Bytes()[:16]); got != "hello from child" {
		t.Errorf("parent sees %q", got)
	}
}

func TestSendRecvFDGoroutines(t *testing.T) {
	checkFDs(t)
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	deadline := time.Now().Add(10 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)

	s := mustCreate(t, 8192)
	copy(s.Bytes(), "sender")
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 4)
		fd, n, err := shm.RecvFD(b, buf)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if string(buf[:n]) != "ping" {
			done <- fmt.Errorf("message %q", buf[:n])
			return
		}
		r, err := shm.Open(fd)
		if err != nil {
			done <- err
			return
		}
		defer r.Close()
		if string(r.Bytes()[:6]) != "sender" {
			done <- fmt.Errorf("receiver sees %q", r.Bytes()[:6])
			return
		}
		copy(r.Bytes()[6:], "+receiver")
		done <- nil
	}()
	if err := shm.SendFD(a, s.FD(), []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := string(s.Bytes()[:15]); got != "sender+receiver" {
		t.Errorf("sender sees %q", got)
	}

	// A message without a descriptor is a clear error, not a bogus fd.
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if fd, _, err := shm.RecvFD(b, make([]byte, 1)); err == nil || fd != -1 || !strings.Contains(err.Error(), "no descriptor") {
		t.Errorf("RecvFD of a plain message = %d, %v", fd, err)
	}
	// Two descriptors in one message: an error, and neither leaks (checkFDs).
	if _, _, err := a.WriteMsgUnix([]byte("y"), unix.UnixRights(s.FD(), s.FD()), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := shm.RecvFD(b, make([]byte, 1)); err == nil {
		t.Error("RecvFD accepted two descriptors")
	}
	if err := shm.SendFD(a, s.FD(), nil); err == nil {
		t.Error("SendFD with an empty message succeeded")
	}
	// The peer going away is a clear error too.
	a.Close()
	if _, _, err := shm.RecvFD(b, make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("RecvFD after peer close: %v", err)
	}
}

func TestSendRecvFDChildProcess(t *testing.T) {
	checkFDs(t)
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.SetDeadline(time.Now().Add(10 * time.Second))
	bf, err := b.File()
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := runChild(t, "recv-fd", bf)
	bf.Close()

	s := mustCreate(t, 4096)
	if err := shm.SendFD(a, s.FD(), []byte("seg")); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 2)
	if _, err := a.Read(reply); err != nil {
		t.Fatalf("reading the child's reply: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if got := string(s.Bytes()[100:114]); got != "child was here" {
		t.Errorf("parent sees %q", got)
	}
}

func TestNamedSegment(t *testing.T) {
	checkFDs(t)
	const name = "matrix.v1"
	s, err := shm.CreateNamed(testPrefix, name, 65536)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer shm.Unlink(testPrefix, name) // no-op unless the test fails midway
	wantFile := fmt.Sprintf("/dev/shm/%s.%d-", testPrefix, os.Getpid())
	if !strings.HasPrefix(s.Path(), wantFile) || !strings.HasSuffix(s.Path(), "."+name) {
		t.Errorf("path %q, want %s<start>.%s", s.Path(), wantFile, name)
	}
	if fi, err := os.Stat(s.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("stat %s: %v, mode %v", s.Path(), err, fi.Mode())
	}

	if _, err := shm.CreateNamed(testPrefix, name, 4096); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second CreateNamed: %v, want ErrExist", err)
	}
	o, err := shm.OpenNamed(testPrefix, name)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Size() != 65536 {
		t.Errorf("opened size %d", o.Size())
	}
	copy(s.Bytes()[5:], "named")
	if !bytes.Equal(o.Bytes()[5:10], []byte("named")) {
		t.Errorf("second mapping sees %q", o.Bytes()[5:10])
	}

	infos, err := shm.List(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Name != name || infos[0].Size != 65536 ||
		infos[0].CreatorPid != os.Getpid() || !infos[0].CreatorAlive || infos[0].Path != s.Path() {
		t.Errorf("List = %+v", infos)
	}
	// Our own live segment is not a leftover.
	if removed, err := shm.Clean(testPrefix); err != nil || len(removed) != 0 {
		t.Errorf("Clean = %v, %v; want nothing removed", removed, err)
	}

	if err := shm.Unlink(testPrefix, name); err != nil {
		t.Fatal(err)
	}
	if err := shm.Unlink(testPrefix, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Unlink: %v, want ErrNotExist", err)
	}
	if _, err := shm.OpenNamed(testPrefix, name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenNamed after Unlink: %v, want ErrNotExist", err)
	}
	// Mappings survive the unlink.
	if string(o.Bytes()[5:10]) != "named" {
		t.Error("mapping lost its contents after unlink")
	}
	if left := shmLeftovers(); len(left) > 0 {
		t.Errorf("left in /dev/shm: %v", left)
	}
}

func TestNamedValidation(t *testing.T) {
	checkFDs(t)
	bad := []struct{ prefix, name string }{
		{"", "x"},
		{"a.b", "x"},
		{"a/b", "x"},
		{strings.Repeat("p", shm.MaxPrefixLen+1), "x"},
		{testPrefix, ""},
		{testPrefix, "a/b"},
		{testPrefix, ".."},
		{testPrefix, "x..y"},
		{testPrefix, "nul\x00"},
		{testPrefix, strings.Repeat("n", shm.MaxNameLen+1)},
	}
	for _, c := range bad {
		if s, err := shm.CreateNamed(c.prefix, c.name, 4096); err == nil {
			s.Close()
			shm.Unlink(c.prefix, c.name)
			t.Errorf("CreateNamed(%q, %q) succeeded", c.prefix, c.name)
		}
		if _, err := shm.OpenNamed(c.prefix, c.name); err == nil {
			t.Errorf("OpenNamed(%q, %q) succeeded", c.prefix, c.name)
		}
	}
	if _, err := shm.List("a/b"); err == nil {
		t.Error("List with a bad prefix succeeded")
	}
	if _, err := shm.CreateNamed(testPrefix, "zero", 0); err == nil {
		t.Error("CreateNamed of size 0 succeeded")
	}
}

// deadPid returns the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=none") // exits at once with an error
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return cmd.Process.Pid
}

func TestListCleanDeadCreator(t *testing.T) {
	checkFDs(t)
	dir := t.TempDir()
	const prefix = "job"
	dead := deadPid(t)
	leftover, err := shm.CreateNamedIn(dir, prefix, "crashed", 4096, dead)
	if err != nil {
		t.Fatal(err)
	}
	leftover.Close()
	live, err := shm.CreateNamedIn(dir, prefix, "running", 8192, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// Another prefix and a stray file are none of this prefix's business.
	other, err := shm.CreateNamedIn(dir, "jobs", "x", 4096, dead)
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	os.WriteFile(filepath.Join(dir, prefix+".notours"), nil, 0o600)

	infos, err := shm.ListIn(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("List = %+v, want 2 segments", infos)
	}
	if c := infos[0]; c.Name != "crashed" || c.CreatorPid != dead || c.CreatorAlive || c.Size != 4096 {
		t.Errorf("leftover = %+v", c)
	}
	if r := infos[1]; r.Name != "running" || r.CreatorPid != os.Getpid() || !r.CreatorAlive || r.Size != 8192 {
		t.Errorf("live = %+v", r)
	}
	// The leftover blocks its name until cleaned, with advice.
	if _, err := shm.CreateNamedIn(dir, prefix, "crashed", 4096, os.Getpid()); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "dead") {
		t.Errorf("CreateNamed over a leftover: %v", err)
	}
	// It can still be opened (a creator may exit on purpose and leave data behind).
	if o, err := shm.OpenNamedIn(dir, prefix, "crashed"); err != nil {
		t.Errorf("OpenNamed of a leftover: %v", err)
	} else {
		o.Close()
	}

	removed, err := shm.CleanIn(dir, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != infos[0].Path {
		t.Errorf("Clean removed %v, want [%s]", removed, infos[0].Path)
	}
	if infos, _ := shm.ListIn(dir, prefix); len(infos) != 1 || infos[0].Name != "running" {
		t.Errorf("List after Clean = %+v", infos)
	}
	if _, err := os.Stat(live.Path()); err != nil {
		t.Errorf("Clean touched the live segment: %v", err)
	}
	if err := shm.UnlinkIn(dir, prefix, "running"); err != nil {
		t.Error(err)
	}
}

func TestFullTmpfsIsErrNoSpace(t *testing.T) {
	checkFDs(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		disttest.Missing(t, fmt.Sprintf("cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): %v", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	s, err := shm.CreateNamedIn(dir, "full", "big", 8<<20, os.Getpid())
	if err == nil {
		s.Close()
		t.Fatal("8 MiB segment created on a 1 MiB tmpfs")
	}
	if !errors.Is(err, shm.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("error %v, want ErrNoSpace wrapping ENOSPC", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the full tmpfs: %v", ents)
	}
	// What fits still works on the same tmpfs.
	s, err = shm.CreateNamedIn(dir, "full", "small", 64<<10, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := shm.UnlinkIn(dir, "full", "small"); err != nil {
		t.Error(err)
	}
}
