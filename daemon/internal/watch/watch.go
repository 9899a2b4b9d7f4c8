package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults of Options.
const (
	// DefaultQuiet is how long the paths must be quiet before a change is
	// looked at: kubelet's swap and an editor's save take a few
	// milliseconds, a burst of writes from one program about as long.
	DefaultQuiet = 200 * time.Millisecond
	// DefaultMaxDelay bounds the wait from the first event of a burst to
	// the look, however busy the paths stay.
	DefaultMaxDelay = 2 * time.Second
)

// Options say what to watch.
type Options struct {
	// Paths are the files and directories to watch, absolute. A path may
	// be missing, and is then watched for its coming.
	Paths []string
	// Quiet and MaxDelay debounce the events (see the package's doc); 0
	// means DefaultQuiet, DefaultMaxDelay.
	Quiet, MaxDelay time.Duration
	Log             *slog.Logger
}

// Change is the paths (as Options gave them) whose content has changed.
type Change struct{ Paths []string }

// Watcher watches Options.Paths until Close.
type Watcher struct {
	o       Options
	fw      *fsnotify.Watcher
	changes chan Change
	quit    chan struct{}
	done    chan struct{}

	// What the goroutine alone uses: each path's last digest when it was
	// there, whether it was there at the last look, and what the paths
	// are made of now.
	last    map[string]string
	present map[string]bool
	watched map[string]bool // directories watched now
	names   map[string]bool
	content map[string]bool
}

