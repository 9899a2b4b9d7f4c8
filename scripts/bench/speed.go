package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The restart-speed section times, from outside, SIGHUP → the first answer
// from the new generation, for the library (examples/httpserver) and the
// daemon (handoff run examples/app), against the floor: fork+exec of a plain
// Go server answering its first request on an inherited fd. The three are
// measured in interleaved rounds, so that a busy moment of the machine
// weighs on all of them alike. Where the time goes is read from the JSON log
// records of the processes (times in nanoseconds).

// speedSample is one upgrade: the total and its phases, in the order they
// happen.
type speedSample struct {
	total  time.Duration
	phases []time.Duration
}

// speedTarget is a server upgraded on SIGHUP.
type speedTarget struct {
	name    string
	phases  []string // the names of speedSample.phases
	dir     string
	address string
	sigPid  int // the process that gets SIGHUP (the library: the serving generation)
	b       *base
	daemon  bool
	samples []speedSample
}

func printSpeed(w io.Writer, e *env, rounds int) {
	lib := &speedTarget{name: "library", phases: []string{
		"signal handled",
		"fork, exec, runtime, main → upgrader.New",
		"sockets taken",
		"ready sent",
		"old generation stops accepting (it pauses for the bake)",
		"first answer",
	}}
	dmn := &speedTarget{name: "daemon", daemon: true, phases: []string{
		"signal handled",
		"environment, notify socket, pipes",
		"fork, exec, LISTEN_PID written",
		"program start → READY=1 seen",
		"old generation told (SIGTERM)",
		"first answer",
	}}
	for _, t := range []*speedTarget{lib, dmn} {
		if err := t.start(e); err != nil {
			fmt.Fprintf(w, "restart speed: %s: %v\n", t.name, err)
			return
		}
		defer t.b.stop()
	}
	var floor []time.Duration
	for i := 0; i < rounds; i++ {
		floor = append(floor, measureFloor(e, 1)...)
		for _, t := range []*speedTarget{lib, dmn} {
			if err := t.upgrade(quietFor(floor)); err != nil {
				fmt.Fprintf(w, "restart speed: %s: %v\n", t.name, err)
				return
			}
		}
	}
	f := pct(floor, 50)
	fmt.Fprintf(w, "restart speed, SIGHUP → first answer from the new generation (%d interleaved rounds; p50):\n", rounds)
	fmt.Fprintf(w, "  floor (fork+exec of a plain Go server answering on an inherited fd): %s (p10 %s)\n", ms(f), ms(pct(floor, 10)))
	where := "in the benchmark's directory (not tmpfs: the library's Ready waits on writing it)"
	if e.pidDir != "" {
		where = "on tmpfs, as /run is"
	}
	fmt.Fprintf(w, "  (the library's pid file is %s; the polls for a new generation's answer begin at 3/4 of the fastest floor so far, %s in the end: an earlier one could only reach the old generation, and takes CPU from the new one)\n", where, ms(quietFor(floor)))
	for _, t := range []*speedTarget{lib, dmn} {
		var totals []time.Duration
		for _, s := range t.samples {
			totals = append(totals, s.total)
		}
		total := pct(totals, 50)
		// On a shared machine the other programs only ever add time: the
		// fastest tenth of the rounds is the cost of the thing itself.
		f10, t10 := pct(floor, 10), pct(totals, 10)
		fmt.Fprintf(w, "  %s: %s = %.2f× the floor (p25–p75 %s–%s; p10 %s = %.2f× the floor's p10); where it goes, p50 of each phase:",
			t.name, ms(total), float64(total)/float64(f), ms(pct(totals, 25)), ms(pct(totals, 75)), ms(t10), float64(t10)/float64(f10))
		for i, name := range t.phases {
			var d []time.Duration
			for _, s := range t.samples {
				if i < len(s.phases) {
					d = append(d, s.phases[i])
				}
			}
			sep := ","
			if i == 0 {
				sep = ""
			}
			if len(d) == 0 {
				fmt.Fprintf(w, "%s %s –", sep, name)
				continue
			}
			fmt.Fprintf(w, "%s %s %s", sep, name, ms(pct(d, 50)))
		}
		fmt.Fprintln(w)
	}
	time.Sleep(200 * time.Millisecond) // let the last old generation's exit be handled
	fmt.Fprintf(w, "  handoff run's RSS after %d reloads: %.1f MiB (static build, as released)\n", rounds, float64(rssKB(dmn.sigPid))/1024)
}

