package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// quicTimeout bounds the QUIC section: its three rows and the cost measure
// (about four minutes at 200 clients and 20 releases here).
const quicTimeout = 20 * time.Minute

// printQUIC runs the QUIC section, which lives in the quic module
// (quic/internal/bench) so that this module does not depend on quic-go:
// HTTP/3 clients through releases of examples/http3 on one shared socket
// (the baseline) and steered, Caddy as a peer, and the steering program's
// cost per datagram. Its Markdown goes to w as it comes.
func printQUIC(w io.Writer, cfg config, root string) {
	ctx, cancel := context.WithTimeout(context.Background(), quicTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./internal/bench",
		"--clients", strconv.Itoa(cfg.quicClients), "--releases", strconv.Itoa(cfg.quicReleases))
	cmd.Dir = filepath.Join(root, "quic")
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(w, "\nQUIC section: could not run `go run ./internal/bench` in quic/: %v (it needs root, or CAP_BPF and CAP_NET_ADMIN, for the steered row; see its output above and stderr)\n", err)
	}
}
