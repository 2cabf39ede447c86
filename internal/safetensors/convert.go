package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/causalrm/causalrm/internal/floatbits"
)

// float64Decoders convert little-endian elements of a dtype to float64.
var float64Decoders = map[string]func(dst []float64, src []byte){
	"F64": func(d []float64, s []byte) {
		for i := range d {
			d[i] = math.Float64frombits(binary.LittleEndian.Uint64(s[8*i:]))
		}
	},
	"F32": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(s[4*i:])))
		}
	},
	"F16": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(floatbits.Float16ToFloat32(binary.LittleEndian.Uint16(s[2*i:])))
		}
	},
	"BF16": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(s[2*i:])) << 16))
		}
	},
	"I64": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(int64(binary.LittleEndian.Uint64(s[8*i:])))
		}
	},
	"U64": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(binary.LittleEndian.Uint64(s[8*i:]))
		}
	},
	"I32": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(int32(binary.LittleEndian.Uint32(s[4*i:])))
		}
	},
	"U32": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(binary.LittleEndian.Uint32(s[4*i:]))
		}
	},
	"I16": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(int16(binary.LittleEndian.Uint16(s[2*i:])))
		}
	},
	"U16": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(binary.LittleEndian.Uint16(s[2*i:]))
		}
	},
	"I8": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(int8(s[i]))
		}
	},
	"U8": func(d []float64, s []byte) {
		for i := range d {
			d[i] = float64(s[i])
		}
	},
	"BOOL": func(d []float64, s []byte) {
		for i := range d {
			if s[i] != 0 {
				d[i] = 1
			} else {
				d[i] = 0
			}
		}
	},
}

// float32Decoders convert little-endian elements of a dtype to float32.
var float32Decoders = map[string]func(dst []float32, src []byte){
	"F32": func(d []float32, s []byte) {
		for i := range d {
			d[i] = math.Float32frombits(binary.LittleEndian.Uint32(s[4*i:]))
		}
	},
	"F64": func(d []float32, s []byte) {
		for i := range d {
			d[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(s[8*i:])))
		}
	},
	"F16": func(d []float32, s []byte) {
		for i := range d {
			d[i] = floatbits.Float16ToFloat32(binary.LittleEndian.Uint16(s[2*i:]))
		}
	},
	"BF16": func(d []float32, s []byte) {
		for i := range d {
			d[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(s[2*i:])) << 16)
		}
	},
}

func init() {
	// Integer and boolean dtypes go through float64 (exact for the values
	// that matter); they are never the bulk of a file.
	for dt, f := range float64Decoders {
		if _, ok := float32Decoders[dt]; ok {
			continue
		}
		f, size := f, dtypeSizes[dt]
		float32Decoders[dt] = func(d []float32, s []byte) {
			var tmp [256]float64
			for i := 0; i < len(d); i += len(tmp) {
				m := min(len(tmp), len(d)-i)
				f(tmp[:m], s[i*size:(i+m)*size])
				for k := 0; k < m; k++ {
					d[i+k] = float32(tmp[k])
				}
			}
		}
	}
}

// Float16ToFloat32 converts an IEEE 754 half-precision value to float32
// (floatbits.Float16ToFloat32, the conversion of the F16 dtype).
func Float16ToFloat32(h uint16) float32 { return floatbits.Float16ToFloat32(h) }

// Float32ToFloat16 converts f to IEEE 754 half precision, rounding to
// nearest even; values beyond the half range become infinities
// (floatbits.Float32ToFloat16).
func Float32ToFloat16(f float32) uint16 { return floatbits.Float32ToFloat16(f) }

func (t Tensor) check() (int, error) {
	size := dtypeSizes[t.DType]
	if size == 0 {
		return 0, fmt.Errorf("%w %q", ErrDType, t.DType)
	}
	n, ok := numElements(t.Shape)
	if !ok || len(t.Data) != n*size {
		return 0, fmt.Errorf("%w: shape %v of %s needs %d bytes, have %d", ErrFormat, t.Shape, t.DType, n*size, len(t.Data))
	}
	return n, nil
}

