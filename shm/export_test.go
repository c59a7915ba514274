package shm

// Test-only access to the directory-parameterized variants, so that tests can use a small
// tmpfs (full-disk behaviour) and fake dead creators.

// CreateNamedIn is CreateNamed in dir, recording pid as the creator.
func CreateNamedIn(dir, prefix, name string, size, pid int) (*Segment, error) {
	return createNamedIn(dir, prefix, name, size, pid)
}

// ListIn, CleanIn, OpenNamedIn and UnlinkIn are List, Clean, OpenNamed and Unlink in dir.
var (
	ListIn      = listIn
	CleanIn     = cleanIn
	OpenNamedIn = openNamedIn
	UnlinkIn    = unlinkIn
)
