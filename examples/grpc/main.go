// Command grpc is a gRPC server, as a user would write it with grpc-go, that
// hands over without failing an RPC: when its generation is told to exit
// (Exit: handed over, or stopping) it calls GracefulStop — which stops
// accepting, sends every client a GOAWAY, and waits for the RPCs in flight —
// and Stop at the drain deadline. Clients move to the new generation at once.
// It serves the standard health service (grpc.health.v1.Health) and names
// the pid that answered in each response's "x-pid" header.
//
//	go build -o /tmp/grpcd . && /tmp/grpcd -addr 127.0.0.1:50051 -pidfile /tmp/grpcd.pid
//	kill -HUP $(cat /tmp/grpcd.pid)
//
// It is its own module, so that the handoff module does not depend on grpc.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "address to serve on")
	pidfile := flag.String("pidfile", "", "file to write the serving generation's pid to")
	drain := flag.Duration("drain-timeout", 10*time.Second, "how long RPCs in flight may take once draining")
	flag.Parse()
	log.SetFlags(0)

	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, DrainTimeout: *drain})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", *addr)
	if err != nil {
		log.Fatal(err)
	}

	pid := strconv.Itoa(os.Getpid())
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-pid", pid))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if err := u.Ready(); err != nil {
		log.Fatal(err)
	}

	select {
	case <-u.Exit():
	case err := <-served:
		log.Fatalf("grpc: %v", err)
	}
	// Stop accepting, GOAWAY to every client, wait for the RPCs in flight;
	// cut what is left at the drain deadline.
	start := time.Now()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		log.Printf("grpc: pid %s drained in %v", pid, time.Since(start).Round(time.Millisecond))
	case <-time.After(*drain):
		srv.Stop()
		log.Printf("grpc: pid %s cut the RPCs left after %v", pid, *drain)
	}
}
