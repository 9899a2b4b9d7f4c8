package watch_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/watch"
	"github.com/handoff-dev/handoff/internal/logrec"
)

// waitFor bounds every wait of these tests.
const waitFor = 10 * time.Second

// logBuf is a log the watcher writes JSON records to while a test reads it.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// watching is a Watcher started by a test, with its log and the changes
// it handed out.
type watching struct {
	t   *testing.T
	log *logBuf
	mu  sync.Mutex
	got []watch.Change
}

// start watches paths until the test ends, taking every change as it
// comes.
func start(t *testing.T, paths ...string) *watching {
	t.Helper()
	wt := &watching{t: t, log: &logBuf{}}
	w, err := watch.Start(watch.Options{Paths: paths, Log: slog.New(slog.NewJSONHandler(wt.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range w.Changes() {
			wt.mu.Lock()
			wt.got = append(wt.got, c)
			wt.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Changes not closed 5 s after Close")
		}
	})
	wt.wait("watch.started", 1)
	return wt
}

// count returns the records with this event key so far.
func (wt *watching) count(event string) int {
	return logrec.Count(logrec.Parse(wt.log.String()), "event="+event)
}

// wait waits until n records with this event key have been written.
func (wt *watching) wait(event string, n int) {
	wt.t.Helper()
	deadline := time.Now().Add(waitFor)
	for wt.count(event) < n {
		if time.Now().After(deadline) {
			wt.t.Fatalf("%d %s records after %v, want %d:\n%s", wt.count(event), event, waitFor, n, wt.log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle writes content that is already there into file and waits for the
// look that finds it unchanged: every event before it has then been looked
// at, so that the changes counted are all there will be.
func (wt *watching) settle(file string) {
	wt.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		wt.t.Fatal(err)
	}
	n := wt.count("watch.unchanged")
	write(wt.t, file, string(b))
	wt.wait("watch.unchanged", n+1)
}

// changes checks that exactly want looks found a change, and that as many
// changes were handed out, each naming path.
func (wt *watching) changes(want int, path string) {
	wt.t.Helper()
	if n := wt.count("watch.changed"); n != want {
		wt.t.Fatalf("%d changes, want %d:\n%s", n, want, wt.log)
	}
	deadline := time.Now().Add(waitFor)
	for {
		wt.mu.Lock()
		got := append([]watch.Change(nil), wt.got...)
		wt.mu.Unlock()
		if len(got) == want {
			for _, c := range got {
				if len(c.Paths) != 1 || c.Paths[0] != path {
					wt.t.Fatalf("change %v, want one of %s", c.Paths, path)
				}
			}
			return
		}
		if len(got) > want || time.Now().After(deadline) {
			wt.t.Fatalf("%d changes handed out, want %d", len(got), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBurst: 50 writes in a row are one change.
func TestBurst(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	write(t, f, "v0")
	wt := start(t, f)
	for i := 1; i <= 50; i++ {
		write(t, f, fmt.Sprintf("v%d", i))
	}
	wt.wait("watch.changed", 1)
	wt.settle(f)
	wt.changes(1, f)
}

// TestIdentical: writes that leave the content as it was are no change.
func TestIdentical(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	write(t, f, "same")
	wt := start(t, f)
	for range 3 {
		write(t, f, "same")
	}
	wt.wait("watch.unchanged", 1)
	wt.settle(f)
	wt.changes(0, f)
}

// configMap is a Kubernetes ConfigMap volume as kubelet lays it out:
// DIR/..<timestamp>/ holds the files, DIR/..data → ..<timestamp>, and
// DIR/<key> → ..data/<key>.
type configMap struct {
	t   *testing.T
	dir string
	n   int
	cur string // the timestamped directory ..data points to
}

func newConfigMap(t *testing.T, files map[string]string) *configMap {
	cm := &configMap{t: t, dir: t.TempDir()}
	cm.cur = cm.writeTimestamped(files)
	if err := os.Symlink(cm.cur, filepath.Join(cm.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for k := range files {
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(cm.dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	return cm
}

// writeTimestamped writes files into a new timestamped directory, and
// returns its name.
func (cm *configMap) writeTimestamped(files map[string]string) string {
	cm.n++
	name := fmt.Sprintf("..2026_12_06_10_00_%02d.123456789", cm.n)
	if err := os.Mkdir(filepath.Join(cm.dir, name), 0o755); err != nil {
		cm.t.Fatal(err)
	}
	for k, v := range files {
		write(cm.t, filepath.Join(cm.dir, name, k), v)
	}
	return name
}

// update is kubelet's atomic update: the files into a new timestamped
// directory, a ..data_tmp symlink to it renamed over ..data, the old
// directory removed.
func (cm *configMap) update(files map[string]string) {
	next := cm.writeTimestamped(files)
	tmp := filepath.Join(cm.dir, "..data_tmp")
	if err := os.Symlink(next, tmp); err != nil {
		cm.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cm.dir, "..data")); err != nil {
		cm.t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(cm.dir, cm.cur)); err != nil {
		cm.t.Fatal(err)
	}
	cm.cur = next
}

// TestConfigMap: kubelet's swap is one change, whether the file or the
// volume's directory is watched; a swap to the same content is none; and
// the swaps after the first are followed.
func TestConfigMap(t *testing.T) {
	for _, watchDir := range []bool{false, true} {
		t.Run(fmt.Sprintf("dir=%v", watchDir), func(t *testing.T) {
			cm := newConfigMap(t, map[string]string{"config.yaml": "a: 1\n", "other.yaml": "b: 1\n"})
			f := filepath.Join(cm.dir, "config.yaml")
			p := f
			if watchDir {
				p = cm.dir
			}
			wt := start(t, p)
			cm.update(map[string]string{"config.yaml": "a: 2\n", "other.yaml": "b: 1\n"})
			wt.wait("watch.changed", 1)
			cm.update(map[string]string{"config.yaml": "a: 2\n", "other.yaml": "b: 1\n"})
			wt.wait("watch.unchanged", 1)
			cm.update(map[string]string{"config.yaml": "a: 3\n", "other.yaml": "b: 1\n"})
			wt.wait("watch.changed", 2)
			wt.settle(f)
			wt.changes(2, p)
		})
	}
}

// TestEditorSave: an editor's ways of saving are one change each: a
// temporary file renamed over the file; vim's backup (the file renamed to
// file~, written anew, the backup removed); a truncation and writes in
// place.
func TestEditorSave(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	write(t, f, "v0")
	wt := start(t, f)

	write(t, f+".tmp", "v1")
	if err := os.Rename(f+".tmp", f); err != nil {
		t.Fatal(err)
	}
	wt.wait("watch.changed", 1)
	wt.settle(f)
	wt.changes(1, f)

	if err := os.Rename(f, f+"~"); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "4913"), "") // vim's probe of the directory
	os.Remove(filepath.Join(dir, "4913"))
	write(t, f, "v2")
	os.Remove(f + "~")
	wt.wait("watch.changed", 2)
	wt.settle(f)
	wt.changes(2, f)

	fh, err := os.OpenFile(f, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"v", "3", "\n"} {
		if _, err := fh.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	fh.Close()
	wt.wait("watch.changed", 3)
	wt.settle(f)
	wt.changes(3, f)
}

// TestGoneAndBack: a watched file removed is missing, not a change; made
// again with other content it is one, and followed after; the same holds
// for its directory removed and made again.
func TestGoneAndBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "app.conf")
	write(t, f, "v0")
	wt := start(t, f)

	os.Remove(f)
	wt.wait("watch.missing", 1)
	write(t, f, "v0") // back as it was: no change
	wt.wait("watch.unchanged", 1)
	os.Remove(f)
	wt.wait("watch.missing", 2)
	write(t, f, "v1")
	wt.wait("watch.changed", 1)
	write(t, f, "v2")
	wt.wait("watch.changed", 2)

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	wt.wait("watch.missing", 3)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, f, "v3")
	wt.wait("watch.changed", 3)
	write(t, f, "v4")
	wt.wait("watch.changed", 4)
	wt.settle(f)
	wt.changes(4, f)
}

// TestMissingAtStart: a path missing when the watch starts is watched for;
// its coming is a change.
func TestMissingAtStart(t *testing.T) {
	f := filepath.Join(t.TempDir(), "app.conf")
	wt := start(t, f)
	if wt.count("watch.missing") != 1 {
		t.Fatalf("no watch.missing at start:\n%s", wt.log)
	}
	write(t, f, "v1")
	wt.wait("watch.changed", 1)
	wt.settle(f)
	wt.changes(1, f)
}

// TestDirectory: a watched directory changes with the files in it, not
// with hidden files or backups; a file that comes or goes is a change.
func TestDirectory(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "a.conf")
	write(t, f, "a")
	wt := start(t, dir)

	write(t, filepath.Join(dir, ".a.conf.swp"), "swap")
	write(t, filepath.Join(dir, "a.conf~"), "backup")
	wt.settle(f)
	wt.changes(0, dir)
	write(t, filepath.Join(dir, "b.conf"), "b")
	wt.wait("watch.changed", 1)
	os.Remove(filepath.Join(dir, "b.conf"))
	wt.wait("watch.changed", 2)
	write(t, f, "a2")
	wt.wait("watch.changed", 3)
	wt.settle(f)
	wt.changes(3, dir)
}
