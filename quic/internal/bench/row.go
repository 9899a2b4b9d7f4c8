package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// rowResult is one server's run through the releases.
type rowResult struct {
	load     *load
	clients  int
	releases int
	ready    []time.Duration // release → the new version serves
	drain    []time.Duration // the new version serves → the old one has exited
	marks    []time.Time     // when each release began
	err      error
}

// window is how long after a release's start a request counts as "during"
// it, for the latency.
const window = time.Second

// runRow starts t, puts the load on it and releases it cfg.releases times:
// each release once the old generation has exited and every client has had
// about twenty answers since (two seconds at the default period, twice the
// latency's window), so that each release meets a settled server.
func runRow(cfg config, t target) rowResult {
	r := rowResult{clients: cfg.clients}
	addr, sni, err := t.start()
	defer t.stop() // also what a failed start left running
	if err != nil {
		r.err = fmt.Errorf("could not start: %w", err)
		return r
	}
	r.load = startLoad(addr, sni, cfg.clients, cfg.period)
	settle := int64(cfg.clients) * 20
	settleTimeout := 30*cfg.period + 30*time.Second
	if !r.load.waitAnswered(settle, settleTimeout) {
		r.load.end()
		r.err = fmt.Errorf("fewer than %d answers within %v of the start", settle, settleTimeout)
		return r
	}
	r.load.settled()
	for i := range cfg.releases {
		mark := time.Now()
		old, err := t.release()
		if err != nil {
			r.err = fmt.Errorf("release %d: %w", i+1, err)
			break
		}
		served := time.Now()
		r.marks = append(r.marks, mark)
		r.ready = append(r.ready, served.Sub(mark))
		r.releases++
		if old > 0 {
			if !waitGone(old, cfg.drain+10*time.Second) {
				r.err = fmt.Errorf("release %d: the old generation (pid %d) still runs %v after its drain began", i+1, old, cfg.drain+10*time.Second)
				break
			}
			r.drain = append(r.drain, time.Since(served))
		}
		if !r.load.waitAnswered(settle, settleTimeout) {
			r.err = fmt.Errorf("release %d: fewer than %d answers within %v after it", i+1, settle, settleTimeout)
			break
		}
	}
	r.load.end()
	r.load.mu.Lock()
	for _, s := range r.load.samples {
		fmt.Fprintf(os.Stderr, "quic bench:   %s\n", s)
	}
	r.load.mu.Unlock()
	return r
}

// printRow writes r as a line of the table.
func printRow(w io.Writer, label string, r rowResult) {
	if r.load == nil {
		fmt.Fprintf(w, "| %s | %v | | | | | | |\n", label, r.err)
		return
	}
	l := r.load
	releases := fmt.Sprint(r.releases)
	if r.err != nil {
		releases += fmt.Sprintf(" (stopped: %v)", r.err)
	}
	in, out := l.latencies(r.marks, window)
	ratio := "–"
	if out > 0 && in > 0 {
		ratio = fmt.Sprintf("%.1f× (%s / %s)", float64(in)/float64(out), ms(in), ms(out))
	}
	drain := "–"
	if len(r.drain) > 0 {
		drain = ms(pct(r.drain, 50)) + " / " + ms(pct(r.drain, 100))
	}
	fmt.Fprintf(w, "| %s | %s | %d of %d | %d | %s | %s / %s | %s | %s |\n", label, l.failures(), l.broken.Load(), l.dials.Load(),
		l.dials.Load()-int64(r.clients), releases, ms(pct(r.ready, 50)), ms(pct(r.ready, 100)), ratio, drain)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
