// Command test runs handoff's tests, all of them, as README.md's test command
// (go run ./scripts/test): every package of the module and of its other
// modules (examples/websocket, examples/grpc, quic), with the race detector,
// one package at a time in each of two queues that run side by side.
//
// The tests wait far more than they compute (one queue uses about a third of
// 2 cores), so two queues share the machine. What decides the queue is
// whether a package's tests count a load's failures against a tight bound on
// a busy machine: those (the daemon's, the helpers', the end-to-end tests,
// the upgrader's) stay in the first queue, one package after another as
// before; the second takes the packages that measure nothing of the kind or
// whose loads are light (ansible's rolling deploy at 100 requests a second
// per host, the benchmark's smokes, the watch, the QUIC steering, drain, and
// the other modules, which CI had long run beside the first queue already,
// on the second Go release).
// A package not listed in light goes to the first queue.
//
// A queue's go test runs all its packages; a failure stops the queue's later
// commands, as the && of a shell line would. The command exits 1 if either
// queue failed. -n prints the commands only.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// light are the packages of the module that run in the second queue, in
// this order: the rolling deploy first, beside the daemon's tests rather
// than the helpers' (ansible-playbook takes a core while it runs).
var light = []string{
	"examples/ansible",
	"scripts/bench",
	"daemon/internal/watch",
	"internal/quicsteer",
	"drain",
}

// others are the other modules, tested whole after light, in the second
// queue: directory and go test's arguments.
var others = [][]string{
	{"examples/websocket", "-race", "-count=1", "./..."},
	{"examples/grpc", "-race", "-count=1", "./..."},
	{"quic", "-race", "-p", "1", "-count=1", "./..."},
}

// step is one go test command: its directory and arguments.
type step struct {
	dir  string
	args []string
}

func (s step) String() string {
	return fmt.Sprintf("(cd %s && go test %s)", s.dir, strings.Join(s.args, " "))
}

func main() {
	dry := flag.Bool("n", false, "print the commands, run nothing")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/test [-n]\n\nRuns every test of handoff's modules with the race detector, in two queues side by side (see the package comment).")
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "test: unexpected argument %q: it takes none but -n (to run some tests, use go test)\n", flag.Arg(0))
		os.Exit(2)
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		os.Exit(2)
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// No 1 s pause at each race-enabled binary's exit (CONTRIBUTING.md).
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	first, second, err := queues(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test:", err)
		os.Exit(1)
	}
	if *dry {
		for i, q := range [][]step{first, second} {
			fmt.Printf("# queue %d\n", i+1)
			for _, s := range q {
				fmt.Println(s)
			}
		}
		return
	}
	out := &lines{w: os.Stdout}
	var wg sync.WaitGroup
	failed := make([]string, 2)
	for i, q := range [][]step{first, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			for _, s := range q {
				if err := run(root, s, out); err != nil {
					failed[i] = fmt.Sprintf("%s: %v", s, err)
					out.printf("test: queue %d failed after %.0f s: %s\n", i+1, time.Since(start).Seconds(), failed[i])
					return
				}
			}
			out.printf("test: queue %d passed in %.0f s\n", i+1, time.Since(start).Seconds())
		}()
	}
	wg.Wait()
	for _, f := range failed {
		if f != "" {
			os.Exit(1)
		}
	}
}

// queues lists the two queues' commands for the module at root.
func queues(root string) (first, second []step, err error) {
	list := exec.Command("go", "list", "-f", "{{.Dir}}", "./...")
	list.Dir = root
	list.Stderr = os.Stderr
	b, err := list.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go list ./...: %w", err)
	}
	isLight := map[string]bool{}
	for _, p := range light {
		isLight[filepath.Join(root, p)] = true
	}
	common := []string{"-race", "-p", "1", "-parallel", "4", "-count=1"}
	heavy := slices.Clone(common)
	lite := slices.Clone(common)
	found := 0
	for _, p := range light {
		lite = append(lite, "./"+p)
	}
	for _, dir := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		path, err := filepath.Rel(root, dir)
		if err != nil {
			return nil, nil, err
		}
		path = "./" + filepath.ToSlash(path)
		if isLight[dir] {
			found++
		} else {
			heavy = append(heavy, path)
		}
	}
	if found != len(light) {
		return nil, nil, fmt.Errorf("%d of the %d packages of the second queue found (%v): update scripts/test's list", found, len(light), light)
	}
	first = []step{{".", heavy}}
	second = []step{{".", lite}}
	for _, o := range others {
		second = append(second, step{o[0], o[1:]})
	}
	return first, second, nil
}

// run runs s in root, its output to out line by line.
func run(root string, s step, out *lines) error {
	out.printf("test: %s\n", s)
	cmd := exec.Command("go", append([]string{"test"}, s.args...)...)
	cmd.Dir = filepath.Join(root, s.dir)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			out.printf("%s\n", sc.Text())
		}
		if sc.Err() != nil { // a line over 16 MiB: the rest as it comes
			out.printf("test: a line of over 16 MiB; what follows is not split into lines\n")
			_, _ = io.Copy(out, pr)
		}
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	return err
}

// lines writes whole lines from several goroutines, one at a time.
type lines struct {
	mu sync.Mutex
	w  io.Writer
}

// Write writes b whole, between two lines of others.
func (l *lines) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (l *lines) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

// moduleRoot returns the directory of the module the working directory is
// in, which must be handoff's.
func moduleRoot() (string, error) {
	b, err := exec.Command("go", "list", "-m", "-f", "{{.Path}}\n{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	path, dir, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if path != "github.com/handoff-dev/handoff" {
		return "", fmt.Errorf("run it from within handoff's main module, not %q (its other modules are tested from there)", path)
	}
	return dir, nil
}
