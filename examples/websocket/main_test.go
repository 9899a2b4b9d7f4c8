package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestEchoThroughUpgrades runs the server over TLS with five clients that
// each send a message every 20 ms and wait for its echo, through three
// SIGHUPs: every message is echoed (a client sends again what was not echoed
// before a 1001 close), no connection is refused, and each old generation
// is gone within about a second, its clients having reconnected at once.
func TestEchoThroughUpgrades(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ws")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cert, key := writeCert(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pidfile := filepath.Join(dir, "pid")
	cmd := exec.Command(bin, "-addr", addr, "-cert", cert, "-key", key, "-pidfile", pidfile)
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	readPid := func() int { b, _ := os.ReadFile(pidfile); p, _ := strconv.Atoi(strings.TrimSpace(string(b))); return p }
	waitPid := func(old int) int {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if p := readPid(); p != 0 && p != old {
				return p
			}
		}
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("pid file still %d:\n%s", old, b)
		return 0
	}
	pids := []int{waitPid(0)}
	defer func() {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}()

	var sent, echoed, resent, reconnects, dialErrors, unfinished atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq, pending := 0, ""
			defer func() {
				if pending != "" {
					unfinished.Add(1) // cut by the end of the test
				}
			}()
			for ctx.Err() == nil {
				c, _, err := websocket.Dial(ctx, "wss://"+addr+"/echo", &websocket.DialOptions{HTTPClient: client})
				if err != nil {
					if ctx.Err() == nil {
						dialErrors.Add(1)
						t.Logf("client %d: dial: %v", i, err)
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				for ctx.Err() == nil {
					if pending == "" {
						seq++
						pending = fmt.Sprintf("client %d message %d", i, seq)
						sent.Add(1)
					} else if seq > 0 {
						resent.Add(1)
					}
					if err := c.Write(ctx, websocket.MessageText, []byte(pending)); err != nil {
						break
					}
					_, msg, err := c.Read(ctx)
					if err != nil {
						break
					}
					if !strings.HasSuffix(string(msg), " "+pending) {
						t.Errorf("client %d: echo %q for %q", i, msg, pending)
					}
					echoed.Add(1)
					pending = ""
					time.Sleep(20 * time.Millisecond)
				}
				c.CloseNow()
				reconnects.Add(1)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 3; i++ {
		old := pids[len(pids)-1]
		start := time.Now()
		_ = syscall.Kill(old, syscall.SIGHUP)
		pids = append(pids, waitPid(old))
		// (The first generation is this test's child, reaped by Wait;
		// the others, orphans, by init, whenever it gets to it: a zombie
		// counts as gone.)
		for alive(old) && time.Since(start) < 10*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		gone := time.Since(start)
		t.Logf("upgrade %d: pid %d gone %v after SIGHUP", i+1, old, gone.Round(time.Millisecond))
		if gone > 2*time.Second {
			t.Errorf("old generation %d lived %v after SIGHUP; its clients should have left at once", old, gone)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	t.Logf("sent %d, echoed %d, sent again after a 1001 close %d, reconnects %d, dial errors %d",
		sent.Load(), echoed.Load(), resent.Load(), reconnects.Load(), dialErrors.Load())
	// A message is lost if it was sent and never echoed, though sent again
	// after each close; the one each client had in flight when the test
	// ended does not count.
	if lost := sent.Load() - echoed.Load() - unfinished.Load(); lost != 0 || dialErrors.Load() != 0 || reconnects.Load() < 15 {
		t.Errorf("lost %d messages, %d dial errors, %d reconnects (want 0, 0, at least 15)", lost, dialErrors.Load(), reconnects.Load())
	}
	if t.Failed() {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "drain") || strings.Contains(l, "ready") {
				t.Log(l)
			}
		}
	}
	_ = syscall.Kill(pids[len(pids)-1], syscall.SIGTERM)
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ws"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}
