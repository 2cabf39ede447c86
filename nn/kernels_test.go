package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The kernels the exact step calls (vector ones in GOEXPERIMENT=simd builds)
// against their scalar references, bit for bit, over lengths with tails and
// values up to and past the vector paths' 2^51 limit.
func TestExactKernelsMatchScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ints := func(n int) []int64 {
		v := make([]int64, n)
		for i := range v {
			switch rng.IntN(8) {
			case 0:
				v[i] = 1<<51 - 1 - rng.Int64N(3)
			case 1:
				v[i] = -(1<<51 - rng.Int64N(3))
			case 2:
				v[i] = 1<<51 + rng.Int64N(1<<50) // past the vector limit
			case 3:
				v[i] = -(1 << 52) + rng.Int64N(8)
			default:
				v[i] = rng.Int64N(1<<40) - 1<<39
			}
		}
		return v
	}
	for _, n := range []int{1, 3, 4, 5, 8, 257, 4099} {
		x := make([]float32, n)
		sc := make([]float64, n)
		for j := range x {
			x[j] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-20)))
			sc[j] = pow2(rng.IntN(60) - 30)
		}
		got, want := make([]float64, n), make([]float64, n)
		widenScaledK(got, x, sc)
		widenScaled(want, x, sc)
		for j := range got {
			if math.Float64bits(got[j]) != math.Float64bits(want[j]) {
				t.Fatalf("widenScaled n=%d [%d]: %v, want %v", n, j, got[j], want[j])
			}
		}

		wq, wantQ := make([]float64, n), make([]float64, n)
		inv := pow2(-(rng.IntN(30) + 10))
		quantScaledK(wq, x, sc, inv)
		quantScaled(wantQ, x, sc, inv)
		for j := range wq {
			if math.Float64bits(wq[j]) != math.Float64bits(wantQ[j]) {
				t.Fatalf("quantScaled n=%d [%d]: %v, want %v", n, j, wq[j], wantQ[j])
			}
		}
		if g, w := maxAbsScaledK(x, sc), maxAbsScaled(x, sc); g != w {
			t.Fatalf("maxAbsScaled n=%d: %v, want %v", n, g, w)
		}
		for _, at := range []int{0, n / 2, n - 1} { // a NaN anywhere makes the maximum NaN
			xn := append([]float32(nil), x...)
			xn[at] = float32(math.NaN())
			if g := maxAbsScaledK(xn, sc); !math.IsNaN(g) {
				t.Fatalf("maxAbsScaled n=%d with a NaN at %d: %v", n, at, g)
			}
		}

		iv := ints(n)
		fv := make([]float64, n)
		for i, v := range iv {
			fv[i] = float64(v)
		}
		gi, wi := make([]int64, n), make([]int64, n)
		toInt64K(gi, fv)
		toInt64(wi, fv)
		for i := range gi {
			if gi[i] != wi[i] || wi[i] != iv[i] {
				t.Fatalf("toInt64 n=%d [%d]: %d, want %d (input %d)", n, i, gi[i], wi[i], iv[i])
			}
		}

		// Not powers of two (in the step they mostly are), so a change in
		// the order of the three products shows.
		g32, w32 := make([]float32, n), make([]float32, n)
		a, c := 0.3*pow2(-37), 1/float64(509)
		for j := range sc {
			sc[j] *= 1 + rng.Float64()
		}
		narrowScaledK(g32, iv, a, sc, c)
		narrowScaled(w32, iv, a, sc, c)
		for j := range g32 {
			if math.Float32bits(g32[j]) != math.Float32bits(w32[j]) {
				t.Fatalf("narrowScaled n=%d [%d]: %v, want %v (%s)", n, j, g32[j], w32[j], SIMD())
			}
		}
	}
}
