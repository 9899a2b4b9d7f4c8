// Package metrics renders and serves what `handoff run --metrics` shows, in
// the Prometheus text format (docs/daemon.md, "Metrics", lists them): the
// machine's counts and histograms, its processes by state, each worker's
// state and resident memory.
package metrics
