package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAdamKernelMatchesScalar holds the kernel Update uses (a vector one in
// GOEXPERIMENT=simd builds) to the scalar reference bit for bit, over
// lengths with and without a tail and values from subnormal to large.
func TestAdamKernelMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	val := func() float32 {
		switch rng.IntN(6) {
		case 0:
			return 0
		case 1:
			return float32(rng.NormFloat64()) * 1e-40 // subnormal
		case 2:
			return float32(rng.NormFloat64()) * 1e4
		default:
			return float32(rng.NormFloat64()) * float32(math.Pow(10, -float64(rng.IntN(8))))
		}
	}
	for _, n := range []int{1, 7, 8, 9, 64, 1003} {
		for step := 1; step <= 3; step++ {
			a := NewAdam(n, 5e-4, 1e-6)
			a.Step = step - 1
			p, g := make([]float32, n), make([]float32, n)
			for i := range p {
				p[i], g[i], a.M[i] = val(), val(), val()
				a.V[i] = float32(math.Abs(float64(val())))
			}
			ref := a.Clone()
			pref := append([]float32(nil), p...)
			a.Update(p, g)
			ref.Step++
			bc1 := 1 - math.Pow(ref.Beta1, float64(ref.Step))
			bc2 := 1 - math.Pow(ref.Beta2, float64(ref.Step))
			c := adamStep{float32(ref.LR / bc1), float32(1 / math.Sqrt(bc2)), float32(ref.Beta1), float32(ref.Beta2),
				float32(ref.WeightDecay), float32(ref.Eps)}
			adamScalar(&c, pref, g, ref.M, ref.V)
			for i := range p {
				if math.Float32bits(p[i]) != math.Float32bits(pref[i]) ||
					math.Float32bits(a.M[i]) != math.Float32bits(ref.M[i]) ||
					math.Float32bits(a.V[i]) != math.Float32bits(ref.V[i]) {
					t.Fatalf("n=%d step %d element %d (%s): kernel p,m,v = %v,%v,%v; scalar %v,%v,%v",
						n, step, i, SIMD(), p[i], a.M[i], a.V[i], pref[i], ref.M[i], ref.V[i])
				}
			}
		}
	}
}
