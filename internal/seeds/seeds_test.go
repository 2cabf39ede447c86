package seeds

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/fnv"
	"testing"
)

// The derivations are frozen: these values were computed independently
// (FNV-1a and SHA-256 over the documented byte layouts, spelled out here)
// and every model hash depends on them.
func TestFrozen(t *testing.T) {
	h := fnv.New64a()
	h.Write([]byte("7/reward"))
	if got, want := Stage(7, "reward"), h.Sum64(); got != want {
		t.Errorf("Stage: %x, want %x", got, want)
	}
	msg := []byte("causalrm/epoch-perm/v1\x00")
	msg = binary.LittleEndian.AppendUint64(msg, 7)
	msg = binary.LittleEndian.AppendUint64(msg, 6)
	msg = append(msg, "reward"...)
	msg = binary.LittleEndian.AppendUint64(msg, 3)
	sum := sha256.Sum256(msg)
	hi, lo := EpochPerm(7, "reward", 3)
	if hi != binary.LittleEndian.Uint64(sum[:8]) || lo != binary.LittleEndian.Uint64(sum[8:16]) {
		t.Errorf("EpochPerm: %x %x", hi, lo)
	}
	if a, b := Stage(1, "ab/c"), Stage(1, "ab/d"); a == b {
		t.Error("different stages, one seed")
	}
}
