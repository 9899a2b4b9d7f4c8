// Package sdjob asks systemd what it is doing to the service this process
// runs in: whether the stop under way is a restart, after which the unit's
// file descriptor store comes back, or a plain stop, after which systemd
// empties it.
package sdjob

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

// Timeout bounds the question to systemd.
const Timeout = 2 * time.Second

// StopJob returns the type of the job systemd runs on this process's
// service: "stop" for a plain stop (systemctl stop, a shutdown), "restart"
// for a restart (its stop phase included). It reads the unit from the
// process's cgroup and the job from `systemctl list-jobs`, within Timeout;
// an error says why it cannot tell (not under systemd, no job: a stop that
// systemd did not ask for).
func StopJob() (string, error) {
	unit, err := Unit()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
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

// Unit returns the systemd service this process runs in, from its cgroup
// (the last path element that names a .service).
func Unit() (string, error) {
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
	return "", errors.New("the process's cgroup names no systemd service")
}
