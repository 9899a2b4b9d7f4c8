//go:build linux

package config

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestQUICListen: --listen quic:// parses into a UDP address marked QUIC;
// what it cannot work with is refused on one line that says what to give.
func TestQUICListen(t *testing.T) {
	cfg, err := Parse([]string{"--listen", "h3=quic://127.0.0.1:4433", "--listen", "dns=udp://127.0.0.1:5353", "--", "/bin/true"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	q, u := cfg.Listens[0], cfg.Listens[1]
	if !q.QUIC || q.Name != "h3" || q.Addr.Network != "udp" || q.Addr.Address != "127.0.0.1:4433" || q.String() != "h3=quic://127.0.0.1:4433" {
		t.Errorf("quic:// parsed as %+v (%s)", q, q)
	}
	if u.QUIC {
		t.Errorf("udp:// parsed as QUIC: %+v", u)
	}
	for args, want := range map[string]string{
		"--listen quic://127.0.0.1:0":                     "give a fixed port",
		"--listen quic://127.0.0.1":                       "quic://",
		"--listen quic://127.0.0.1:4433 --workers 2":      "--workers 1",
		"--listen quic://127.0.0.1:4433 --ready accept":   "--ready notify",
		"--listen a=quic://:4433 --listen b=quic://:4433": "given twice",
	} {
		_, err := Parse(append(strings.Fields(args), "--", "/bin/true"), io.Discard)
		if !errors.Is(err, ErrUsage) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want a one-line usage error saying %q", args, err, want)
		}
	}
}
