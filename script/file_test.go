package script_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/godist/dist/disttest"
	"github.com/godist/dist/script"
)

const progA = `//go:build ignore

// A program, as godist run takes it.
package main

import (
	"fmt"
	"slices"
	"strings"
	str "strings"
)

const greeting = "hello"

type counter struct{ n int }

var (
	mainRuns int
	inits    int
	c        counter
)

func init() { inits++ }

func shout(s string) string { return strings.ToUpper(s) + fmt.Sprint("!") }

func lower(s string) string { return str.ToLower(s) }

func hasOne(s []int) bool { return slices.Contains(s, 1) }

func main() {
	mainRuns++
	c.n += 10
}
`

const progB = `package main

func twice(x int) int { return 2 * x }
`

// TestLoadFile loads two programs, each with its package clause, into the driver and a
// worker: their declarations are there, init ran once, main is loaded under MainName and runs
// only when called, also after later evaluations and after loading the file again.
func TestLoadFile(t *testing.T) {
	c, _ := disttest.Start(t, 1)
	ctx := ctxT(t)
	if err := script.Clear(ctx, c, []int{1}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pids := []int{1, 2}
	a, b := write("a.go", progA), write("b.go", progB)
	if hasMain, err := script.LoadFile(ctx, c, pids, a); err != nil || !hasMain {
		t.Fatalf("LoadFile a.go: main %v, %v", hasMain, err)
	}
	if hasMain, err := script.LoadFile(ctx, c, pids, b); err != nil || hasMain {
		t.Fatalf("LoadFile b.go: main %v, %v", hasMain, err)
	}
	reap := func(expr string, want any) {
		t.Helper()
		got, err := script.Reap(ctx, c, pids, expr)
		if w := map[int]any{1: want, 2: want}; err != nil || !reflect.DeepEqual(got, w) {
			t.Errorf("%s = %v, %v; want %v on both", expr, got, err, want)
		}
	}
	reap(`shout(greeting)`, "HELLO!")
	reap(`twice(21)`, 42)
	reap(`inits`, 1)
	reap(`mainRuns`, 0)
	if _, err := script.EvalLocal(ctx, script.MainName+"()"); err != nil {
		t.Fatal(err)
	}
	if _, err := script.Eval(ctx, c, pids, "x := 1"); err != nil {
		t.Fatal(err)
	}
	got, err := script.Reap(ctx, c, pids, "[]int{mainRuns, c.n}")
	if want := map[int]any{1: []int{1, 10}, 2: []int{0, 0}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("after main on pid 1: mainRuns, c.n = %v, %v; want %v", got, err, want)
	}
	// Again, as the REPL's :include does with an edited file.
	if _, err := script.LoadFile(ctx, c, pids, write("a.go", strings.Replace(progA, `"hello"`, `"again"`, 1))); err != nil {
		t.Fatalf("LoadFile a.go again: %v", err)
	}
	reap(`shout(greeting)`, "AGAIN!")
	reap(`lower("ABC")`, "abc")
	reap(`hasOne([]int{3, 1})`, true)
	reap(`mainRuns`, 0) // the variables are declared anew

	// Errors name the file and the position in it.
	bad := write("bad.go", "package main\n\nfunc main() {\n\tx := undefinedThing\n}\n")
	_, err = script.LoadFile(ctx, c, pids, bad)
	if err == nil || !strings.Contains(err.Error(), "bad.go: script: pid 1: 4:7: undefined: undefinedThing") || !errors.Is(err, script.ErrEval) {
		t.Errorf("LoadFile bad.go: %v", err)
	}
	_, err = script.LoadFile(ctx, c, pids, write("syntax.go", "package main\n\nfunc main( {\n}\n"))
	if err == nil || !strings.Contains(err.Error(), "syntax.go:3:12: ") {
		t.Errorf("LoadFile syntax.go: %v", err)
	}
	if _, err := script.LoadFile(ctx, c, pids, filepath.Join(dir, "absent.go")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFile absent.go: %v", err)
	}
	reap(`twice(2)`, 4) // the namespaces live on
}
