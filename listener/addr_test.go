package listener_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/listener"
)

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		want listener.Addr
	}{
		{"127.0.0.1:8080", listener.Addr{Network: "tcp", Address: "127.0.0.1:8080"}},
		{":8080", listener.Addr{Network: "tcp", Address: ":8080"}},
		{"localhost:0", listener.Addr{Network: "tcp", Address: "localhost:0"}},
		{"[::1]:80", listener.Addr{Network: "tcp", Address: "[::1]:80"}},
		{"tcp://0.0.0.0:80", listener.Addr{Network: "tcp", Address: "0.0.0.0:80"}},
		{"tcp4://127.0.0.1:1", listener.Addr{Network: "tcp4", Address: "127.0.0.1:1"}},
		{"tcp6://[::1]:443", listener.Addr{Network: "tcp6", Address: "[::1]:443"}},
		{"unix:///run/app.sock", listener.Addr{Network: "unix", Address: "/run/app.sock"}},
		{"unix:///run/app.sock?mode=0660", listener.Addr{Network: "unix", Address: "/run/app.sock", Mode: 0o660}},
		{"unix://@app", listener.Addr{Network: "unix", Address: "@app"}},
		{"udp://127.0.0.1:53", listener.Addr{Network: "udp", Address: "127.0.0.1:53"}},
		{"udp6://[::]:53", listener.Addr{Network: "udp6", Address: "[::]:53"}},
		{"systemd:web", listener.Addr{Network: "systemd", Address: "web"}},
	}
	for _, g := range good {
		got, err := listener.Parse(g.in)
		if err != nil || got != g.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", g.in, got, err, g.want)
			continue
		}
		again, err := listener.Parse(got.String())
		if err != nil || again != got {
			t.Errorf("Parse(%q.String()=%q) = %+v, %v", g.in, got.String(), again, err)
		}
	}

	bad := []struct{ in, why string }{
		{"", "empty"},
		{"8080", "missing port"},
		{"127.0.0.1", "missing port"},
		{"127.0.0.1:", "missing port"},
		{"127.0.0.1:99999", "0 to 65535"},
		{"127.0.0.1:http", "0 to 65535"},
		{"ftp://x:1", "unknown scheme"},
		{"unix://run/app.sock", "absolute"},
		{"unix://", "missing socket path"},
		{"unix:///a?mode=999", "octal"},
		{"unix:///a?owner=me", "unknown option"},
		{"/run/app.sock", "unix://"},
		{"systemd:", "missing socket name"},
		{"systemd:a:b", "without ':'"},
		{"tcp4://[::1]:80", "IPv6"},
		{"tcp6://127.0.0.1:80", "IPv4"},
		{"host name:80", "whitespace"},
	}
	for _, b := range bad {
		_, err := listener.Parse(b.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", b.in)
			continue
		}
		if !errors.Is(err, listener.ErrMalformed) {
			t.Errorf("Parse(%q): %v does not wrap ErrMalformed", b.in, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, b.why) || !strings.Contains(msg, "use HOST:PORT") || strings.Contains(msg, "\n") {
			t.Errorf("Parse(%q): %q should say %q and show the valid forms on one line", b.in, msg, b.why)
		}
	}
}

// FuzzParse checks that Parse never panics, that what it accepts survives a
// round trip through String, and that errors stay on one line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8080", ":80", "unix:///run/a.sock?mode=0600", "systemd:web", "udp://[::1]:53", "tcp6://[fe80::1%eth0]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := listener.Parse(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error for %q spans lines: %q", s, err)
			}
			return
		}
		b, err := listener.Parse(a.String())
		if err != nil || b != a {
			t.Fatalf("Parse(%q) = %+v; Parse(%q) = %+v, %v", s, a, a.String(), b, err)
		}
		if a.Mode&^fs.ModePerm != 0 {
			t.Fatalf("mode %v has more than permission bits", a.Mode)
		}
	})
}
