package daemon

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
	got, err := readEnvFile(write("# release v2\n\nA=1\n  B = two words \n; comment\nC='single $HOME'\nD=\"q \\\"x\\\" \\n\" # note\nE=\n_F9=x=y\n"))
	want := []string{"A=1", "B=two words", "C=single $HOME", "D=q \"x\" \n", "E=", "_F9=x=y"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	for _, c := range []struct{ text, want string }{
		{"A=1\nnot an assignment\n", "env:2: not KEY=VALUE"},
		{"A=1\n9X=1\n", "env:2: not KEY=VALUE"},
		{"A=\"open\n", "env:1: A: no closing \""},
		{"A='x' y\n", "env:1: A: text after the closing quote"},
	} {
		if _, err := readEnvFile(write(c.text)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.text, err, c.want)
		}
	}
	if _, err := readEnvFile(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}
