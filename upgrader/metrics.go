package upgrader

import (
	"bytes"
	"encoding/json"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/handoff-dev/handoff/drain"
	"github.com/handoff-dev/handoff/internal/promtext"
)

// Metrics are the figures of a program's upgrades and drains, for a
// monitoring system. Counters are carried from each generation to the next
// (the old one sends them over the control channel when it hands over, and
// its drain's figures when the drain ends), so that they count since the
// program started rather than since this process did; they start again
// from zero when the program restarts.
//
// Serve them with MetricsHandler (the Prometheus text format), or copy them
// into a registry of your own, without handoff depending on a metrics
// library: with prometheus/client_golang, a collector's Collect method can
// send prometheus.MustNewConstMetric for the counters and
// prometheus.MustNewConstHistogram(desc, h.Count, h.Sum, h.Buckets) for the
// histograms.
type Metrics struct {
	// Generation is this generation's number, Started when it started.
	Generation int
	Started    time.Time
	// Upgrades count the upgrades that ended: a new generation ready,
	// failed (it exited, was not ready within UpgradeTimeout, or could not
	// start), rolled back (it was ready but failed its bake window, see
	// Options.Bake), or refused (where upgrades cannot work: PID 1, no way
	// to pass sockets).
	UpgradesReady, UpgradesFailed, UpgradesRefused int
	UpgradesRolledBack                             int
	// UpgradeDuration is how long the upgrades that ended ready took, from
	// their start to the handover (the new generation's Ready, and its
	// bake).
	UpgradeDuration DurationHistogram
	// Drains counts the drains that ended in generations that handed over
	// (a stop's drain ends with the program); DrainDuration is how long
	// they took.
	Drains        int
	DrainDuration DurationHistogram
	// What those drains did (see drain.Stats): connections closed idle,
	// sent a GOAWAY, hijacked, and cut at the deadline; background jobs
	// waited for, and cancelled at the deadline.
	DrainIdleClosed, DrainGoAway, DrainHijacked, DrainCut int
	DrainJobs, DrainJobsCancelled                         int
	// Connections moved to a new generation by Handover, as counted by the
	// generations that adopted them: adopted; refused (the old generation
	// drained them); and aborted (prepared, then the old generation ended
	// the handover before it committed them: it died, or gave up).
	HandoverAdopted, HandoverRefused, HandoverAborted int
	// HandoverDuration is how long each handover that moved a connection
	// took, as the generation that adopted measured it: from the first
	// connection offered to it to the last commit.
	HandoverDuration DurationHistogram
}

// DurationHistogram is a histogram of durations, in seconds, as client
// libraries take it: the count and sum of the observations, and how many
// were at or under each bucket's upper bound.
type DurationHistogram struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

// Histogram is the former name of DurationHistogram.
//
// Deprecated: use DurationHistogram.
type Histogram = DurationHistogram

// counters are the Metrics that travel between generations, as JSON.
type counters struct {
	Ready, Failed, Refused int
	RolledBack             int
	UpgradeSec             *promtext.Histogram
	Drains                 int
	DrainSec               *promtext.Histogram
	IdleClosed, GoAway     int
	Hijacked, Cut          int
	Jobs, JobsCancelled    int
	// The handover of connections, counted by the generations that
	// adopted (see Handover).
	Adopted, AdoptRefused, AdoptAborted int
	HandoverSec                         *promtext.Histogram
}

