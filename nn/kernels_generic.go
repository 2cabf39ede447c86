//go:build !(goexperiment.simd && amd64)

package nn

// Without GOEXPERIMENT=simd (or off amd64) the kernels are the scalar
// references of adam.go and kernels.go; with it, adam_simd.go and
// kernels_simd.go run AVX2 versions with the same bits.

// SIMD names the vector kernels compiled in ("none" or "avx2").
func SIMD() string { return "none" }

func adamKernel(c *adamStep, p, gr, ms, vs []float32)            { adamScalar(c, p, gr, ms, vs) }
func widenScaledK(dst []float64, src []float32, scale []float64) { widenScaled(dst, src, scale) }
func toInt64K(dst []int64, src []float64)                        { toInt64(dst, src) }
func narrowScaledK(dst []float32, src []int64, a float64, b []float64, c float64) {
	narrowScaled(dst, src, a, b, c)
}
func maxAbsScaledK(src []float32, scale []float64) float64 { return maxAbsScaled(src, scale) }
func quantScaledK(dst []float64, src []float32, scale []float64, inv float64) {
	quantScaled(dst, src, scale, inv)
}
