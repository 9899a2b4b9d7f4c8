//go:build linux

package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// stopJob asks systemd what job stops handoff's unit: "stop" for a plain
// stop (systemctl stop, a shutdown), "restart" for a restart, whose next
// start takes the sockets back from the fd store. It reads the unit from
// handoff's cgroup and the job from `systemctl list-jobs`, within
// stopJobTimeout; an error says why it cannot tell.
func stopJob() (string, error) {
	unit, err := ownUnit()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopJobTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", "list-jobs", "--no-legend", "--no-pager").Output()
	if err != nil {
		return "", fmt.Errorf("systemctl list-jobs: %w", err)
	}
	// JOB UNIT TYPE STATE, one job a line.
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 4 && f[1] == unit {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("systemd lists no job for %s", unit)
}

// stopJobTimeout bounds the question to systemd.
const stopJobTimeout = 2 * time.Second

// ownUnit returns the systemd service that handoff runs in, from its cgroup
// (the last path element that names a .service).
func ownUnit() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		_, path, ok := strings.Cut(line, "::")
		if !ok {
			continue
		}
		parts := strings.Split(path, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			if strings.HasSuffix(parts[i], ".service") {
				return parts[i], nil
			}
		}
	}
	return "", errors.New("handoff's cgroup names no systemd service")
}
