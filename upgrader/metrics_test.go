//go:build linux

package upgrader_test

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// TestMetricsAcrossGenerations: examples/httpserver serves u.MetricsHandler
// on /metrics. After two upgrades and one that fails, the third generation
// counts them all — the counters travel with the handover — and the two
// drains of the generations before it; promtool accepts the text.
func TestMetricsAcrossGenerations(t *testing.T) {
	spawns(t)
	s := startServer(t, nil, "-idle-grace", "200ms", "-upgrade-timeout", "2s")
	scrape := func() string {
		t.Helper()
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + s.addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	pid := s.pid()
	for i := 0; i < 2; i++ {
		old := s.signal(syscall.SIGHUP)
		pid = s.waitPid(old, 10*time.Second)
		s.waitExited(old, 10*time.Second)
	}
	good := s.bin + ".good"
	proc.CopyExec(t, s.bin, good)
	proc.WriteExec(t, s.bin, []byte("#!/bin/sh\nexit 3\n"))
	s.signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); logrec.Count(s.records(), "event=upgrade.failed") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the upgrade into a broken binary did not fail:\n%s", s.log())
		}
	}
	proc.CopyExec(t, good, s.bin)
	var text string
	want := []string{
		"handoff_generation 3",
		`handoff_upgrades_total{outcome="ready"} 2`,
		`handoff_upgrades_total{outcome="failed"} 1`,
		"handoff_upgrade_duration_seconds_count 2",
		"handoff_drains_total 2",
		"handoff_drain_duration_seconds_count 2",
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		text = scrape()
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w+"\n") {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the metrics of generation pid %d:\n%s", missing, pid, text)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v: %s\n%s", err, out, text)
		}
	}
	s.stop()
}
