// Command bench is the QUIC section of handoff's benchmark (go run
// ./scripts/bench --only quic runs it from the quic module): HTTP/3 clients,
// each on a QUIC connection of its own, a POST every 100 ms, through
// releases of
//
//  1. examples/http3 on one UDP socket handed from generation to generation
//     (upgrader.ListenPacket, -shared-socket): the baseline;
//  2. examples/http3 steered (package quic: a socket per generation, the
//     BPF program sending each datagram to its connection's generation);
//  3. Caddy serving HTTP/3 itself, reloaded with `caddy reload`, where it is
//     installed;
//
// with, for each, the failed requests, the connections broken, the
// reconnects and the p99 latency during the releases; then the steering
// program's cost per datagram at saturation, with and without it. It prints
// Markdown, as the benchmark does. It needs root (or CAP_BPF and
// CAP_NET_ADMIN) for the steered row and the cost.
//
//	cd quic && go run ./internal/bench --clients 200 --releases 20
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

type config struct {
	clients    int
	releases   int
	period     time.Duration
	drain      time.Duration
	only       map[string]bool
	costRounds int
	costN      int
}

var rowNames = []string{"shared", "steered", "caddy", "cost"}

func main() {
	var cfg config
	flag.IntVar(&cfg.clients, "clients", 200, "HTTP/3 clients, each on a QUIC connection of its own")
	flag.IntVar(&cfg.releases, "releases", 20, "releases of each server under the load")
	flag.DurationVar(&cfg.period, "period", 100*time.Millisecond, "time between a client's requests")
	flag.DurationVar(&cfg.drain, "drain", 10*time.Second, "the example's -drain: how long an old generation may serve its connections")
	only := flag.String("only", "", "run only these parts, comma-separated: "+strings.Join(rowNames, ","))
	flag.IntVar(&cfg.costRounds, "cost-rounds", 9, "rounds of the per-datagram cost measure (each group once a round)")
	flag.IntVar(&cfg.costN, "cost-datagrams", 300000, "datagrams sent into each group in a round of the cost measure")
	flag.Parse()
	log.SetFlags(0)
	switch {
	case flag.NArg() > 0:
		usage("unexpected argument %q: give everything as flags (--help lists them)", flag.Arg(0))
	case cfg.clients < 1:
		usage("--clients %d: give at least 1", cfg.clients)
	case cfg.releases < 1:
		usage("--releases %d: give at least 1", cfg.releases)
	case cfg.period <= 0:
		usage("--period %v: give a positive duration, such as 100ms", cfg.period)
	case cfg.drain <= 0:
		usage("--drain %v: give a positive duration, such as 10s", cfg.drain)
	case cfg.costRounds < 1 || cfg.costN < costBatch:
		usage("--cost-rounds %d --cost-datagrams %d: give at least 1 round of at least %d datagrams", cfg.costRounds, cfg.costN, costBatch)
	}
	cfg.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		found := false
		for _, n := range rowNames {
			found = found || n == s
		}
		if !found {
			usage("--only %s: unknown part; use %s", s, strings.Join(rowNames, ","))
		}
		cfg.only[s] = true
	}
	if err := run(cfg, os.Stdout); err != nil {
		log.Fatalf("quic bench: %v", err)
	}
}

func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "quic bench: "+format+"\n", args...)
	os.Exit(2)
}

func run(cfg config, w io.Writer) error {
	want := func(name string) bool { return len(cfg.only) == 0 || cfg.only[name] }
	dir, err := os.MkdirTemp("", "handoff-quicbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var bin string
	if want("shared") || want("steered") {
		bin = filepath.Join(dir, "http3")
		build := exec.Command("go", "build", "-o", bin, "./examples/http3")
		build.Dir, err = moduleRoot()
		if err != nil {
			return err
		}
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building examples/http3: %w\n%s", err, out)
		}
	}
	fmt.Fprintf(w, "\nHTTP/3 through releases — %d clients, each on a QUIC connection of its own, a POST every %v, %d releases of each server (the next once the new version serves and the old one has exited); example servers with -drain %v\n\n",
		cfg.clients, cfg.period, cfg.releases, cfg.drain)
	fmt.Fprintln(w, "| server | failed requests (by class) | connections broken | reconnects | releases | release→ready p50 / max | p99 latency during releases ÷ outside | old generation drain p50 / max |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	mkdir := func(name string) string {
		d := filepath.Join(dir, name)
		_ = os.Mkdir(d, 0o755)
		return d
	}
	if want("shared") {
		fmt.Fprintf(os.Stderr, "quic bench: shared socket…\n")
		printRow(w, "examples/http3, one shared socket (upgrader.ListenPacket, -shared-socket), SIGHUP",
			runRow(cfg, &example{bin: bin, dir: mkdir("shared"), shared: true, drain: cfg.drain}))
	}
	if want("steered") {
		fmt.Fprintf(os.Stderr, "quic bench: steered…\n")
		printRow(w, "examples/http3, steered generations (package quic), SIGHUP",
			runRow(cfg, &example{bin: bin, dir: mkdir("steered"), drain: cfg.drain}))
	}
	if want("caddy") {
		const label = "Caddy, HTTP/3 (tls internal), `caddy reload --force`"
		fmt.Fprintf(os.Stderr, "quic bench: caddy…\n")
		if path, err := exec.LookPath("caddy"); err != nil {
			fmt.Fprintf(w, "| %s | not installed: `apt-get install caddy` | | | | | | |\n", label)
		} else {
			printRow(w, label+" "+caddyVersion(path), runRow(cfg, &caddy{bin: path, dir: mkdir("caddy")}))
		}
	}
	if want("cost") {
		fmt.Fprintf(os.Stderr, "quic bench: steering cost…\n")
		r, err := measureCost(cfg.costRounds, cfg.costN)
		printCost(w, r, err)
	}
	return nil
}

// caddyVersion returns "2.6.2", say, in parentheses, or "".
func caddyVersion(path string) string {
	out, err := exec.Command(path, "version").Output()
	if err != nil {
		return ""
	}
	v, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return "(" + v + ")"
}

// moduleRoot finds the directory of the quic module's go.mod, from the
// working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/handoff-dev/handoff/quic\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run from within handoff's quic module (its directory quic/)")
		}
		dir = parent
	}
}
