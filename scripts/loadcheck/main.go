// Command loadcheck sends an open-loop POST load to a server and reports
// every failure by class, the requests Go's client retried silently, which
// pids answered, and latency percentiles.
//
//	go run ./scripts/loadcheck -url http://127.0.0.1:8080 -rate 1000 -duration 30s -slow 2s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "base URL of the server; slow requests go to URL/slow?d=")
	rate := flag.Int("rate", 1000, "fast requests per second, half over keep-alive and half over fresh connections")
	duration := flag.Duration("duration", 30*time.Second, "how long to send (Ctrl-C ends it early)")
	slow := flag.Duration("slow", 0, "duration of slow requests kept in flight (0: none)")
	slowEvery := flag.Duration("slow-every", 250*time.Millisecond, "one slow request starts this often")
	flag.Parse()
	if *rate <= 0 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "loadcheck: -rate and -duration must be positive, as in -rate 500 -duration 10s")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := loadcheck.Run(ctx, loadcheck.Config{URL: *url, Rate: *rate, Slow: *slow, SlowEvery: *slowEvery})

	fmt.Printf("requests %d, ok %d, failed %d, silently retried %d\n", res.Sent, res.OK, res.Failures(), res.Retried)
	classes := make([]string, 0, len(res.Failed))
	for c := range res.Failed {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		fmt.Printf("  %-14s %d\n", c, res.Failed[c])
	}
	for _, s := range res.Samples {
		fmt.Printf("  e.g. %s\n", s)
	}
	fmt.Printf("latency (fast requests): %v\n", res.Overall())
	pids := make([]int, 0, len(res.Pids))
	for p := range res.Pids {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	fmt.Printf("answered by %d pids:", len(pids))
	for _, p := range pids {
		fmt.Printf(" %d×%d", p, res.Pids[p])
	}
	fmt.Println()
	if res.Failures() > 0 || res.Retried > 0 {
		os.Exit(1)
	}
}
