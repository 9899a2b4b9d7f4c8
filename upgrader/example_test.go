package upgrader_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

// A whole hot-restartable server: SIGHUP hands the socket to a new process
// of the same binary, SIGTERM drains.
func ExampleUpgrader_Serve() {
	u, err := upgrader.New(upgrader.Options{PIDFile: "/run/app.pid"})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") })
	mux.Handle("/healthz", u.Health()) // 503 once a stop is asked
	if err := u.Serve(&http.Server{Handler: mux}, ln); err != nil {
		log.Fatal(err)
	}
}

// Two servers, public and admin, drained as one.
func ExampleUpgrader_ServeDrainer() {
	u, err := upgrader.New(upgrader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	public, err := u.Listen("", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	admin, err := u.Listen("", "unix:///run/app/admin.sock?mode=0600")
	if err != nil {
		log.Fatal(err)
	}
	d := u.NewDrainer()
	d.Serve(&http.Server{Handler: http.DefaultServeMux}, public)
	d.Serve(&http.Server{Handler: http.NotFoundHandler()}, admin)
	if err := u.ServeDrainer(d); err != nil {
		log.Fatal(err)
	}
}

// Background work that outlives its request: the generation waits for it
// through a handover or a stop, and cancels it at the drain deadline.
func ExampleUpgrader_Go() {
	u, err := upgrader.New(upgrader.Options{DrainTimeout: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	http.HandleFunc("POST /encode", func(w http.ResponseWriter, r *http.Request) {
		err := u.Go(func(ctx context.Context) error {
			select {
			case <-time.After(20 * time.Second): // encode the upload
				return nil
			case <-ctx.Done():
				return ctx.Err() // the drain deadline: stop cleanly
			}
		})
		if err != nil { // draining: this generation takes no new work
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	ln, err := u.Listen("", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	if err := u.Serve(&http.Server{}, ln); err != nil {
		log.Fatal(err)
	}
}

// HTTPS with HTTP/2, as http.Server.ServeTLS.
func ExampleUpgrader_ServeTLS() {
	u, err := upgrader.New(upgrader.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", ":8443")
	if err != nil {
		log.Fatal(err)
	}
	if err := u.ServeTLS(&http.Server{}, ln, "/etc/app/cert.pem", "/etc/app/key.pem"); err != nil {
		log.Fatal(err)
	}
}

// rpcServer stands for *grpc.Server (google.golang.org/grpc), which this
// module does not depend on: examples/grpc is the whole program, tested.
type rpcServer interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// A gRPC server: serve the listener, say Ready, and when Exit is closed
// (handed over, or stopping) stop gracefully — no new connections, a GOAWAY
// to every client, the RPCs in flight finished — and cut what is left at the
// drain deadline.
func Example_grpc() {
	u, err := upgrader.New(upgrader.Options{DrainTimeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", ":50051")
	if err != nil {
		log.Fatal(err)
	}
	var srv rpcServer // srv := grpc.NewServer(); pb.RegisterYourServer(srv, …)
	go func() { _ = srv.Serve(ln) }()
	if err := u.Ready(); err != nil {
		log.Fatal(err)
	}
	<-u.Exit()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
}
