package listener_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"

	"github.com/handoff-dev/handoff/listener"
)

// Each form of address, parsed and printed in its canonical form, which
// Parse maps back to the same Addr.
func ExampleParse() {
	for _, s := range []string{
		"127.0.0.1:8080",
		"tcp://0.0.0.0:80",
		"tcp6://[::1]:443",
		"unix:///run/app.sock?mode=0660",
		"unix://@app",
		"udp://127.0.0.1:53",
		"systemd:web",
	} {
		a, err := listener.Parse(s)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-31s %-8s %s\n", s, a.Network, a)
	}
	// Output:
	// 127.0.0.1:8080                  tcp      127.0.0.1:8080
	// tcp://0.0.0.0:80                tcp      0.0.0.0:80
	// tcp6://[::1]:443                tcp6     tcp6://[::1]:443
	// unix:///run/app.sock?mode=0660  unix     unix:///run/app.sock?mode=0660
	// unix://@app                     unix     unix://@app
	// udp://127.0.0.1:53              udp      udp://127.0.0.1:53
	// systemd:web                     systemd  systemd:web
}

// A malformed address: the error names it, says why and lists the forms,
// and wraps ErrMalformed.
func ExampleParse_malformed() {
	_, err := listener.Parse("/run/app.sock")
	fmt.Println(errors.Is(err, listener.ErrMalformed))
	fmt.Println(err)
	// Output:
	// true
	// listener: /run/app.sock: malformed address: unexpected '/'; a Unix socket needs the unix:// prefix — use HOST:PORT, :PORT, tcp4://HOST:PORT, tcp6://[::1]:PORT, unix:///path[?mode=0660], udp://HOST:PORT or systemd:NAME
}

// Listen takes the socket systemd passed for the address, if any, else binds
// it; a Config with Inherit set looks first among the sockets a previous
// generation passed (package upgrader sets it up).
func ExampleListen() {
	ln, err := listener.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println(ln.Addr().Network())
	// Output: tcp
}

// Config.Listen says where the socket came from. Here no previous
// generation passed one and systemd passed none, so it is bound.
func ExampleConfig_Listen() {
	a, err := listener.Parse("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	c := listener.Config{
		// What package upgrader wires to the sockets its parent passed.
		Inherit: func(network, address string) (net.Listener, error) { return nil, nil },
	}
	ln, src, err := c.Listen(context.Background(), a)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println(src)
	// Output: bound
}
