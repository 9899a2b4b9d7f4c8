package systemd

import (
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// ActivatedFile is one descriptor passed by socket activation.
type ActivatedFile struct {
	// Name is the FileDescriptorName= of the socket (LISTEN_FDNAMES), or
	// "LISTEN_FD_<n>" when systemd gave none.
	Name string
	// File is the descriptor, close-on-exec. Whoever takes it owns it.
	File *os.File
}

var (
	activationOnce  sync.Once
	activationFiles []ActivatedFile
)

// Activated returns the descriptors systemd passed to this process by socket
// activation (LISTEN_FDS), in order, with their names. The first call reads
// and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES and marks the
// descriptors close-on-exec; later calls return the same slice. It returns nil
// when the process was not socket-activated, or when LISTEN_PID names another
// process.
func Activated() []ActivatedFile {
	activationOnce.Do(func() {
		for _, f := range activation.Files(true) {
			activationFiles = append(activationFiles, ActivatedFile{Name: f.Name(), File: f})
		}
	})
	return activationFiles
}

// WatchdogInterval reports the watchdog timeout systemd set for this process
// (WATCHDOG_USEC, when WATCHDOG_PID is unset or equals this pid) and removes
// both variables from the environment, so that no child inherits them. Ping
// with Watchdog at least every half of it.
//
//	(0, nil)  no watchdog for this process
//	(0, err)  WATCHDOG_USEC or WATCHDOG_PID is malformed
//	(d, nil)  the watchdog timeout
func WatchdogInterval() (time.Duration, error) {
	return daemon.SdWatchdogEnabled(true)
}
