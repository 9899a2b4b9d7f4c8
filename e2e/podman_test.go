package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// podman runs Debian's podman with runc, as this machine needs (crun refuses
// its cgroup layout), and returns its standard output; its standard error
// (where it warns about cgroups it cannot create) goes into the error.
func podman(args ...string) (string, error) {
	cmd := exec.Command("podman", append([]string{"--runtime", "runc"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), err
}

// podmanImage builds an image FROM scratch holding static builds of
// handoff, examples/app, examples/httpserver and testdata/orphans, and
// returns its name; the test skips where podman or runc is missing.
func podmanImage(t *testing.T) string {
	if testing.Short() {
		t.Skip("runs containers: not under -short")
	}
	t.Helper()
	for _, c := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (apt-get install podman runc)", c)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("podman runs containers here as root")
	}
	dir := t.TempDir()
	for name, pkg := range map[string]string{"handoff": "..", "app": "../examples/app", "httpserver": "../examples/httpserver", "orphans": "./testdata/orphans"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte("FROM scratch\nCOPY handoff app httpserver orphans /\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "localhost/handoff-e2e:" + strconv.Itoa(os.Getpid())
	if out, err := podman("build", "-q", "-t", name, dir); err != nil {
		t.Fatalf("podman build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = podman("rmi", "-f", name) })
	return name
}

// runContainer starts a container of image with the host's network (no
// registry, no port mapping needed) and returns its name.
func runContainer(t *testing.T, image string, env []string, args ...string) string {
	t.Helper()
	name := fmt.Sprintf("handoff-e2e-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	run := []string{"run", "-d", "--name", name, "--network", "host", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"}
	for _, e := range env {
		run = append(run, "-e", e)
	}
	if out, err := podman(append(append(run, image), args...)...); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = podman("rm", "-f", "-t", "0", name) })
	return name
}

func containerPid(t *testing.T, name string) int {
	t.Helper()
	out, err := podman("inspect", "--format", "{{.State.Pid}}", name)
	pid, _ := strconv.Atoi(out)
	if err != nil || pid <= 0 {
		t.Fatalf("podman inspect: %v %q", err, out)
	}
	return pid
}

// podmanLogs returns what the container wrote, stdout and stderr.
func podmanLogs(name string) string {
	out, _ := exec.Command("podman", "--runtime", "runc", "logs", name).CombinedOutput()
	return string(out)
}

// zombies lists the children of pid (as the host sees it) that have exited
// and wait to be reaped.
func zombies(pid int) []int {
	var z []int
	for _, c := range proc.Children(pid) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			z = append(z, c)
		}
	}
	return z
}

// TestPodmanDaemonPID1: handoff run as PID 1 of a real container, with
// --stop-delay, under load: a reload through `podman exec … handoff reload`
// and one through `podman kill --signal HUP`, with a program that leaves
// orphans at each start; no zombie stays; `podman stop` serves on for the
// delay, then drains; no request fails and the container exits 0.
func TestPodmanDaemonPID1(t *testing.T) {
	image := podmanImage(t)
	addr := proc.FreeAddr(t)
	name := runContainer(t, image, []string{"ORPHANS=10"}, "/handoff", "run", "--control", "/tmp/c.sock", "--listen", "web="+addr,
		"--stop-delay", "2s", "--", "/orphans", "/app")
	status := func() (st struct {
		PID         int `json:"pid"`
		Generations []struct {
			Generation int    `json:"generation"`
			State      string `json:"state"`
		} `json:"generations"`
	}) {
		out, err := podman("exec", name, "/handoff", "status", "--json", "--control", "/tmp/c.sock")
		if err == nil {
			_ = json.Unmarshal([]byte(out), &st)
		}
		return st
	}
	waitGen := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st := status()
			for _, g := range st.Generations {
				if g.Generation == n && g.State == "ready" {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("generation %d not ready: %+v\n%s", n, st, podmanLogs(name))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitGen(1)
	if st := status(); st.PID != 1 {
		t.Errorf("handoff runs as pid %d in the container, want 1", st.PID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + addr, Rate: 100})
	if err := load.WaitAnswers(0, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := podman("exec", name, "/handoff", "reload", "--control", "/tmp/c.sock"); err != nil || !strings.Contains(out, "generation 2") {
		t.Fatalf("podman exec handoff reload: %v %q\n%s", err, out, podmanLogs(name))
	}
	if out, err := podman("kill", "--signal", "HUP", name); err != nil {
		t.Fatalf("podman kill --signal HUP: %v %s", err, out)
	}
	waitGen(3)
	// Generations 1 and 2 each left 10 orphans (each sleeps 3 s once its
	// generation has exited): when a
	// generation exits, its orphans come under PID 1, which stops them as
	// strays and must reap them. Both generations' strays are logged; then
	// none is left under PID 1, running or a zombie.
	host := containerPid(t, name)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		logs := podmanLogs(name)
		if strings.Contains(logs, "event=generation.strays gen=1 ") && strings.Contains(logs, "event=generation.strays gen=2 ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no generation.strays line for generations 1 and 2: their orphans never came under PID 1\n%s", logs)
		}
	}
	orphans := func() (running, dead int) {
		for _, c := range proc.Children(host) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c))
			if strings.Contains(string(b), "-sleep") {
				running++
			}
		}
		return running, len(zombies(host))
	}
	running, dead := orphans()
	t.Logf("orphans under PID 1 once both generations' strays were logged: %d running, %d zombies", running, dead)
	for deadline := time.Now().Add(10 * time.Second); running+dead > 0 && time.Now().Before(deadline); running, dead = orphans() {
		time.Sleep(20 * time.Millisecond)
	}
	if running != 0 || dead != 0 {
		t.Errorf("%d orphans still run and %d zombies wait under handoff as PID 1", running, dead)
	}

	stopAt := time.Now()
	stopped := make(chan string, 1)
	go func() { out, _ := podman("stop", "-t", "20", name); stopped <- out }()
	// The load goes on through the stop delay, until just before it ends.
	time.Sleep(time.Until(stopAt.Add(1800 * time.Millisecond)))
	cancel()
	res := load.Wait()
	<-stopped
	took := time.Since(stopAt)
	code, _ := podman("inspect", "--format", "{{.State.ExitCode}}", name)
	t.Logf("load through two reloads and the stop delay: %v; podman stop took %v, exit code %s", res, took.Round(time.Millisecond), code)
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if code != "0" || took < 2*time.Second {
		t.Errorf("the container exited %s after %v; want 0 after the 2 s stop delay\n%s", code, took, podmanLogs(name))
	}
}

