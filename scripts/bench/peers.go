package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/internal/loadcheck"
	"github.com/handoff-dev/handoff/internal/proc"
)

// A peer is a way to reload an HTTP server without downtime that handoff is
// compared with: a Node.js app under handoff run, PM2's cluster mode, or a
// proxy that reloads itself (HAProxy, nginx, Caddy) in front of a backend it
// does not restart. Each runs under the strategies' load and is reloaded as
// often.
type peer struct {
	label   string
	needs   []string // commands it runs
	install string   // how to install them
	start   func(p *peerRun) error
	// reload returns once the peer's reload is done, as far as one can
	// tell from outside: the command returned, or new workers run.
	reload func(p *peerRun) error
	stop   func(p *peerRun)
}

// peerCommandTimeout bounds each command a peer runs (a start, a reload, a
// stop), so that a peer that hangs ends its row instead of the benchmark.
const peerCommandTimeout = 2 * time.Minute

// peerRun is one peer's run: its directory, its address, the backend a
// proxy forwards to, and the processes it started.
type peerRun struct {
	e       *env
	dir     string
	addr    string
	backend string
	main    *exec.Cmd // the process the peer runs in the foreground
	cmds    []*exec.Cmd
	pm2     string // PM2's command, with PM2_HOME in dir
}

