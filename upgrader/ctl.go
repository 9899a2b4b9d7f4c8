package upgrader

import (
	"bufio"
	"fmt"
	"github.com/handoff-dev/handoff/drain"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The control channel is a Unix socketpair between a generation and the one it
// starts, passed through tableflip under ctlName. Both ends write lines:
//
//	parent → child  "init GEN WATCHDOG_USEC"   before the child starts, with a pipe (SCM_RIGHTS)
//	parent → child  "bake MS"                  in the same datagram: the bake window (see bake.go)
//	child → parent  "started PID"              from New
//	child → parent  "baking COUNTS"            from Ready, to a parent that bakes: it waits for
//	                                           "baked"; COUNTS 1 if it reports its Drainers' counts
//	child → parent  "ready PID"                from Ready, before tableflip's own signal
//	child → parent  "serving A R N"            while baking: accepted, requests, answered
//	parent → child  "baked"                    it proved it serves: now tableflip's signal
//	parent → child  "main"                     after systemd was told MAINPID=PID
//	parent → child  "upgrade"                  an upgrade was asked while the child started: carry it out
//	parent → child  "drain CONNS DEADLINE_MS"  while the parent drains (Unix ms)
//	parent → child  "counters JSON"            after "main": the metrics' counters, to count on from
//	parent → child  "drained JSON"             the parent's drain ended (drainedMsg)
//
// The pipe of the init message is the child's stderr from its New to its
// Ready, so that the parent can quote the last lines of a release that fails
// at start.
const ctlName = "handoff-ctl"

// ctl is one end of the control channel.
type ctl struct {
	conn *net.UnixConn
	r    *bufio.Reader
	wmu  sync.Mutex
}

// ctlFromFile makes a ctl from a socket file; f may be closed afterwards.
func ctlFromFile(f *os.File) (*ctl, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("control channel: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("control channel: %T is not a Unix socket", c)
	}
	return &ctl{conn: uc, r: bufio.NewReader(uc)}, nil
}

func (c *ctl) send(format string, args ...any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := fmt.Fprintf(c.conn, format+"\n", args...)
	return err
}

// recv reads one line, waiting at most until deadline (zero: no deadline).
func (c *ctl) recv(deadline time.Time) ([]string, error) {
	_ = c.conn.SetReadDeadline(deadline)
	line, err := c.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	return strings.Fields(line), nil
}

func (c *ctl) close() { c.conn.Close() }

// drainStatus is what a draining parent last reported.
type drainStatus struct {
	conns    int
	deadline time.Time
}

func parseDrain(f []string) (drainStatus, bool) {
	if len(f) != 3 || f[0] != "drain" {
		return drainStatus{}, false
	}
	n, err1 := strconv.Atoi(f[1])
	ms, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return drainStatus{}, false
	}
	return drainStatus{conns: n, deadline: time.UnixMilli(ms)}, true
}

// drainedMsg is what a generation tells the next of its drain, for Metrics.
type drainedMsg struct {
	Ms        int64
	Stats     drain.Stats
	Jobs      int
	Cancelled int
}
