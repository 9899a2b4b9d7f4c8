// Command package builds handoff's Debian package with nfpm
// (github.com/goreleaser/nfpm, run from the Go module proxy at a pinned
// version): a static handoff in /usr/bin, a man page made from its help
// text, the daemon's example systemd units (made to run /usr/bin/handoff)
// under /usr/share/doc/handoff/examples/systemd, the README, docs/ and the
// license.
//
//	go run ./scripts/package                 # ./dist/handoff_VERSION_ARCH.deb
//	go run ./scripts/package -o /tmp/out -arch arm64
//
// It prints the path of the package it wrote.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// nfpm is the packager, run with `go run`; bump deliberately.
const nfpm = "github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.43.0"

// units are the example units packaged: the daemon's. (The httpserver ones
// are for a user's own binary built with the library.)
var units = []string{"app.service", "app-notify.service", "app-socket.service", "app-socket.socket", "app-socket-admin.socket"}

// commands are those whose help goes into the man page, in its order.
var commands = []string{"run", "reload", "status", "rollback", "signal"}

func main() {
	out := flag.String("o", "dist", "directory to write the package to")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH to build for: amd64, arm64, …")
	version := flag.String("version", "", "package version (default: from git describe, else 0.0.0~dev)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("package: ")
	if flag.NArg() > 0 {
		log.Fatalf("unexpected argument %q — see 'go run ./scripts/package -h'", flag.Arg(0))
	}
	root, err := moduleRoot()
	if err != nil {
		log.Fatal(err)
	}
	if *version == "" {
		*version = gitVersion(root)
	}
	stage, err := os.MkdirTemp("", "handoff-package-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(stage)

	// A static binary: it runs on any Debian or Ubuntu release of the
	// architecture, and is as small in memory as the benchmark measures.
	bin := filepath.Join(stage, "handoff")
	vcs := "-buildvcs=false"
	if exec.Command("git", "-C", root, "rev-parse", "--git-dir").Run() == nil {
		vcs = "-buildvcs=true"
	}
	build := exec.Command("go", "build", vcs, "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+*arch)
	run(build)

	// The man page comes from the help text of the host's build.
	helpBin := bin
	if *arch != runtime.GOARCH {
		helpBin = filepath.Join(stage, "handoff-host")
		host := exec.Command("go", "build", "-o", helpBin, ".")
		host.Dir = root
		run(host)
	}
	page, err := manPage(helpBin, *version)
	if err != nil {
		log.Fatal(err)
	}
	writeFile(filepath.Join(stage, "handoff.1.gz"), gz(page))

	var contents strings.Builder
	add := func(src, dst string, mode os.FileMode) {
		fmt.Fprintf(&contents, "  - src: %s\n    dst: %s\n    file_info:\n      mode: 0%o\n", src, dst, mode)
	}
	add(bin, "/usr/bin/handoff", 0o755)
	add(filepath.Join(stage, "handoff.1.gz"), "/usr/share/man/man1/handoff.1.gz", 0o644)
	add(filepath.Join(root, "README.md"), "/usr/share/doc/handoff/README.md", 0o644)
	add(filepath.Join(root, "LICENSE"), "/usr/share/doc/handoff/copyright", 0o644)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		log.Fatalf("no docs/*.md under %s", root)
	}
	for _, d := range docs {
		add(d, "/usr/share/doc/handoff/docs/"+filepath.Base(d), 0o644)
	}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join(root, "examples", "systemd", u))
		if err != nil {
			log.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/handoff"), []byte("/usr/bin/handoff"))
		dst := filepath.Join(stage, "units", u)
		writeFile(dst, b)
		add(dst, "/usr/share/doc/handoff/examples/systemd/"+u, 0o644)
	}
	config := fmt.Sprintf(`name: handoff
arch: %s
platform: linux
version: %s
version_schema: none
section: admin
priority: optional
maintainer: handoff developers <handoff@users.noreply.github.com>
homepage: https://github.com/handoff-dev/handoff
description: |-
  zero-downtime restarts by handing listening sockets to the next process
  handoff holds a service's listening sockets and runs its program as
  generations: on a reload it starts a new one with the same sockets
  (systemd's LISTEN_FDS protocol), waits until it is ready, then drains the
  old one, so that no connection is refused and no request lost. It fits
  systemd units (Type=notify-reload, ExecReload=handoff reload) and runs as a
  container's PID 1. Example units are in /usr/share/doc/handoff/examples.
contents:
%s`, *arch, *version, contents.String())
	cfgPath := filepath.Join(stage, "nfpm.yaml")
	writeFile(cfgPath, []byte(config))
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	target, err := filepath.Abs(filepath.Join(*out, fmt.Sprintf("handoff_%s_%s.deb", *version, *arch)))
	if err != nil {
		log.Fatal(err)
	}
	pkg := exec.Command("go", "run", nfpm, "package", "--config", cfgPath, "--packager", "deb", "--target", target)
	pkg.Dir = root
	run(pkg)
	fmt.Println(target)
}

// run runs cmd, its output to stderr, and exits on failure.
func run(cmd *exec.Cmd) {
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
}

func writeFile(path string, b []byte) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		log.Fatal(err)
	}
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// gitVersion makes a Debian version from `git describe`: v1.2.3 → 1.2.3,
// v1.2.3-4-gabc → 1.2.3+git4.abc; without a tag, 0.0.0~gitDATE.HASH.
func gitVersion(root string) string {
	if out, err := exec.Command("git", "-C", root, "describe", "--tags", "--match", "v[0-9]*").Output(); err == nil {
		v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
		if m := regexp.MustCompile(`^(.*)-(\d+)-g([0-9a-f]+)$`).FindStringSubmatch(v); m != nil {
			return fmt.Sprintf("%s+git%s.%s", m[1], m[2], m[3])
		}
		return v
	}
	out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%cd.%h", "--date=format:%Y%m%d").Output()
	if err != nil {
		return "0.0.0~dev"
	}
	return "0.0.0~git" + strings.TrimSpace(string(out))
}

