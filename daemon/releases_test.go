//go:build linux

package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestReleasesOnOneHost: releases v1 and v2 side by side with a `current`
// symlink and an env file, under load. v1 serves; flip to v2 and change the
// env file, reload: v2 serves with the new environment; a malformed env file
// fails the reload naming FILE:LINE, and v2 serves on; `handoff signal
// USR1` reaches the serving generation, KILL is refused; `handoff rollback`
// brings v1 back with v1's environment; no request fails.
func TestReleasesOnOneHost(t *testing.T) {
	alongside(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	script, _ := filepath.Abs("testdata/release_server.py")
	root := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		dir := filepath.Join(root, "releases", v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		proc.WriteExec(t, filepath.Join(dir, "app"), []byte("#!/bin/sh\nexec "+py+" "+script+"\n"))
	}
	current, envFile := filepath.Join(root, "current"), filepath.Join(root, "app.env")
	flip := func(v string) { proc.Flip(t, current, filepath.Join("releases", v)) }
	writeEnv := func(s string) {
		if err := os.WriteFile(envFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	flip("v1")
	writeEnv("# v1\nCOLOR=blue\n")
	d := startDaemon(t, []string{"./app"}, "--chdir", current, "--env-file", envFile, "--ready", "accept")

	ctx, cancel := context.WithCancel(context.Background())
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + d.addr, Rate: 100})
	defer cancel()
	if err := load.WaitAnswers(0, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ask := func() string {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := c.Post("http://"+d.addr+"/", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b))
	}
	handoff := func(args ...string) (string, int) {
		out, err := exec.Command(handoffBin, append(args[:1:1], append([]string{"--control", d.control}, args[1:]...)...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return strings.TrimSpace(string(out)), code
	}
	if got := ask(); !strings.Contains(got, "release=v1 color=blue") {
		t.Fatalf("first start: %q, want v1 with COLOR=blue", got)
	}

	flip("v2")
	writeEnv("# v2\nCOLOR='deep green'\n")
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload to v2: exit %d: %s", code, out)
	}
	if got := ask(); !strings.Contains(got, "release=v2 color=deep green") {
		t.Errorf("after the flip and reload: %q, want v2 with the new COLOR", got)
	}
	if st := d.status(); len(st.Generations) == 0 || !strings.HasSuffix(st.Generations[len(st.Generations)-1].Dir, filepath.Join("releases", "v2")) {
		t.Errorf("status does not show the resolved directory of v2: %+v", st.Generations)
	}
	v2 := ask()

	writeEnv("COLOR=red\nthis is not an assignment\n")
	out, code := d.reload()
	if code != 1 || !strings.Contains(out, envFile+":2") {
		t.Errorf("reload with a malformed env file: exit %d, %q; want 1 naming %s:2", code, out, envFile)
	}
	if got := ask(); strings.Fields(got)[0] != strings.Fields(v2)[0] {
		t.Errorf("after the failed reload %q answered, want v2 %q serving on", got, v2)
	}

	out, code = handoff("signal", "USR1")
	if code != 0 || !strings.Contains(out, "sent SIGUSR1 to generation") {
		t.Errorf("handoff signal USR1: exit %d, %q", code, out)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(ask(), "usr1=1") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := ask(); !strings.Contains(got, "usr1=1") {
		t.Errorf("the serving generation did not get SIGUSR1: %q", got)
	}
	if out, code := handoff("signal", "KILL"); code != 1 || !strings.Contains(out, "refused") {
		t.Errorf("handoff signal KILL: exit %d, %q; want a refusal", code, out)
	}
	// Back to v1 as it ran — its directory and environment — although
	// current points at v2 and the env file is broken.
	if st := d.status(); st.Rollback == nil || !strings.HasSuffix(st.Rollback.Dir, filepath.Join("releases", "v1")) {
		t.Errorf("status does not say rollback would run v1: %+v", st.Rollback)
	}
	if out, code := handoff("rollback"); code != 0 {
		t.Errorf("rollback: exit %d, %q", code, out)
	}
	if got := ask(); !strings.Contains(got, "release=v1 color=blue") {
		t.Errorf("after the rollback: %q, want v1 with COLOR=blue", got)
	}
	d.waitAlone(15 * time.Second) // the load runs on through the drain
	cancel()
	res := load.Wait()
	t.Logf("load: %v", res)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	d.stop()
}

// TestRollbackDuringBake: a rollback while the new generation bakes stops it
// and keeps the old one serving; the reload that started it fails, saying
// so.
func TestRollbackDuringBake(t *testing.T) {
	alongside(t)
	d := startDaemon(t, nil, "--bake", "5s")
	first := d.serving()
	reloaded := make(chan string, 1)
	go func() {
		out, code := d.reload()
		reloaded <- fmt.Sprintf("%d %s", code, out)
	}()
	d.waitRecord(10*time.Second, "event=bake.started")
	out, err := exec.Command(handoffBin, "rollback", "--control", d.control).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("rolled back: generation 1 (pid %d) serves on", first)) {
		t.Errorf("rollback during the bake: %v, %q", err, out)
	}
	if r := <-reloaded; !strings.HasPrefix(r, "1 ") || !strings.Contains(r, "rolled back during its bake window") {
		t.Errorf("the reload that was rolled back: %q; want exit 1 saying so", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(d.status().Generations) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := d.status(); len(st.Generations) != 1 || st.Generations[0].PID != first || st.Generations[0].State != "ready" {
		t.Errorf("after the rollback: %+v; want generation 1 (pid %d) alone, ready", st.Generations, first)
	}
	d.stop()
}

// TestProgramNameThroughSymlink: a program reached through a symlink runs
// the file it leads to, under the name it was given (argv[0]), as a
// multi-call binary such as busybox needs.
func TestProgramNameThroughSymlink(t *testing.T) {
	alongside(t)
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real-app"), filepath.Join(dir, "app")
	proc.CopyExec(t, appBin, real)
	if err := os.Symlink("real-app", link); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, []string{link})
	pid := d.serving()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if argv0 := strings.Split(string(cmdline), "\x00")[0]; argv0 != link || exe != real {
		t.Errorf("generation pid %d runs %s as %q; want %s as %q", pid, exe, argv0, real, link)
	}
	d.stop()
}

// TestWorkDirWithoutChdir: handoff started in a `current` symlink to v1,
// without --chdir, runs current/app. Each generation inherits handoff's
// working directory, which stays v1: after a flip to v2, the reload warns
// that the generation starts among an earlier release's files, and once v1
// is removed, that the directory is gone; both name --chdir as the fix.
func TestWorkDirWithoutChdir(t *testing.T) {
	alongside(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1", "v2", "v3"} {
		dir := filepath.Join(root, "releases", v)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		proc.CopyExec(t, appBin, filepath.Join(dir, "app"))
	}
	current := filepath.Join(root, "current")
	flip := func(v string) { proc.Flip(t, current, filepath.Join("releases", v)) }
	flip("v1")
	d := startDaemonIn(t, current, []string{filepath.Join(current, "app")})
	if n := logrec.Count(d.records(), "event~generation.workdir_"); n != 0 {
		t.Fatalf("%d warnings at the first generation:\n%s", n, d.log())
	}

	flip("v2")
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload to v2: %d %s", code, out)
	}
	w := d.waitRecord(5*time.Second, "event=generation.workdir_old")
	if !w.Match("gen=2") || !w.Match("program="+filepath.Join(root, "releases", "v2", "app")) || !w.Match("dir="+filepath.Join(root, "releases", "v1")) || !w.Match("fix~--chdir") {
		t.Errorf("warning: %s", w)
	}

	if err := os.RemoveAll(filepath.Join(root, "releases", "v1")); err != nil {
		t.Fatal(err)
	}
	flip("v3")
	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload to v3: %d %s", code, out)
	}
	w = d.waitRecord(5*time.Second, "event=generation.workdir_gone")
	if !w.Match("gen=3") || !w.Match("fix~--chdir") {
		t.Errorf("warning: %s", w)
	}
}
