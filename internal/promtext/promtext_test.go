package promtext

import (
	"bytes"
	"math"
	"testing"
)

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	p := NewWriter(&b)
	p.Counter("x_total", "Things.", Sample{L("kind", `a"b\c`), 3}, Sample{nil, 1.5})
	p.Gauge("y", "Level\nnow.", Sample{L("a", "1", "b", "2"), math.Inf(1)})
	h := NewHistogram(1, 0.5)
	for _, v := range []float64{0.2, 0.7, 3} {
		h.Observe(v)
	}
	p.Histogram("z_seconds", "Durations.", h)
	want := `# HELP x_total Things.
# TYPE x_total counter
x_total{kind="a\"b\\c"} 3
x_total 1.5
# HELP y Level now.
# TYPE y gauge
y{a="1",b="2"} +Inf
# HELP z_seconds Durations.
# TYPE z_seconds histogram
z_seconds_bucket{le="0.5"} 1
z_seconds_bucket{le="1"} 2
z_seconds_bucket{le="+Inf"} 3
z_seconds_sum 3.9
z_seconds_count 3
`
	if b.String() != want || p.Err() != nil {
		t.Errorf("got (err %v):\n%s\nwant:\n%s", p.Err(), b.String(), want)
	}
}
