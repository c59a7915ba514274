package shm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Named segments live in shmDir as files named
//
//	<prefix>.<pid>-<start>.<name>
//
// where pid is the creating process and start its start time (field 22 of /proc/<pid>/stat, in
// clock ticks since boot). The creator is in the name, not in an xattr or a sidecar file, because
// tmpfs supports user xattrs only since Linux 6.6 and a sidecar could be left half-written by a
// crash; a name is published atomically with the segment. The start time makes the liveness test
// immune to pid reuse: a leftover of a dead process is not kept alive by a newcomer that got the
// same pid. Prefixes may not contain '.', so the name parses unambiguously; names may.

// DefaultPrefix is the prefix of named segments when the user does not choose one. Jobs sharing
// a server should use distinct prefixes (PTools' shmpfx), such as one per user or per run.
const DefaultPrefix = "godist"

// MaxPrefixLen and MaxNameLen bound a named segment's prefix and name, so that the file name
// (with the creator field) stays under the 255-byte limit of a file name.
const (
	MaxPrefixLen = 64
	MaxNameLen   = 160
)

// shmDir is where named segments live.
const shmDir = "/dev/shm"

// Info describes a named segment found by List.
type Info struct {
	Name         string // the name given to CreateNamed
	Path         string // the file in /dev/shm
	Size         int64  // bytes
	CreatorPid   int    // the process that created it
	CreatorAlive bool   // whether that process is still running (a dead one means a leftover)
}

// CreateNamed creates the named segment prefix.name of size bytes (size > 0) in /dev/shm, mode
// 0600, zero-filled, its memory reserved now (a full /dev/shm is an error wrapping ErrNoSpace),
// and maps it. It fails with an error wrapping fs.ErrExist if a segment of that prefix and name
// exists, even one whose creator died (remove those with Clean or Unlink). The file is not
// removed by Close: call Unlink when no other process needs to open it; if the creator crashes,
// Clean removes it. prefix is 1 to MaxPrefixLen characters of [A-Za-z0-9_-] (no '.', so that
// the file name parses back; DefaultPrefix when in doubt); name is 1 to MaxNameLen bytes
// without '/', NUL or "..". Other prefixes and names are an error.
func CreateNamed(prefix, name string, size int) (*Segment, error) {
	return createNamedIn(shmDir, prefix, name, size, os.Getpid())
}

// createNamedIn is CreateNamed in dir with a chosen creator pid (tests fake dead creators).
func createNamedIn(dir, prefix, name string, size, pid int) (*Segment, error) {
	if err := validate(prefix, name); err != nil {
		return nil, fmt.Errorf("shm: create named: %w", err)
	}
	if size <= 0 {
		return nil, fmt.Errorf("shm: create named %s.%s: size %d: must be positive", prefix, name, size)
	}
	start, _ := procStart(pid) // 0 if unknown: liveness then falls back to kill(pid, 0)
	file := fmt.Sprintf("%s.%d-%d.%s", prefix, pid, start, name)
	path := filepath.Join(dir, file)
	fail := func(err error) (*Segment, error) {
		return nil, fmt.Errorf("shm: create named %s.%s: %w", prefix, name, err)
	}
	if others, err := find(dir, prefix, name); err != nil {
		return fail(err)
	} else if len(others) > 0 {
		return fail(existErr(others[0]))
	}
	// Build the segment as an unnamed file and give it its name only once its memory is
	// reserved: openers never see a half-made segment, and a crash before the link leaves
	// nothing behind.
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fail(fmt.Errorf("open unnamed file in %s: %w", dir, err))
	}
	if err := reserve(fd, size); err != nil {
		unix.Close(fd)
		return fail(err)
	}
	// linkat fails with EEXIST instead of replacing, like O_EXCL.
	err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("%s: %w", path, fs.ErrExist)
		}
		return fail(fmt.Errorf("link %s: %w", path, err))
	}
	// Two processes may both have passed the check above. Each looks again after linking and
	// backs off if it sees another: at most one can miss the other, so at most one wins (both
	// may lose a close race, which is an error, never two segments under one name).
	others, err := find(dir, prefix, name)
	if err == nil {
		for _, o := range others {
			if o.Path != path {
				err = existErr(o)
				break
			}
		}
	}
	if err != nil {
		unix.Unlink(path)
		unix.Close(fd)
		return fail(err)
	}
	s, err := mapFD(fd, size, path)
	if err != nil {
		unix.Unlink(path)
		unix.Close(fd)
		return fail(err)
	}
	return s, nil
}