func (t *speedTarget) start(e *env) error {
	t.b = &base{e: e, dir: mustTemp(e.dir, "speed-"+t.name), address: freeAddr()}
	t.b.pidfile = filepath.Join(t.b.dir, "pid")
	if !t.daemon && e.pidDir != "" {
		t.b.pidfile = filepath.Join(e.pidDir, "speed-"+t.name+".pid")
	}
	t.dir, t.address = t.b.dir, t.b.address
	if t.daemon {
		cmd, err := t.b.launch(e.bins["handoff"], "run", "--log-format", "json", "--control", filepath.Join(t.dir, "control.sock"),
			"--listen", "web="+t.address, "--", e.bins["app"])
		if err != nil {
			return err
		}
		t.sigPid = cmd.Process.Pid
	} else {
		if _, err := t.b.launch(e.bins["httpserver"], "-addr", t.address, "-pidfile", t.b.pidfile, "-log-format", "json"); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if pid, err := answer(t.address); err == nil {
			if !t.daemon {
				t.sigPid = pid
			}
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no answer in 10s; see %s", filepath.Join(t.dir, "log"))
}

// quietFor is how long after the signal the polls for a new generation's
// answer begin: 3/4 of the fastest floor measured so far. No new generation
// answers sooner than a plain server could, so a poll before then can only
// reach the old generation; and every poll takes CPU from the process
// starting beside it (polling every millisecond from the signal on slowed a
// library generation's start, fork to main, by 2–4 ms on a 2-core machine).
// A late first poll can only add to what is measured, never take from it.
func quietFor(floor []time.Duration) time.Duration {
	if len(floor) == 0 {
		return 0
	}
	return slices.Min(floor) * 3 / 4
}

// upgrade sends SIGHUP and, from quiet on, polls with fresh connections
// until a pid other than the serving one answers, then waits for the old
// generation to exit.
func (t *speedTarget) upgrade(quiet time.Duration) error {
	old, err := answer(t.address)
	if err != nil {
		return err
	}
	logStart := fileSize(filepath.Join(t.dir, "log"))
	start := time.Now()
	if err := syscall.Kill(t.sigPid, syscall.SIGHUP); err != nil {
		return err
	}
	var pid int
	deadline := start.Add(30 * time.Second)
	time.Sleep(time.Until(start.Add(quiet)))
	for {
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer from a new generation in 30s; see %s", filepath.Join(t.dir, "log"))
		}
		if p, err := answer(t.address); err == nil && p != old {
			pid = p
			break
		}
		time.Sleep(pollEvery)
	}
	end := time.Now()
	for alive(old) && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if !t.daemon {
		t.sigPid = pid
	}
	recs := readRecords(filepath.Join(t.dir, "log"), logStart)
	s := speedSample{total: end.Sub(start)}
	// The marks between the phases, from the records' times. A phase may
	// read negative: the new generation can answer before its readiness is
	// reported, since both generations accept on the same socket.
	var marks []time.Time
	if t.daemon {
		// generation.started comes once the program runs; exec_us
		// before it, handoff forked.
		started := recFind(recs, "generation.started", "gen_pid", pid)
		execDone, forked := recTimeOf(started), time.Time{}
		if exec := recMicros(started, "exec_us"); !execDone.IsZero() && exec >= 0 {
			forked = execDone.Add(-exec)
		}
		marks = []time.Time{
			recTime(recs, "reload.asked", "", 0),
			forked,
			execDone,
			recTime(recs, "generation.ready", "gen_pid", pid),
			recTime(recs, "generation.draining", "gen_pid", old),
		}
	} else {
		marks = []time.Time{
			recTime(recs, "upgrade.asked", "pid", old),
			recTime(recs, "upgrade.started", "child_pid", pid),
			recTime(recs, "listening", "pid", pid),
			recTime(recs, "ready", "pid", pid),
			recTime(recs, "bake.started", "child_pid", pid),
		}
	}
	prev := start
	for _, m := range append(marks, end) {
		if m.IsZero() {
			s.phases = nil
			break
		}
		s.phases = append(s.phases, m.Sub(prev))
		prev = m
	}
	t.samples = append(t.samples, s)
	return nil
}

var speedClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// answer POSTs once on a fresh connection and returns the pid that answered.
func answer(addr string) (int, error) {
	resp, err := speedClient.Post("http://"+addr+"/", "text/plain", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(string(body), "pid=")))
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readRecords returns the JSON log records of path from offset on, each
// flattened: the attributes of groups are merged into the top level.
func readRecords(path string, offset int64) []map[string]any {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		for k, v := range m {
			if g, ok := v.(map[string]any); ok {
				for gk, gv := range g {
					m[gk] = gv
				}
				delete(m, k)
			}
		}
		out = append(out, m)
	}
	return out
}

// recFind returns the first record of event (its stable "event" key:
// messages change wording) whose key holds the number want — any record of
// event if key is "" — or nil.
func recFind(recs []map[string]any, event, key string, want int) map[string]any {
	for _, r := range recs {
		if r["event"] != event {
			continue
		}
		if key != "" {
			if v, ok := r[key].(float64); !ok || int(v) != want {
				continue
			}
		}
		return r
	}
	return nil
}

// recTime returns the time of recFind's record, or the zero time.
func recTime(recs []map[string]any, event, key string, want int) time.Time {
	return recTimeOf(recFind(recs, event, key, want))
}

// recTimeOf returns the time of record r, or the zero time.
func recTimeOf(r map[string]any) time.Time {
	s, _ := r["time"].(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// recMicros returns the duration in microseconds that r holds at key, or
// -1 if it holds none (a handoff from before the key).
func recMicros(r map[string]any, key string) time.Duration {
	v, ok := r[key].(float64)
	if !ok {
		return -1
	}
	return time.Duration(v) * time.Microsecond
}

// pollEvery spaces the polls for the new generation's answer: a tighter loop
// takes CPU from the starting process (the floor's single request waits in
// the kernel instead) and so slows what it measures.
const pollEvery = time.Millisecond
