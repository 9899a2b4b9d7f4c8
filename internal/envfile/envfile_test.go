//go:build unix

package envfile

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestReadEnvFile(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "env")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := Read(write("# release v2\n\nA=1\n  B = two words \n; comment\nC='single $HOME'\nD=\"q \\\"x\\\" \\n\" # note\nE=\n_F9=x=y\n"))
	want := []string{"A=1", "B=two words", "C=single $HOME", "D=q \"x\" \n", "E=", "_F9=x=y"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	for _, c := range []struct{ text, want string }{
		{"A=1\nnot an assignment\n", "env:2: not KEY=VALUE"},
		{"A=1\n9X=1\n", "env:2: not KEY=VALUE"},
		{"A=\"open\n", "env:1: A: no closing \""},
		{"A='x' y\n", "env:1: A: text after the closing quote"},
		{"A=1\nB=x\x00y\n", "env:2: a NUL byte at column 4"},
		{"A=1\n\nBIG=" + strings.Repeat("v", 900<<10) + "\n", "env:3: BIG: 921604 bytes, more than the 131071 Linux passes"},
		{"LINE=" + strings.Repeat("v", 1100<<10) + "\n", "env:1: LINE: 1126405 bytes"},
	} {
		if _, err := Read(write(c.text)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.text, err, c.want)
		}
	}
	// A FIFO nobody writes is refused at once, not waited on.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(fifo); err == nil || !strings.Contains(err.Error(), "FIFO or pipe, not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "a directory, not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}
