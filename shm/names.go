package shm

import (
	"slices"
	"sync"
)

// The bindings of this process: names under which BroadcastShared (or Bind) made
// shared arrays reachable. The interpreter (package script) binds them into its namespace, so
// interpreter code on any process of a host sees the same array under the same name.
var bindings = struct {
	sync.Mutex
	m map[string]any
}{m: make(map[string]any)}

// Lookup returns the value bound to name in this process (a *SharedArray[T] for a name given
// to BroadcastShared), and whether there is one.
func Lookup(name string) (any, bool) {
	bindings.Lock()
	defer bindings.Unlock()
	v, ok := bindings.m[name]
	return v, ok
}

// Names returns the names bound in this process, sorted.
func Names() []string {
	bindings.Lock()
	defer bindings.Unlock()
	names := make([]string, 0, len(bindings.m))
	for n := range bindings.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// bind makes v reachable under name, replacing (and returning) what was bound there before.
func bind(name string, v any) (old any) {
	bindings.Lock()
	defer bindings.Unlock()
	old = bindings.m[name]
	bindings.m[name] = v
	return old
}

// unbind removes name if it is still bound to v (compared by identity), and reports whether it
// did.
func unbind(name string, v any) bool {
	bindings.Lock()
	defer bindings.Unlock()
	if cur, ok := bindings.m[name]; ok && cur == v {
		delete(bindings.m, name)
		return true
	}
	return false
}
