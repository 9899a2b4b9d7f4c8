package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every strategy for a moment and checks that the benchmark
// completes and prints its table; the figures themselves are not judged.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs every strategy")
	}
	var out bytes.Buffer
	err := run(config{rate: 100, duration: 2 * time.Second, upgrades: 1, slow: 200 * time.Millisecond, steady: 500 * time.Millisecond}, &out)
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
