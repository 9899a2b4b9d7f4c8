// Package promtext writes metrics in the Prometheus text exposition format
// (version 0.0.4), which every Prometheus-compatible scraper reads: a few
// hundred lines instead of a client library, so that handoff run stays
// small and programs using the library take on no metrics dependency.
package promtext

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ContentType is the Content-Type of the text format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Writer writes metric families to an io.Writer. The first error sticks and
// is returned by Err; later writes do nothing.
type Writer struct {
	w   io.Writer
	err error
}

// NewWriter returns a Writer to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Err returns the first write error, if any.
func (p *Writer) Err() error { return p.err }

func (p *Writer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// Labels are a sample's labels, as name, value pairs.
type Labels []string

// L builds Labels from name, value pairs.
func L(pairs ...string) Labels { return pairs }

func (l Labels) String() string {
	if len(l) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(l); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l[i])
		b.WriteString(`="`)
		b.WriteString(escape(l[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

func value(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Sample is one value of a family.
type Sample struct {
	Labels Labels
	Value  float64
}

// Family writes the HELP and TYPE lines of a counter or gauge named name,
// then its samples.
func (p *Writer) Family(name, typ, help string, samples ...Sample) {
	p.printf("# HELP %s %s\n# TYPE %s %s\n", name, strings.ReplaceAll(help, "\n", " "), name, typ)
	for _, s := range samples {
		p.printf("%s%s %s\n", name, s.Labels, value(s.Value))
	}
}

// Counter writes one counter family; Gauge one gauge family.
func (p *Writer) Counter(name, help string, samples ...Sample) {
	p.Family(name, "counter", help, samples...)
}

// Gauge writes one gauge family.
func (p *Writer) Gauge(name, help string, samples ...Sample) {
	p.Family(name, "gauge", help, samples...)
}

// Histogram counts observations in buckets with the upper bounds it was
// made with. The zero value is not usable: make one with NewHistogram. Its
// fields are exported so that it travels as JSON (from one process to the
// next); change them only through Observe.
type Histogram struct {
	Bounds []float64
	Counts []uint64 // per bucket, not cumulative; the last is +Inf
	Sum    float64
	N      uint64
}

// NewHistogram returns a Histogram with these upper bounds, sorted.
func NewHistogram(bounds ...float64) *Histogram {
	b := append([]float64(nil), bounds...)
	sort.Float64s(b)
	return &Histogram{Bounds: b, Counts: make([]uint64, len(b)+1)}
}

// Observe adds one observation.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.Bounds, v)
	h.Counts[i]++
	h.Sum += v
	h.N++
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.N }

// Cumulative returns the count of observations at or under each bound, as
// client libraries take a histogram's buckets (the +Inf one is Count).
func (h *Histogram) Cumulative() map[float64]uint64 {
	out := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		out[b] = cum
	}
	return out
}

// Clone returns a copy, for a snapshot taken under a lock.
func (h *Histogram) Clone() *Histogram {
	c := *h
	c.Bounds = append([]float64(nil), h.Bounds...)
	c.Counts = append([]uint64(nil), h.Counts...)
	return &c
}

// Histogram writes h as the histogram family name.
func (p *Writer) Histogram(name, help string, h *Histogram) {
	p.printf("# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		p.printf("%s_bucket{le=\"%s\"} %d\n", name, value(b), cum)
	}
	p.printf("%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, h.N, name, value(h.Sum), name, h.N)
}