// Start begins watching o.Paths: it reads what each holds now (the content
// later ones are compared with) and watches their directories; Changes
// then reports each change. An error means inotify could not be set up
// (fs.inotify.max_user_instances reached): nothing is watched.
func Start(o Options) (*Watcher, error) {
	if o.Quiet <= 0 {
		o.Quiet = DefaultQuiet
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: inotify: %w", err)
	}
	w := &Watcher{o: o, fw: fw, changes: make(chan Change), quit: make(chan struct{}), done: make(chan struct{}),
		last: map[string]string{}, present: map[string]bool{}, watched: map[string]bool{}}
	reals := w.relocate()
	for _, p := range o.Paths {
		sum, err := digest(reals[p])
		switch {
		case err == nil:
			w.last[p], w.present[p] = sum, true
		case errors.Is(err, errMissing):
			o.Log.Warn("a watched path is missing; watching for it to come", "event", "watch.missing", "path", p)
		default:
			o.Log.Warn("cannot read a watched path", "event", "watch.error", "path", p, "err", err)
		}
	}
	dirs := make([]string, 0, len(w.watched))
	for d := range w.watched {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	o.Log.Info("watching for changes", "event", "watch.started", "paths", o.Paths, "dirs", dirs)
	go w.run()
	return w, nil
}

// Changes returns the channel each change comes on. A change not yet taken
// when another comes is merged with it: none is lost, none is told twice.
// It is closed when the watch ends: at Close, or if inotify's channels close.
func (w *Watcher) Changes() <-chan Change { return w.changes }

// Close stops the watch and returns once its goroutine has ended; no change
// comes after it. Safe to call once.
func (w *Watcher) Close() error {
	close(w.quit)
	<-w.done
	return w.fw.Close()
}

// run is the watcher's goroutine: it takes inotify's events, debounces
// them, looks, and hands out the changes.
func (w *Watcher) run() {
	defer close(w.done)
	defer close(w.changes)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var (
		due     bool      // an event waits for the look
		first   time.Time // when the first of them came
		pending Change    // found, not yet taken
	)
	for {
		var out chan<- Change
		if len(pending.Paths) > 0 {
			out = w.changes
		}
		select {
		case <-w.quit:
			timer.Stop()
			return
		case out <- pending:
			pending = Change{}
		case ev, ok := <-w.fw.Events:
			if !ok {
				w.o.Log.Error("watch: inotify closed its channel; changes are no longer seen", "event", "watch.ended")
				return
			}
			if !w.matters(ev.Name) {
				continue
			}
			now := time.Now()
			if !due {
				due, first = true, now
			}
			timer.Reset(min(w.o.Quiet, max(first.Add(w.o.MaxDelay).Sub(now), 0)))
		case err, ok := <-w.fw.Errors:
			if !ok {
				w.o.Log.Error("watch: inotify closed its channel; changes are no longer seen", "event", "watch.ended")
				return
			}
			w.o.Log.Warn("watch: inotify failed; looking at every path again", "event", "watch.error", "err", err)
			if !due {
				due, first = true, time.Now()
				timer.Reset(w.o.Quiet)
			}
		case <-timer.C:
			due = false
			pending.Paths = merge(pending.Paths, w.look())
		}
	}
}

// matters reports whether an event about name can change what a watched
// path holds: it is on the way to one, or an entry of a watched directory
// that counts (an editor's swap file, written every few seconds while the
// editor is open, does not).
func (w *Watcher) matters(name string) bool {
	return w.names[name] || w.watched[name] || w.content[filepath.Dir(name)] && !ignored(filepath.Base(name))
}

// look resolves the paths afresh (symlinks may have been swapped), watches
// what they are now made of, and compares what they hold with what they
// held; it returns those that changed.
func (w *Watcher) look() []string {
	reals := w.relocate()
	var changed, missing, same []string
	for _, p := range w.o.Paths {
		sum, err := digest(reals[p])
		switch {
		case errors.Is(err, errMissing):
			if w.present[p] {
				missing = append(missing, p)
			}
			w.present[p] = false
		case err != nil:
			w.o.Log.Warn("cannot read a watched path; it counts as unchanged", "event", "watch.error", "path", p, "err", err)
		case sum != w.last[p]:
			changed = append(changed, p)
			w.last[p], w.present[p] = sum, true
		default:
			same = append(same, p)
			w.present[p] = true
		}
	}
	if len(missing) > 0 {
		w.o.Log.Warn("a watched path has gone; no reload until it comes back changed", "event", "watch.missing", "paths", missing)
	}
	if len(changed) > 0 {
		w.o.Log.Info("watched content changed", "event", "watch.changed", "paths", changed)
	} else if len(missing) == 0 && len(same) > 0 {
		w.o.Log.Info("watched paths touched, content unchanged: no reload", "event", "watch.unchanged", "paths", same)
	}
	return changed
}

// relocate works out what each path is made of now, watches the
// directories that decide it and stops watching those that no longer do;
// it returns each path resolved ("" if missing).
func (w *Watcher) relocate() map[string]string {
	reals := map[string]string{}
	dirs, names, content := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, p := range w.o.Paths {
		wh, real := locate(p)
		reals[p] = real
		for d := range wh.dirs {
			dirs[d] = true
		}
		for n := range wh.names {
			names[n] = true
		}
		if wh.content != "" {
			content[wh.content] = true
		}
	}
	// Add even those watched already: a directory removed and made again
	// under the same name lost its watch with its inode.
	for d := range dirs {
		err := w.fw.Add(d)
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			// Gone since it was resolved: the event that says so brings
			// the next look.
			delete(dirs, d)
		case errors.Is(err, syscall.ENOSPC):
			w.o.Log.Warn("cannot watch a directory: inotify's watches are all taken — raise fs.inotify.max_user_watches (sysctl)", "event", "watch.error", "dir", d, "err", err)
			delete(dirs, d)
		default:
			w.o.Log.Warn("cannot watch a directory; changes in it are not seen", "event", "watch.error", "dir", d, "err", err)
			delete(dirs, d)
		}
	}
	for d := range w.watched {
		if !dirs[d] {
			_ = w.fw.Remove(d) // gone with its directory, perhaps: nothing to undo
		}
	}
	w.watched, w.names, w.content = dirs, names, content
	return reals
}

// merge returns a with the paths of b it lacks.
func merge(a, b []string) []string {
	for _, p := range b {
		found := false
		for _, q := range a {
			found = found || q == p
		}
		if !found {
			a = append(a, p)
		}
	}
	return a
}
