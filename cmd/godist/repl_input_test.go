package main

import (
	"slices"
	"strings"
	"testing"
)

func TestInputComplete(t *testing.T) {
	cases := []struct {
		src  string
		want bool
	}{
		{"1 + 1", true},
		{"x := 3", true},
		{"func f(x int) int {", false},
		{"func f(x int) int {\n\treturn x\n}", true},
		{"fmt.Println(1,", false},
		{"fmt.Println(1,\n2)", true},
		{"x := 1 +", false},
		{"x := 1 &&", false},
		{"x :=", false},
		{"x.", false},
		{"x +=", false},
		{"s := `raw", false},
		{"s := `raw\nstring`", true},
		{"/* open comment", false},
		{"/* closed */ x", true},
		{"x := 1 // a comment with { in it", true},
		{`s := "{"`, true},
		{"x++", true},
		{"}", true},       // over-closed: complete, the evaluator reports it
		{"x := `", false}, // unterminated raw string
		{":sow 2 y = myid()", true},
		{":everywhere func g() int {", false},
		{":reap []int{2, 3} x", true},
		{":topology all ~.", true},
		{":sow 2 x = 1 +", true},
		{"m := map[string]int{", false},
		{"m := map[string]int{\n\"a\": 1,\n}", true},
		{"return", true},
		{"", true},
	}
	for _, c := range cases {
		if got := inputComplete(c.src); got != c.want {
			t.Errorf("inputComplete(%q) = %v, want %v", c.src, got, c.want)
		}
	}
}

func TestSplitWordAndAssign(t *testing.T) {
	w, rest := splitWord("  []int{2, 3}  bar[0][1:2] = 0 ")
	if w != "[]int{2, 3}" || rest != "bar[0][1:2] = 0" {
		t.Fatalf("splitWord: %q %q", w, rest)
	}
	if w, rest := splitWord("procs"); w != "procs" || rest != "" {
		t.Fatalf("splitWord one word: %q %q", w, rest)
	}
	cases := []struct{ in, target, expr string }{
		{"y = myid()", "y", "myid()"},
		{"bar[0:2] = 0", "bar[0:2]", "0"},
		{`somedict["buzz"][0][:] = math.Pi`, `somedict["buzz"][0][:]`, "math.Pi"},
		{"x = a == b", "x", "a == b"},
		{"x = y <= z", "x", "y <= z"},
		{`s = "a=b"`, "s", `"a=b"`},
	}
	for _, c := range cases {
		target, expr, ok := splitAssign(c.in)
		if !ok || target != c.target || expr != c.expr {
			t.Errorf("splitAssign(%q) = %q, %q, %v", c.in, target, expr, ok)
		}
	}
	for _, bad := range []string{"x == y", "x := 1", "x <= 2", "f(a = 1)", "x += 1"} {
		if _, _, ok := splitAssign(bad); ok {
			t.Errorf("splitAssign(%q) split", bad)
		}
	}
}

func TestParsePids(t *testing.T) {
	procs, workers := []int{1, 2, 3, 4}, []int{2, 3, 4}
	cases := []struct {
		in   string
		want []int
		ok   bool
	}{
		{"3", []int{3}, true},
		{"2,3,4", []int{2, 3, 4}, true},
		{"[2,3]", []int{2, 3}, true},
		{"2:4", []int{2, 3, 4}, true},
		{"1,3:4", []int{1, 3, 4}, true},
		{"workers", workers, true},
		{"all", procs, true},
		{"procs", procs, true},
		{"pids", nil, false},
		{"[]int{2}", nil, false},
		{"remotes[0]", nil, false},
	}
	for _, c := range cases {
		got, ok, err := parsePids(c.in, procs, workers)
		if err != nil || ok != c.ok || !slices.Equal(got, c.want) {
			t.Errorf("parsePids(%q) = %v, %v, %v; want %v, %v", c.in, got, ok, err, c.want, c.ok)
		}
	}
	if _, ok, err := parsePids("4:2", procs, workers); !ok || err == nil {
		t.Errorf("parsePids(4:2): ok %v err %v, want an error", ok, err)
	}
}

func TestOneLine(t *testing.T) {
	cases := []struct{ in, want string }{
		{"x := 1", "x := 1"},
		{"func fib(n int) int {\n\tif n < 2 {\n\t\treturn n\n\t}\n\treturn fib(n-1) + fib(n-2)\n}",
			"func fib(n int) int { if n < 2 { return n; }; return fib(n-1) + fib(n-2); }"},
		{"f(1,\n  2)", "f(1, 2)"},
		{"x := 1 // one\ny := 2", "x := 1; y := 2"},
		{"s := []int{\n1,\n2,\n}", "s := []int{ 1, 2, }"},
	}
	for _, c := range cases {
		if got := oneLine(c.in); got != c.want {
			t.Errorf("oneLine(%q) = %q, want %q", c.in, got, c.want)
		}
		if !inputComplete(oneLine(c.in)) {
			t.Errorf("oneLine(%q) is not a complete entry", c.in)
		}
	}
}

func TestDisplay(t *testing.T) {
	var b strings.Builder
	display(&b, map[int]any{3: 9.0, 2: 4, 10: "x"})
	want := "map[int]any with 3 entries:\n  2 => 4\n  3 => 9\n  10 => \"x\"\n"
	if b.String() != want {
		t.Errorf("map:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	display(&b, []float64{1.5, 2})
	if b.String() != "2-element []float64:\n 1.5\n 2\n" {
		t.Errorf("slice:\n%s", b.String())
	}
	b.Reset()
	display(&b, [][]float64{{0, 0}, {-1.25, 3}})
	if b.String() != "2×2 [][]float64:\n     0 0\n -1.25 3\n" {
		t.Errorf("matrix:\n%q", b.String())
	}
	b.Reset()
	display(&b, 9.869604401089358)
	if b.String() != "9.869604401089358\n" {
		t.Errorf("float: %q", b.String())
	}
	b.Reset()
	display(&b, make([]int, 100))
	if n := strings.Count(b.String(), "\n"); n > maxShown+2 {
		t.Errorf("a long slice printed %d lines", n)
	}
}
