//go:build linux

package config

import "testing"

// TestParseSize: --max-memory's sizes, in powers of 1024, and the ones it
// refuses.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"512M": 512 << 20, "512MiB": 512 << 20, "512mb": 512 << 20, "2G": 2 << 30, "1.5G": 3 << 29, "300MiB": 300 << 20, "1T": 1 << 40, "2097152": 2 << 20,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1G", "0M", "10K", "512", "5X", "M", "NaN", "nanM", "inf", "+InfG", "1e30", "2048P", "1e7T"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
