//go:build linux

package metrics

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/daemon/internal/machine"
	"github.com/handoff-dev/handoff/daemon/internal/release"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// Serve serves GET /metrics on ln until it is closed. Each scrape asks
// scrape for the figures (Render's, from the goroutine that owns the
// machine), which returns false if the request ended first, and calls after
// once it has answered.
func Serve(ln net.Listener, scrape func(ctx context.Context) ([]byte, bool), after func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		b, ok := scrape(r.Context())
		if !ok {
			return
		}
		w.Header().Set("Content-Type", promtext.ContentType)
		_, _ = w.Write(b)
		after()
	})
	// Bounds on a scrape's connection, so that a slow or stuck client
	// holds none of handoff's descriptors for long: its request's header
	// within metricsReadTimeout, its answer written within
	// metricsWriteTimeout, and closed once idle for metricsIdleTimeout —
	// the answer fits the kernel's buffers, so that a client that reads it
	// a byte at a time would otherwise keep the connection open for as
	// long as it liked (the kernel finishes sending what it holds after
	// the close).
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: metricsReadTimeout, ReadTimeout: metricsReadTimeout,
		WriteTimeout: metricsWriteTimeout, IdleTimeout: metricsIdleTimeout}
	_ = srv.Serve(ln)
}

// Bounds on a scrape's connection (see Serve).
const (
	metricsReadTimeout  = 5 * time.Second
	metricsWriteTimeout = 10 * time.Second
	metricsIdleTimeout  = 5 * time.Second
)

