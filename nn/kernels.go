package nn

import "math"

// Element loops of the exact step, as scalar references. Builds with
// GOEXPERIMENT=simd on amd64 run AVX2 versions of them (kernels_simd.go)
// that give the same bits; kernels_test.go holds them to these.

// widenScaled sets dst[j] = float64(src[j]) * scale[j] (one batch row of x
// onto its integer grid: the conversion is exact, scale a power of two).
func widenScaled(dst []float64, src []float32, scale []float64) {
	dst, scale = dst[:len(src)], scale[:len(src)]
	for j, v := range src {
		dst[j] = float64(v) * scale[j]
	}
}

// toInt64 sets dst[i] = int64(src[i]) for the integer-valued results of an
// exact GEMM.
func toInt64(dst []int64, src []float64) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = int64(v)
	}
}

// narrowScaled sets dst[j] = float32(float64(src[j]) * a * b[j] * c), the
// three products in that order (one row of a weight gradient off its grids).
func narrowScaled(dst []float32, src []int64, a float64, b []float64, c float64) {
	dst, b = dst[:len(src)], b[:len(src)]
	for j, v := range src {
		dst[j] = float32(float64(v) * a * b[j] * c)
	}
}

// maxAbsScaled is the largest |float64(src[j]) * scale[j]|, or NaN if any
// product is NaN (the grid of a row with a NaN must not look finite).
func maxAbsScaled(src []float32, scale []float64) float64 {
	scale = scale[:len(src)]
	mx := 0.0
	for j, v := range src {
		if a := math.Abs(float64(v)) * scale[j]; a > mx || a != a {
			mx = a
		}
	}
	return mx
}

// quantScaled sets dst[j] = rint(float64(src[j]) * scale[j] * inv), the two
// products in that order.
func quantScaled(dst []float64, src []float32, scale []float64, inv float64) {
	dst, scale = dst[:len(src)], scale[:len(src)]
	for j, v := range src {
		dst[j] = rint(float64(v) * scale[j] * inv)
	}
}
