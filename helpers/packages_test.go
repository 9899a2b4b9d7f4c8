package helpers_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/logrec"
	"github.com/handoff-dev/handoff/internal/proc"
)

// The packages as a user gets them: built from the checkout, installed
// somewhere else, and run from there under handoff run.

// TestLicenseShipped: both helpers say BSD-3-Clause, as the project is, and
// their LICENSE files are the project's.
func TestLicenseShipped(t *testing.T) {
	want, err := os.ReadFile("../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(want, []byte("Redistribution and use in source and binary forms")) {
		t.Fatal("../LICENSE is not the BSD license the manifests name")
	}
	for _, f := range []string{"node/LICENSE", "python/LICENSE"} {
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("helpers/%s differs from the project's LICENSE: copy it again", f)
		}
	}
	var pkg struct{ License string }
	b, err := os.ReadFile("node/package.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil || pkg.License != "BSD-3-Clause" {
		t.Errorf("node/package.json: license %q (%v), want BSD-3-Clause", pkg.License, err)
	}
	b, err = os.ReadFile("python/pyproject.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^license = "BSD-3-Clause"$`).Match(b) {
		t.Errorf("python/pyproject.toml: no license = \"BSD-3-Clause\" line:\n%s", b)
	}
}

// TestPythonPackage builds the Python helper's wheel and sdist with its own
// PEP 517 backend, and the wheel again from the sdist; installs the wheel
// into a fresh virtualenv, offline; and runs the http.server example,
// importing the installed package, under handoff run: it answers, and
// drains on SIGTERM with exit 0. About 5 s: a virtualenv with pip.
func TestPythonPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a virtualenv and runs handoff (-short)")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	src, err := filepath.Abs("python")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	version := pythonVersion(t, src)

	// The package's modules parse as Python 3.9, its floor.
	pyrun(t, src, python, "-c", `import ast, glob
for f in sorted(glob.glob("handoff/*.py")):
    ast.parse(open(f).read(), f, feature_version=(3, 9))`)

	dist := filepath.Join(tmp, "dist")
	names := strings.Fields(pyrun(t, src, python, "-c", backendBuild, dist))
	if len(names) != 2 {
		t.Fatalf("the backend built %q, want a wheel and an sdist", names)
	}
	wheel, sdist := filepath.Join(dist, names[0]), filepath.Join(dist, names[1])
	if want := "handoff-" + version + "-py3-none-any.whl"; names[0] != want {
		t.Errorf("wheel %s, want %s", names[0], want)
	}
	if want := "handoff-" + version + ".tar.gz"; names[1] != want {
		t.Errorf("sdist %s, want %s", names[1], want)
	}

	// The sdist: what a build from it needs, and its metadata.
	files := untar(t, sdist, filepath.Join(tmp, "sdist"))
	top := "handoff-" + version + "/"
	want := []string{"pyproject.toml", "_build.py", "README.md", "LICENSE", "PKG-INFO", "handoff/py.typed"}
	modules, _ := filepath.Glob(filepath.Join(src, "handoff", "*.py"))
	for _, m := range modules {
		want = append(want, "handoff/"+filepath.Base(m))
	}
	for _, f := range want {
		if _, ok := files[top+f]; !ok {
			t.Errorf("the sdist has no %s%s: %v", top, f, keys(files))
		}
	}
	checkMetadata(t, "PKG-INFO", files[top+"PKG-INFO"], version)

	// The wheel: the package, py.typed, the license, and a RECORD of each.
	whl := unzip(t, wheel)
	info := "handoff-" + version + ".dist-info/"
	for _, f := range []string{"handoff/__init__.py", "handoff/py.typed", info + "licenses/LICENSE", info + "WHEEL", info + "RECORD"} {
		if _, ok := whl[f]; !ok {
			t.Errorf("the wheel has no %s: %v", f, keys(whl))
		}
	}
	checkMetadata(t, "METADATA", whl[info+"METADATA"], version)
	for f := range whl {
		if f != info+"RECORD" && !bytes.Contains(whl[info+"RECORD"], []byte(f+",sha256=")) {
			t.Errorf("RECORD does not list %s", f)
		}
	}

	// The sdist builds the same wheel.
	dist2 := filepath.Join(tmp, "dist2")
	names2 := strings.Fields(pyrun(t, filepath.Join(tmp, "sdist", top), python, "-c", backendBuild, dist2))
	if len(names2) != 2 || names2[0] != names[0] {
		t.Fatalf("built from the sdist: %q, want %s", names2, names[0])
	}
	whl2 := unzip(t, filepath.Join(dist2, names2[0]))
	if strings.Join(keys(whl2), " ") != strings.Join(keys(whl), " ") {
		t.Errorf("the wheel built from the sdist holds %v, the checkout's %v", keys(whl2), keys(whl))
	}
	for f, b := range whl {
		if !bytes.Equal(whl2[f], b) {
			t.Errorf("%s differs in the wheel built from the sdist", f)
		}
	}
	t.Logf("built %s (%d bytes) and %s (%d bytes); the sdist builds the same wheel", names[0], size(t, wheel), names[1], size(t, sdist))

	// Installed into a fresh virtualenv, with no index.
	venv := filepath.Join(tmp, "venv")
	if out, err := exec.Command(python, "-m", "venv", venv).CombinedOutput(); err != nil {
		t.Skipf("python3 -m venv failed (Debian: apt-get install python3-venv): %v: %s", err, out)
	}
	vpython := filepath.Join(venv, "bin", "python")
	pyrun(t, tmp, vpython, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check", wheel)

	// The example, importing the installed package, not the checkout's.
	app := filepath.Join(tmp, "app")
	copyReplacing(t, "python/example/server.py", filepath.Join(app, "server.py"),
		`sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))`, "")
	where := strings.TrimSpace(pyrun(t, app, vpython, "-c", `import handoff, importlib.metadata as m
print(handoff.__file__, handoff.__version__, m.metadata("handoff")["License-Expression"])`))
	if !strings.HasPrefix(where, venv+"/") || !strings.HasSuffix(where, " "+version+" BSD-3-Clause") {
		t.Fatalf("installed: %s, want the package in %s, %s, BSD-3-Clause", where, venv, version)
	}
	servesUnderHandoff(t, "notify", vpython, filepath.Join(app, "server.py"))
}

