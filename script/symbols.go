package script

import (
	"errors"
	"fmt"
	"os"
	"reflect"
)

//go:generate go run gensyms.go

// Symbol tables, by yaegi export key ("math/math"), filled by the generated syms_*.go files.
// Each entry builds its map when called, so that only processes that evaluate code pay for it.
var (
	safeTables   = map[string]func() map[string]reflect.Value{}
	unsafeTables = map[string]func() map[string]reflect.Value{}
)

// The extract tool routes os.Exit and os.FindProcess through these, so that interpreted code
// cannot end or signal the process it runs in, even with unsafe evaluation allowed: the
// worker lives on, and os.Exit becomes an error of the evaluation.
func osExit(code int) { panic(fmt.Sprintf("os.Exit(%d) is not allowed in interpreted code", code)) }

func osFindProcess(pid int) (*os.Process, error) {
	if pid == os.Getpid() {
		return nil, errors.New("os.FindProcess: the interpreter's own process is not available")
	}
	return os.FindProcess(pid)
}
