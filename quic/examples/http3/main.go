// Command http3 is an HTTP/3 server in library mode that hands over without
// breaking a QUIC connection: each generation serves on its own UDP socket
// (package github.com/handoff-dev/handoff/quic), new connections go to the
// newest generation, and the old one serves its connections until they end
// after its GOAWAY, for at most -drain. It accepts connections on 64
// goroutines (accept.go), so that quic-go's accept queue of 32 never fills
// and refuses a handshake, and sends the GOAWAYs 10 ms apart (spread.go), so
// that the clients do not all dial the new generation at once.
//
//	go build -o /tmp/h3 . && sudo /tmp/h3 -addr 127.0.0.1:8443 -pidfile /tmp/h3.pid
//	curl --http3-only -k https://127.0.0.1:8443/   # pid N
//	sudo kill -HUP $(cat /tmp/h3.pid)
//
// It answers every request to / with "pid N" (N: the pid of the generation
// that served it), over a self-signed certificate for the -addr host unless
// -cert and -key are given. The steering needs root, or CAP_BPF and
// CAP_NET_ADMIN; -shared-socket serves instead on one socket handed from
// generation to generation (upgrader.ListenPacket), which needs no privilege
// and breaks the QUIC connections that are open at each upgrade: the
// baseline the tests measure against.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/handoff-dev/handoff/quic"
	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "UDP `host:port` to serve HTTP/3 on (a fixed port)")
	pidfile := flag.String("pidfile", "", "`file` to write the serving generation's pid to")
	cert := flag.String("cert", "", "TLS certificate `file` (PEM); without it, a self-signed one")
	key := flag.String("key", "", "TLS key `file` (PEM), with -cert")
	drain := flag.Duration("drain", 10*time.Second, "how long an old generation may serve its connections after a handover")
	shared := flag.Bool("shared-socket", false, "serve on one UDP socket shared by all generations, unsteered (the baseline: breaks QUIC connections at each upgrade)")
	flag.Parse()
	switch {
	case flag.NArg() > 0:
		usage("unexpected argument %q: give everything as flags (-h lists them)", flag.Arg(0))
	case (*cert == "") != (*key == ""):
		usage("give -cert and -key together, or neither for a self-signed certificate")
	case *drain <= 0:
		usage("-drain %v: give a positive duration, such as 10s", *drain)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log)
	if err := run(log, *addr, *pidfile, *cert, *key, *drain, *shared); err != nil {
		log.Error("exiting", "event", "exit.failed", "err", err)
		os.Exit(1)
	}
}

func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "http3: "+format+"\n", args...)
	os.Exit(2)
}

func run(log *slog.Logger, addr, pidfile, certFile, keyFile string, drainTimeout time.Duration, shared bool) error {
	u, err := upgrader.New(upgrader.Options{PIDFile: pidfile, DrainTimeout: drainTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer u.Stop()
	log = log.With("gen", u.Generation(), "pid", os.Getpid())
	var tr *quicgo.Transport
	var closeSocket func() error
	if shared {
		pc, err := u.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		tr = &quicgo.Transport{Conn: pc}
		closeSocket = tr.Close
	} else {
		s, err := quic.Listen(u, addr)
		if err != nil {
			return err
		}
		tr, closeSocket = s.Transport(), s.Close
	}
	tlsConf, err := tlsConfig(addr, certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := tr.ListenEarly(http3.ConfigureTLSConfig(tlsConf), &quicgo.Config{Allow0RTT: true})
	if err != nil {
		return fmt.Errorf("listening for QUIC on %s: %w", addr, err)
	}
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid %d\n", pid)
	})
	fl := newFastListener(ln)
	conns := newConnServers(mux)
	served := make(chan error, 1)
	go func() { served <- conns.serve(fl) }()
	if err := u.Ready(); err != nil {
		return err
	}
	select {
	case <-u.Exit():
	case err := <-served:
		return fmt.Errorf("serving HTTP/3: %w", err)
	}
	// New connections go to the next generation (or nowhere, on a stop);
	// this one's end after the GOAWAY, when their requests are done.
	start := time.Now()
	_ = fl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	err = conns.shutdown(ctx, drainTimeout/4)
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("HTTP/3 drain cut at the deadline: connections left were closed", "event", "h3.drain_cut", "after_ms", time.Since(start).Milliseconds())
	} else {
		log.Info("HTTP/3 connections ended", "event", "h3.drained", "after_ms", time.Since(start).Milliseconds(), "err", err)
	}
	return closeSocket()
}

// tlsConfig loads the certificate, or makes a self-signed one for addr's
// host.
func tlsConfig(addr, certFile, keyFile string) (*tls.Config, error) {
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the certificate: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{c}}, nil
	}
	host, _, _ := net.SplitHostPort(addr)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "http3 example"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else if host != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}}}, nil
}
