package upgrader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// checkPIDFile returns nil if a PID file can be written at path as it will
// be: a temporary file in its directory, renamed over it.
func checkPIDFile(path string) error {
	dir := filepath.Dir(path)
	fail := func(why string, err error) error {
		return fmt.Errorf("%w: %s: %s: %w", ErrPIDFile, path, why, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("%w: %s is a directory — give the path of a file in it", ErrPIDFile, path)
	}
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s: its directory %s does not exist — create it (RuntimeDirectory= in a systemd unit) or give another path", ErrPIDFile, path, dir)
	}
	if err != nil {
		return fail("its directory", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s: %s is not a directory — give another path", ErrPIDFile, path, dir)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".check-*")
	if err != nil {
		return fail("cannot create files in its directory (read-only, or not this user's) — give a writable path", err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}
