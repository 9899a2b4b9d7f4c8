package listener

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"

	"github.com/handoff-dev/handoff/systemd"
)

// validForms is shown in every parse error, so that the fix is on the same line.
const validForms = "use HOST:PORT, :PORT, tcp4://HOST:PORT, tcp6://[::1]:PORT, unix:///path[?mode=0660], udp://HOST:PORT or systemd:NAME"

// Addr is a parsed listening address.
type Addr struct {
	// Network is one of tcp, tcp4, tcp6, unix, udp, udp4, udp6 or systemd.
	Network string
	// Address is HOST:PORT for IP networks, the socket path for unix (a
	// leading '@' for the abstract namespace), and the FileDescriptorName for
	// systemd.
	Address string
	// Mode, for unix sockets, is the file mode set after bind; zero leaves
	// the umask's choice.
	Mode fs.FileMode
}

// String returns the canonical form of a, which Parse maps back to a.
func (a Addr) String() string {
	switch a.Network {
	case "systemd":
		return "systemd:" + a.Address
	case "unix":
		s := "unix://" + a.Address
		if a.Mode != 0 {
			s += fmt.Sprintf("?mode=%04o", uint32(a.Mode))
		}
		return s
	case "tcp":
		return a.Address
	}
	return a.Network + "://" + a.Address
}

// Packet reports whether a names a datagram socket, to be opened with
// ListenPacket rather than Listen.
func (a Addr) Packet() bool {
	return strings.HasPrefix(a.Network, "udp")
}

// Parse parses s in one of the forms listed in the package documentation.
// Host names are not resolved. The error wraps ErrMalformed and shows the
// valid forms.
func Parse(s string) (Addr, error) {
	fail := func(why string) (Addr, error) {
		return Addr{}, &Error{Addr: s, Err: fmt.Errorf("%w: %s", ErrMalformed, why), Hint: validForms}
	}
	if s == "" {
		return fail("empty address")
	}
	if strings.ContainsAny(s, " \t\r\n\x00") {
		return fail("contains whitespace or NUL")
	}
	if name, ok := strings.CutPrefix(s, "systemd:"); ok {
		if err := validName(name); err != nil {
			return fail(err.Error())
		}
		return Addr{Network: "systemd", Address: name}, nil
	}
	scheme, rest, hasScheme := strings.Cut(s, "://")
	if !hasScheme {
		if strings.Contains(s, "/") {
			return fail("unexpected '/'; a Unix socket needs the unix:// prefix")
		}
		if err := validHostPort(s); err != nil {
			return fail(err.Error())
		}
		return Addr{Network: "tcp", Address: s}, nil
	}
	switch scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if err := validHostPort(rest); err != nil {
			return fail(err.Error())
		}
		if err := checkFamily(scheme, rest); err != nil {
			return fail(err.Error())
		}
		return Addr{Network: scheme, Address: rest}, nil
	case "unix":
		return parseUnix(rest, fail)
	}
	return fail(fmt.Sprintf("unknown scheme %q", scheme))
}

func parseUnix(rest string, fail func(string) (Addr, error)) (Addr, error) {
	path, query, _ := strings.Cut(rest, "?")
	a := Addr{Network: "unix", Address: path}
	switch {
	case path == "" || path == "@":
		return fail("missing socket path, as in unix:///run/app.sock")
	case path[0] != '/' && path[0] != '@':
		return fail("socket path must be absolute (unix:///run/app.sock) or abstract (unix://@name)")
	case len(path) > 107:
		return fail(fmt.Sprintf("socket path is %d bytes; Linux allows at most 107", len(path)))
	}
	if query == "" {
		return a, nil
	}
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k != "mode" {
			return fail(fmt.Sprintf("unknown option %q; only mode=0660 is known", k))
		}
		if path[0] == '@' {
			return fail("mode does not apply to an abstract socket")
		}
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m == 0 || m > 0o777 {
			return fail(fmt.Sprintf("mode %q must be octal permission bits, as in mode=0660", v))
		}
		a.Mode = fs.FileMode(m)
	}
	return a, nil
}

func validHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err)
		}
		return err
	}
	if port == "" {
		return errors.New("missing port")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || port[0] == '+' || port[0] == '-' {
		return fmt.Errorf("port %q must be a number from 0 to 65535", port)
	}
	if strings.ContainsAny(host, "[]/%?#") && net.ParseIP(strings.Split(host, "%")[0]) == nil {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return nil
}

func checkFamily(scheme, hostport string) error {
	host, _, _ := net.SplitHostPort(hostport)
	ip := net.ParseIP(host)
	if ip == nil {
		return nil
	}
	is4 := ip.To4() != nil
	switch {
	case strings.HasSuffix(scheme, "4") && !is4:
		return fmt.Errorf("%s is an IPv6 address but the scheme is %s", host, scheme)
	case strings.HasSuffix(scheme, "6") && is4:
		return fmt.Errorf("%s is an IPv4 address but the scheme is %s", host, scheme)
	}
	return nil
}

// validName checks a systemd FileDescriptorName (systemd.CheckFDName).
func validName(name string) error {
	if name == "" {
		return errors.New("missing socket name after systemd:")
	}
	if err := systemd.CheckFDName(name); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "systemd: "))
	}
	return nil
}
