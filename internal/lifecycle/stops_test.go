package lifecycle

import (
	"testing"
	"time"
)

func TestStops(t *testing.T) {
	for _, tc := range []struct {
		name      string
		delay     time.Duration
		delayable []bool // one per signal
		delayOver int    // call DelayOver before this signal (-1: never)
		want      []StopStep
	}{
		{"no delay escalates", 0, []bool{true, true, true, true}, -1, []StopStep{StopBegin, StopAgain, StopNow, StopNow}},
		{"delay, then a signal skips it", time.Second, []bool{true, true, true, true}, -1, []StopStep{StopDelay, StopSkipDelay, StopAgain, StopNow}},
		{"delay over, then a signal cuts", time.Second, []bool{true, true, true}, 1, []StopStep{StopDelay, StopAgain, StopNow}},
		{"a stop under way is not delayed", time.Second, []bool{false, false}, -1, []StopStep{StopBegin, StopAgain}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Stops{Delay: tc.delay}
			for i, d := range tc.delayable {
				if i == tc.delayOver && !s.DelayOver() {
					t.Fatalf("DelayOver before signal %d reported no delay running", i+1)
				}
				if got := s.Signal(d); got != tc.want[i] {
					t.Fatalf("signal %d: got step %d, want %d", i+1, got, tc.want[i])
				}
				if s.Delaying() != (tc.want[i] == StopDelay) {
					t.Fatalf("signal %d: Delaying() = %v after step %d", i+1, s.Delaying(), tc.want[i])
				}
			}
			if s.DelayOver() {
				t.Error("DelayOver reported a delay running after the signals ended it")
			}
		})
	}
}
