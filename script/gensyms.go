//go:build ignore

// gensyms writes the interpreter's symbol tables (syms_*.go) with yaegi's extract package.
// Each table is built by a function, registered by init, and called only when a namespace is
// created: a process that never evaluates code pays for none of the maps (DESIGN: the whole
// standard library built eagerly costs every process ~14 MiB).
//
// Run with `go generate` in this directory.
package main

import (
	"bytes"
	"fmt"
	"go/format"
	"log"
	"os"
	"strings"

	"github.com/traefik/yaegi/extract"
)

// safe is the curated standard library every namespace gets. Generic-only packages (slices,
// maps, cmp) are not here: yaegi 0.16 cannot call their functions from symbol tables.
var safe = []string{
	"bufio", "bytes", "container/heap", "container/list", "context", "encoding/binary",
	"encoding/json", "errors", "fmt", "hash/fnv", "io", "math", "math/bits", "math/cmplx",
	"math/rand", "regexp", "sort", "strconv", "strings", "sync", "sync/atomic", "time",
	"unicode", "unicode/utf8",
}

// unrestricted is added only when unsafe evaluation is allowed (AllowUnsafe).
var unrestricted = []string{"os", "os/exec", "syscall"}

func main() {
	old, _ := os.ReadDir(".")
	for _, e := range old {
		if strings.HasPrefix(e.Name(), "syms_") {
			os.Remove(e.Name())
		}
	}
	for _, set := range []struct {
		table string
		pkgs  []string
	}{{"safeTables", safe}, {"unsafeTables", unrestricted}} {
		for _, p := range set.pkgs {
			if err := gen(set.table, p); err != nil {
				log.Fatalf("%s: %v", p, err)
			}
		}
	}
}

func gen(table, pkg string) error {
	var buf bytes.Buffer
	ext := extract.Extractor{Dest: "script"}
	if _, err := ext.Extract(pkg, "", &buf); err != nil {
		return err
	}
	ident := strings.NewReplacer("/", "_", ".", "_").Replace(pkg)
	key := pkg + "/" + pkg[strings.LastIndex(pkg, "/")+1:]
	src := buf.String()
	head := fmt.Sprintf("func init() {\n\tSymbols[%q] = map[string]reflect.Value{", key)
	if !strings.Contains(src, head) {
		return fmt.Errorf("extract output changed shape: no %q", head)
	}
	src = strings.Replace(src, head, fmt.Sprintf(
		"func init() { %s[%q] = syms_%s }\n\nfunc syms_%s() map[string]reflect.Value {\n\treturn map[string]reflect.Value{",
		table, key, ident, ident), 1)
	src = strings.Replace(src, "'yaegi extract "+pkg+"'", "'go generate' (gensyms.go)", 1)
	var lines []string
	for _, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(l, "// +build") || strings.HasPrefix(l, "//go:build") {
			continue // the tables are regenerated for each Go release, not selected by tags
		}
		lines = append(lines, l)
	}
	out, err := format.Source([]byte(strings.Join(lines, "\n")))
	if err != nil {
		return err
	}
	return os.WriteFile("syms_"+ident+".go", out, 0o644)
}
