package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Pack lays out kernel parameters as the CUDA ABI does: each value at an
// offset aligned to its own size (Ptr, int64, uint64, float64: 8; int32,
// uint32, float32: 4), little-endian, the total rounded up to 8. An int is
// packed as int32 and panics if it does not fit; any other type panics,
// being a programming error. The trailing padding is not passed to the
// kernel: Launch trims the buffer to the size the kernel takes.
func Pack(args ...any) []byte {
	var buf []byte
	put := func(size int, v uint64) {
		for len(buf)%size != 0 {
			buf = append(buf, 0)
		}
		if size == 4 {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(v))
		} else {
			buf = binary.LittleEndian.AppendUint64(buf, v)
		}
	}
	for i, a := range args {
		switch v := a.(type) {
		case Ptr:
			put(8, uint64(v))
		case int64:
			put(8, uint64(v))
		case uint64:
			put(8, v)
		case float64:
			put(8, math.Float64bits(v))
		case int32:
			put(4, uint64(uint32(v)))
		case uint32:
			put(4, uint64(v))
		case float32:
			put(4, uint64(math.Float32bits(v)))
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				panic(fmt.Sprintf("cuda.Pack: argument %d: int %d does not fit in int32", i, v))
			}
			put(4, uint64(uint32(int32(v))))
		default:
			panic(fmt.Sprintf("cuda.Pack: argument %d: unsupported type %T", i, a))
		}
	}
	for len(buf)%8 != 0 {
		buf = append(buf, 0)
	}
	return buf
}
