package script

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"slices"
	"strconv"

	"github.com/godist/dist"
)

// MainName is the name under which LoadFile loads a file's func main: a function named main
// would be run by the interpreter at every later evaluation, and workers must not run it at
// all. Run it with EvalLocal(ctx, MainName+"()") (or RunAt on a pid).
const MainName = "_godist_main"

// LoadFile reads the Go source file path here and loads its declarations (imports, constants,
// types, variables, functions) into the namespace of each of pids, concurrently, as Julia's
// include and julia -L do. The file is an ordinary Go program: its package clause is dropped
// (a namespace takes one only once), and its func main, if any, is loaded as MainName and not
// run; hasMain reports whether there was one. Its imports of the packages every namespace has
// (see the package doc), and those that a file loaded earlier into the namespace made, are
// dropped too, as they are imported already. Its init functions run on load. A file may be
// loaded again: its declarations replace the earlier ones. Errors name the file and the position
// in it ("prog.go: script: pid 2: 4:7: undefined: x"); the error is the lowest failing pid's.
func LoadFile(ctx context.Context, c *dist.Cluster, pids []int, path string) (hasMain bool, err error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("script: %w", err)
	}
	return LoadSource(ctx, c, pids, path, src)
}

// LoadSource is LoadFile of the source src of a file named name.
func LoadSource(ctx context.Context, c *dist.Cluster, pids []int, name string, src []byte) (hasMain bool, err error) {
	// Parsed here too, for a syntax error to be one error rather than one per pid.
	if _, hasMain, _, err = fileDecls(name, src, nil); err != nil {
		return false, err
	}
	req := loadReq{Name: name, Src: src}
	if _, err := call(ctx, c, pids, loadFn, func(int) loadReq { return req }); err != nil {
		return false, fmt.Errorf("%s: %w", name, err)
	}
	return hasMain, nil
}

type loadReq struct {
	Name string
	Src  []byte
}

var loadFn = dist.NewFunc("script.load", func(ctx context.Context, r loadReq) (reply, error) {
	n := current()
	err := n.with(ctx, func(e engine) error {
		code, _, imports, err := fileDecls(r.Name, r.Src, n.imports)
		if err != nil {
			return &EvalError{Kind: KindParse, Msg: err.Error()}
		}
		if _, err := e.eval(ctx, code); err != nil {
			return err
		}
		if n.imports == nil {
			n.imports = map[string]bool{}
		}
		for _, im := range imports {
			n.imports[im] = true
		}
		return nil
	})
	return finish(ctx, nil, err)
})

// fileDecls turns a Go file into declarations for a namespace: the package clause becomes
// blanks, and so do the imports every namespace has and the imports in done (a "name path"
// key, see importKey), and func main becomes MainName. Lines stay where they are, so that
// positions in errors are the file's own. imports are the keys of the imports left in.
func fileDecls(name string, src []byte, done map[string]bool) (code string, hasMain bool, imports []string, err error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return "", false, nil, err
	}
	out := bytes.Clone(src)
	tf := fset.File(f.Pos())
	blank := func(from, to token.Pos) {
		for i := tf.Offset(from); i < tf.Offset(to); i++ {
			if out[i] != '\n' {
				out[i] = ' '
			}
		}
	}
	blank(f.Package, f.Name.End())
	// The interpreter refuses an import it has seen ("fmt redeclared"), as when a file is
	// loaded again: imports of the packages every namespace has go, and so do those that an
	// earlier file made. Others (a renamed import, slices, a package the namespace lacks) stay,
	// for the interpreter to take or report.
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.IMPORT {
			continue
		}
		var drop []*ast.ImportSpec
		for _, sp := range g.Specs {
			is := sp.(*ast.ImportSpec)
			p, err := strconv.Unquote(is.Path.Value)
			if err != nil {
				continue
			}
			key := importKey(is, p)
			if (is.Name == nil && implicitImport(p)) || done[key] {
				drop = append(drop, is)
			} else {
				imports = append(imports, key)
			}
		}
		switch {
		case len(drop) == len(g.Specs):
			blank(g.Pos(), g.End())
		case g.Lparen.IsValid():
			for _, is := range drop {
				blank(is.Pos(), is.End())
			}
		}
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv != nil || fd.Name.Name != "main" {
			continue
		}
		off := tf.Offset(fd.Name.Pos())
		out = slices.Concat(out[:off], []byte(MainName), out[off+len("main"):])
		return string(out), true, imports, nil
	}
	return string(out), false, imports, nil
}

// importKey names an import by the name it binds and its path.
func importKey(is *ast.ImportSpec, p string) string {
	if is.Name != nil {
		return is.Name.Name + " " + p
	}
	return path.Base(p) + " " + p
}

// implicitImport reports whether the package of import path p is imported in every namespace
// already (see newYaegi).
func implicitImport(p string) bool {
	key := p + "/" + path.Base(p)
	if _, ok := safeTables[key]; ok {
		return true
	}
	if !unsafeEval() {
		return false
	}
	_, ok := unsafeTables[key]
	return ok || p == "unsafe"
}
