package script

import (
	"slices"
	"strings"
	"testing"
)

// TestFileDecls: the package clause, func main's name and the imports every namespace has are
// replaced in place, so that lines and the columns of other lines stay the file's own.
func TestFileDecls(t *testing.T) {
	src := "// doc\npackage main\n\nimport \"fmt\"\n\nimport (\n\t\"strings\"\n\tstr \"strings\"\n\t\"slices\"\n)\n\n" +
		"func main() {\n\tfmt.Println(helper())\n}\n\nfunc (T) main() {}\n\nfunc helper() int { return 1 }\n"
	code, hasMain, imports, err := fileDecls("x.go", []byte(src), nil)
	if err != nil || !hasMain {
		t.Fatalf("fileDecls: %v, main %v", err, hasMain)
	}
	want := "// doc\n            \n\n            \n\nimport (\n\t         \n\tstr \"strings\"\n\t\"slices\"\n)\n\n" +
		"func " + MainName + "() {\n\tfmt.Println(helper())\n}\n\nfunc (T) main() {}\n\nfunc helper() int { return 1 }\n"
	if code != want {
		t.Fatalf("fileDecls:\n%q\nwant\n%q", code, want)
	}
	if strings.Count(code, "\n") != strings.Count(src, "\n") {
		t.Fatal("lines moved: error positions would not be the file's")
	}
	if want := []string{"str strings", "slices slices"}; !slices.Equal(imports, want) {
		t.Errorf("imports %q, want %q", imports, want)
	}
	// Loaded again: the imports made the first time go too.
	code, _, imports, err = fileDecls("x.go", []byte(src), map[string]bool{"str strings": true, "slices slices": true})
	group := want[strings.Index(want, "import (") : strings.Index(want, ")\n\nfunc "+MainName)+1]
	want = strings.Replace(want, group, strings.Map(func(r rune) rune {
		if r == '\n' {
			return r
		}
		return ' '
	}, group), 1)
	if err != nil || code != want || len(imports) != 0 {
		t.Fatalf("fileDecls again: %v, imports %q\n%q\nwant\n%q", err, imports, code, want)
	}
	if _, hasMain, _, err := fileDecls("y.go", []byte("package p\n\nfunc f() {}\n"), nil); err != nil || hasMain {
		t.Errorf("fileDecls without main: main %v, %v", hasMain, err)
	}
	if _, _, _, err := fileDecls("z.go", []byte("package main\nfunc (\n"), nil); err == nil || !strings.HasPrefix(err.Error(), "z.go:") {
		t.Errorf("fileDecls of bad Go: %v", err)
	}
}
