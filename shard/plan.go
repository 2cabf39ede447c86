package shard

import (
	"math/bits"
	"math/rand/v2"

	"github.com/causalrm/causalrm/internal/seeds"
)

// Range is the half-open row range [Lo, Hi).
type Range struct{ Lo, Hi int }

// Len is the number of rows in the range.
func (r Range) Len() int { return r.Hi - r.Lo }

// Shards cuts n rows into s contiguous ranges of near-equal size, in order:
// the first n%s ranges have n/s+1 rows, the others n/s (so some are empty
// when s > n). It panics if s < 1 or n < 0.
func Shards(n, s int) []Range {
	if s < 1 || n < 0 {
		panic("shard: Shards needs n >= 0 and s >= 1")
	}
	q, r := n/s, n%s
	out := make([]Range, s)
	lo := 0
	for k := range out {
		size := q
		if k < r {
			size++
		}
		out[k] = Range{lo, lo + size}
		lo += size
	}
	return out
}

// ShardOf returns the index k of the range of Shards(n, s) holding row,
// in O(1). It panics if row is outside [0, n).
func ShardOf(n, s, row int) int {
	if s < 1 || row < 0 || row >= n {
		panic("shard: ShardOf row out of range")
	}
	q, r := n/s, n%s
	big := r * (q + 1) // rows held by the first r (larger) shards
	if row < big {
		return row / (q + 1)
	}
	return r + (row-big)/q
}

// boundedUint64 returns a uniform value in [0, bound) from pcg, by Lemire's
// multiply-and-reject method on pcg.Uint64 (spelled out here rather than
// taken from rand.Rand so the stream is fixed by this file alone).
func boundedUint64(pcg *rand.PCG, bound uint64) uint64 {
	hi, lo := bits.Mul64(pcg.Uint64(), bound)
	if lo < bound {
		thresh := -bound % bound
		for lo < thresh {
			hi, lo = bits.Mul64(pcg.Uint64(), bound)
		}
	}
	return hi
}

// EpochPerm returns the permutation of rows 0..n-1 used in one epoch of a
// stage. It is a pure function of its arguments, identical on every platform
// and Go version:
//
//   - the PCG generator of math/rand/v2 (PCG-DXSM, whose output is fixed by
//     its specification) is seeded with seeds.EpochPerm(seed, stage, epoch);
//   - starting from the identity, for i = n-1 down to 1, j = a uniform value
//     in [0, i] drawn by boundedUint64, and perm[i], perm[j] are swapped
//     (Fisher-Yates).
//
// Every worker therefore derives the same batches. n must fit in an int32.
func EpochPerm(seed uint64, stage string, epoch int, n int) []int32 {
	if n < 0 || n > 1<<31-1 {
		panic("shard: EpochPerm n out of range")
	}
	perm := make([]int32, n)
	for i := range perm {
		perm[i] = int32(i)
	}
	pcg := rand.NewPCG(seeds.EpochPerm(seed, stage, epoch))
	for i := n - 1; i > 0; i-- {
		j := boundedUint64(pcg, uint64(i)+1)
		perm[i], perm[j] = perm[j], perm[i]
	}
	return perm
}

// Batches is the number of steps of an epoch of n rows with batches of
// batch rows; the last batch may be short (drop_last = false).
func Batches(n, batch int) int {
	if batch < 1 {
		panic("shard: batch size must be >= 1")
	}
	return (n + batch - 1) / batch
}

// BatchRows returns the rows of step (0-based) of the epoch: the slice
// perm[step*batch : min((step+1)*batch, len(perm))], a view into perm.
func BatchRows(perm []int32, step, batch int) []int32 {
	if batch < 1 || step < 0 || step >= Batches(len(perm), batch) {
		panic("shard: BatchRows step out of range")
	}
	lo := step * batch
	return perm[lo:min(lo+batch, len(perm))]
}
