package systemd_test

import (
	"fmt"
	"log"
	"net"
	"os"

	"github.com/handoff-dev/handoff/systemd"
)

// Outside systemd — NOTIFY_SOCKET unset, as in a shell or most containers —
// a sender reports (false, nil): nothing was sent, and that is not an error.
// Under a Type=notify unit the same call reports (true, nil).
func ExampleNotify() {
	os.Unsetenv("NOTIFY_SOCKET") // as when not started by systemd
	sent, err := systemd.Notify("READY=1\nSTATUS=serving on 127.0.0.1:8080")
	fmt.Println(sent, err)
	// Output: false <nil>
}

// The three results of every sender, as a program tells them apart.
func ExampleReady() {
	switch sent, err := systemd.Ready("serving"); {
	case err != nil:
		log.Printf("systemd was not told we are ready: %v", err) // NOTIFY_SOCKET set, sending failed
	case !sent:
		// Not under systemd: nothing to tell.
	default:
		// systemd knows: `systemctl start` returns now.
	}
}

// A FileDescriptorName= (and so an FDNAME= for StoreFiles) is 1 to 255
// ASCII characters, without control characters or ':'.
func ExampleCheckFDName() {
	for _, name := range []string{"web", "admin-8080.v2", "web:8080", ""} {
		fmt.Println(systemd.CheckFDName(name))
	}
	// Output:
	// <nil>
	// <nil>
	// systemd: fd name "web:8080" must be ASCII, without control characters and without ':'
	// systemd: empty fd name
}

// Socket activation: the sockets systemd passed, by name. Outside a
// socket-activated unit the list is empty.
func ExampleActivated() {
	for _, f := range systemd.Activated() {
		ln, err := net.FileListener(f.File)
		if err != nil {
			log.Fatalf("socket %s: %v", f.Name, err)
		}
		f.File.Close() // ln holds its own copy
		log.Printf("serving %s on %s", f.Name, ln.Addr())
	}
}
