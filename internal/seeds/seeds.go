// Package seeds derives every seed of a run from the job's one seed, in
// one place, each derivation fixed by this file alone (no library's
// stream), since a model's bits depend on them.
//
// The two derivations differ in rigour for a historical reason that the
// bits now pin: Stage (a model's initialisation) is FNV-1a of a short
// text, EpochPerm (the batch order) a versioned, length-prefixed SHA-256.
// Both are deterministic and collision-free for the inputs they get (a
// stage name and an epoch number); moving Stage to the SHA-256 scheme would
// change every model a seed has produced, so it stays as it is, frozen,
// and a new derivation uses the SHA-256 scheme with its own version tag.
package seeds

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// Stage is the initialisation seed of a stage's model: FNV-1a 64 of
// "<seed>/<stage>".
func Stage(seed uint64, stage string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", seed, stage)
	return h.Sum64()
}

// EpochPerm is the 128-bit PCG seed of one epoch's permutation of a
// stage's rows: SHA-256 of
//
//	"causalrm/epoch-perm/v1" | 0x00 | seed (uint64 LE) | len(stage) (uint64 LE) | stage | epoch (int64 LE)
//
// whose first two little-endian 64-bit words are the PCG seeds (hi, lo).
func EpochPerm(seed uint64, stage string, epoch int) (hi, lo uint64) {
	h := sha256.New()
	h.Write([]byte("causalrm/epoch-perm/v1\x00"))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], uint64(len(stage)))
	h.Write(b[:])
	h.Write([]byte(stage))
	binary.LittleEndian.PutUint64(b[:], uint64(int64(epoch)))
	h.Write(b[:])
	sum := h.Sum(nil)
	return binary.LittleEndian.Uint64(sum[0:8]), binary.LittleEndian.Uint64(sum[8:16])
}
