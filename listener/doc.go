// Package listener turns an address string into a listening socket.
//
// Addresses take these forms (Parse):
//
//	127.0.0.1:8080, :8080, localhost:8080   TCP, IPv4 or IPv6 as the host resolves
//	tcp://HOST:PORT, tcp4://…, tcp6://[::1]:8080
//	unix:///run/app.sock                     Unix stream socket
//	unix:///run/app.sock?mode=0660           … with its file mode set after bind
//	unix://@name                             Linux abstract socket
//	udp://HOST:PORT, udp4://…, udp6://…      datagram socket (ListenPacket)
//	systemd:NAME                             the socket systemd passed with FileDescriptorName=NAME
//
// A socket is found in this order: inherited from the previous generation
// (Config.Inherit, which the upgrader package wires to tableflip), then among
// the sockets systemd passed by socket activation — by name for systemd:NAME,
// and by local address for every other form — and only then bound fresh.
//
// Errors are *Error values that name the address and say how to fix the
// problem; they wrap the cause, so errors.Is(err, syscall.EADDRINUSE) and
// errors.Is(err, ErrMalformed) work.
package listener
