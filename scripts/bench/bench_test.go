package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// binDir holds the programs the benchmark runs, built once for every test
// here (config.binDir); "" under -short, where nothing is built.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "handoff-bench-test-")
	if err == nil {
		var root string
		if root, err = moduleRoot(); err == nil {
			_, err = buildBins(root, dir)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestSmoke runs every strategy for a moment and checks that the benchmark
// completes and prints its table; the figures themselves are not judged.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs every strategy")
	}
	var out bytes.Buffer
	only := strings.Join(append(strategyNames, "steady"), ",")
	err := run(config{rate: 100, duration: time.Second, upgrades: 1, slow: 200 * time.Millisecond, steady: 500 * time.Millisecond, only: only, binDir: binDir}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"| strategy |", "handoff library", "handoff daemon", "tableflip", "naive", "SO_REUSEPORT", "fork+exec floor", "steady state"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "could not start") {
		t.Errorf("a strategy did not start:\n%s", out.String())
	}
}

// TestPeersSmoke runs each peer for a moment: every row is measured, or
// says how to install what it lacks; the figures are not judged.
func TestPeersSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts every installed peer")
	}
	var out bytes.Buffer
	err := run(config{rate: 100, duration: 3 * time.Second, upgrades: 1, slow: 200 * time.Millisecond, only: "peers", binDir: binDir}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	rows := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| what") {
			continue
		}
		rows++
		if strings.Contains(line, "could not start") || strings.Contains(line, "stopped:") {
			t.Errorf("a peer failed: %s", line)
		}
		if !strings.Contains(line, " of ") && !strings.Contains(line, "not installed: `") {
			t.Errorf("a row neither measured nor says what to install: %s", line)
		}
	}
	if rows != len(peers("")) {
		t.Errorf("%d rows, want %d:\n%s", rows, len(peers("")), out.String())
	}
}

// TestWorkersSmoke runs the workers section for a moment, one reload per
// case: every row is measured, or says what to install.
func TestWorkersSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the Node.js app under each case")
	}
	var out bytes.Buffer
	err := run(config{upgrades: 1, slow: 200 * time.Millisecond, steady: 500 * time.Millisecond, only: "workers", binDir: binDir}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	rows := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| setup") {
			continue
		}
		rows++
		if strings.Contains(line, "could not start") || strings.Contains(line, "stopped:") {
			t.Errorf("a case failed: %s", line)
		}
		if !strings.Contains(line, " of ") && !strings.Contains(line, "not installed: `") {
			t.Errorf("a row neither measured nor says what to install: %s", line)
		}
	}
	if rows != len(workersCases("")) {
		t.Errorf("%d rows, want %d:\n%s", rows, len(workersCases("")), out.String())
	}
}

// TestSpeedSmoke runs the restart-speed section for a few rounds: both
// modes upgrade, and every phase of their breakdown is found in the
// records by its event key (a phase with no sample reads –); the figures
// are not judged.
func TestSpeedSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("upgrades the library's and the daemon's example servers")
	}
	var out bytes.Buffer
	if err := run(config{rounds: 3, only: "speed", binDir: binDir}, &out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, name := range []string{"library", "daemon"} {
		var line string
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), name+":") {
				line = l
			}
		}
		if line == "" {
			t.Errorf("no line for the %s:\n%s", name, out.String())
			continue
		}
		if strings.Contains(line, " –") || !strings.Contains(line, "first answer") {
			t.Errorf("the %s's breakdown lacks a phase: %s", name, line)
		}
	}
}

// TestHandoverSmoke runs the handover section small: 50 clients through 2
// releases. The baseline's clients are closed and reconnect at each
// release; the library's are handed over: none closed, none reconnected,
// no message lost or repeated, every connection handed over each time.
func TestHandoverSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts examples/websocket and 50 clients")
	}
	var out bytes.Buffer
	const clients, releases = 50, 2
	err := run(config{only: "handover", hoClients: clients, hoReleases: releases, hoInterval: 100 * time.Millisecond, hoQuiet: 300 * time.Millisecond, binDir: binDir}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	rows := map[string][]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		cells := strings.Split(line, " | ")
		for _, name := range []string{"close with 1001", "library handover", "daemon mode"} {
			if strings.HasPrefix(line, "| "+name) {
				rows[name] = cells
			}
		}
	}
	lib, base, dmn := rows["library handover"], rows["close with 1001"], rows["daemon mode"]
	if len(lib) < 7 || len(base) < 7 || len(dmn) < 7 {
		t.Fatalf("a row is missing:\n%s", out.String())
	}
	for name, row := range map[string][]string{"library handover": lib, "daemon mode": dmn} {
		if row[1] != "0" || row[2] != "0" || row[3] != "0 / 0" {
			t.Errorf("%s: closed %s, reconnects %s, lost / repeated %s; want 0, 0, 0 / 0", name, row[1], row[2], row[3])
		}
		if want := fmt.Sprintf("%d of %d in ", clients, clients); !strings.HasPrefix(row[6], want) {
			t.Errorf("%s: handed over %q, want %q…", name, row[6], want)
		}
	}
	if want := fmt.Sprint(clients * releases); base[1] != want || base[2] != want {
		t.Errorf("baseline: closed %s, reconnects %s; want %s each (every client at every release)", base[1], base[2], want)
	}
}
