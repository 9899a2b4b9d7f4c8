package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// build builds this command into a temporary directory.
func build(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the benchmark and its servers")
	}
	bin := filepath.Join(t.TempDir(), "bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// cells returns the cells of the table's line whose first cell starts with
// label, or fails the test.
func cells(t *testing.T, out, label string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "| "+label) {
			c := strings.Split(strings.Trim(line, "| "), " | ")
			return c
		}
	}
	t.Fatalf("no line %q in the output:\n%s", label, out)
	return nil
}

// TestSmoke runs the section with tiny numbers (10 clients, 2 releases, a
// short cost measure): both rows of the example complete their releases,
// the steered one without a failed request or a broken connection, and the
// cost is measured.
func TestSmoke(t *testing.T) {
	bin := build(t)
	_ = rlimit.RemoveMemlock()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ReusePortSockArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Skipf("the steering needs BPF, which this process may not use (run the tests as root): %v", err)
	}
	m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--clients", "10", "--releases", "2", "--period", "50ms", "--drain", "3s", "--only", "shared,steered,cost", "--cost-rounds", "1", "--cost-datagrams", "20000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Logf("\n%s", out)
	shared := cells(t, out, "examples/http3, one shared socket")
	steered := cells(t, out, "examples/http3, steered")
	for _, row := range [][]string{shared, steered} {
		if len(row) != 8 {
			t.Fatalf("%d cells in %q, want 8", len(row), row)
		}
		if row[4] != "2" {
			t.Errorf("%s: releases %q, want 2", row[0], row[4])
		}
	}
	if !strings.HasPrefix(steered[1], "0 of ") || !strings.HasPrefix(steered[2], "0 of ") {
		t.Errorf("steered: failed requests %q, connections broken %q, want none", steered[1], steered[2])
	}
	if !strings.Contains(out, "Cost per datagram: ") || !strings.Contains(out, "as the kernel times the program itself") {
		t.Errorf("the output lacks the cost per datagram")
	}
}

// TestBadFlag: a bad value is one line on stderr saying what to give, and
// exit status 2.
func TestBadFlag(t *testing.T) {
	bin := build(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "--clients", "0")
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want status 2", err)
	}
	if got := strings.TrimSpace(stderr.String()); got != "quic bench: --clients 0: give at least 1" {
		t.Errorf("stderr %q", got)
	}
	_ = os.Remove(bin)
}