// existErr reports that a segment of the same name exists, with what to do about it.
func existErr(o Info) error {
	if !o.CreatorAlive {
		return fmt.Errorf("%s: %w (left by dead process %d; remove it with Clean or godist shm clean)", o.Path, fs.ErrExist, o.CreatorPid)
	}
	return fmt.Errorf("%s: %w (created by process %d)", o.Path, fs.ErrExist, o.CreatorPid)
}

// OpenNamed maps the named segment prefix.name, created by CreateNamed in this or another
// process. Its size is the size it was created with. If no such segment exists the error wraps
// fs.ErrNotExist. The caller must Close the result; closing does not remove the segment.
func OpenNamed(prefix, name string) (*Segment, error) {
	return openNamedIn(shmDir, prefix, name)
}

func openNamedIn(dir, prefix, name string) (*Segment, error) {
	fail := func(err error) (*Segment, error) {
		return nil, fmt.Errorf("shm: open named %s.%s: %w", prefix, name, err)
	}
	if err := validate(prefix, name); err != nil {
		return fail(err)
	}
	found, err := find(dir, prefix, name)
	if err != nil {
		return fail(err)
	}
	if len(found) == 0 {
		return fail(fmt.Errorf("no segment in %s: %w", dir, fs.ErrNotExist))
	}
	// Several files only exist during a creation race (the loser removes its own) or when a
	// leftover and a new segment coexist; prefer one whose creator is alive.
	pick := found[0]
	for _, f := range found {
		if f.CreatorAlive {
			pick = f
			break
		}
	}
	fd, err := unix.Open(pick.Path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("%s: %w", pick.Path, fs.ErrNotExist)
		}
		return fail(fmt.Errorf("open: %w", err))
	}
	s, err := openOwned(fd, pick.Path)
	if err != nil {
		unix.Close(fd)
		return fail(fmt.Errorf("%s: %w", pick.Path, err))
	}
	return s, nil
}

// Unlink removes the named segment prefix.name (and any leftover of the same name) from
// /dev/shm. Processes that have it mapped keep their mappings; its memory is freed when the last
// one closes. If no such segment exists the error wraps fs.ErrNotExist.
func Unlink(prefix, name string) error {
	return unlinkIn(shmDir, prefix, name)
}

