package upgrader

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNoHandoff runs the Upgrader on the core of systems that cannot pass
// sockets to a new process (Windows), the same code those systems run: it
// binds, serves, writes the PID file, refuses upgrades with an error that
// wraps errors.ErrUnsupported (logged once) while it serves on, and drains
// and cleans up on Stop.
func TestNoHandoff(t *testing.T) {
	dir := t.TempDir()
	pidFile, sock := filepath.Join(dir, "app.pid"), filepath.Join(dir, "app.sock")
	var logs syncBuffer
	u, err := newWithCore(Options{NoSignals: true, PIDFile: pidFile, DrainTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, newNoHandoff(pidFile), watchSignals(true))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := u.Listen("", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uln, err := u.Listen("", "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	d := u.NewDrainer()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	d.Serve(srv, ln)
	d.Serve(srv, uln)
	served := make(chan error, 1)
	go func() { served <- u.ServeDrainer(d) }()

	post := func() error {
		resp, err := http.Post("http://"+ln.Addr().String()+"/", "text/plain", nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(pidFile)
		if string(b) == strconv.Itoa(os.Getpid()) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b, _ := os.ReadFile(pidFile); string(b) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file holds %q, want this pid", b)
	}
	if err := post(); err != nil {
		t.Fatalf("before the upgrade: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := u.Upgrade(); !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "restart it instead") {
			t.Errorf("Upgrade: %v, want an error that wraps errors.ErrUnsupported and says what to do", err)
		}
	}
	recs := logrec.Parse(logs.String())
	if n, m := logrec.Count(recs, "event=upgrade.unavailable"), logrec.Count(recs, "event=upgrade.refused"); n != 1 || m != 0 {
		t.Errorf("%d log records say upgrades are unavailable and %d that one was refused, want 1 and 0 (the callers got the error):\n%s", n, m, logs.String())
	}
	if err := post(); err != nil {
		t.Errorf("after the refused upgrade, the server does not serve: %v", err)
	}

	u.Stop()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeDrainer: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeDrainer did not return after Stop")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("still listening after Stop")
	}
	for _, f := range []string{pidFile, sock} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after Stop: %v", f, err)
		}
	}
	if recs := logrec.Parse(logs.String()); logrec.Find(recs, "event=drain.done") == nil || logrec.Find(recs, "event=exit", "reason=stopped") == nil {
		t.Errorf("no drain and stop in the log:\n%s", logs.String())
	}
}
