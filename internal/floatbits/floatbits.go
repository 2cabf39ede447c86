// Package floatbits converts floats at the bit level: IEEE 754 half
// precision to and from float32 (the safetensors F16 dtype and the
// collective's fp16 wire codec use the same conversions), and the
// little-endian byte view of a []float32.
package floatbits

import (
	"encoding/binary"
	"math"
	"unsafe"
)

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Float16ToFloat32 converts an IEEE 754 half-precision value to float32.
func Float16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case exp == 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = frac * 2^-24
		v := float32(frac) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	}
}

// Float32ToFloat16 converts f to IEEE 754 half precision, rounding to
// nearest even; values beyond the half range become infinities.
func Float32ToFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 31 {
		return sign | 0x7c00
	}
	round := func(m uint32, shift uint) uint32 {
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		r := m >> shift
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return r
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		return sign | uint16(round(mant|0x800000, uint(14-e)))
	}
	// The carry of the rounding may spill into the exponent, which is the
	// correct result (up to +Inf).
	return sign | uint16(round(uint32(e)<<23|mant, 13))
}

// Float32Bytes returns the little-endian bytes of v. On little-endian hosts
// it is a view sharing v's memory (no copy); elsewhere it is a converted copy.
func Float32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}
