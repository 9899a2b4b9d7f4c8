//go:build linux

package daemon_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/proc"
)

// TestMetricsScrapedByPrometheus: handoff run --metrics serves the text
// format that promtool accepts, and Debian's Prometheus, scraping it every
// 200 ms, sees a reload that succeeded and one that failed in its query
// API, with the serving generation's number.
func TestMetricsScrapedByPrometheus(t *testing.T) {
	alongside(t)
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (apt-get install prometheus)")
	}
	metricsAddr := proc.FreeAddr(t)
	d := startDaemon(t, nil, "--metrics", metricsAddr)
	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
			t.Errorf("Content-Type %q", ct)
		}
		return string(b)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(scrape())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v: %s", err, out)
		}
	}

	dir := t.TempDir()
	promAddr := proc.FreeAddr(t)
	conf := fmt.Sprintf("global:\n  scrape_interval: 200ms\nscrape_configs:\n  - job_name: handoff\n    static_configs:\n      - targets: ['%s']\n", metricsAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	defer logf.Close()
	cmd := exec.Command(prom, "--config.file", filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", promAddr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	promLog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log")); return string(b) }

	// query returns the value of the single series expr selects, or "".
	query := func(expr string) string {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
			return ""
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		return s
	}
	waitQuery := func(expr, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for got := query(expr); got != want; got = query(expr) {
			if time.Now().After(deadline) {
				t.Fatalf("Prometheus: %s = %q, want %q\nscrape:\n%s\nprometheus:\n%s", expr, got, want, scrape(), promLog())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitQuery(`up{job="handoff"}`, "1")
	waitQuery(`handoff_serving_generation`, "1")

	if out, code := d.reload(); code != 0 {
		t.Fatalf("reload: %d %s", code, out)
	}
	proc.WriteExec(t, d.prog, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"))
	if out, code := d.reload(); code == 0 {
		t.Fatalf("a reload into a broken release succeeded: %s", out)
	}
	waitQuery(`handoff_reloads_total{outcome="ready"}`, "1")
	waitQuery(`handoff_reloads_total{outcome="failed",reason="exited"}`, "1")
	waitQuery(`handoff_serving_generation`, "2")
	waitQuery(`handoff_reload_duration_seconds_count`, "1")
	waitQuery(`handoff_processes{state="ready"}`, "1")
	d.stop()
}

// TestMetricsSlowReader: a client that asks for /metrics and reads the
// answer a byte every 200 ms does not hold a connection of handoff's for as
// long as it likes: handoff closes its end once the answer is written and
// the connection idle, while the client is still reading.
func TestMetricsSlowReader(t *testing.T) {
	alongside(t)
	metricsAddr := proc.FreeAddr(t)
	d := startDaemon(t, nil, "--metrics", metricsAddr)
	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		return errors.Join(err, serr)
	}}
	c, err := dialer.Dial("tcp", metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: handoff\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	handoffPID := d.cmd.Process.Pid
	start, read, held := time.Now(), 0, false
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("after %d bytes: %v", read, err)
		}
		read++
		n := openConns(handoffPID)
		if n > 0 {
			held = true
		}
		if held && n == 0 {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("handoff still holds the connection after %v; the client read %d bytes", time.Since(start).Round(time.Second), read)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("handoff closed its end after %v, the client having read %d bytes", time.Since(start).Round(100*time.Millisecond), read)
	if !held {
		t.Error("handoff was never seen holding the connection: the check saw nothing")
	}
	d.stop()
}
