package upgrader

import (
	"fmt"
	"os"
)

// These are the hooks for packages that keep kernel objects other than
// sockets across generations — package github.com/handoff-dev/handoff/quic
// passes its steering maps this way — and must act the moment a generation
// becomes ready.

// InheritedFile returns the file the previous generation passed under name
// (see PassFile), or nil if it passed none; it is a copy this generation owns
// and closes. A file returned here is passed on to the next generation under
// the same name without a PassFile. Call it before Ready: files inherited and
// not asked for by then are closed.
func (u *Upgrader) InheritedFile(name string) (*os.File, error) {
	f, err := u.core.File(name)
	if err != nil {
		return nil, fmt.Errorf("upgrader: inherited file %q: %w", name, err)
	}
	return f, nil
}

// PassFile registers a copy of f to be passed to the next generation under
// name, where InheritedFile returns it; f stays the caller's. Names are one
// namespace per process, apart from the sockets'. Where no generation can be
// started (Windows) it does nothing.
func (u *Upgrader) PassFile(name string, f *os.File) error {
	if err := u.core.AddFile(name, f); err != nil {
		return fmt.Errorf("upgrader: passing file %q on: %w", name, err)
	}
	return nil
}

// OnReady registers f to run when Ready is first called, before the previous
// generation is told that this one is ready (and so before it hands over or
// bakes this one); hooks run in the order registered. An error from f fails
// Ready with that error, and the previous generation keeps serving. A hook
// registered after Ready never runs.
func (u *Upgrader) OnReady(f func() error) {
	u.sockMu.Lock()
	u.readyHooks = append(u.readyHooks, f)
	u.sockMu.Unlock()
}

// runReadyHooks runs the OnReady hooks, stopping at the first error.
func (u *Upgrader) runReadyHooks() error {
	u.sockMu.Lock()
	hooks := u.readyHooks
	u.readyHooks = nil
	u.sockMu.Unlock()
	for _, f := range hooks {
		if err := f(); err != nil {
			return fmt.Errorf("upgrader: a Ready hook failed: %w", err)
		}
	}
	return nil
}
