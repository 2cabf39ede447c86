package nn

import (
	"math"
	"math/bits"
	"sync"
)

// The exact mode keeps every sum an integer below 2^53 so that a float64
// GEMM computes it exactly in any order, blocking or thread count
// (docs/exactness.md). Values are put on power-of-two
// grids: q = round(v / 2^e) with |q| <= 2^bits.

// XBits is the grid of the embeddings: |x / 2^e_col| <= 2^XBits.
const XBits = 15

// sumBits is the largest |integer| any float64 sum may reach, with one bit
// of slack for the rounding of |q| up to 2^bits.
const sumBits = 52

// log2ceil is ceil(log2(n)) for n >= 1.
func log2ceil(n int) int {
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

// GridExp returns e with max / 2^e < 2^b, so values up to max quantize to
// |q| <= 2^b. A zero max gives 0.
func GridExp(max float64, b int) int {
	if max == 0 {
		return 0
	}
	_, exp := math.Frexp(max) // max = frac * 2^exp, frac in [0.5, 1)
	return exp - b
}

// roundMagic rounds to the nearest integer, ties to even, for |v| < 2^51:
// adding and subtracting 1.5*2^52 leaves no fraction bits. Much faster
// than math.RoundToEven and bit-identical to it in that range.
const roundMagic = 1.5 * (1 << 52)

func rint(v float64) float64 { return (v + roundMagic) - roundMagic }

// pow2 is 2^e as a float64 (exact for the exponents used here).
func pow2(e int) float64 { return math.Ldexp(1, e) }

// ColumnExps returns, for each of d columns of row-major x, the grid
// exponent that puts the column's largest magnitude at 2^XBits (none when
// d < 1).
func ColumnExps(d int, xs ...[]float32) []int {
	return ExpsFromMax(ColumnMaxAbs(d, xs...))
}

// ColumnMaxAbs is the largest magnitude of each of d columns of row-major
// x. Holders of different rows max-reduce it and call ExpsFromMax, so they
// agree on the grid. d < 1 gives no columns (nil).
func ColumnMaxAbs(d int, xs ...[]float32) []float64 {
	if d < 1 {
		return nil
	}
	maxAbs := make([]float64, d)
	for _, x := range xs {
		for i := 0; i+d <= len(x); i += d {
			for j, v := range x[i : i+d] {
				if a := math.Abs(float64(v)); a > maxAbs[j] {
					maxAbs[j] = a
				}
			}
		}
	}
	return maxAbs
}

// ExpsFromMax turns column maxima into grid exponents.
func ExpsFromMax(maxAbs []float64) []int {
	exps := make([]int, len(maxAbs))
	for j, m := range maxAbs {
		exps[j] = GridExp(m, XBits)
	}
	return exps
}

// QuantizeX rounds x (row-major, d columns) in place onto the per-column
// grids of exps, saturating at +-2^XBits (only rows outside the data the
// grids were made from can saturate). The results are exact float32s.
// d < 1 leaves x as it is.
func QuantizeX(x []float32, d int, exps []int) {
	if d < 1 {
		return
	}
	inv := make([]float64, d)
	scale := make([]float64, d)
	for j, e := range exps {
		inv[j], scale[j] = pow2(-e), pow2(e)
	}
	const lim = 1 << XBits
	parallelFor(len(x)/d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := x[i*d : (i+1)*d]
			for j, v := range row {
				q := rint(float64(v) * inv[j])
				if q > lim {
					q = lim
				} else if q < -lim {
					q = -lim
				}
				row[j] = float32(q * scale[j])
			}
		}
	})
}

// parallelFor splits [0,n) into contiguous chunks over Threads() goroutines.
// Callers only do element-wise work in fn, so the split never changes bits.
func parallelFor(n int, fn func(lo, hi int)) { splitOver(n, min(Threads(), n/64), fn) }

// splitOver runs fn over t contiguous chunks of [0,n) at once (in the
// caller when t <= 1).
func splitOver(n, t int, fn func(lo, hi int)) {
	if t <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < t; w++ {
		lo, hi := n*w/t, n*(w+1)/t
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// quantizeRows writes q[i,j] = rint(v[i,j]/2^e_i) with e_i from the row's
// largest magnitude and b bits; colScale, if non-nil, multiplies column j
// first (exactly: it holds powers of two). It returns the row exponents.
func quantizeRows(v []float64, rows, cols int, b int, q []float64, exps []int) {
	parallelFor(rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := v[i*cols : (i+1)*cols]
			m := 0.0
			for _, x := range row {
				if a := math.Abs(x); a > m {
					m = a
				}
			}
			e := GridExp(m, b)
			exps[i] = e
			inv := pow2(-e)
			out := q[i*cols : (i+1)*cols]
			for j, x := range row {
				out[j] = rint(x * inv)
			}
		}
	})
}

// quantizeCols writes q[i,j] = rint(v[i,j]/2^exps[j]) for given exponents.
func quantizeCols(v []float64, rows, cols int, exps []int, q []float64) {
	inv := make([]float64, cols)
	for j, e := range exps {
		inv[j] = pow2(-e)
	}
	parallelFor(rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := v[i*cols : (i+1)*cols]
			out := q[i*cols : (i+1)*cols]
			for j, x := range row {
				out[j] = rint(x * inv[j])
			}
		}
	})
}

// colMaxAbs returns the largest magnitude of each column.
func colMaxAbs(v []float64, rows, cols int, dst []float64) {
	for j := range dst[:cols] {
		dst[j] = 0
	}
	for i := 0; i < rows; i++ {
		for j, x := range v[i*cols : (i+1)*cols] {
			if a := math.Abs(x); a > dst[j] || a != a {
				dst[j] = a
			}
		}
	}
}
