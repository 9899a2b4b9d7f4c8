module github.com/handoff-dev/handoff

go 1.26.0

require (
	github.com/cilium/ebpf v0.22.0
	github.com/cloudflare/tableflip v1.2.3
	github.com/coreos/go-systemd/v22 v22.3.1
	github.com/fsnotify/fsnotify v1.10.1
	golang.org/x/sys v0.43.0
)
