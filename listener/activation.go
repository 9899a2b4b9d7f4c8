package listener

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/handoff-dev/handoff/systemd"
)

var (
	claimMu sync.Mutex
	claimed = map[int]bool{} // index into systemd.Activated()
)

// activated finds and claims the socket systemd passed for a, of socket type
// sotype: by name for systemd:NAME, else by equal local address. It returns
// (nil, nil) when there is none and a is not systemd:NAME. Each passed socket
// is handed out once; the caller owns the file.
func activated(a Addr, sotype int) (*os.File, error) {
	files := systemd.Activated()
	claimMu.Lock()
	defer claimMu.Unlock()
	for i, af := range files {
		if claimed[i] {
			continue
		}
		if a.Network == "systemd" {
			if af.Name != a.Address || sockType(af.File) != sotype {
				continue
			}
		} else if sockType(af.File) != sotype || !sameAddr(a, af.File) {
			continue
		}
		claimed[i] = true
		return af.File, nil
	}
	if a.Network != "systemd" {
		return nil, nil
	}
	var names []string
	for _, af := range files {
		names = append(names, af.Name)
	}
	hint := "no sockets were passed; start this service from a .socket unit with FileDescriptorName=" + a.Address
	if len(names) > 0 {
		hint = fmt.Sprintf("systemd passed: %s; set FileDescriptorName=%s on the socket in the .socket unit", strings.Join(names, ", "), a.Address)
	}
	return nil, &Error{Addr: a.String(), Err: fmt.Errorf("no unused socket named %q was passed by systemd", a.Address), Hint: hint}
}

// sameAddr reports whether the socket f is bound to the address a asks for.
// An empty or unspecified host matches a socket bound to any address of its
// family; a host name is resolved.
func sameAddr(a Addr, f *os.File) bool {
	local := sockName(f)
	switch s := local.(type) {
	case *net.UnixAddr:
		return a.Network == "unix" && s.Name == a.Address
	case *net.TCPAddr:
		return matchIP(a, s.IP, s.Port)
	}
	return false
}

func matchIP(a Addr, ip net.IP, port int) bool {
	if a.Network == "unix" {
		return false
	}
	host, p, err := net.SplitHostPort(a.Address)
	if err != nil || p != fmt.Sprint(port) {
		return false
	}
	if host == "" {
		return ip.IsUnspecified()
	}
	want := net.ParseIP(host)
	if want == nil {
		addrs, err := net.LookupIP(host)
		if err != nil || len(addrs) == 0 {
			return false
		}
		want = addrs[0]
	}
	return want.Equal(ip)
}
