//go:build linux

package config

import (
	"io"
	"testing"
)

// TestHandoverFlag: --handover is off by default, on when given.
func TestHandoverFlag(t *testing.T) {
	for args, want := range map[string]bool{"": false, "--handover": true} {
		argv := []string{"--", "/bin/true"}
		if args != "" {
			argv = append([]string{args}, argv...)
		}
		cfg, err := Parse(argv, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if cfg.Handover != want {
			t.Errorf("%q: Handover %v, want %v", args, cfg.Handover, want)
		}
	}
}
