package collective

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"unsafe"

	"github.com/klauspost/compress/s2"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// Wire layouts of a chunk of n elements (all little-endian):
//
//	none  the elements' bytes (8 per int64/float64, 4 per float32)
//	s2    S2 block of the transformed bytes
//	zstd  zstd frame (content size in the header) of the transformed bytes
//	fp16  1 byte int8 exponent e, then n IEEE half floats h; x = h * 2^e
//	int8  4 bytes float32 scale s, then n int8 q; x = float32(q) * s
//
// The transform before s2/zstd: int64 values are zigzag-encoded (small
// magnitudes of either sign get small unsigned values), then the words of
// every element type are byte-plane shuffled (all byte 0s, then all byte
// 1s, ...), so the mostly-zero high bytes of fixed-point values form long
// runs. BENCH.md has what each step buys.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// elem is the element types a Ring reduces.
type elem interface{ int64 | float64 | float32 }

func elemSize[T elem]() int {
	var z T
	return int(unsafe.Sizeof(z))
}

func elemType[T elem]() pb.ElemType {
	var z T
	switch any(z).(type) {
	case int64:
		return pb.ElemType_ELEM_INT64
	case float64:
		return pb.ElemType_ELEM_FLOAT64
	default:
		return pb.ElemType_ELEM_FLOAT32
	}
}

func pbCodec(c Codec) pb.Codec {
	switch c {
	case CodecNone:
		return pb.Codec_CODEC_NONE
	case CodecS2:
		return pb.Codec_CODEC_S2
	case CodecZstd:
		return pb.Codec_CODEC_ZSTD
	case CodecFP16:
		return pb.Codec_CODEC_FP16
	case CodecInt8:
		return pb.Codec_CODEC_INT8
	}
	return pb.Codec_CODEC_UNSPECIFIED
}

// maxEncodedLen bounds the payload of a chunk of raw bytes under a codec;
// anything longer is rejected as oversized before it is decoded.
func maxEncodedLen(c Codec, raw, n int) int {
	switch c {
	case CodecNone:
		return raw
	case CodecS2:
		return s2.MaxEncodedLen(raw)
	case CodecZstd:
		return raw + raw/64 + 1024
	case CodecFP16:
		return 1 + 2*n
	case CodecInt8:
		return 4 + n
	}
	return 0
}

// asBytes views a slice of elements as its bytes (little-endian hosts).
func asBytes[T elem](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*elemSize[T]())
}

// asInt64s views b (8-byte aligned, as pooled buffers are) as int64s in
// native byte order.
func asInt64s(b []byte) []int64 {
	if len(b) < 8 {
		return nil
	}
	return unsafe.Slice((*int64)(unsafe.Pointer(&b[0])), len(b)/8)
}

// putRaw writes src little-endian into dst (len(dst) == len(src)*size).
func putRaw[T elem](dst []byte, src []T) {
	if littleEndian {
		copy(dst, asBytes(src))
		return
	}
	switch s := any(src).(type) {
	case []int64:
		for i, x := range s {
			binary.LittleEndian.PutUint64(dst[8*i:], uint64(x))
		}
	case []float64:
		for i, x := range s {
			binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(x))
		}
	case []float32:
		for i, x := range s {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(x))
		}
	}
}

// getRaw reads little-endian src into dst.
func getRaw[T elem](dst []T, src []byte) {
	if littleEndian {
		copy(asBytes(dst), src)
		return
	}
	switch d := any(dst).(type) {
	case []int64:
		for i := range d {
			d[i] = int64(binary.LittleEndian.Uint64(src[8*i:]))
		}
	case []float64:
		for i := range d {
			d[i] = math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:]))
		}
	case []float32:
		for i := range d {
			d[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
}

// checkFinite rejects NaN and infinities in float slices.
func checkFinite[T elem](v []T) error {
	switch s := any(v).(type) {
	case []float64:
		for i, x := range s {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("%w: element %d is %v", ErrNonFinite, i, x)
			}
		}
	case []float32:
		for i, x := range s {
			if x != x || x > math.MaxFloat32 || x < -math.MaxFloat32 {
				return fmt.Errorf("%w: element %d is %v", ErrNonFinite, i, x)
			}
		}
	}
	return nil
}
