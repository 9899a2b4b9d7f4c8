package systemd_test

import (
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/systemd"
)

// TestCheckFDName: the rule of systemd.socket(5) for FileDescriptorName=.
func TestCheckFDName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"web", true},
		{"admin-8080.v2", true},
		{"with space", true}, // ASCII, not a control character
		{"~!@#$%^&*()", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{"a:b", false},
		{"tab\there", false},
		{"line\nbreak", false},
		{"del\x7f", false},
		{"café", false},
	} {
		if err := systemd.CheckFDName(c.name); (err == nil) != c.ok {
			t.Errorf("CheckFDName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
