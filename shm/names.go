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

// Lookup returns the value bound to name in this process (Bind, BroadcastShared, or inherited
// by a Fork child), and whether there is one. The value is an *Array; LookupArray gives the
// typed view. The handle belongs to the binding: do not Release it, and do not use its memory
// after the name is unbound (Unbind, UnbindShared, or a later Bind of the name), which may
// unmap it. Lookup, Names, Bind and Unbind are safe for concurrent use.
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
