// Package gradgen makes synthetic gradients for benchmarks and tests of the
// collective: vectors shaped like what the trainer all-reduces, from a seed,
// so every run (and every rank given its seed) gets the same values.
package gradgen

import (
	"math"
	"math/rand/v2"
)

// FixedPoint returns n int64 values shaped like the exact mode's gradient
// partials: blocks of 256 (one neuron's row) on their own power-of-two
// grid, Gaussian values of 2^12 to 2^30 grid steps, and one value in a
// thousand an outlier 2^10 times larger.
func FixedPoint(n int, seed uint64) []int64 {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	v := make([]int64, n)
	var scale float64
	for i := range v {
		if i%256 == 0 {
			scale = math.Ldexp(1, 12+rng.IntN(19))
		}
		x := rng.NormFloat64() * scale
		if rng.IntN(1000) == 0 {
			x *= 1024
		}
		v[i] = int64(math.RoundToEven(x))
	}
	return v
}

// Float32 returns n float32 values of the same shape (fast mode).
func Float32(n int, seed uint64) []float32 {
	q := FixedPoint(n, seed)
	v := make([]float32, n)
	for i, x := range q {
		v[i] = float32(math.Ldexp(float64(x), -40))
	}
	return v
}
