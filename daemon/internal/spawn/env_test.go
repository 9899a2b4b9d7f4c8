//go:build linux

package spawn

import (
	"testing"

	"github.com/handoff-dev/handoff/internal/quicsteer"
)

// TestQUICEnvWithheld: the slot and key reach a generation from handoff
// alone, never from handoff's environment or the env file.
func TestQUICEnvWithheld(t *testing.T) {
	for _, kv := range []string{quicsteer.EnvSlot + "=5", quicsteer.EnvKey + "=beef"} {
		if !withheld(kv) {
			t.Errorf("%s passes through to the generation", kv)
		}
	}
}