// manPage renders handoff's help text as a man page (roff): the main usage
// as the description, then each command's help in its own section.
func manPage(bin, version string) ([]byte, error) {
	help := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".TH HANDOFF 1 %q %q \"User Commands\"\n", time.Now().UTC().Format("2006-01-02"), "handoff "+version)
	b.WriteString(".SH NAME\nhandoff \\- zero-downtime restarts for any program that accepts systemd sockets\n")
	b.WriteString(".SH SYNOPSIS\n")
	for _, c := range append(commands, "version") {
		fmt.Fprintf(&b, ".B handoff %s\n.br\n", c)
	}
	main, err := help("--help")
	if err != nil {
		return nil, err
	}
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(verbatim(main))
	b.WriteString(".SH COMMANDS\n")
	for _, c := range commands {
		text, err := help(c, "--help")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, ".SS handoff %s\n", c)
		b.WriteString(verbatim(text))
	}
	b.WriteString(".SH FILES\n.TP\n/usr/share/doc/handoff/examples/systemd\nexample units: copy one to /etc/systemd/system and adapt ExecStart=\n")
	b.WriteString(".SH SEE ALSO\n.BR systemd.service (5),\n.BR systemd.socket (5),\n.BR sd_listen_fds (3),\n.BR sd_notify (3)\n")
	return []byte(b.String()), nil
}

// verbatim sets text as a no-fill block, escaped for roff.
func verbatim(text string) string {
	var b strings.Builder
	b.WriteString(".nf\n")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		line = strings.ReplaceAll(line, `\`, `\e`)
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			line = `\&` + line
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(".fi\n")
	return b.String()
}

// moduleRoot finds the directory of handoff's go.mod, from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/handoff-dev/handoff\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("not inside the handoff module; run it from the repository")
		}
		dir = parent
	}
}
