package watch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symlinks followed resolving one path, as the kernel's
// 40 (ELOOP).
const maxLinks = 40

// where is what one watched path is made of now: the directories whose
// entries decide what it names, and the paths in them whose events matter.
type where struct {
	// dirs are the directories to watch: the one holding each symlink met
	// on the way, the one holding the file, or the deepest one that
	// exists if the path is missing; and the path itself if it is a
	// directory.
	dirs map[string]bool
	// names are the paths whose events matter: each symlink on the way
	// and the path it ends at (or the first one missing).
	names map[string]bool
	// content is the path itself resolved, if it is a directory: any
	// event in it matters.
	content string
}

func newWhere() *where { return &where{dirs: map[string]bool{}, names: map[string]bool{}} }

// add records into w what path p is made of, and returns p with its
// symlinks resolved, or "" if p (or a directory on its way) is missing.
// p is absolute.
func (w *where) add(p string) string {
	resolved := "/"
	rest := splitPath(p)
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, c)
		fi, err := os.Lstat(next)
		if err != nil || (len(rest) > 0 && fi.Mode()&fs.ModeSymlink == 0 && !fi.IsDir()) {
			// Missing (or a file where a directory should be): watch the
			// deepest directory there is, for it to come.
			w.dirs[resolved] = true
			w.names[next] = true
			return ""
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			w.dirs[resolved] = true
			w.names[next] = true
			target, err := os.Readlink(next)
			if err != nil || links >= maxLinks {
				return ""
			}
			links++
			if filepath.IsAbs(target) {
				resolved = "/"
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		resolved = next
	}
	w.dirs[filepath.Dir(resolved)] = true
	w.names[resolved] = true
	return resolved
}

func splitPath(p string) []string { return strings.Split(p, "/") }

// locate returns what the watched path p is made of now, and p resolved
// ("" if missing). A directory's entries that are symlinks are followed
// too, so that a file in it reached through a symlink swapped elsewhere
// (kubelet's ..data) is watched.
func locate(p string) (*where, string) {
	w := newWhere()
	real := w.add(p)
	if real == "" {
		return w, ""
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.IsDir() {
		return w, real
	}
	w.dirs[real] = true
	w.content = real
	ents, err := os.ReadDir(real)
	if err != nil {
		return w, real
	}
	for _, e := range ents {
		if !ignored(e.Name()) && e.Type()&fs.ModeSymlink != 0 {
			w.add(filepath.Join(real, e.Name()))
		}
	}
	return w, real
}

// ignored reports whether a directory's entry is left out of what the
// directory holds: hidden names (kubelet's ..data, editors' swap files)
// and backups (name~).
func ignored(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~")
}

// errMissing: the watched path does not exist (now).
var errMissing = errors.New("missing")

// digest returns the sha256 of what real holds, in hex: a file's content,
// or for a directory the names and contents of the regular files directly
// in it (symlinks followed), but those ignored. It returns errMissing if
// real is "" or has gone.
func digest(real string) (string, error) {
	if real == "" {
		return "", errMissing
	}
	fi, err := os.Stat(real)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errMissing
	}
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if !fi.IsDir() {
		if err := hashFile(h, real); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	ents, err := os.ReadDir(real)
	if errors.Is(err, fs.ErrNotExist) {
		return "", errMissing
	}
	if err != nil {
		return "", err
	}
	for _, e := range ents { // in name order, as os.ReadDir returns them
		name := e.Name()
		if ignored(name) {
			continue
		}
		p := filepath.Join(real, name)
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			// A dangling symlink, or a file gone meanwhile: its name
			// alone counts.
			fmt.Fprintf(h, "%s\x00?\x00", name)
			continue
		case !fi.Mode().IsRegular():
			continue
		}
		fh := sha256.New()
		if err := hashFile(fh, p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(h, "%s\x00?\x00", name)
				continue
			}
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%x\x00", name, fh.Sum(nil))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashFile writes the content of the file at p into h.
func hashFile(h io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}
