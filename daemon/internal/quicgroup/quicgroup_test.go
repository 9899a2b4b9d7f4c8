//go:build linux

package quicgroup

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/handoff-dev/handoff/daemon/internal/config"
	"github.com/handoff-dev/handoff/daemon/internal/gen"
	"github.com/handoff-dev/handoff/internal/quicsteer"
)

// TestQUICSlotStillHeld: generation 33 would take slot 0, which generation
// 1 holds while it drains: its spawn is refused, naming both, so that the
// reload fails and the serving generation serves on; generation 34 takes
// slot 1, free.
func TestQUICSlotStillHeld(t *testing.T) {
	qs := New(slog.New(slog.DiscardHandler))
	old := &gen.Gen{N: 1}
	qs.gens[old] = &quicGen{n: 1, slot: quicsteer.Slot(1)}
	_, _, err := qs.Spawn(&gen.Gen{N: 1 + quicsteer.MaxGenerations}, nil)
	if err == nil || !strings.Contains(err.Error(), "slot 0 is still held by generation 1") {
		t.Fatalf("generation 33 beside generation 1: %v, want its refusal", err)
	}
	files, env, err := qs.Spawn(&gen.Gen{N: 2 + quicsteer.MaxGenerations}, nil)
	if err != nil || len(files) != 0 || len(env) != 2 || env[0] != quicsteer.EnvSlot+"=1" {
		t.Fatalf("generation 34: %v, %v, %v; want slot 1", files, env, err)
	}
}

// TestQUICDrainingBound: config's bound on --max-draining with quic:// (it
// does not import quicsteer, to link no BPF library) leaves a slot for the
// serving generation and the one starting.
func TestQUICDrainingBound(t *testing.T) {
	if config.MaxQUICDraining != quicsteer.MaxGenerations-2 {
		t.Errorf("config.MaxQUICDraining is %d, want quicsteer.MaxGenerations-2 = %d", config.MaxQUICDraining, quicsteer.MaxGenerations-2)
	}
}
