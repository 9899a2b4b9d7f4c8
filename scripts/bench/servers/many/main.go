// Command many serves HTTP on N Unix sockets through the upgrader package, to
// time a handover of many listeners.
package main

import (
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/handoff-dev/handoff/upgrader"
)

func main() {
	n := flag.Int("n", 1000, "number of listeners")
	dir := flag.String("dir", "", "directory for the sockets")
	pidfile := flag.String("pidfile", "", "pid file")
	flag.Parse()
	u, err := upgrader.New(upgrader.Options{PIDFile: *pidfile, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Stop()
	d := u.NewDrainer()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})}
	for i := 0; i < *n; i++ {
		ln, err := u.Listen("unix", filepath.Join(*dir, fmt.Sprintf("s%d.sock", i)))
		if err != nil {
			log.Fatal(err)
		}
		d.Serve(srv, ln)
	}
	if err := u.ServeDrainer(d); err != nil {
		log.Fatal(err)
	}
}
