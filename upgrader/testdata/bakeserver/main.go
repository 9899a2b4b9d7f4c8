// Command bakeserver is examples/httpserver's core for tests of the bake
// window: a generation reads the file named by -mode when it starts, and
//
//   - "noaccept": calls Ready and never accepts (it holds the socket until
//     its Exit is closed);
//   - "noanswer": serves, but its handler never answers;
//   - "exit": calls Ready, takes one connection and exits 3;
//   - "readyfail": serves, but an OnReady hook fails its Ready;
//   - anything else, or no file: answers "pid=N".
//
// SIGUSR1 calls Upgrade and logs what it returned (event test.upgrade, with
// its error, whether it is an *UpgradeError of kind ErrBake, and the
// upgrades rolled back so far by Metrics).
package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	addr, pidfile, modeFile, bake := "", "", "", ""
	for i := 1; i+1 < len(os.Args); i += 2 {
		switch os.Args[i] {
		case "-addr":
			addr = os.Args[i+1]
		case "-pidfile":
			pidfile = os.Args[i+1]
		case "-mode":
			modeFile = os.Args[i+1]
		case "-bake":
			bake = os.Args[i+1]
		}
	}
	mode := ""
	if b, err := os.ReadFile(modeFile); err == nil {
		mode = strings.TrimSpace(string(b))
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	opts := upgrader.Options{Logger: logger, PIDFile: pidfile}
	if bake != "" {
		d, err := time.ParseDuration(bake)
		if err != nil {
			log.Fatal(err)
		}
		opts.Bake = d
	}
	u, err := upgrader.New(opts)
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	ln, err := u.Listen("", addr)
	if err != nil {
		log.Fatal(err)
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			err := u.Upgrade()
			var ue *upgrader.UpgradeError
			logger.Info("Upgrade returned", "event", "test.upgrade", "pid", os.Getpid(), "err", fmt.Sprint(err),
				"upgrade_error", errors.As(err, &ue), "bake", errors.Is(err, upgrader.ErrBake),
				"rolled_back", u.Metrics().UpgradesRolledBack)
		}
	}()
	pid := os.Getpid()
	logger.Info("mode", "event", "test.mode", "mode", mode, "pid", pid)
	switch mode {
	case "noaccept":
		if err := u.Ready(); err != nil {
			log.Fatal(err)
		}
		<-u.Exit()
		ln.Close()
		return
	case "exit":
		if err := u.Ready(); err != nil {
			log.Fatal(err)
		}
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
		os.Exit(3)
	case "readyfail":
		u.OnReady(func() error { return errors.New("not ready, as the mode asks") })
	case "noanswer":
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		})}
		if err := u.Serve(srv, ln); err != nil {
			log.Fatal(err)
		}
		return
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})}
	if err := u.Serve(srv, ln); err != nil {
		log.Fatal(err)
	}
}
