//go:build !unix

package drain_test

// unreadNow, where the test cannot peek, says no at the first look and
// yes once the poller has reported the socket readable.
var unreadNowLooked bool

func unreadNow(uintptr) bool {
	done := unreadNowLooked
	unreadNowLooked = !unreadNowLooked
	return done
}
