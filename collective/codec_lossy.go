package collective

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/causalrm/causalrm/internal/floatbits"
)

const roundMagic = 1.5 * (1 << 52)

// maxAbs32 is the largest magnitude in v (NaN if v holds one). For
// non-NaN floats the order of |x| is the order of their bits less the sign,
// which keeps the loop free of unpredictable branches.
func maxAbs32(v []float32) float32 {
	var m uint32
	for _, x := range v {
		m = max(m, math.Float32bits(x)&0x7fffffff)
	}
	return math.Float32frombits(m) // above 0x7f800000: a NaN
}

// encodeLossy quantizes y into a payload in a buffer from sharedPool.
func encodeLossy(codec Codec, y []float32) *[]byte {
	n := len(y)
	m := maxAbs32(y)
	finite := m == m && m <= math.MaxFloat32
	switch codec {
	case CodecFP16:
		p := sharedPool.Get(1 + 2*n)
		out := *p
		e := 0
		if finite && m > 0 {
			_, exp := math.Frexp(float64(m)) // m < 2^exp
			e = min(max(exp-15, math.MinInt8), math.MaxInt8)
		}
		out[0] = byte(int8(e))
		inv := math.Ldexp(1, -e)
		for i, x := range y {
			binary.LittleEndian.PutUint16(out[1+2*i:], f32toF16(float32(float64(x)*inv)))
		}
		return p
	default: // CodecInt8
		p := sharedPool.Get(4 + n)
		out := *p
		var scale float32
		if !finite {
			scale = m
		} else if m > 0 {
			scale = m / 127
		}
		binary.LittleEndian.PutUint32(out, math.Float32bits(scale))
		if scale > 0 && finite {
			inv := 1 / float64(scale)
			for i, x := range y {
				// |x*inv| <= ~127, where adding and subtracting 1.5*2^52
				// rounds to the nearest integer, ties to even.
				q := int(float64(float64(x)*inv) + roundMagic - roundMagic) // no FMA: the conversion rounds
				out[4+i] = byte(int8(min(max(q, -127), 127)))
			}
		} else {
			clear(out[4:])
		}
		return p
	}
}

// decodeLossy fills dst from a lossy payload, rejecting non-finite values.
func decodeLossy(codec Codec, dst []float32, payload []byte) error {
	n := len(dst)
	switch codec {
	case CodecFP16:
		if len(payload) != 1+2*n {
			return fmt.Errorf("%w: fp16 payload of %d bytes for %d elements", ErrShape, len(payload), n)
		}
		scale := math.Ldexp(1, int(int8(payload[0])))
		for i := range dst {
			h := binary.LittleEndian.Uint16(payload[1+2*i:])
			if h&0x7c00 == 0x7c00 {
				return fmt.Errorf("%w: fp16 element %d is %#04x", ErrNonFinite, i, h)
			}
			dst[i] = float32(float64(f16toF32(h)) * scale)
		}
	case CodecInt8:
		if len(payload) != 4+n {
			return fmt.Errorf("%w: int8 payload of %d bytes for %d elements", ErrShape, len(payload), n)
		}
		scale := math.Float32frombits(binary.LittleEndian.Uint32(payload))
		if scale != scale || scale > math.MaxFloat32 || scale < 0 {
			return fmt.Errorf("%w: int8 scale %v", ErrNonFinite, scale)
		}
		for i := range dst {
			dst[i] = float32(int8(payload[4+i])) * scale
		}
	default:
		return fmt.Errorf("%w: codec %q is not lossy", ErrShape, codec)
	}
	return nil
}

// The IEEE half conversions are the ones the safetensors codec uses
// (internal/floatbits: round to nearest even, overflow to infinity, NaN
// kept).
var (
	f32toF16 = floatbits.Float32ToFloat16
	f16toF32 = floatbits.Float16ToFloat32
)
