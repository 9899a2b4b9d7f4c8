//go:build !unix

package listener

import (
	"net"
	"os"
)

// Without Unix sockets there is no socket activation: nothing is ever
// passed, and these are never asked.

func sockType(*os.File) int { return -1 }

func sockName(*os.File) net.Addr { return nil }
