// Command hijackserver serves long-lived work for the upgrader's tests:
//
//	GET /hijack        answers 101 and keeps the connection, as WebSocket
//	                   servers do; with ?polite=1 the handler closes it when
//	                   the drain begins (the Drainer's OnDrain), otherwise it holds
//	                   it until the peer goes away
//	POST /job?id=N&d=D starts background work (Upgrader.Go) that lasts D, or
//	                   until its context is cancelled
//	GET /wait          blocks until the request's context is cancelled
//
// What jobs and waits end with goes to the -record file, a line each. Other
// paths answer with the pid.
//
//	-tls      serve TLS (a self-signed certificate made at start), HTTP/1.1
//	          and h2 by ALPN
//	-wrap     put a listener wrapper of the user's own (one that hides its
//	          type but says what it wraps) around the listener from Listen
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
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/drain"
	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	pidfile := flag.String("pidfile", "", "pid file")
	drainTimeout := flag.Duration("drain-timeout", drain.DefaultTimeout, "drain timeout")
	useTLS := flag.Bool("tls", false, "serve TLS")
	wrap := flag.Bool("wrap", false, "wrap the listener in a type of the user's own")
	recordPath := flag.String("record", "", "file to append job and request outcomes to")
	serveTLS := flag.String("servetls", "", "serve with Upgrader.ServeTLS, with a self-signed certificate written to this directory")
	flag.Parse()
	log.SetFlags(0)

	u, err := upgrader.New(upgrader.Options{
		PIDFile:      *pidfile,
		DrainTimeout: *drainTimeout,
		Logger:       slog.New(slog.NewJSONHandler(os.Stderr, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if *wrap {
		ln = &userListener{ln}
	}
	if *useTLS {
		ln = tls.NewListener(ln, tlsConfig())
	}
	pid := os.Getpid()
	drained := make(chan struct{}) // closed when the drain begins
	mux := http.NewServeMux()
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nX-Pid: %d\r\n\r\n", pid)
		if r.URL.Query().Get("polite") != "" {
			<-drained
			c.Close()
			return
		}
		_, _ = io.Copy(io.Discard, c)
	})
	var recMu sync.Mutex
	record := func(format string, args ...any) {
		recMu.Lock()
		defer recMu.Unlock()
		f, err := os.OpenFile(*recordPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			log.Print(err)
			return
		}
		fmt.Fprintf(f, format+"\n", args...)
		f.Close()
	}
	mux.HandleFunc("POST /job", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		err = u.Go(func(ctx context.Context) error {
			select {
			case <-time.After(d):
				record("job %s done pid=%d", id, pid)
				return nil
			case <-ctx.Done():
				record("job %s cancelled pid=%d", id, pid)
				return ctx.Err()
			}
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "job %s started pid=%d\n", id, pid)
	})
	mux.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
		record("request waiting pid=%d", pid)
		<-r.Context().Done()
		record("request cancelled pid=%d", pid)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pid=%d proto=%s\n", pid, r.Proto)
	})
	if *serveTLS != "" {
		cert, key := writeCert(*serveTLS)
		if err := u.ServeTLS(&http.Server{Handler: mux}, ln, cert, key); err != nil {
			log.Fatal(err)
		}
		return
	}
	d := u.NewDrainer()
	d.OnDrain(func() { close(drained) })
	d.Serve(&http.Server{Handler: mux}, ln)
	if err := u.ServeDrainer(d); err != nil {
		log.Fatal(err)
	}
}

// userListener and userConn stand for a user's own wrappers (metrics,
// rate limits): they hide the types under them, and say what they wrap with
// Unwrap, as a wrapper should.
type userListener struct{ net.Listener }

func (l *userListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &userConn{c}, nil
}

type userConn struct{ net.Conn }

func (c *userConn) Unwrap() net.Conn { return c.Conn }

// writeCert writes the self-signed certificate of tlsConfig and its key as
// PEM files in dir, for ServeTLS, and returns their names.
func writeCert(dir string) (certFile, keyFile string) {
	c := tlsConfig().Certificates[0]
	der, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		log.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	kp := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(certFile, cp, 0o600); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kp, 0o600); err != nil {
		log.Fatal(err)
	}
	return certFile, keyFile
}

// tlsConfig returns a config with a self-signed certificate for 127.0.0.1
// and ALPN for h2 and HTTP/1.1, as a server that serves both sets it.
func tlsConfig() *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hijackserver"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"h2", "http/1.1"},
	}
}
