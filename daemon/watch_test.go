//go:build linux

package daemon_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
)

// kubeVolume is a ConfigMap volume as kubelet lays it out: DIR/..<stamp>/
// holds the files, DIR/..data → ..<stamp>, DIR/<key> → ..data/<key>.
type kubeVolume struct {
	t   *testing.T
	dir string
	n   int
	cur string
}

func newKubeVolume(t *testing.T, key, content string) *kubeVolume {
	v := &kubeVolume{t: t, dir: t.TempDir()}
	v.cur = v.stamped(key, content)
	for _, l := range [][2]string{{v.cur, "..data"}, {filepath.Join("..data", key), key}} {
		if err := os.Symlink(l[0], filepath.Join(v.dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// stamped writes key into a new timestamped directory, and returns its name.
func (v *kubeVolume) stamped(key, content string) string {
	v.n++
	name := fmt.Sprintf("..2026_12_06_10_00_%02d.123456789", v.n)
	if err := os.Mkdir(filepath.Join(v.dir, name), 0o755); err != nil {
		v.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, name, key), []byte(content), 0o644); err != nil {
		v.t.Fatal(err)
	}
	return name
}

// update is kubelet's atomic update: a new timestamped directory, the
// symlink ..data_tmp to it renamed over ..data, the old one removed.
func (v *kubeVolume) update(key, content string) {
	next := v.stamped(key, content)
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(next, tmp); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		v.t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(v.dir, v.cur)); err != nil {
		v.t.Fatal(err)
	}
	v.cur = next
}

// watchCount returns how many records match terms so far.
func (d *runningDaemon) watchCount(terms ...string) int {
	return logrec.Count(d.records(), terms...)
}

// waitCount waits until n records match terms.
func (d *runningDaemon) waitCount(n int, terms ...string) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for d.watchCount(terms...) < n {
		if time.Now().After(deadline) {
			d.t.Fatalf("%d records with %q after 20s, want %d:\n%s", d.watchCount(terms...), terms, n, d.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle writes a file's own content into it again and waits for the look
// that finds it unchanged: every event before it has been looked at.
func (d *runningDaemon) settle(file string) {
	d.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		d.t.Fatal(err)
	}
	n := d.watchCount("event=watch.unchanged")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.waitCount(n+1, "event=watch.unchanged")
}

// TestWatchReloads: `handoff run --watch` reloads once for each change,
// whatever its shape — kubelet's swap of a ConfigMap volume, an editor's
// write-then-rename, a burst of 50 writes — and not for a write that leaves
// the content as it was, nor for kubelet's swap to the same content.
func TestWatchReloads(t *testing.T) {
	alongside(t)
	vol := newKubeVolume(t, "config.yaml", "a: 1\n")
	plain := filepath.Join(t.TempDir(), "app.conf")
	if err := os.WriteFile(plain, []byte("v0"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(vol.dir, "config.yaml")
	d := startDaemon(t, nil, "--watch", conf, "--watch", plain)
	gen := 1
	for _, shape := range []struct {
		name    string
		do      func()
		reloads int
	}{
		{"kubelet's swap", func() { vol.update("config.yaml", "a: 2\n") }, 1},
		{"kubelet's swap, same content", func() { vol.update("config.yaml", "a: 2\n") }, 0},
		{"write-then-rename", func() {
			if err := os.WriteFile(plain+".tmp", []byte("v1"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(plain+".tmp", plain); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"50 writes", func() {
			for i := range 50 {
				if err := os.WriteFile(plain, []byte("v2."+strconv.Itoa(i)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}, 1},
		{"identical write", func() {
			if err := os.WriteFile(plain, []byte("v2.49"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, 0},
	} {
		changed, asked := d.watchCount("event=watch.changed"), d.watchCount("event=reload.asked", "by=watch")
		shape.do()
		if shape.reloads > 0 {
			gen++
			d.waitRecord(20*time.Second, "event=generation.ready", "gen="+strconv.Itoa(gen))
		}
		d.settle(plain)
		d.waitCount(asked+shape.reloads, "event=reload.asked", "by=watch")
		dc, da := d.watchCount("event=watch.changed")-changed, d.watchCount("event=reload.asked", "by=watch")-asked
		t.Logf("%s: %d change(s), %d reload(s)", shape.name, dc, da)
		if dc != shape.reloads || da != shape.reloads {
			t.Errorf("%s: %d changes and %d reloads, want %d:\n%s", shape.name, dc, da, shape.reloads, d.log())
		}
	}
	if r := logrec.Find(d.records(), "event=reload.asked", "by=watch", "paths~"+conf); r == nil {
		t.Errorf("no reload.asked naming %s:\n%s", conf, d.log())
	}
	d.stop()
}

// TestWatchFailedReload: a change that brings a release which fails at
// once leaves the old generation serving, and the next change reloads.
func TestWatchFailedReload(t *testing.T) {
	alongside(t)
	vol := newKubeVolume(t, "config.yaml", "ok 1\n")
	conf := filepath.Join(vol.dir, "config.yaml")
	app, err := os.ReadFile(appBin)
	if err != nil {
		t.Fatal(err)
	}
	appCopy := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(appCopy, app, 0o755); err != nil {
		t.Fatal(err)
	}
	// The program reads its configuration: "fail" in it makes it exit at
	// once, as a release that cannot start.
	script := fmt.Sprintf("grep -q fail %s && exit 1; exec %s", conf, appCopy)
	d := startDaemon(t, []string{"/bin/sh", "-c", script}, "--watch", conf)
	first := d.serving()
	if first == 0 {
		t.Fatalf("nothing serves:\n%s", d.log())
	}

	vol.update("config.yaml", "fail\n")
	d.waitRecord(20*time.Second, "event=generation.failed", "gen=2")
	if pid := d.serving(); pid != first {
		t.Fatalf("serving pid %d after the failed reload, want generation 1's %d:\n%s", pid, first, d.log())
	}

	vol.update("config.yaml", "ok 2\n")
	d.waitRecord(20*time.Second, "event=generation.ready", "gen=3")
	d.waitAlone(20 * time.Second)
	if pid := d.serving(); pid == first || pid == 0 {
		t.Fatalf("serving pid %d after the next change, want generation 3's:\n%s", pid, d.log())
	}
	if n := d.watchCount("event=reload.asked", "by=watch"); n != 2 {
		t.Errorf("%d reloads asked by the watch, want 2:\n%s", n, d.log())
	}
	d.stop()
}