// TestPodmanLibraryPID1: a library-mode server (examples/httpserver) as
// PID 1 of a real container: SIGHUP is refused with its line; `podman stop`
// serves on for the stop delay, then drains, with no request failed, and
// the container exits 0.
func TestPodmanLibraryPID1(t *testing.T) {
	image := podmanImage(t)
	addr := proc.FreeAddr(t)
	name := runContainer(t, image, nil, "/httpserver", "-addr", addr, "-stop-delay", "1s", "-log-format", "json")
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(podmanLogs(name), `"event":"ready"`) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", podmanLogs(name))
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := loadcheck.Start(ctx, loadcheck.Config{URL: "http://" + addr, Rate: 100})
	if err := load.WaitAnswers(0, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := podman("kill", "--signal", "HUP", name); err != nil {
		t.Fatalf("podman kill --signal HUP: %v %s", err, out)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(podmanLogs(name), `"event":"upgrade.refused"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no upgrade.refused line after SIGHUP:\n%s", podmanLogs(name))
		}
	}
	if logs := podmanLogs(name); !strings.Contains(logs, "PID 1") {
		t.Errorf("the refusal does not say why (PID 1):\n%s", logs)
	}
	stopAt := time.Now()
	stopped := make(chan struct{})
	go func() { _, _ = podman("stop", "-t", "20", name); close(stopped) }()
	time.Sleep(time.Until(stopAt.Add(800 * time.Millisecond)))
	cancel()
	res := load.Wait()
	<-stopped
	code, _ := podman("inspect", "--format", "{{.State.ExitCode}}", name)
	t.Logf("load: %v; exit code %s after %v", res, code, time.Since(stopAt).Round(time.Millisecond))
	if res.Failures() != 0 || res.Retried != 0 {
		t.Errorf("failed=%d %v retried=%d %q", res.Failures(), res.Failed, res.Retried, res.Samples)
	}
	if res.Pids[0] != 0 || len(res.Pids) != 1 {
		t.Errorf("answered by %v, want the one PID 1 process (SIGHUP refused)", res.Pids)
	}
	if code != "0" {
		t.Errorf("exit code %s, want 0\n%s", code, podmanLogs(name))
	}
}