// backendBuild is the script that builds the wheel and the sdist of the
// directory it runs in through its PEP 517 hooks, into argv[1], and prints
// their names; it fails if the hooks ask for requirements.
const backendBuild = `import os, sys, _build
os.makedirs(sys.argv[1], exist_ok=True)
assert _build.get_requires_for_build_wheel() == [] and _build.get_requires_for_build_sdist() == []
print(_build.build_wheel(sys.argv[1]), _build.build_sdist(sys.argv[1]))`

// pythonVersion is __version__ in the package's __init__.py.
func pythonVersion(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(src, "handoff", "__init__.py"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^__version__ = "([^"]+)"$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("handoff/__init__.py has no __version__ line")
	}
	return string(m[1])
}

// checkMetadata checks the core metadata a build wrote.
func checkMetadata(t *testing.T, name string, b []byte, version string) {
	t.Helper()
	for _, line := range []string{"Metadata-Version: 2.4", "Name: handoff", "Version: " + version, "Requires-Python: >=3.9",
		"License-Expression: BSD-3-Clause", "License-File: LICENSE", "Description-Content-Type: text/markdown"} {
		if !bytes.Contains(b, []byte("\n"+line+"\n")) && !bytes.HasPrefix(b, []byte(line+"\n")) {
			t.Errorf("%s has no line %q:\n%s", name, line, b)
		}
	}
	if !bytes.Contains(b, []byte("\n\n# handoff for Python\n")) {
		t.Errorf("%s does not hold the README as its description", name)
	}
}

// pyrun runs a command in dir, Python writing no bytecode into the
// checkout, and returns its output; it fails the test if the command fails.
func pyrun(t *testing.T, dir string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(withoutActivation(os.Environ()), "PYTHONDONTWRITEBYTECODE=1", "PIP_NO_INPUT=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v in %s: %v\n%s%s", argv, dir, err, out, stderr.Bytes())
	}
	return string(out)
}

