module github.com/handoff-dev/handoff/examples/websocket

go 1.26.0

require (
	github.com/coder/websocket v1.8.12
	github.com/handoff-dev/handoff v0.0.0
)

require (
	github.com/cloudflare/tableflip v1.2.3 // indirect
	github.com/coreos/go-systemd/v22 v22.3.1 // indirect
	golang.org/x/sys v0.43.0 // indirect
)

replace github.com/handoff-dev/handoff => ../..
