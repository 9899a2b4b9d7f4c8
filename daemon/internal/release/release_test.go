//go:build unix

package release

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestIdentify(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	write(t, a, "release 1")
	write(t, b, "release 1")
	link := filepath.Join(dir, "current")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	fa, err := Identify(link)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("release 1"))
	if fa.Path != a || fa.Size != 9 || fa.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("Identify(%s) = %+v, want %s, 9 bytes, SHA-256 %x", link, fa, a, sum)
	}
	fb, err := Identify(b)
	if err != nil {
		t.Fatal(err)
	}
	if fa.SHA256 != fb.SHA256 || !(Identity{Program: fa}).Same(Identity{Program: fb}) {
		t.Errorf("the same bytes at two paths are not the same release: %+v %+v", fa, fb)
	}
	write(t, b, "release 2")
	if fc, _ := Identify(b); fc.SHA256 == fa.SHA256 {
		t.Errorf("other bytes, same SHA-256 %s", fc.SHA256)
	}
	if _, err := Identify(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "release: ") {
		t.Errorf("a missing file: %v, want an error", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Identify(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a FIFO: %v, want not a regular file", err)
	}
}

func TestChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app")
	write(t, path, "v1")
	f, err := Identify(path)
	if err != nil {
		t.Fatal(err)
	}
	if how, err := f.Changed(); how != "" || err != nil {
		t.Fatalf("unchanged: %q, %v", how, err)
	}
	// Written in place: same inode, other content and time.
	later := f.Modified.Add(time.Second)
	write(t, path, "v2 in place")
	os.Chtimes(path, later, later)
	if how, _ := f.Changed(); how != "written" {
		t.Errorf("written in place: %q, want written", how)
	}
	// Shipped by rename over the path: another inode.
	g, _ := Identify(path)
	tmp := filepath.Join(dir, "app.new")
	write(t, tmp, "v3")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if how, _ := g.Changed(); how != "replaced" {
		t.Errorf("renamed over: %q, want replaced", how)
	}
	// Removed, as an old release's directory is cleaned up: not a change
	// to warn about.
	os.Remove(path)
	if how, err := g.Changed(); how != "" || err != nil {
		t.Errorf("removed: %q, %v; want none", how, err)
	}
}

func TestOf(t *testing.T) {
	dir := t.TempDir()
	python := filepath.Join(dir, "python3.11")
	write(t, python, "an interpreter")
	write(t, filepath.Join(dir, "app.py"), "print('hi')")
	id, err := Of(python, []string{"-u", "app.py", "--port", "80"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.Script == nil || id.Script.Path != filepath.Join(dir, "app.py") {
		t.Fatalf("Of(python3.11 -u app.py) = %+v, want app.py as the script", id)
	}
	if id.Short() != id.Script.SHA256[:12] {
		t.Errorf("Short = %q, want the script's", id.Short())
	}
	// A program that is no interpreter has no script, whatever its
	// arguments name.
	app := filepath.Join(dir, "server")
	write(t, app, "a binary")
	id, err = Of(app, []string{"app.py"}, dir)
	if err != nil || id.Script != nil {
		t.Errorf("Of(server app.py) = %+v, %v; want no script", id, err)
	}
	// An interpreter whose first argument is no file (python3 -m app).
	id, err = Of(python, []string{"-m", "app"}, dir)
	if err != nil || id.Script != nil {
		t.Errorf("Of(python3 -m app) = %+v, %v; want no script", id, err)
	}
	// The same program with another script is another release.
	write(t, filepath.Join(dir, "other.py"), "print('bye')")
	other, _ := Of(python, []string{"other.py"}, dir)
	first, _ := Of(python, []string{"app.py"}, dir)
	if other.Same(first) {
		t.Error("two scripts under one interpreter are the same release")
	}
}

func TestInterpreter(t *testing.T) {
	for path, want := range map[string]bool{"/usr/bin/python3": true, "/usr/bin/python3.11": true, "/usr/local/bin/node": true, "/bin/sh": true, "/usr/bin/node20": true, "/srv/app/server": false, "/usr/bin/handoff": false} {
		if got := Interpreter(path); got != want {
			t.Errorf("Interpreter(%s) = %v, want %v", path, got, want)
		}
	}
}
