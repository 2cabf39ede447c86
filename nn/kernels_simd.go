//go:build goexperiment.simd && amd64

package nn

import "simd/archsimd"

// AVX2 has no int64 <-> float64 conversion; for integers of magnitude below
// 2^51 adding 1.5*2^52 and reinterpreting the bits is exact both ways.
// Vectors holding a larger value take the scalar path.
const (
	magicF    = 1.5 * (1 << 52)
	magicBits = 0x4338000000000000 // math.Float64bits(magicF)
	limit51   = 1 << 51
)

func widenScaledK(dst []float64, src []float32, scale []float64) {
	if !haveAVX2 {
		widenScaled(dst, src, scale)
		return
	}
	dst, scale = dst[:len(src)], scale[:len(src)]
	n := len(src) &^ 3
	for j := 0; j < n; j += 4 {
		archsimd.LoadFloat32x4Slice(src[j:]).ConvertToFloat64().Mul(archsimd.LoadFloat64x4Slice(scale[j:])).StoreSlice(dst[j:])
	}
	widenScaled(dst[n:], src[n:], scale[n:])
}

func toInt64K(dst []int64, src []float64) {
	if !haveAVX2 {
		toInt64(dst, src)
		return
	}
	dst = dst[:len(src)]
	n := len(src) &^ 3
	magic, bits := archsimd.BroadcastFloat64x4(magicF), archsimd.BroadcastInt64x4(magicBits)
	lo, hi := archsimd.BroadcastFloat64x4(-limit51), archsimd.BroadcastFloat64x4(limit51)
	for i := 0; i < n; i += 4 {
		v := archsimd.LoadFloat64x4Slice(src[i:])
		if v.Greater(lo).And(v.Less(hi)).ToBits() != 0xF {
			toInt64(dst[i:i+4], src[i:i+4])
			continue
		}
		v.Add(magic).AsInt64x4().Sub(bits).StoreSlice(dst[i:])
	}
	toInt64(dst[n:], src[n:])
}

func narrowScaledK(dst []float32, src []int64, a float64, b []float64, c float64) {
	if !haveAVX2 {
		narrowScaled(dst, src, a, b, c)
		return
	}
	dst, b = dst[:len(src)], b[:len(src)]
	n := len(src) &^ 3
	magic, bits := archsimd.BroadcastFloat64x4(magicF), archsimd.BroadcastInt64x4(magicBits)
	lo, hi := archsimd.BroadcastInt64x4(-limit51), archsimd.BroadcastInt64x4(limit51)
	av, cv := archsimd.BroadcastFloat64x4(a), archsimd.BroadcastFloat64x4(c)
	for j := 0; j < n; j += 4 {
		v := archsimd.LoadInt64x4Slice(src[j:])
		if v.Greater(lo).And(v.Less(hi)).ToBits() != 0xF {
			narrowScaled(dst[j:j+4], src[j:j+4], a, b[j:j+4], c)
			continue
		}
		f := v.Add(bits).AsFloat64x4().Sub(magic)
		f.Mul(av).Mul(archsimd.LoadFloat64x4Slice(b[j:])).Mul(cv).ConvertToFloat32().StoreSlice(dst[j:])
	}
	narrowScaled(dst[n:], src[n:], a, b[n:], c)
}

func maxAbsScaledK(src []float32, scale []float64) float64 {
	if !haveAVX2 {
		return maxAbsScaled(src, scale)
	}
	scale = scale[:len(src)]
	n := len(src) &^ 3
	abs := archsimd.BroadcastInt64x4(0x7fffffffffffffff)
	mx := archsimd.BroadcastFloat64x4(0)
	nan := false
	for j := 0; j < n; j += 4 {
		a := archsimd.LoadFloat32x4Slice(src[j:]).ConvertToFloat64().AsInt64x4().And(abs).AsFloat64x4().
			Mul(archsimd.LoadFloat64x4Slice(scale[j:]))
		if a.IsNaN().ToBits() != 0 {
			nan = true
			break
		}
		mx = mx.Max(a)
	}
	if nan {
		return maxAbsScaled(src, scale)
	}
	var lanes [4]float64
	mx.StoreSlice(lanes[:])
	m := max(lanes[0], lanes[1], lanes[2], lanes[3])
	return max(m, maxAbsScaled(src[n:], scale[n:])) // NaN if the tail has one
}

func quantScaledK(dst []float64, src []float32, scale []float64, inv float64) {
	if !haveAVX2 {
		quantScaled(dst, src, scale, inv)
		return
	}
	dst, scale = dst[:len(src)], scale[:len(src)]
	n := len(src) &^ 3
	iv, magic := archsimd.BroadcastFloat64x4(inv), archsimd.BroadcastFloat64x4(roundMagic)
	for j := 0; j < n; j += 4 {
		archsimd.LoadFloat32x4Slice(src[j:]).ConvertToFloat64().Mul(archsimd.LoadFloat64x4Slice(scale[j:])).Mul(iv).
			Add(magic).Sub(magic).StoreSlice(dst[j:])
	}
	quantScaled(dst[n:], src[n:], scale[n:], inv)
}