func (p *peerRun) launch(env []string, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.OpenFile(filepath.Join(p.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.cmds = append(p.cmds, cmd)
	return cmd, nil
}

// run runs a command to its end, at most peerCommandTimeout, and returns its
// output in the error when it fails.
func (p *peerRun) run(env []string, bin string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), peerCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second // a daemon it started may hold its output open
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitServing waits until a POST to the peer is answered 200.
func (p *peerRun) waitServing() error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Post("http://"+p.addr+"/", "text/plain", strings.NewReader("ping"))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s does not serve after 15s; see %s", p.addr, filepath.Join(p.dir, "log"))
}

// startBackend starts the server a proxy forwards to, never reloaded.
func (p *peerRun) startBackend() error {
	p.backend = freeAddr()
	if _, err := p.launch(nil, p.e.bins["plain"], "-addr", p.backend); err != nil {
		return err
	}
	addr := p.addr
	p.addr = p.backend
	defer func() { p.addr = addr }()
	return p.waitServing()
}

// waitNewChild waits until pid has a child that is not among old.
func waitNewChild(pid int, old []int) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range proc.Children(pid) {
			if !slices.Contains(old, c) {
				return nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("no new worker of pid %d after 20s", pid)
}

func (p *peerRun) stopAll() {
	for _, c := range p.cmds {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, c := range p.cmds {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

// handoffRunPeer runs the Node.js script under handoff run with flags,
// reloaded by `handoff reload`.
func handoffRunPeer(script string, flags ...string) peer {
	return peer{
		needs:   []string{"node"},
		install: "apt-get install nodejs",
		start: func(p *peerRun) error {
			node, _ := exec.LookPath("node")
			args := append([]string{"run", "--control", filepath.Join(p.dir, "control.sock"), "--ready", "accept", "--listen", "web=" + p.addr}, flags...)
			var err error
			if p.main, err = p.launch(nil, p.e.bins["handoff"], append(args, "--", node, script)...); err != nil {
				return err
			}
			return p.waitServing()
		},
		reload: func(p *peerRun) error {
			return p.run(nil, p.e.bins["handoff"], "reload", "--control", filepath.Join(p.dir, "control.sock"))
		},
		stop: func(p *peerRun) { p.stopAll() },
	}
}

// pm2Peer runs the Node.js script in PM2's cluster mode, 2 instances,
// reloaded by `pm2 reload`.
func pm2Peer(script string) peer {
	return peer{
		needs:   []string{"node", "pm2"},
		install: "npm install -g pm2",
		start: func(p *peerRun) error {
			p.pm2, _ = exec.LookPath("pm2")
			_, port, _ := strings.Cut(p.addr, ":")
			// PM2's documented graceful start and stop ("Graceful
			// Start/Shutdown"): the app says ready (wait_ready, with the
			// docs' listen_timeout), and has the docs' kill_timeout to close
			// before SIGKILL.
			eco := fmt.Sprintf(`module.exports = { apps: [{ name: 'bench', script: %q, instances: 2, exec_mode: 'cluster',
  wait_ready: true, listen_timeout: 10000, kill_timeout: 3000, env: { PORT: %q } }] };
`, script, port)
			if err := os.WriteFile(filepath.Join(p.dir, "ecosystem.config.js"), []byte(eco), 0o644); err != nil {
				return err
			}
			if err := p.run(p.pm2Env(), p.pm2, "start", filepath.Join(p.dir, "ecosystem.config.js")); err != nil {
				return err
			}
			return p.waitServing()
		},
		reload: func(p *peerRun) error { return p.run(p.pm2Env(), p.pm2, "reload", "bench") },
		stop:   func(p *peerRun) { _ = p.run(p.pm2Env(), p.pm2, "kill") },
	}
}

// peers returns the peers in the order of the table; root is the
// repository's directory.
func peers(root string) []peer {
	node := func(script string) string { return filepath.Join(root, "scripts/bench/servers/node", script) }
	helper := handoffRunPeer(node("helper.js"))
	helper.label = "handoff run, Node.js app with handoff's drain helper"
	usual := handoffRunPeer(node("usual.js"))
	usual.label = "handoff run, Node.js app draining with server.close()"
	pm2 := pm2Peer(node("usual.js"))
	pm2.label = "PM2 cluster mode, 2 instances, `pm2 reload` (app draining with server.close(), wait_ready)"

	haproxy := peer{
		label:   "HAProxy, seamless reload (master-worker, expose-fd listeners, SIGUSR2)",
		needs:   []string{"haproxy"},
		install: "apt-get install haproxy",
		start: func(p *peerRun) error {
			if err := p.startBackend(); err != nil {
				return err
			}
			cfg := fmt.Sprintf(`global
	master-worker
	stats socket %s mode 600 level admin expose-fd listeners
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
frontend web
	bind %s
	default_backend app
backend app
	server app %s
`, filepath.Join(p.dir, "admin.sock"), p.addr, p.backend)
			if err := os.WriteFile(filepath.Join(p.dir, "haproxy.cfg"), []byte(cfg), 0o644); err != nil {
				return err
			}
			bin, _ := exec.LookPath("haproxy")
			var err error
			if p.main, err = p.launch(nil, bin, "-W", "-f", filepath.Join(p.dir, "haproxy.cfg")); err != nil {
				return err
			}
			return p.waitServing()
		},
		reload: func(p *peerRun) error {
			old := proc.Children(p.main.Process.Pid)
			if err := p.main.Process.Signal(syscall.SIGUSR2); err != nil {
				return err
			}
			return waitNewChild(p.main.Process.Pid, old)
		},
		stop: func(p *peerRun) { p.stopAll() },
	}

	nginxConf := func(p *peerRun) string {
		conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
worker_processes 2;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream app { server %[2]s; keepalive 32; }
	server {
		listen %[3]s;
		location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
	}
}
`, p.dir, p.backend, p.addr)
		path := filepath.Join(p.dir, "nginx.conf")
		_ = os.WriteFile(path, []byte(conf), 0o644)
		return path
	}
	nginxStart := func(p *peerRun) error {
		if err := p.startBackend(); err != nil {
			return err
		}
		// As nginx runs in production: daemonized, which its binary
		// upgrade needs (in the foreground, the master ignores USR2 while
		// its parent lives).
		bin, _ := exec.LookPath("nginx")
		if err := p.run(nil, bin, "-p", p.dir, "-c", nginxConf(p)); err != nil {
			return err
		}
		return p.waitServing()
	}
	nginxMaster := func(p *peerRun) int { return proc.ReadPid(filepath.Join(p.dir, "nginx.pid")) }
	nginxStop := func(p *peerRun) {
		if m := nginxMaster(p); m > 0 {
			_ = syscall.Kill(m, syscall.SIGQUIT)
			for deadline := time.Now().Add(10 * time.Second); alive(m) && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
		p.stopAll()
	}
	nginx := peer{
		label:   "nginx, `nginx -s reload`",
		needs:   []string{"nginx"},
		install: "apt-get install nginx",
		start:   nginxStart,
		reload: func(p *peerRun) error {
			m := nginxMaster(p)
			old := proc.Children(m)
			bin, _ := exec.LookPath("nginx")
			if err := p.run(nil, bin, "-p", p.dir, "-c", filepath.Join(p.dir, "nginx.conf"), "-s", "reload"); err != nil {
				return err
			}
			return waitNewChild(m, old)
		},
		stop: nginxStop,
	}
	nginxBinary := peer{
		label:   "nginx, binary upgrade (USR2, WINCH, QUIT)",
		needs:   []string{"nginx"},
		install: "apt-get install nginx",
		start:   nginxStart,
		reload: func(p *peerRun) error {
			old := nginxMaster(p)
			if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
				return err
			}
			// The new master writes nginx.pid once it runs; its workers
			// then start.
			deadline := time.Now().Add(20 * time.Second)
			var m int
			for m = nginxMaster(p); m == old || m == 0 || len(proc.Children(m)) < 2; m = nginxMaster(p) {
				if time.Now().After(deadline) {
					return fmt.Errorf("no new nginx master with workers after 20s")
				}
				time.Sleep(time.Millisecond)
			}
			_ = syscall.Kill(old, syscall.SIGWINCH)
			return syscall.Kill(old, syscall.SIGQUIT)
		},
		stop: nginxStop,
	}

	caddy := peer{
		label:   "Caddy, `caddy reload --force`",
		needs:   []string{"caddy"},
		install: "apt-get install caddy",
		start: func(p *peerRun) error {
			if err := p.startBackend(); err != nil {
				return err
			}
			admin := freeAddr()
			conf := fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n}\nhttp://%s {\n\treverse_proxy %s\n}\n", admin, p.addr, p.backend)
			if err := os.WriteFile(filepath.Join(p.dir, "Caddyfile"), []byte(conf), 0o644); err != nil {
				return err
			}
			bin, _ := exec.LookPath("caddy")
			var err error
			if p.main, err = p.launch([]string{"HOME=" + p.dir, "XDG_DATA_HOME=" + p.dir, "XDG_CONFIG_HOME=" + p.dir}, bin,
				"run", "--config", filepath.Join(p.dir, "Caddyfile"), "--adapter", "caddyfile"); err != nil {
				return err
			}
			return p.waitServing()
		},
		reload: func(p *peerRun) error {
			bin, _ := exec.LookPath("caddy")
			return p.run([]string{"HOME=" + p.dir}, bin, "reload", "--config", filepath.Join(p.dir, "Caddyfile"), "--adapter", "caddyfile", "--force")
		},
		stop: func(p *peerRun) { p.stopAll() },
	}
	return []peer{helper, usual, pm2, haproxy, nginx, nginxBinary, caddy}
}

func (p *peerRun) pm2Env() []string { return []string{"PM2_HOME=" + filepath.Join(p.dir, "pm2")} }

// peerRow is one peer's line in the table.
type peerRow struct {
	label   string
	missing string // why it did not run
	res     *loadcheck.Result
	reloads []time.Duration
	err     error
}

// runPeer runs pr under load and reloads it cfg.upgrades times, evenly
// spread, each once the one before is done.
func runPeer(e *env, cfg config, pr peer) peerRow {
	r := peerRow{label: pr.label}
	for _, n := range pr.needs {
		if _, err := exec.LookPath(n); err != nil {
			r.missing = fmt.Sprintf("not installed: `%s`", pr.install)
			return r
		}
	}
	p := &peerRun{e: e, dir: mustTemp(e.dir, "peer"), addr: freeAddr()}
	defer pr.stop(p)
	if err := pr.start(p); err != nil {
		r.err = err
		return r
	}
	// The load lasts cfg.duration, or longer if the reloads take longer:
	// every peer is reloaded as often, and serves a while after the last.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resC := make(chan *loadcheck.Result, 1)
	go func() {
		resC <- loadcheck.Run(ctx, loadcheck.Config{URL: "http://" + p.addr, Rate: cfg.rate, Slow: cfg.slow, SlowEvery: 100 * time.Millisecond})
	}()
	interval := cfg.duration / time.Duration(cfg.upgrades+1)
	begin := time.Now()
	for i := 0; i < cfg.upgrades; i++ {
		time.Sleep(time.Until(begin.Add(time.Duration(i+1) * interval)))
		start := time.Now()
		if err := pr.reload(p); err != nil {
			r.err = err
			break
		}
		r.reloads = append(r.reloads, time.Since(start))
	}
	time.Sleep(max(time.Until(begin.Add(cfg.duration)), interval))
	cancel()
	r.res = <-resC
	return r
}

func printPeers(w io.Writer, e *env, cfg config, root string) {
	fmt.Fprintf(w, "\nPeers — under the same load, each reloaded %d times (the load lasts until it has served a while after the last): failed requests, reload time, latency\n\n", cfg.upgrades)
	fmt.Fprintln(w, "| what is reloaded | failed requests (by class) | silently retried | reloads | reload time p50 / max | p99 / max latency |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, pr := range peers(root) {
		fmt.Fprintf(os.Stderr, "bench: peer %s…\n", pr.label)
		r := runPeer(e, cfg, pr)
		proc.ReapAll()
		switch {
		case r.missing != "":
			fmt.Fprintf(w, "| %s | %s | | | | |\n", r.label, r.missing)
			continue
		case r.res == nil:
			fmt.Fprintf(w, "| %s | could not start: %v | | | | |\n", r.label, r.err)
			continue
		}
		reloads := fmt.Sprint(len(r.reloads))
		if r.err != nil {
			reloads += fmt.Sprintf(" (stopped: %v)", r.err)
		}
		lat := r.res.Latencies
		p99, max := time.Duration(0), time.Duration(0)
		if len(lat) > 0 {
			p99, max = lat[(len(lat)-1)*99/100], lat[len(lat)-1]
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s / %s | %s / %s |\n", r.label, failures(r.res), r.res.Retried, reloads,
			ms(pct(r.reloads, 50)), ms(pct(r.reloads, 100)), ms(p99), ms(max))
	}
}

// failures writes res's failed requests, by class, of those sent.
func failures(res *loadcheck.Result) string {
	s := fmt.Sprint(res.Failures())
	if len(res.Failed) > 0 {
		var parts []string
		for k, v := range res.Failed {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s + fmt.Sprintf(" of %d", res.Sent)
}
