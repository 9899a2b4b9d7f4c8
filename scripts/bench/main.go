// Command bench compares zero-downtime upgrade strategies side by side, on
// this machine, in one run, under the same open-loop load, and prints a
// Markdown table:
//
//  1. handoff library mode (examples/httpserver, SIGHUP)
//  2. handoff daemon mode (handoff run with examples/app, handoff reload)
//  3. tableflip as its README shows it (Shutdown right after Exit)
//  4. naive restart: stop the old process, then start the new one
//  5. SO_REUSEPORT overlap: start the new process on its own socket, then
//     stop the old one
//
// It also measures the fork+exec floor, steady-state throughput through an
// inherited socket, two scale cases: 10,000 idle keep-alive connections
// across an upgrade, and a handover of 1,000 listeners; and 10,000 WebSocket
// clients through 20 releases, their connections closed and reconnected or
// handed over, in library mode and under handoff run --handover (--only
// handover). Its QUIC section (--only quic) runs HTTP/3
// clients through releases of quic/examples/http3 on a shared socket and
// steered, and Caddy, and measures the steering program's cost per datagram
// (quic/internal/bench; it needs root).
//
//	go run ./scripts/bench                       # 1000 rps, 60 s and 50 upgrades per strategy
//	go run ./scripts/bench --duration 10s --upgrades 5 --only library
//	go run ./scripts/bench --only handover --clients 200 --releases 3
//	go run ./scripts/bench --only quic --quic-clients 200 --quic-releases 20
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"
)

func main() {
	var cfg config
	flag.IntVar(&cfg.rate, "rate", 1000, "fast POST requests per second during each strategy's run")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "how long each strategy runs under load")
	flag.IntVar(&cfg.upgrades, "upgrades", 50, "upgrades per strategy, spread over --duration")
	flag.StringVar(&cfg.only, "only", "", "run only these strategies and sections, comma-separated: "+strings.Join(append(strategyNames, sectionNames...), ","))
	flag.IntVar(&cfg.memReloads, "mem-reloads", 1000, "reloads in a row of the memory section (handoff run's RSS along the way)")
	flag.IntVar(&cfg.rounds, "rounds", 20, "rounds of the restart-speed measure (floor, library, daemon interleaved)")
	flag.DurationVar(&cfg.slow, "slow", time.Second, "duration of the slow requests kept in flight")
	flag.BoolVar(&cfg.scale, "scale", true, "also run the scale cases (10,000 idle connections, 1,000 listeners)")
	flag.DurationVar(&cfg.steady, "steady", 5*time.Second, "how long each steady-state throughput run lasts")
	flag.IntVar(&cfg.hoClients, "clients", 10000, "WebSocket clients of the handover section")
	flag.IntVar(&cfg.hoReleases, "releases", 20, "releases of the handover section (SIGHUP; handoff reload in its daemon row)")
	flag.DurationVar(&cfg.hoInterval, "interval", 200*time.Millisecond, "how often each client of the handover section sends a message")
	modes := flag.String("modes", "", "the handover section's rows to run, comma-separated: baseline, library, daemon (default all)")
	flag.DurationVar(&cfg.hoQuiet, "quiet", 10*time.Second, "how long the handover section measures each client's longest gap between echoes before the first release (the same load without releases, to compare with)")
	flag.IntVar(&cfg.quicClients, "quic-clients", 200, "HTTP/3 clients of the QUIC section, each on a QUIC connection of its own")
	flag.IntVar(&cfg.quicReleases, "quic-releases", 20, "releases of each server in the QUIC section")
	flag.Parse()
	log.SetFlags(0)
	if *modes != "" {
		cfg.hoModes = strings.Split(*modes, ",")
	}
	if flag.NArg() > 0 {
		usage("unexpected argument %q — see 'go run ./scripts/bench --help'", flag.Arg(0))
	}
	if cfg.quicClients < 1 || cfg.quicReleases < 1 {
		usage("--quic-clients %d --quic-releases %d: give at least 1 of each", cfg.quicClients, cfg.quicReleases)
	}
	if msg := cfg.checkHandover(); msg != "" {
		fmt.Fprintln(os.Stderr, "bench: "+msg)
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

// usage reports bad command-line input on one line and exits with status 2.
func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(2)
}

func init() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./scripts/bench [flags]\n\nFlags:\n")
		flag.PrintDefaults()
	}
}
