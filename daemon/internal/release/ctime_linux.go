package release

import (
	"os"
	"syscall"
)

// changeTime is st's change time (ctime) in nanoseconds since the epoch,
// or 0 where the system does not say.
func changeTime(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		sec, nsec := s.Ctim.Unix()
		return sec*1e9 + nsec
	}
	return 0
}
