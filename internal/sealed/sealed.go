// Package sealed checks, for tests, that a type switch over a sealed
// interface — one whose types each have an unexported marker method —
// names every type that implements it, so that a new event or action
// that a switch forgets fails a test instead of compiling silently.
package sealed

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"sort"
	"strings"
	"testing"
)

// Missing parses the Go package in dir (its non-test files) and returns,
// sorted, the types that have a method named marker but that no case of a
// type switch in the function or method named fn names. It fails if dir
// holds no type with that marker, or no function fn with a type switch.
func Missing(dir, marker, fn string) ([]string, error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		return nil, fmt.Errorf("sealed: parsing %s: %w", dir, err)
	}
	marked := map[string]bool{}
	handled := map[string]bool{}
	switches := 0
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok {
					continue
				}
				if fd.Name.Name == marker && fd.Recv != nil && len(fd.Recv.List) == 1 {
					if name := typeName(fd.Recv.List[0].Type); name != "" {
						marked[name] = true
					}
				}
				if fd.Name.Name != fn || fd.Body == nil {
					continue
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					ts, ok := n.(*ast.TypeSwitchStmt)
					if !ok {
						return true
					}
					switches++
					for _, c := range ts.Body.List {
						for _, e := range c.(*ast.CaseClause).List {
							if name := typeName(e); name != "" {
								handled[name] = true
							}
						}
					}
					return true
				})
			}
		}
	}
	if len(marked) == 0 {
		return nil, fmt.Errorf("sealed: no type in %s has a method %s", dir, marker)
	}
	if switches == 0 {
		return nil, fmt.Errorf("sealed: no type switch in a function %s in %s", fn, dir)
	}
	var missing []string
	for name := range marked {
		if !handled[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// typeName returns the name of a type expression T or *T, or "".
func typeName(e ast.Expr) string {
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// Switch names a type switch over a sealed interface: the function that
// holds it, and the marker method of the interface's types.
type Switch struct{ Marker, Fn string }

// Check fails t for each type of a sealed interface that its switch in the
// package in dir does not name (see Missing).
func Check(t testing.TB, dir string, switches ...Switch) {
	t.Helper()
	for _, s := range switches {
		missing, err := Missing(dir, s.Marker, s.Fn)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Errorf("%s does not handle %v", s.Fn, missing)
		}
	}
}
