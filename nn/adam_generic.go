//go:build !(goexperiment.simd && amd64)

package nn

// adamKernel is the element loop of Update; builds with GOEXPERIMENT=simd
// on amd64 use an AVX2 kernel with the same bits (adam_simd.go).
func adamKernel(c *adamStep, p, gr, ms, vs []float32) { adamScalar(c, p, gr, ms, vs) }

// SIMD names the vector kernels compiled in ("none" or "avx2").
func SIMD() string { return "none" }