// Render renders the figures: m is the machine's view, rss the resident
// memory of the serving processes that could be measured, releases what each
// process runs by pid (those identified so far), started when this handoff
// started, version names its build.
func Render(m machine.View, rss map[*gen.Gen]int64, releases map[int]release.Identity, started time.Time, version string) []byte {
	var b bytes.Buffer
	p := promtext.NewWriter(&b)
	p.Gauge("handoff_build_info", "The handoff binary: its version and Go release, as labels; always 1.",
		promtext.Sample{Labels: promtext.L("version", version, "goversion", runtime.Version()), Value: 1})
	p.Gauge("handoff_start_time_seconds", "When this handoff process started, in seconds since the epoch.",
		promtext.Sample{Value: float64(started.UnixNano()) / 1e9})

	var reloads []promtext.Sample
	for _, k := range []string{"ready", "rolled_back"} {
		reloads = append(reloads, promtext.Sample{Labels: promtext.L("outcome", k), Value: float64(m.Reloads[[2]string{k, ""}])})
	}
	var reasons []string
	for k := range m.Reloads {
		if k[0] == "failed" {
			reasons = append(reasons, k[1])
		}
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		reloads = append(reloads, promtext.Sample{Labels: promtext.L("outcome", "failed", "reason", r), Value: float64(m.Reloads[[2]string{"failed", r}])})
	}
	p.Counter("handoff_reloads_total", "Reloads and rollbacks that ended, by outcome: ready (the new generation serves), failed (by reason: exited, not_ready, died_baking, bake_failed, start_failed, stopping), rolled_back (handoff rollback during the bake window).", reloads...)
	p.Histogram("handoff_reload_duration_seconds", "How long each reload that ended ready took, from the ask to the last new worker serving.", m.ReloadSec)
	p.Gauge("handoff_reload_in_progress", "1 while a reload, rollback or worker replacement runs.", promtext.Sample{Value: b2f(m.Rolling)})

	byState := map[string]int{}
	for _, g := range m.Gens {
		byState[g.State.String()]++
	}
	var states []promtext.Sample
	for _, st := range []string{"starting", "baking", "ready", "draining"} {
		states = append(states, promtext.Sample{Labels: promtext.L("state", st), Value: float64(byState[st])})
	}
	p.Gauge("handoff_processes", "The program's processes handoff runs, by state: one per worker of each generation not exited.", states...)
	if g := m.Current; g != nil {
		p.Gauge("handoff_serving_generation", "The number of the generation serving (worker 0's).", promtext.Sample{Value: float64(g.N)})
		p.Gauge("handoff_serving_generation_start_time_seconds", "When the serving generation (worker 0's) started, in seconds since the epoch.",
			promtext.Sample{Value: float64(g.Started.UnixNano()) / 1e9})
	}
	p.Histogram("handoff_drain_duration_seconds", "How long each old process took to exit after its stop signal.", m.DrainSec)
	p.Counter("handoff_drain_timeouts_total", "Old processes killed because they had not exited within --drain-timeout.", promtext.Sample{Value: float64(m.DrainsKilled)})
	p.Counter("handoff_restarts_total", "Restarts of a worker that exited on its own.", promtext.Sample{Value: float64(m.Restarts)})
	p.Counter("handoff_killed_total", "Processes handoff killed with SIGKILL: not ready in time, hung, past --drain-timeout or --max-draining, a second stop signal.", promtext.Sample{Value: float64(m.Killed)})

	p.Counter("handoff_watch_reloads_total", "Reloads asked because what --watch watches changed in content.", promtext.Sample{Value: float64(m.WatchReloads)})
	if m.Handover != nil {
		p.Counter("handoff_handover_connections_total", "With --handover, connections a process offered to the one replacing it, relayed by handoff, by outcome: handed_over (committed: the new process adopted them), refused (by the new one), fallback (aborted before their commit: the new one died or closed its channel); the old process drains those refused or fallen back.",
			promtext.Sample{Labels: promtext.L("outcome", "handed_over"), Value: float64(m.Handover["handed_over"])},
			promtext.Sample{Labels: promtext.L("outcome", "refused"), Value: float64(m.Handover["refused"])},
			promtext.Sample{Labels: promtext.L("outcome", "fallback"), Value: float64(m.Handover["fallback"])})
	}
	if m.HandoverSec != nil {
		p.Histogram("handoff_handover_duration_seconds", "With --handover, how long each relay that moved connections took to move them: from the start of the relay (the old process's stop signal follows it) to the last commit handoff passed on.", m.HandoverSec)
	}
	p.Counter("handoff_unresponsive_total", "Serving processes replaced because they were shown hung (--hung-after, --health).", promtext.Sample{Value: float64(m.Unresponsive)})

	var up, restarts, hung, mem []promtext.Sample
	for w, sl := range m.Workers {
		l := promtext.L("worker", strconv.Itoa(w))
		up = append(up, promtext.Sample{Labels: l, Value: b2f(sl.Cur != nil)})
		restarts = append(restarts, promtext.Sample{Labels: l, Value: float64(sl.Restarts)})
		hung = append(hung, promtext.Sample{Labels: l, Value: float64(sl.Unresponsive)})
		if n, ok := rss[sl.Cur]; ok && sl.Cur != nil {
			mem = append(mem, promtext.Sample{Labels: l, Value: float64(n)})
		}
	}
	p.Gauge("handoff_worker_up", "1 when a process serves at this worker index.", up...)
	p.Counter("handoff_worker_restarts_total", "Restarts at this worker index after its process exited on its own.", restarts...)
	p.Counter("handoff_worker_unresponsive_total", "Processes at this worker index replaced because they were shown hung.", hung...)
	p.Gauge("handoff_worker_resident_memory_bytes", "The resident memory of the process serving at this worker index.", mem...)

	var rel, mod []promtext.Sample
	for _, g := range m.Gens {
		id, ok := releases[g.PID]
		if !ok || g.State == gen.Exited {
			continue
		}
		l := []string{"generation", strconv.Itoa(g.N), "worker", strconv.Itoa(g.W), "state", g.State.String(),
			"path", id.Program.Path, "sha256", id.Program.SHA256, "size_bytes", strconv.FormatInt(id.Program.Size, 10)}
		if id.Script != nil {
			l = append(l, "script", id.Script.Path, "script_sha256", id.Script.SHA256)
		}
		rel = append(rel, promtext.Sample{Labels: promtext.L(l...), Value: 1})
		mod = append(mod, promtext.Sample{Labels: promtext.L("generation", strconv.Itoa(g.N), "worker", strconv.Itoa(g.W)), Value: float64(id.Program.Modified.UnixNano()) / 1e9})
	}
	p.Gauge("handoff_release_info", "What each process runs, as labels: its program's file (symlinks resolved), SHA-256 and size, and the script an interpreter runs; always 1.", rel...)
	p.Gauge("handoff_release_modified_time_seconds", "When the program's file each process runs was last modified, in seconds since the epoch.", mod...)
	if err := p.Err(); err != nil {
		return []byte(fmt.Sprintf("# error: %v\n", err))
	}
	return b.Bytes()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
