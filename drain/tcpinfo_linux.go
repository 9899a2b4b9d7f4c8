package drain

import "golang.org/x/sys/unix"

// tcpReceived returns the kernel's count of bytes received on the TCP socket
// fd (TCP_INFO's tcpi_bytes_received); ok is false for other sockets.
func tcpReceived(fd int) (n uint64, ok bool) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, false
	}
	return info.Bytes_received, true
}
