//go:build unix

package release

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestCache: a file identified once is known until a stat shows it
// changed — even rewritten with its size and modification time kept — and
// then read again; an interpreter's script counts as the program does.
func TestCache(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "app")
	write(t, prog, "release 1")
	var c Cache
	if _, err := c.Known(prog, nil, dir); !errors.Is(err, ErrNotCached) {
		t.Fatalf("Known before Of: %v, want ErrNotCached", err)
	}
	id, err := c.Of(prog, nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Of(prog, nil, dir)
	if id.Program.SHA256 != want.Program.SHA256 {
		t.Fatalf("cached Of: %+v, want %+v", id, want)
	}
	if k, err := c.Known(prog, nil, dir); err != nil || k.Program.SHA256 != id.Program.SHA256 {
		t.Fatalf("Known after Of: %+v, %v", k, err)
	}

	// The same size, the modification time set back: the change time
	// moved all the same.
	st, err := os.Stat(prog)
	if err != nil {
		t.Fatal(err)
	}
	write(t, prog, "release 2")
	if err := os.Chtimes(prog, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Known(prog, nil, dir); !errors.Is(err, ErrNotCached) && runtime.GOOS == "linux" {
		t.Errorf("Known after a rewrite that kept size and mtime: %v, want ErrNotCached", err)
	}
	// Elsewhere the change time is not compared: a write that keeps
	// size and mtime goes unseen there (see changeTime).
	if runtime.GOOS != "linux" {
		write(t, prog, "release 2, longer")
	}
	id2, err := c.Of(prog, nil, dir)
	if err != nil || id2.Program.SHA256 == id.Program.SHA256 {
		t.Errorf("Of after the rewrite: %+v, %v; want a new SHA-256", id2, err)
	}

	node := filepath.Join(dir, "node")
	write(t, node, "an interpreter")
	write(t, filepath.Join(dir, "server.js"), "script 1")
	if _, err := c.Of(node, []string{"--flag", "server.js"}, dir); err != nil {
		t.Fatal(err)
	}
	if k, err := c.Known(node, []string{"--flag", "server.js"}, dir); err != nil || k.Script == nil {
		t.Fatalf("Known with a script: %+v, %v", k, err)
	}
	write(t, filepath.Join(dir, "server.js"), "script 2, longer")
	if _, err := c.Known(node, []string{"--flag", "server.js"}, dir); !errors.Is(err, ErrNotCached) {
		t.Errorf("Known after the script changed: %v, want ErrNotCached", err)
	}

	for i := range cacheMax + 8 {
		p := filepath.Join(dir, fmt.Sprintf("release-%d", i))
		write(t, p, p)
		if _, err := c.Of(p, nil, dir); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.files); n > cacheMax {
		t.Errorf("the cache holds %d files, more than %d", n, cacheMax)
	}
}
