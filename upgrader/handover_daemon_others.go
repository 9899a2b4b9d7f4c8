//go:build !linux

package upgrader

import (
	"errors"
	"fmt"
)

// handoverChannelName: no channel is inherited here.
const handoverChannelName = ""

// open refuses: connections move between generations on Linux only.
func (c *channelCore) open(*Upgrader, int, int) error {
	return fmt.Errorf("upgrader: %s: connections move between generations on Linux only: %w", HandoverChannelsEnv, errors.ErrUnsupported)
}

// successorAdopts: never, here.
func (c *channelCore) successorAdopts(*Upgrader) bool { return false }