// Float32s converts the tensor to float32. Accepted dtypes: F32, F64, F16,
// BF16 and every integer dtype and BOOL (as 0/1).
func (t Tensor) Float32s() ([]float32, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	conv, ok := float32Decoders[t.DType]
	if !ok {
		return nil, fmt.Errorf("%w %s for float32", ErrDType, t.DType)
	}
	out := make([]float32, n)
	conv(out, t.Data)
	return out, nil
}

// Float64s converts the tensor to float64 (same dtypes as Float32s).
func (t Tensor) Float64s() ([]float64, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	conv, ok := float64Decoders[t.DType]
	if !ok {
		return nil, fmt.Errorf("%w %s for float64", ErrDType, t.DType)
	}
	out := make([]float64, n)
	conv(out, t.Data)
	return out, nil
}

// Int64s converts the tensor to int64. Integer dtypes and BOOL convert
// directly (U64 values above MaxInt64 are an error); float dtypes are
// accepted when every value is an integer in range.
func (t Tensor) Int64s() ([]int64, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	out := make([]int64, n)
	switch t.DType {
	case "I64":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
		return out, nil
	case "U64":
		for i := range out {
			u := binary.LittleEndian.Uint64(t.Data[8*i:])
			if u > math.MaxInt64 {
				return nil, fmt.Errorf("safetensors: element %d = %d overflows int64", i, u)
			}
			out[i] = int64(u)
		}
		return out, nil
	}
	f, err := t.Float64s()
	if err != nil {
		return nil, err
	}
	for i, v := range f {
		if v != math.Trunc(v) || v < -(1<<63) || v >= 1<<63 {
			return nil, fmt.Errorf("safetensors: element %d = %v is not an int64", i, v)
		}
		out[i] = int64(v)
	}
	return out, nil
}

// Uint8s converts the tensor to uint8. U8 and BOOL convert directly; other
// numeric dtypes are accepted when every value is an integer in [0, 255].
func (t Tensor) Uint8s() ([]uint8, error) {
	n, err := t.check()
	if err != nil {
		return nil, err
	}
	out := make([]uint8, n)
	switch t.DType {
	case "U8":
		copy(out, t.Data)
		return out, nil
	case "BOOL":
		for i, b := range t.Data {
			if b != 0 {
				out[i] = 1
			}
		}
		return out, nil
	}
	f, err := t.Float64s()
	if err != nil {
		return nil, err
	}
	for i, v := range f {
		if v != math.Trunc(v) || v < 0 || v > 255 {
			return nil, fmt.Errorf("safetensors: element %d = %v is not a uint8", i, v)
		}
		out[i] = uint8(v)
	}
	return out, nil
}

// FromFloat32 returns an F32 tensor holding a copy of v.
func FromFloat32(shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{DType: "F32", Shape: append([]int(nil), shape...), Data: b}
}

// ViewFloat32 returns an F32 tensor whose Data aliases v on little-endian
// hosts (a copy elsewhere). Use it to write large arrays without copying;
// do not modify v while the tensor is in use.
func ViewFloat32(shape []int, v []float32) Tensor {
	return Tensor{DType: "F32", Shape: append([]int(nil), shape...), Data: floatbits.Float32Bytes(v)}
}

// FromFloat64 returns an F64 tensor holding a copy of v.
func FromFloat64(shape []int, v []float64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return Tensor{DType: "F64", Shape: append([]int(nil), shape...), Data: b}
}

// FromInt64 returns an I64 tensor holding a copy of v.
func FromInt64(shape []int, v []int64) Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return Tensor{DType: "I64", Shape: append([]int(nil), shape...), Data: b}
}

// FromUint8 returns a U8 tensor holding a copy of v.
func FromUint8(shape []int, v []uint8) Tensor {
	return Tensor{DType: "U8", Shape: append([]int(nil), shape...), Data: append([]byte{}, v...)}
}

// FromBool returns a BOOL tensor (one byte per element, 0 or 1).
func FromBool(shape []int, v []bool) Tensor {
	b := make([]byte, len(v))
	for i, x := range v {
		if x {
			b[i] = 1
		}
	}
	return Tensor{DType: "BOOL", Shape: append([]int(nil), shape...), Data: b}
}
