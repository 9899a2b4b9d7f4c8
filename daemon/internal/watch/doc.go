// Package watch tells when what some paths hold has changed: the files and
// directories of `handoff run --watch`, whose change starts a reload.
//
// It watches through inotify (fsnotify), and never the paths alone: it
// watches the directory that holds each path, and the directory of each
// symlink met on the way to the file, so that a file replaced by a rename
// (an editor's save), removed and created again, or reached through a
// symlink swapped for another (Kubernetes' ConfigMap and Secret volumes:
// DIR/config.yaml → ..data/config.yaml, with DIR/..data → a timestamped
// directory, and ..data_tmp renamed over ..data at an update) is followed.
// Symlinks are resolved afresh after each change.
//
// Events are debounced: a change is looked at once the paths have been
// quiet for Quiet (or MaxDelay after the first event, if they never are),
// so that a burst of writes, or kubelet's swap, is one change. What each
// path holds is then compared by its sha256 with what it held the last time
// it was there: a write that leaves it as it was is no change, and neither
// is a path that has gone (it is said to be missing, and the next content it
// has is compared with the last it had). A directory holds the regular
// files directly in it, symlinks followed, by name and content: not its
// subdirectories, nor names that begin with '.' (kubelet's own ..data and
// timestamped directories, editors' swap files) or end with '~' (backups).
//
// Log records: watch.started, watch.changed (with the paths whose content
// changed), watch.unchanged (events came, the content is as it was),
// watch.missing (a watched path has gone), watch.error (inotify or a read
// failed; the watch goes on).
package watch
