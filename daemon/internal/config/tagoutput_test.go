//go:build linux

package config

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestTagOutput: --tag-output alone, =stream, =off, and a bad value refused
// on one line.
func TestTagOutput(t *testing.T) {
	for args, want := range map[string]string{
		"":                    "",
		"--tag-output":        "auto",
		"--tag-output=auto":   "auto",
		"--tag-output=stream": "stream",
		"--tag-output=off":    "",
	} {
		argv := append(strings.Fields(args), "--", "/bin/true")
		cfg, err := Parse(argv, io.Discard)
		if err != nil {
			t.Errorf("%q: %v", args, err)
			continue
		}
		if cfg.TagOutput != want {
			t.Errorf("%q: TagOutput %q, want %q", args, cfg.TagOutput, want)
		}
	}
	_, err := Parse([]string{"--tag-output=journal", "--", "/bin/true"}, io.Discard)
	if !errors.Is(err, ErrUsage) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--tag-output=stream") {
		t.Errorf("--tag-output=journal: %v; want a one-line usage error naming the values", err)
	}
}