var (
	upgradeBuckets  = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
	drainBuckets    = []float64{0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
	handoverBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

func newCounters() *counters {
	return &counters{UpgradeSec: promtext.NewHistogram(upgradeBuckets...), DrainSec: promtext.NewHistogram(drainBuckets...),
		HandoverSec: promtext.NewHistogram(handoverBuckets...)}
}

// metricsBook holds the counters under a lock: the run goroutine, the
// drain and the control channel's reader write them; scrapes read them.
type metricsBook struct {
	mu sync.Mutex
	c  *counters
}

func (b *metricsBook) do(f func(c *counters)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.c == nil {
		b.c = newCounters()
	}
	f(b.c)
}

// encode returns the counters as one line of JSON, for the next generation.
func (b *metricsBook) encode() string {
	var s []byte
	b.do(func(c *counters) { s, _ = json.Marshal(c) })
	return string(s)
}

// adopt takes the counters a previous generation sent, if they parse.
func (b *metricsBook) adopt(s string) {
	c := newCounters()
	if json.Unmarshal([]byte(s), c) != nil || len(c.UpgradeSec.Counts) != len(upgradeBuckets)+1 || len(c.DrainSec.Counts) != len(drainBuckets)+1 {
		return
	}
	if hs := c.HandoverSec; hs == nil || len(hs.Counts) != len(handoverBuckets)+1 || len(hs.Bounds) != len(handoverBuckets) {
		c.HandoverSec = promtext.NewHistogram(handoverBuckets...) // from a release without it
	}
	b.mu.Lock()
	b.c = c
	b.mu.Unlock()
}

// drained records a drain's figures.
func (b *metricsBook) drained(took time.Duration, st drain.Stats, jobs, cancelled int) {
	b.do(func(c *counters) {
		c.Drains++
		c.DrainSec.Observe(took.Seconds())
		c.IdleClosed += st.IdleClosed
		c.GoAway += st.GoAway
		c.Hijacked += st.Hijacked
		c.Cut += st.Cut
		c.Jobs += jobs
		c.JobsCancelled += cancelled
	})
}

// Metrics returns the figures so far.
func (u *Upgrader) Metrics() Metrics {
	m := Metrics{Generation: u.gen, Started: u.started}
	u.book.do(func(c *counters) {
		m.UpgradesReady, m.UpgradesFailed, m.UpgradesRefused = c.Ready, c.Failed, c.Refused
		m.UpgradesRolledBack = c.RolledBack
		m.UpgradeDuration = DurationHistogram{c.UpgradeSec.N, c.UpgradeSec.Sum, c.UpgradeSec.Cumulative()}
		m.Drains = c.Drains
		m.DrainDuration = DurationHistogram{c.DrainSec.N, c.DrainSec.Sum, c.DrainSec.Cumulative()}
		m.DrainIdleClosed, m.DrainGoAway, m.DrainHijacked, m.DrainCut = c.IdleClosed, c.GoAway, c.Hijacked, c.Cut
		m.DrainJobs, m.DrainJobsCancelled = c.Jobs, c.JobsCancelled
		m.HandoverAdopted, m.HandoverRefused, m.HandoverAborted = c.Adopted, c.AdoptRefused, c.AdoptAborted
		m.HandoverDuration = DurationHistogram{c.HandoverSec.N, c.HandoverSec.Sum, c.HandoverSec.Cumulative()}
	})
	return m
}

// MetricsHandler returns a handler that serves Metrics in the Prometheus
// text format, on the program's own mux or an admin listener opened with
// Listen (so that it is handed over too):
//
//	mux.Handle("GET /metrics", u.MetricsHandler())
func (u *Upgrader) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		u.writeMetrics(&b)
		w.Header().Set("Content-Type", promtext.ContentType)
		_, _ = w.Write(b.Bytes())
	})
}

func (u *Upgrader) writeMetrics(b *bytes.Buffer) {
	var c *counters
	u.book.do(func(x *counters) {
		cp := *x
		cp.UpgradeSec, cp.DrainSec, cp.HandoverSec = x.UpgradeSec.Clone(), x.DrainSec.Clone(), x.HandoverSec.Clone()
		c = &cp
	})
	p := promtext.NewWriter(b)
	S := func(v int) promtext.Sample { return promtext.Sample{Value: float64(v)} }
	L := func(v int, pairs ...string) promtext.Sample {
		return promtext.Sample{Labels: promtext.L(pairs...), Value: float64(v)}
	}
	p.Gauge("handoff_build_info", "The handoff library's version and the Go release, as labels; always 1.",
		promtext.Sample{Labels: promtext.L("version", libraryVersion(), "goversion", runtime.Version()), Value: 1})
	p.Gauge("handoff_generation", "This generation's number.", S(u.gen))
	p.Gauge("handoff_generation_start_time_seconds", "When this generation started, in seconds since the epoch.",
		promtext.Sample{Value: float64(u.started.UnixNano()) / 1e9})
	p.Counter("handoff_upgrades_total", "Upgrades that ended, by outcome: ready, failed, rolled_back (in the bake window), refused.",
		L(c.Ready, "outcome", "ready"), L(c.Failed, "outcome", "failed"), L(c.RolledBack, "outcome", "rolled_back"), L(c.Refused, "outcome", "refused"))
	p.Histogram("handoff_upgrade_duration_seconds", "How long the upgrades that ended ready took.", c.UpgradeSec)
	p.Counter("handoff_drains_total", "Drains that ended in generations that handed over.", S(c.Drains))
	p.Histogram("handoff_drain_duration_seconds", "How long those drains took.", c.DrainSec)
	p.Counter("handoff_drain_connections_total", "Connections those drains closed idle, sent a GOAWAY, saw hijacked, or cut at the deadline.",
		L(c.IdleClosed, "how", "idle_closed"), L(c.GoAway, "how", "go_away"), L(c.Hijacked, "how", "hijacked"), L(c.Cut, "how", "cut"))
	p.Counter("handoff_drain_jobs_total", "Background jobs (Upgrader.Go) those drains waited for, by outcome: done, or cancelled at the deadline.",
		L(c.Jobs-c.JobsCancelled, "outcome", "done"), L(c.JobsCancelled, "outcome", "cancelled"))
	p.Counter("handoff_handover_connections_total", "Connections offered to a new generation by Handover, as the adopting generations counted them, by outcome: adopted, refused (drained by the old one), aborted (not committed before the old one ended the handover).",
		L(c.Adopted, "outcome", "adopted"), L(c.AdoptRefused, "outcome", "refused"), L(c.AdoptAborted, "outcome", "aborted"))
	p.Histogram("handoff_handover_duration_seconds", "How long each Handover that moved connections took, as the adopting generation measured it: from the first connection offered to it to the last commit.", c.HandoverSec)
}

// libraryVersion is the version of this module in the program's build.
func libraryVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if strings.HasPrefix(bi.Main.Path, "github.com/handoff-dev/handoff") {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/handoff-dev/handoff" {
			return d.Version
		}
	}
	return "unknown"
}
