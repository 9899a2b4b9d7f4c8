package upgrader

import (
	"encoding/json"
	"testing"
)

// A generation takes its predecessor's counters whether or not that
// release had the handover's histogram: without it, the histogram starts
// empty; with it, its observations carry on.
func TestMetricsBookAdoptsOlderCounters(t *testing.T) {
	var from metricsBook
	from.c = newCounters()
	from.do(func(c *counters) {
		c.Ready = 3
		c.HandoverSec.Observe(0.7)
	})
	var m map[string]any
	if err := json.Unmarshal([]byte(from.encode()), &m); err != nil {
		t.Fatal(err)
	}
	for _, hs := range []any{nil, "absent", map[string]any{"Bounds": []float64{1, 2, 3}, "Counts": []uint64{0, 1, 0, 0}, "Sum": 1.5, "N": 1}} {
		// As a release before it sent them, or a histogram of other buckets.
		if hs == "absent" {
			delete(m, "HandoverSec")
		} else {
			m["HandoverSec"] = hs
		}
		old, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var to metricsBook
		to.c = newCounters()
		to.adopt(string(old))
		to.do(func(c *counters) {
			if c.Ready != 3 || c.HandoverSec == nil || c.HandoverSec.N != 0 || len(c.HandoverSec.Bounds) != len(handoverBuckets) {
				t.Fatalf("from counters with HandoverSec %v: ready %d, handover histogram %+v; want 3 and an empty one of the handover's buckets", hs, c.Ready, c.HandoverSec)
			}
		})
	}
	var same metricsBook
	same.c = newCounters()
	same.adopt(from.encode())
	same.do(func(c *counters) {
		if c.HandoverSec.N != 1 || c.HandoverSec.Sum != 0.7 {
			t.Fatalf("from the same release: handover histogram %+v, want its one observation (0.7 s)", c.HandoverSec)
		}
	})
}
