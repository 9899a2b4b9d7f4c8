//go:build linux

package daemon_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestReleaseIdentity: each generation's release — its program's path,
// size and SHA-256 — is in the log, `handoff status` and the metrics; a
// reload into the same bytes says so; a file renamed over the program's
// path under a running generation is warned about once; and the next
// reload runs, and names, the new bytes.
func TestReleaseIdentity(t *testing.T) {
	alongside(t)
	metricsAddr := proc.FreeAddr(t)
	d := startDaemon(t, nil, "--metrics", metricsAddr)
	b, err := os.ReadFile(d.prog)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	want := hex.EncodeToString(sum[:])
	path, err := filepath.EvalSymlinks(d.prog)
	if err != nil {
		t.Fatal(err)
	}

	r := d.waitRecord(10*time.Second, "event=release.identified", "gen=1")
	if r.Get("sha256") != want || r.Get("path") != path {
		t.Fatalf("release.identified = %s, want path %s and sha256 %s", r, path, want)
	}
	st := d.status()
	if len(st.Generations) != 1 || st.Generations[0].Release == nil || st.Generations[0].Release.Program.SHA256 != want || st.Generations[0].Release.Program.Size != int64(len(b)) {
		t.Fatalf("status: %+v, want generation 1 with sha256 %s, %d bytes", st.Generations, want, len(b))
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `handoff_release_info{generation="1",worker="0",state="ready",path="`+path+`",sha256="`+want+`"`) {
		t.Errorf("the metrics do not name generation 1's release:\n%s", body)
	}

	// The same bytes again: said, and reloaded all the same.
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s", code, out)
	}
	same := d.waitRecord(10*time.Second, "event=release.same", "gen=2")
	if same.Get("serving_gen") != "1" {
		t.Errorf("release.same = %s, want serving_gen 1", same)
	}

	// A release written over the path, as a careless deploy does: the
	// running generation is warned about, once.
	tmp := d.prog + ".new"
	proc.WriteExec(t, tmp, append(b, "\nrelease 2"...))
	if err := os.Rename(tmp, d.prog); err != nil {
		t.Fatal(err)
	}
	changed := d.waitRecord(10*time.Second, "event=release.changed", "gen=2")
	if changed.Get("how") != "replaced" || changed.Get("path") != path {
		t.Errorf("release.changed = %s, want how=replaced on %s", changed, path)
	}
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload into the new bytes: %d %s", code, out)
	}
	r3 := d.waitRecord(10*time.Second, "event=release.identified", "gen=3")
	if r3.Get("sha256") == want {
		t.Errorf("generation 3 runs new bytes, identified as the old: %s", r3)
	}
	if logrec.Find(d.records(), "event=release.same", "gen=3") != nil {
		t.Error("a new release was called the same as the one serving")
	}
	if n := logrec.Count(d.records(), "event=release.changed"); n != 1 {
		t.Errorf("%d release.changed records, want 1 (once, for generation 2)", n)
	}
	d.stop()
}
