package ansible_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// instance is one host of the test's inventory: its own handoff run,
// control socket, releases and port, on this machine.
type instance struct {
	name, root, control, addr string
	cmd                       *exec.Cmd
	load                      *loadcheck.Load
}

// TestRollingDeploy runs deploy.yml with Debian's ansible-core against three
// local instances under load: release v2 rolls over all three; release v3,
// which fails to start on web2, is on web1, stops the roll at web2 — whose
// old generation serves on, its current symlink back on v2 — and never
// reaches web3. No request fails on any instance.
func TestRollingDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ansible-playbook and three handoffs under load: not under -short")
	}
	playbook, err := exec.LookPath("ansible-playbook")
	if err != nil {
		t.Skip("ansible-playbook is not installed (apt-get install ansible-core)")
	}
	dir := t.TempDir()
	handoff, app := filepath.Join(dir, "handoff"), filepath.Join(dir, "app.bin")
	for bin, pkg := range map[string]string{handoff: "../..", app: "../app"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	// Each release directory holds the app and a start script; v3's fails
	// on web2 only (a host-specific fault, as a missing secret would be).
	release := func(name, script string) string {
		src := filepath.Join(dir, "build", name)
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(app)
		proc.WriteExec(t, filepath.Join(src, "app.bin"), b)
		proc.WriteExec(t, filepath.Join(src, "app"), []byte("#!/bin/sh\n"+script+"exec ./app.bin\n"))
		return src
	}
	v1 := release("v1", "")
	v2 := release("v2", "")
	v3 := release("v3", "[ \"$INSTANCE\" = web2 ] && { echo 'v3: no secret on this host' >&2; exit 3; }\n")

	var inv strings.Builder
	inv.WriteString("[app]\n")
	var insts []*instance
	for _, name := range []string{"web1", "web2", "web3"} {
		in := &instance{name: name, root: filepath.Join(dir, name), control: filepath.Join(dir, name+".sock"), addr: proc.FreeAddr(t)}
		if err := os.MkdirAll(filepath.Join(in.root, "releases"), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("cp", "-a", v1, filepath.Join(in.root, "releases", "v1")).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		proc.Flip(t, filepath.Join(in.root, "current"), filepath.Join("releases", "v1"))
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		in.cmd = exec.Command(handoff, "run", "--control", in.control, "--chdir", filepath.Join(in.root, "current"), "--listen", "web="+in.addr, "--", "./app")
		in.cmd.Env = append(os.Environ(), "INSTANCE="+name)
		in.cmd.Stdout, in.cmd.Stderr = logf, logf
		if err := in.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		// A stop, not a kill: a killed handoff's keeper would hold the
		// sockets (--hold) and offer them in the test's directory.
		t.Cleanup(func() {
			_ = in.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = in.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = in.cmd.Process.Kill()
				<-done
			}
		})
		insts = append(insts, in)
		fmt.Fprintf(&inv, "%s ansible_connection=local releases_root=%s control=%s handoff=%s\n", name, in.root, in.control, handoff)
	}
	inv.WriteString("[app:vars]\nansible_python_interpreter=/usr/bin/python3\n")
	invPath := filepath.Join(dir, "inventory.ini")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	serving := func(in *instance) string {
		out, err := exec.Command(handoff, "status", "--json", "--control", in.control).Output()
		if err != nil {
			return ""
		}
		var st struct {
			Generations []struct {
				State string `json:"state"`
				Dir   string `json:"dir"`
			} `json:"generations"`
		}
		_ = json.Unmarshal(out, &st)
		for _, g := range st.Generations {
			if g.State == "ready" {
				return filepath.Base(g.Dir)
			}
		}
		return ""
	}
	for _, in := range insts {
		for deadline := time.Now().Add(15 * time.Second); serving(in) != "v1"; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s does not serve v1", in.name)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, in := range insts {
		in.load = loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + in.addr, Rate: 100, Slow: 500 * time.Millisecond, SlowEvery: 200 * time.Millisecond})
		if err := in.load.WaitAnswers(0, 20, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	deploy := func(release, src string) (string, error) {
		cmd := exec.Command(playbook, "-i", invPath, "deploy.yml", "-e", "release="+release, "-e", "release_src="+src)
		cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_PIPELINING=1", "ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "ansible-tmp"), "ANSIBLE_HOME="+filepath.Join(dir, "ansible-home"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	if out, err := deploy("v2", v2); err != nil {
		t.Fatalf("deploying v2: %v\n%s", err, out)
	}
	for _, in := range insts {
		if got := serving(in); got != "v2" {
			t.Errorf("%s serves %q after deploying v2, want v2", in.name, got)
		}
	}

	out, err := deploy("v3", v3)
	if err == nil {
		t.Fatalf("deploying v3 succeeded, yet web2 cannot start it:\n%s", out)
	}
	t.Logf("deploying v3: %v\n%s", err, out)
	want := map[string]string{"web1": "v3", "web2": "v2", "web3": "v2"}
	for _, in := range insts {
		if got := serving(in); got != want[in.name] {
			t.Errorf("%s serves %q after the failed roll, want %s", in.name, got, want[in.name])
		}
	}
	if target, _ := os.Readlink(filepath.Join(insts[1].root, "current")); target != filepath.Join("releases", "v2") {
		t.Errorf("web2's current points at %q, want releases/v2 back", target)
	}
	if _, err := os.Stat(filepath.Join(insts[2].root, "releases", "v3")); err == nil {
		t.Error("the roll reached web3: it has releases/v3")
	}
	if !strings.Contains(out, "v3: no secret on this host") {
		t.Errorf("the playbook's output does not carry web2's reason")
	}
	// Each instance serves a little more, then the loads end.
	for _, in := range insts {
		if err := in.load.WaitAnswers(0, in.load.Answers(0)+20, 10*time.Second); err != nil {
			t.Error(in.name, err)
		}
	}
	cancel()
	for _, in := range insts {
		res := in.load.Wait()
		t.Logf("%s: %v", in.name, res)
		if res.Failures() != 0 || res.Retried != 0 {
			t.Errorf("%s: failed=%d %v retried=%d %q", in.name, res.Failures(), res.Failed, res.Retried, res.Samples)
		}
	}
}
