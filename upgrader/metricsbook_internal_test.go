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
	delete(m, "HandoverSec") // as a release before it sent them
	old, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var to metricsBook
	to.c = newCounters()
	to.adopt(string(old))
	to.do(func(c *counters) {
		if c.Ready != 3 || c.HandoverSec == nil || c.HandoverSec.N != 0 {
			t.Fatalf("from an older release: ready %d, handover histogram %+v; want 3 and an empty one", c.Ready, c.HandoverSec)
		}
	})
	var same metricsBook
	same.c = newCounters()
	same.adopt(from.encode())
	same.do(func(c *counters) {
		if c.HandoverSec.N != 1 || c.HandoverSec.Sum != 0.7 {
			t.Fatalf("from the same release: handover histogram %+v, want its one observation (0.7 s)", c.HandoverSec)
		}
	})
}
