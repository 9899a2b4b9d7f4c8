module github.com/handoff-dev/handoff/examples/grpc

go 1.26.0

require (
	github.com/handoff-dev/handoff v0.0.0
	google.golang.org/grpc v1.75.0
)

require (
	github.com/cloudflare/tableflip v1.2.3 // indirect
	github.com/coreos/go-systemd/v22 v22.3.1 // indirect
	golang.org/x/net v0.41.0 // indirect
	golang.org/x/sys v0.43.0 // indirect
	golang.org/x/text v0.26.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250707201910-8d1bb00bc6a7 // indirect
	google.golang.org/protobuf v1.36.6 // indirect
)

replace github.com/handoff-dev/handoff => ../..
