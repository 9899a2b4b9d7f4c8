module github.com/handoff-dev/handoff

go 1.26.8

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/coreos/go-systemd/v22 v22.7.0
	golang.org/x/sys v0.49.0
)