// TestNodePackage packs the Node helper (npm pack), installs the tarball
// into an empty directory, offline, and runs the example, requiring the
// installed package, under handoff run: it answers, and drains on SIGTERM
// with exit 0.
func TestNodePackage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs npm and handoff (-short)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed")
	}
	tmp := t.TempDir()
	src, err := filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join(tmp, "dist")
	if err := os.Mkdir(dist, 0o755); err != nil {
		t.Fatal(err)
	}
	out := npmRun(t, tmp, src, npm, "pack", "--json", "--pack-destination", dist)
	var packed []struct {
		Filename string
		Size     int
		Files    []struct{ Path string }
	}
	if err := json.Unmarshal([]byte(out), &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v: %s", err, out)
	}
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
	}
	sort.Strings(files)
	if got, want := strings.Join(files, " "), "LICENSE README.md index.d.ts index.js index.mjs package.json"; got != want {
		t.Errorf("the package holds %s, want %s", got, want)
	}
	tgz := filepath.Join(dist, packed[0].Filename)
	t.Logf("packed %s (%d bytes): %s", packed[0].Filename, size(t, tgz), strings.Join(files, ", "))

	app := filepath.Join(tmp, "app")
	if err := os.Mkdir(app, 0o755); err != nil {
		t.Fatal(err)
	}
	npmRun(t, tmp, app, npm, "install", "--offline", "--no-audit", "--no-fund", tgz)
	var installed struct{ Version, License string }
	b, err := os.ReadFile(filepath.Join(app, "node_modules", "handoff", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &installed); err != nil || installed.License != "BSD-3-Clause" {
		t.Fatalf("the installed package.json: %v: %s", err, b)
	}
	if _, err := os.Stat(filepath.Join(app, "node_modules", "handoff", "LICENSE")); err != nil {
		t.Error(err)
	}
	copyReplacing(t, "node/example/server.js", filepath.Join(app, "server.js"), `require('..')`, `require('handoff')`)
	servesUnderHandoff(t, "accept", node, filepath.Join(app, "server.js"))
}

// npmRun runs npm in dir with a cache of the test's own, and returns its
// standard output; it fails the test if npm fails.
func npmRun(t *testing.T, tmp, dir string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(withoutActivation(os.Environ()), "npm_config_cache="+filepath.Join(tmp, "npm-cache"),
		"npm_config_update_notifier=false", "npm_config_loglevel=error")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v in %s: %v\n%s%s", argv, dir, err, out, stderr.Bytes())
	}
	return string(out)
}

// servesUnderHandoff runs program under `handoff run --ready ready` and
// checks that it answers a request, and that on SIGTERM handoff exits 0
// with the program drained (its "drained" line) and none killed.
func servesUnderHandoff(t *testing.T, ready string, program ...string) {
	t.Helper()
	dir := t.TempDir()
	addr := proc.FreeAddr(t)
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"run", "--log-format", "json", "--ready", ready, "--control", filepath.Join(dir, "control.sock"),
		"--listen", "web=" + addr, "--"}, program...)
	cmd := exec.Command(handoffBin, args...)
	cmd.Dir = filepath.Dir(program[len(program)-1])
	cmd.Env = withoutActivation(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		for _, p := range proc.Descendants(os.Getpid()) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		proc.ReapAll()
	}()
	readLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	deadline := time.Now().Add(15 * time.Second)
	for logrec.Find(logrec.Parse(readLog()), "event=generation.ready", "gen=1") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no generation.ready:\n%s", readLog())
		}
		select {
		case err := <-exited:
			t.Fatalf("handoff exited (%v) before its program was ready:\n%s", err, readLog())
		case <-time.After(10 * time.Millisecond):
		}
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatalf("%v:\n%s", err, readLog())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "pid=") {
		t.Fatalf("answer %d %q, want 200 pid=…", resp.StatusCode, body)
	}
	client.CloseIdleConnections()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("handoff: %v:\n%s", err, readLog())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("handoff did not stop:\n%s", readLog())
	}
	log := readLog()
	if logrec.Find(logrec.Parse(log), "event=handoff.exit", "killed=0") == nil {
		t.Errorf("handoff had to kill its program:\n%s", log)
	}
	if !strings.Contains(log, "drained") {
		t.Errorf("the program did not say it drained:\n%s", log)
	}
}

// copyReplacing copies the file src to dst (creating its directory),
// replacing old, which must be there, by with.
func copyReplacing(t *testing.T, src, dst, old, with string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s no longer holds %q: update the test", src, old)
	}
	b = bytes.Replace(b, []byte(old), []byte(with), 1)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// untar extracts the tar.gz at path into dir and returns its files' contents
// by name.
func untar(t *testing.T, path, dir string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "..") || strings.HasPrefix(h.Name, "/") {
			t.Fatalf("%s: unexpected member %s (type %c)", path, h.Name, h.Typeflag)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
		dst := filepath.Join(dir, h.Name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// unzip returns the files of the zip at path by name.
func unzip(t *testing.T, path string) map[string][]byte {
	t.Helper()
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	files := map[string][]byte{}
	for _, f := range z.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name] = b
	}
	return files
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
