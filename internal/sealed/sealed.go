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
	return MissingIn(dir, dir, marker, fn)
}

// MissingIn is Missing where the switch is in another package, in fnDir,
// which names the types of the package in dir qualified (gen.EvStart).
func MissingIn(dir, fnDir, marker, fn string) ([]string, error) {
	marked, _, _, err := scan(dir, marker, fn)
	if err != nil {
		return nil, err
	}
	_, handled, switches, err := scan(fnDir, marker, fn)
	if err != nil {
		return nil, err
	}
	if len(marked) == 0 {
		return nil, fmt.Errorf("sealed: no type in %s has a method %s", dir, marker)
	}
	if switches == 0 {
		return nil, fmt.Errorf("sealed: no type switch in a function %s in %s", fn, fnDir)
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

// scan parses the package in dir and returns the types with a method
// marker, the types the type switches in function fn name, and how many
// such switches there are.
func scan(dir, marker, fn string) (marked, handled map[string]bool, switches int, err error) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("sealed: parsing %s: %w", dir, err)
	}
	marked, handled = map[string]bool{}, map[string]bool{}
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
	return marked, handled, switches, nil
}

// typeName returns the name of a type expression T, *T, pkg.T or *pkg.T,
// without the package, or "".
func typeName(e ast.Expr) string {
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if s, ok := e.(*ast.SelectorExpr); ok {
		e = s.Sel
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// Switch names a type switch over a sealed interface: the function that
// holds it, and the marker method of the interface's types. In is the
// directory of the package that holds the function, when it is not the
// one that declares the types.
type Switch struct{ Marker, Fn, In string }

// Check fails t for each type of a sealed interface that its switch in the
// package in dir does not name (see Missing).
func Check(t testing.TB, dir string, switches ...Switch) {
	t.Helper()
	for _, s := range switches {
		in := s.In
		if in == "" {
			in = dir
		}
		missing, err := MissingIn(dir, in, s.Marker, s.Fn)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Errorf("%s does not handle %v", s.Fn, missing)
		}
	}
}
