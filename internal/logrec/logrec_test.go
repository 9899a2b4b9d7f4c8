package logrec

import "testing"

func TestMatch(t *testing.T) {
	recs := Parse(`not json
{"time":"x","level":"INFO","msg":"drained","gen":2,"pid":1234,"conns":1000000,"err":"exit status 3; its last stderr: bad port"}
{"msg":"ready","pid":99,"queued":"after the upgrade in progress"}
{broken`)
	if len(recs) != 2 {
		t.Fatalf("parsed %d records, want 2", len(recs))
	}
	for _, c := range []struct {
		terms []string
		want  bool
	}{
		{[]string{"drained"}, true},
		{[]string{"msg=drained", "pid=1234", "conns=1000000"}, true},
		{[]string{"drained", "pid=123"}, false},
		{[]string{"err~its last stderr", "err~bad port"}, true},
		{[]string{"err~good port"}, false},
		{[]string{"ready", "queued~"}, true},
		{[]string{"drained", "queued~"}, false},
		{[]string{"ready", "missing="}, false},
	} {
		if got := Find(recs, c.terms...) != nil; got != c.want {
			t.Errorf("Find(%q) = %v, want %v", c.terms, got, c.want)
		}
	}
	if n := Count(recs, "pid~9"); n != 1 {
		t.Errorf("Count(pid~9) = %d, want 1", n)
	}
	if r := Last(recs, "level~"); r.Get("msg") != "drained" {
		t.Errorf("Last(level~) = %v", r)
	}
	if s := Find(recs, "ready").String(); s != `{"msg":"ready","pid":99,"queued":"after the upgrade in progress"}` {
		t.Errorf("String() = %s", s)
	}
}