func unlinkIn(dir, prefix, name string) error {
	if err := validate(prefix, name); err != nil {
		return fmt.Errorf("shm: unlink: %w", err)
	}
	found, err := find(dir, prefix, name)
	if err != nil {
		return fmt.Errorf("shm: unlink %s.%s: %w", prefix, name, err)
	}
	removed := 0
	var errs []error
	for _, f := range found {
		switch err := unix.Unlink(f.Path); {
		case err == nil:
			removed++
		case errors.Is(err, unix.ENOENT): // someone else removed it meanwhile
		default:
			errs = append(errs, fmt.Errorf("shm: unlink %s: %w", f.Path, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if removed == 0 {
		return fmt.Errorf("shm: unlink %s.%s: no segment in %s: %w", prefix, name, dir, fs.ErrNotExist)
	}
	return nil
}

// List returns the named segments of prefix in /dev/shm, sorted by name, with their creator and
// whether it is still alive. Files of the prefix that CreateNamed did not make are ignored.
func List(prefix string) ([]Info, error) {
	return listIn(shmDir, prefix)
}

func listIn(dir, prefix string) ([]Info, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("shm: list: %w", err)
	}
	infos, err := scan(dir, prefix)
	if err != nil {
		return nil, fmt.Errorf("shm: list %s: %w", prefix, err)
	}
	return infos, nil
}

// Clean removes the named segments of prefix whose creator is dead — what a crash leaves
// behind — and returns the files it removed. Segments of live creators are untouched. Processes
// that still have a removed segment mapped keep their mapping.
func Clean(prefix string) (removed []string, err error) {
	return cleanIn(shmDir, prefix)
}

func cleanIn(dir, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("shm: clean: %w", err)
	}
	infos, err := scan(dir, prefix)
	if err != nil {
		return nil, fmt.Errorf("shm: clean %s: %w", prefix, err)
	}
	var removed []string
	var errs []error
	for _, in := range infos {
		if in.CreatorAlive {
			continue
		}
		switch err := unix.Unlink(in.Path); {
		case err == nil:
			removed = append(removed, in.Path)
		case errors.Is(err, unix.ENOENT): // another cleaner was faster
		default:
			errs = append(errs, fmt.Errorf("shm: clean: unlink %s: %w", in.Path, err))
		}
	}
	return removed, errors.Join(errs...)
}

// find returns the segments of prefix named name in dir.
func find(dir, prefix, name string) ([]Info, error) {
	all, err := scan(dir, prefix)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, in := range all {
		if in.Name == name {
			out = append(out, in)
		}
	}
	return out, nil
}

// scan lists dir for segments of prefix, sorted by name then path.
func scan(dir, prefix string) ([]Info, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var out []Info
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		name, pid, start, ok := parseFile(prefix, e.Name())
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed since ReadDir
		}
		out = append(out, Info{
			Name:         name,
			Path:         filepath.Join(dir, e.Name()),
			Size:         fi.Size(),
			CreatorPid:   pid,
			CreatorAlive: alive(pid, start),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// parseFile splits a file name <prefix>.<pid>-<start>.<name>.
func parseFile(prefix, file string) (name string, pid int, start uint64, ok bool) {
	rest, ok := strings.CutPrefix(file, prefix+".")
	if !ok {
		return "", 0, 0, false
	}
	creator, name, ok := strings.Cut(rest, ".")
	if !ok || validateName(name) != nil {
		return "", 0, 0, false
	}
	p, s, ok := strings.Cut(creator, "-")
	if !ok {
		return "", 0, 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return "", 0, 0, false
	}
	start, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	return name, pid, start, true
}

// validate checks a prefix and a name.
func validate(prefix, name string) error {
	if err := validatePrefix(prefix); err != nil {
		return err
	}
	return validateName(name)
}

// validatePrefix accepts [A-Za-z0-9_-]{1,MaxPrefixLen}: no '.', so file names parse back.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return errors.New("empty prefix")
	}
	if len(prefix) > MaxPrefixLen {
		return fmt.Errorf("prefix %.20q...: longer than %d bytes", prefix, MaxPrefixLen)
	}
	for _, r := range prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("prefix %q: only letters, digits, '_' and '-' are allowed", prefix)
		}
	}
	return nil
}

// validateName accepts a non-empty name of at most MaxNameLen bytes without '/', NUL or "..".
func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name %.20q...: longer than %d bytes", name, MaxNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q: must not contain '/' or NUL", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("name %q: must not contain \"..\"", name)
	}
	return nil
}

// procStart returns the start time of process pid (clock ticks since boot), which with the pid
// identifies a process across pid reuse.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	_, fields, err := statFields(b)
	if err != nil {
		return 0, err
	}
	// fields[0] is field 3 (state); starttime is field 22.
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// statFields splits /proc/<pid>/stat after the command name, which may itself hold spaces and
// parentheses (hence the last ')').
func statFields(b []byte) (state byte, fields [][]byte, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, nil, errors.New("malformed /proc stat")
	}
	fields = bytes.Fields(b[i+1:])
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, nil, errors.New("malformed /proc stat")
	}
	return fields[0][0], fields, nil
}

// alive reports whether process pid, started at start (0: unknown), still runs. A zombie is
// dead: it runs no code and will not unlink anything.
func alive(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return false
		}
		// /proc hidden from us (hidepid): ask the kernel; EPERM means it exists.
		err := unix.Kill(pid, 0)
		return err == nil || err == unix.EPERM
	}
	state, fields, err := statFields(b)
	if err != nil {
		return true // cannot tell: keeping a leftover is safer than removing a live segment
	}
	if state == 'Z' || state == 'X' {
		return false
	}
	if start != 0 && string(fields[19]) != strconv.FormatUint(start, 10) {
		return false // the pid was reused by another process
	}
	return true
}
