//go:build unix

package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// File is one file of a release, as it was when identified.
type File struct {
	Path     string    `json:"path"` // symlinks resolved
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"` // of its content, in hex
	Modified time.Time `json:"modified"`
	dev, ino uint64
	changed  int64 // its change time (ctime), in nanoseconds
}

// Identity is what a generation runs: its program's file, and the script
// it was given where the program is an interpreter.
type Identity struct {
	Program File  `json:"program"`
	Script  *File `json:"script,omitempty"`
}

// Same reports whether id and o run the same content: the same program's
// and script's bytes, wherever they are.
func (id Identity) Same(o Identity) bool {
	if id.Program.SHA256 != o.Program.SHA256 || (id.Script == nil) != (o.Script == nil) {
		return false
	}
	return id.Script == nil || id.Script.SHA256 == o.Script.SHA256
}

// Short names id in a dozen characters: the first 12 hex digits of its
// script's SHA-256 where it has a script, else its program's.
func (id Identity) Short() string {
	h := id.Program.SHA256
	if id.Script != nil {
		h = id.Script.SHA256
	}
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// Of identifies what program, run with args in dir, runs: program (a path,
// as the generation was started with it) and, where program is an
// interpreter (Interpreter) and the first of args that is not a flag names
// a regular file (relative to dir), that file as its script. It reads each
// file whole to hash it (see Cache, which does not read a file again).
func Of(program string, args []string, dir string) (Identity, error) {
	return of(program, args, dir, Identify)
}

// of is Of, with identify to identify each file.
func of(program string, args []string, dir string, identify func(string) (File, error)) (Identity, error) {
	p, err := identify(program)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Program: p}
	if !Interpreter(p.Path) {
		return id, nil
	}
	for _, a := range args {
		if a == "" || a[0] == '-' {
			continue
		}
		path := a
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			s, err := identify(path)
			if errors.Is(err, ErrNotCached) {
				return Identity{}, err
			}
			if err == nil {
				id.Script = &s
			}
		}
		break
	}
	return id, nil
}

// Interpreter reports whether the program at path runs a script given as
// its first argument: Python, Node.js, Deno, Bun, Ruby, Perl, PHP or a
// shell, by its file's name (python3.11, node20 and the like included).
func Interpreter(path string) bool {
	name := strings.TrimRight(filepath.Base(path), "0123456789.")
	switch name {
	case "python", "node", "nodejs", "deno", "bun", "ruby", "perl", "php", "sh", "bash", "dash", "zsh":
		return true
	}
	return false
}

// identifyTries bounds how often Identify reads a file that keeps changing
// while it is read.
const identifyTries = 3

// Identify identifies the file at path, symlinks resolved. A file written
// while it is read (its size, modification time or inode differ before and
// after) is read again, up to identifyTries times; then Identify returns an
// error that says so.
func Identify(path string) (File, error) {
	resolved, err := evalSymlinks(path)
	if err != nil {
		return File{}, err
	}
	for range identifyTries {
		f, same, err := read(resolved)
		if err != nil || same {
			return f, err
		}
	}
	return File{}, fmt.Errorf("release: %s changed each of the %d times it was read", resolved, identifyTries)
}

// evalSymlinks is filepath.EvalSymlinks, its error in the package's words.
func evalSymlinks(path string) (string, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", errorf(err)
	}
	return resolved, nil
}

// errorf wraps err in the package's words.
func errorf(err error) error { return fmt.Errorf("release: %w", err) }

// read hashes the file at path, and reports whether it was the same file,
// unchanged, after the read as before it.
func read(path string) (File, bool, error) {
	// O_NONBLOCK: opening a FIFO would wait for a writer. A regular
	// file's reads ignore it.
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return File{}, false, fmt.Errorf("release: %w", err)
	}
	defer fh.Close()
	before, err := fh.Stat()
	if err != nil {
		return File{}, false, fmt.Errorf("release: %w", err)
	}
	if !before.Mode().IsRegular() {
		return File{}, false, fmt.Errorf("release: %s is not a regular file (%s)", path, before.Mode().Type())
	}
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return File{}, false, fmt.Errorf("release: reading %s: %w", path, err)
	}
	f := fileOf(path, before)
	f.SHA256 = hex.EncodeToString(h.Sum(nil))
	after, err := os.Stat(path)
	if err != nil {
		return File{}, false, fmt.Errorf("release: %w", err)
	}
	return f, f.matches(after), nil
}

func fileOf(path string, st os.FileInfo) File {
	f := File{Path: path, Size: st.Size(), Modified: st.ModTime(), changed: changeTime(st)}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		f.dev, f.ino = uint64(s.Dev), s.Ino
	}
	return f
}

// matches reports whether st is f's file, unchanged since f was taken.
func (f File) matches(st os.FileInfo) bool {
	g := fileOf(f.Path, st)
	return g.dev == f.dev && g.ino == f.ino && g.Size == f.Size && g.Modified.Equal(f.Modified) && g.changed == f.changed
}

// Changed reports how the file at f.Path differs from f, cheaply (one
// stat, no read): "" if it does not; "replaced" if the path now leads to
// another file (renamed over, or deleted and written anew); "written" if
// the same file was written (its size or modification time changed). A file
// removed and not replaced is "" — a release directory cleaned up after a
// newer one shipped; the generation runs on from what it loaded.
func (f File) Changed() (string, error) {
	st, err := os.Stat(f.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("release: %w", err)
	}
	g := fileOf(f.Path, st)
	switch {
	case g.dev != f.dev || g.ino != f.ino:
		return "replaced", nil
	case g.Size != f.Size || !g.Modified.Equal(f.Modified):
		return "written", nil
	}
	return "", nil
}
