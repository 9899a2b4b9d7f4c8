// Package pidmux is the handler every benchmark server shares, so that the
// strategies differ only in how they restart: each request is answered with
// the pid, and /slow?d=DURATION answers after that long (at most a minute).
package pidmux

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// New returns the benchmark's handler for this process.
func New() *http.ServeMux {
	pid := os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "pid=%d\n", pid)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(min(d, time.Minute))
		fmt.Fprintf(w, "pid=%d\n", pid)
	})
	return mux
}
