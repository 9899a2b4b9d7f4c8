//go:build linux

package config

import (
	"errors"
	"net"
	"testing"
)

// TestCheckProbe: which probe addresses reach a held socket.
func TestCheckProbe(t *testing.T) {
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	for _, c := range []struct {
		held, probe string
		refused     bool
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080/", true},
		{"127.0.0.1:8080", "http://localhost:8080/healthz", true},
		{"127.0.0.1:8080", "tcp://0.0.0.0:8080", true},
		{"127.0.0.1:8080", "tcp://:8080", true},
		{"127.0.0.1:8080", "http://[::ffff:127.0.0.1]:8080/", true},
		{"0.0.0.0:8080", "http://127.0.0.2:8080/", true},
		{"[::]:8080", "tcp://127.0.0.1:8080", true},
		{"[::1]:8080", "tcp://[::1]:8080", true},
		{"127.0.0.1:80", "http://127.0.0.1/", true}, // the URL's default port
		{"127.0.0.1:8080", "http://127.0.0.1:9090/", false},
		{"127.0.0.1:8080", "tcp://127.0.0.2:8080", false},
		{"127.0.0.1:8080", "tcp://[::1]:8080", false},
		{"127.0.0.1:8080", "delay:1s", false},
	} {
		m, err := ParseReady(c.probe)
		if err != nil {
			t.Fatal(err)
		}
		err = m.CheckProbe([]net.Addr{tcp(c.held)}, []string{"web"})
		if refused := errors.Is(err, ErrUsage); refused != c.refused {
			t.Errorf("held %s, --ready %s: %v, want refused=%v", c.held, c.probe, err, c.refused)
		}
	}
}

// the given port plus I; the other modes are the same for every worker.
func TestReadyForWorker(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"http://127.0.0.1:9100/healthz", "http://127.0.0.1:9102/healthz"},
		{"http://localhost/healthz", "http://localhost:82/healthz"},
		{"tcp://[::1]:7000", "tcp://[::1]:7002"},
		{"notify", "notify"},
		{"delay:1s", "delay:1s"},
	} {
		m, err := ParseReady(c.mode)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.ForWorker(2).String(); got != c.want {
			t.Errorf("%s for worker 2: %s, want %s", c.mode, got, c.want)
		}
		if got := m.ForWorker(0).String(); got != c.mode {
			t.Errorf("%s for worker 0: %s, want it unchanged", c.mode, got)
		}
	}
}
