// Package systemdtest runs a real systemd for tests: PID 1 of private PID,
// mount, cgroup, UTS and IPC namespaces, with its own tmpfs on /run and
// units from a test directory. Tests drive it with systemctl through
// nsenter; the network namespace is the host's, so services listen on the
// host's loopback.
package systemdtest

import (
	"bytes"
	"fmt"
	"github.com/handoff-dev/handoff/internal/proc"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Manager is one running systemd.
type Manager struct {
	t *testing.T
	// PID is systemd's pid as the host sees it.
	PID int
	// UnitDir is where Install puts units (SYSTEMD_UNIT_PATH).
	UnitDir string
	// Version is systemd's version number, as in 252.
	Version int
	cmd     *exec.Cmd
	logPath string
}

// Start starts systemd and waits until it has booted, or skips the test,
// saying why, where that cannot be done (not root, no unshare, no systemd).
// It is stopped, by its own pid, when the test ends, even if it fails.
func Start(t *testing.T) *Manager {
	t.Helper()
	if testing.Short() {
		t.Skip("systemdtest: starts a real systemd: not under -short")
	}
	if os.Getuid() != 0 {
		t.Skip("systemdtest: needs root to start systemd in namespaces")
	}
	for _, tool := range []string{"unshare", "nsenter", "/lib/systemd/systemd", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("systemdtest: %s not installed (apt-get install systemd util-linux)", tool)
		}
	}
	m := &Manager{t: t, UnitDir: t.TempDir()}
	if err := os.Chmod(m.UnitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// systemd exits at once without a default.target.
	m.Install("default.target", "[Unit]\nDescription=handoff test default target\n")

	logPath := filepath.Join(t.TempDir(), "systemd.log")
	m.logPath = logPath
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// systemd as PID 1 logs to /dev/console: make that the log file.
	script := "mount -t tmpfs -o mode=0755 tmpfs /run && mount --bind " + logPath + " /dev/console && " +
		"exec env container=handoff-test SYSTEMD_UNIT_PATH=" + m.UnitDir +
		" /lib/systemd/systemd --system --log-target=console --log-level=debug"
	m.cmd = exec.Command("unshare", "--pid", "--fork", "--mount", "--cgroup", "--uts", "--ipc", "--mount-proc", "sh", "-c", script)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		t.Skipf("systemdtest: unshare: %v", err)
	}
	logf.Close()
	t.Cleanup(m.stop)

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m.PID == 0 {
			m.PID = childOf(m.cmd.Process.Pid)
		}
		if m.PID != 0 {
			out, _ := m.Systemctl("is-system-running")
			if out == "running" || out == "degraded" {
				break
			}
		}
		if m.cmd.ProcessState != nil || !proc.Alive(m.cmd.Process.Pid) {
			b, _ := os.ReadFile(logPath)
			t.Skipf("systemdtest: systemd did not start in a namespace here:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, _ := m.Systemctl("is-system-running"); out != "running" && out != "degraded" {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("systemdtest: systemd not running after 20s (%q):\n%s", out, b)
	}
	out, _ := m.Systemctl("--version")
	if f := strings.Fields(out); len(f) > 1 {
		m.Version, _ = strconv.Atoi(f[1])
	}
	return m
}

// Install writes a unit file, and a drop-in that gives it
// DefaultDependencies=no (a namespace has no basic.target to wait for), then
// reloads systemd's configuration.
func (m *Manager) Install(name, content string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.UnitDir, name), []byte(content), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if name == "default.target" {
		return
	}
	dropin := filepath.Join(m.UnitDir, name+".d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		m.t.Fatal(err)
	}
	conf := "[Unit]\nDefaultDependencies=no\n"
	if strings.HasSuffix(name, ".service") {
		// No journald runs in the namespace: keep the output in a file.
		conf += "[Service]\nStandardOutput=append:" + m.output(name) + "\nStandardError=append:" + m.output(name) + "\n"
	}
	if err := os.WriteFile(filepath.Join(dropin, "test.conf"), []byte(conf), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if m.PID != 0 {
		if out, err := m.Systemctl("daemon-reload"); err != nil {
			m.t.Fatalf("daemon-reload: %v: %s", err, out)
		}
	}
}

// Systemctl runs systemctl inside the namespaces and returns its trimmed
// output.
func (m *Manager) Systemctl(args ...string) (string, error) {
	return m.Exec(append([]string{"systemctl"}, args...)...)
}

// Exec runs a command inside systemd's mount and PID namespaces and returns
// its trimmed output.
func (m *Manager) Exec(args ...string) (string, error) {
	full := append([]string{"-t", strconv.Itoa(m.PID), "-m", "-p", "--"}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Show returns one property of a unit, as in Show("app.service", "MainPID").
func (m *Manager) Show(unit, prop string) string {
	out, _ := m.Systemctl("show", "-p", prop, "--value", unit)
	return out
}

// HostPID maps a pid inside the namespace (such as MainPID) to the host's.
func (m *Manager) HostPID(nsPid int) int {
	if nsPid == 0 {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		mm := nspidRe.FindSubmatch(b)
		if mm == nil {
			continue
		}
		f := strings.Fields(string(mm[1]))
		if len(f) == 2 && f[1] == strconv.Itoa(nsPid) && m.inNamespace(p) {
			return p
		}
	}
	return 0
}

var nspidRe = regexp.MustCompile(`(?m)^NSpid:\s+(.*)$`)

func (m *Manager) inNamespace(pid int) bool {
	a, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	b, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", m.PID))
	return err1 == nil && err2 == nil && a == b
}

// Journal returns `systemctl status` of a unit and what it printed, for
// failure messages.
func (m *Manager) Journal(unit string) string {
	out, _ := m.Systemctl("status", "--no-pager", "-l", unit)
	b, _ := os.ReadFile(m.output(unit))
	var sys []string
	if l, err := os.ReadFile(m.logPath); err == nil {
		for _, line := range strings.Split(string(l), "\n") {
			if strings.Contains(line, strings.TrimSuffix(unit, ".service")) {
				sys = append(sys, line)
			}
		}
	}
	return out + "\n--- output of " + unit + ":\n" + string(b) + "\n--- systemd about it:\n" + strings.Join(sys, "\n")
}

// Output returns what a service unit printed so far.
func (m *Manager) Output(unit string) string {
	b, _ := os.ReadFile(m.output(unit))
	return string(b)
}

func (m *Manager) output(unit string) string {
	return filepath.Join(m.UnitDir, unit+".log")
}

func (m *Manager) stop() {
	if m.PID != 0 {
		// PID 1 of a namespace takes every process of the namespace with it.
		_ = syscall.Kill(m.PID, syscall.SIGKILL)
	}
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.t.Errorf("systemdtest: unshare pid %d did not exit", m.cmd.Process.Pid)
	}
}

func childOf(ppid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", ppid, ppid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	// The child is sh until it execs systemd.
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if !bytes.HasPrefix(comm, []byte("systemd")) {
		return 0
	}
	return pid
}

// LogPath is the file systemd logs to.
func (m *Manager) LogPath() string { return m.logPath }
