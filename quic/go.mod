module github.com/handoff-dev/handoff/quic

go 1.26.0

replace github.com/handoff-dev/handoff => ../

require (
	github.com/cilium/ebpf v0.22.0
	github.com/handoff-dev/handoff v0.0.0
	github.com/quic-go/quic-go v0.65.0
	golang.org/x/net v0.56.0
	golang.org/x/sys v0.47.0
)

require (
	github.com/cloudflare/tableflip v1.2.3 // indirect
	github.com/coreos/go-systemd/v22 v22.3.1 // indirect
	github.com/quic-go/qpack v0.6.0 // indirect
	golang.org/x/crypto v0.54.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)
