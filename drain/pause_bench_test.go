package drain_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"
)

// BenchmarkPause times Pause with the server's Accept parked on its
// listener, as it is when an upgrade's bake begins: Pause returns once that
// Accept has returned. Between rounds, a connection is served after Resume,
// so that the next round's Accept is parked again. It reports the median and
// the 90th percentile of Pause alone (pause-p50-µs, pause-p90-µs).
func BenchmarkPause(b *testing.B) {
	d, addr := serveDrainer(b, time.Second, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer d.Drain(context.Background())
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() {
		resp, err := client.Post("http://"+addr+"/", "text/plain", nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		d.Pause()
		took = append(took, time.Since(start))
		d.Resume()
		get()
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "pause-p50-µs")
	b.ReportMetric(float64(took[len(took)*9/10].Microseconds()), "pause-p90-µs")
}
