//go:build unix

package release

import (
	"errors"
	"os"
	"sync"
)

// Cache remembers the files it identified, so that a file unchanged since
// is not read again: without it each worker of a generation, each restart
// after a crash and each reload into the same release would read the
// program whole (a 10 MB binary: 5-25 ms of CPU here, taken from the
// process starting beside it). A file is taken as unchanged while a stat
// gives the same device, inode, size, modification time and change time;
// the change time cannot be set back by a program (touch -d sets the
// modification time only), and any write, rename or chmod moves it. The
// zero Cache is ready to use, and safe for concurrent use; it holds at most
// cacheMax files, forgetting others as new ones come.
type Cache struct {
	mu    sync.Mutex
	files map[string]File // by path, symlinks resolved
}

// cacheMax bounds a Cache: a deploy that ships each release to a
// directory of its own brings a new path each time.
const cacheMax = 32

// ErrNotCached is what Cache.Known returns for a file it would have to read.
var ErrNotCached = errors.New("release: not identified yet")

// Of is the package's Of, with the files it identified earlier, unchanged
// since, taken from c rather than read again.
func (c *Cache) Of(program string, args []string, dir string) (Identity, error) {
	return of(program, args, dir, func(path string) (File, error) { return c.identify(path, true) })
}

// Known is Of without reading: it returns what c knows of program (and its
// script), or an error wrapping ErrNotCached where a file is new to c or
// changed since. It costs a stat or two.
func (c *Cache) Known(program string, args []string, dir string) (Identity, error) {
	return of(program, args, dir, func(path string) (File, error) { return c.identify(path, false) })
}

func (c *Cache) identify(path string, read bool) (File, error) {
	resolved, st, err := resolve(path)
	if err != nil {
		return File{}, err
	}
	c.mu.Lock()
	f, ok := c.files[resolved]
	c.mu.Unlock()
	if ok && f.matches(st) {
		return f, nil
	}
	if !read {
		return File{}, ErrNotCached
	}
	if f, err = Identify(resolved); err != nil {
		return File{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[string]File{}
	}
	if _, ok := c.files[resolved]; !ok && len(c.files) >= cacheMax {
		for k := range c.files { // any one: a map's order is random
			delete(c.files, k)
			break
		}
	}
	c.files[resolved] = f
	return f, nil
}

// resolve resolves path's symlinks and stats the file it leads to.
func resolve(path string) (string, os.FileInfo, error) {
	resolved, err := evalSymlinks(path)
	if err != nil {
		return "", nil, err
	}
	st, err := os.Stat(resolved)
	if err != nil {
		return "", nil, errorf(err)
	}
	return resolved, st, nil
}
