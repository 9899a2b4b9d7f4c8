package quicsteer_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependenciesStayPut: a program that imports the library's packages
// links neither cilium/ebpf nor this package; handoff's binary links them
// but not quic-go (module quic's).
func TestDependenciesStayPut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	deps := func(pkgs ...string) []string {
		t.Helper()
		out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %v: %v\n%s", pkgs, err, out)
		}
		return strings.Fields(string(out))
	}
	const mod = "github.com/handoff-dev/handoff"
	for _, p := range deps(mod+"/upgrader", mod+"/drain", mod+"/listener", mod+"/systemd") {
		if strings.HasPrefix(p, "github.com/cilium/ebpf") || p == mod+"/internal/quicsteer" {
			t.Errorf("the library's packages import %s: programs without QUIC would link a BPF library", p)
		}
	}
	linked := false
	for _, p := range deps(mod) {
		if strings.HasPrefix(p, "github.com/quic-go/") {
			t.Errorf("handoff's binary imports %s", p)
		}
		linked = linked || p == mod+"/internal/quicsteer"
	}
	if !linked {
		t.Errorf("handoff's binary does not import internal/quicsteer: the test no longer checks what it should")
	}
}
