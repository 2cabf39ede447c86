package collective

import (
	"encoding/binary"
	"fmt"
	"github.com/causalrm/causalrm/internal/safetensors"
	"hash/crc32"
	"math"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

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

// coder holds the compressors of one Ring. zstd's EncodeAll and DecodeAll
// are safe for concurrent use; the scratch buffer is not, so a coder
// belongs to one goroutine at a time (the op goroutine).
type coder struct {
	zenc    *zstd.Encoder
	zdec    *zstd.Decoder
	scratch []byte
}

func newCoder(maxMessage int) (*coder, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecodeAllCapLimit(true), zstd.WithDecoderMaxMemory(uint64(4*maxMessage)))
	if err != nil {
		enc.Close()
		return nil, err
	}
	return &coder{zenc: enc, zdec: dec}, nil
}

func (c *coder) close() {
	c.zenc.Close()
	c.zdec.Close()
}

func (c *coder) buf(n int) []byte {
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	return c.scratch[:n]
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

// shuffle writes the transformed, byte-plane shuffled src into dst.
func shuffle[T elem](dst []byte, src []T) {
	n := len(src)
	switch s := any(src).(type) {
	case []int64:
		shuffle64(dst, asUint64s(s), true)
	case []float64:
		shuffle64(dst, asUint64s(s), false)
	case []float32:
		p0, p1, p2, p3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
		for i, x := range s {
			u := math.Float32bits(x)
			p0[i], p1[i], p2[i], p3[i] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		}
	}
}

// unshuffle inverts shuffle.
func unshuffle[T elem](dst []T, src []byte) {
	n := len(dst)
	switch d := any(dst).(type) {
	case []int64:
		unshuffle64(asUint64s(d), src, true)
	case []float64:
		unshuffle64(asUint64s(d), src, false)
	case []float32:
		p0, p1, p2, p3 := src[:n], src[n:2*n], src[2*n:3*n], src[3*n:4*n]
		for i := range d {
			d[i] = math.Float32frombits(uint32(p0[i]) | uint32(p1[i])<<8 | uint32(p2[i])<<16 | uint32(p3[i])<<24)
		}
	}
}

// asUint64s views 8-byte elements as their bit patterns.
func asUint64s[T int64 | float64](v []T) []uint64 {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(&v[0])), len(v))
}

func zigzag(u uint64) uint64   { return u<<1 ^ uint64(int64(u)>>63) }
func unzigzag(u uint64) uint64 { return u>>1 ^ -(u & 1) }

// transpose8 transposes the 8x8 byte matrix whose row i is wi (byte k of
// a word being column k): afterwards word k holds byte k of every input
// word, word i's in byte i. It is its own inverse.
func transpose8(w0, w1, w2, w3, w4, w5, w6, w7 uint64) (uint64, uint64, uint64, uint64, uint64, uint64, uint64, uint64) {
	const m32, m16, m8 = 0x00000000ffffffff, 0x0000ffff0000ffff, 0x00ff00ff00ff00ff
	t := (w0>>32 ^ w4) & m32
	w4, w0 = w4^t, w0^t<<32
	t = (w1>>32 ^ w5) & m32
	w5, w1 = w5^t, w1^t<<32
	t = (w2>>32 ^ w6) & m32
	w6, w2 = w6^t, w2^t<<32
	t = (w3>>32 ^ w7) & m32
	w7, w3 = w7^t, w3^t<<32

	t = (w0>>16 ^ w2) & m16
	w2, w0 = w2^t, w0^t<<16
	t = (w1>>16 ^ w3) & m16
	w3, w1 = w3^t, w1^t<<16
	t = (w4>>16 ^ w6) & m16
	w6, w4 = w6^t, w4^t<<16
	t = (w5>>16 ^ w7) & m16
	w7, w5 = w7^t, w5^t<<16

	t = (w0>>8 ^ w1) & m8
	w1, w0 = w1^t, w0^t<<8
	t = (w2>>8 ^ w3) & m8
	w3, w2 = w3^t, w2^t<<8
	t = (w4>>8 ^ w5) & m8
	w5, w4 = w5^t, w4^t<<8
	t = (w6>>8 ^ w7) & m8
	w7, w6 = w7^t, w6^t<<8
	return w0, w1, w2, w3, w4, w5, w6, w7
}

// shuffle64 writes plane k (byte k of every word, zigzagged first if zig)
// at dst[k*n:], eight words at a time through a byte transpose.
func shuffle64(dst []byte, src []uint64, zig bool) {
	n := len(src)
	p0, p1, p2, p3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
	p4, p5, p6, p7 := dst[4*n:5*n], dst[5*n:6*n], dst[6*n:7*n], dst[7*n:8*n]
	le := binary.LittleEndian
	i := 0
	for ; i+8 <= n; i += 8 {
		s := src[i : i+8 : i+8]
		w0, w1, w2, w3, w4, w5, w6, w7 := s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
		if zig {
			w0, w1, w2, w3 = zigzag(w0), zigzag(w1), zigzag(w2), zigzag(w3)
			w4, w5, w6, w7 = zigzag(w4), zigzag(w5), zigzag(w6), zigzag(w7)
		}
		w0, w1, w2, w3, w4, w5, w6, w7 = transpose8(w0, w1, w2, w3, w4, w5, w6, w7)
		le.PutUint64(p0[i:], w0)
		le.PutUint64(p1[i:], w1)
		le.PutUint64(p2[i:], w2)
		le.PutUint64(p3[i:], w3)
		le.PutUint64(p4[i:], w4)
		le.PutUint64(p5[i:], w5)
		le.PutUint64(p6[i:], w6)
		le.PutUint64(p7[i:], w7)
	}
	for ; i < n; i++ {
		u := src[i]
		if zig {
			u = zigzag(u)
		}
		p0[i], p1[i], p2[i], p3[i] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		p4[i], p5[i], p6[i], p7[i] = byte(u>>32), byte(u>>40), byte(u>>48), byte(u>>56)
	}
}

// unshuffle64 inverts shuffle64.
func unshuffle64(dst []uint64, src []byte, zig bool) {
	n := len(dst)
	p0, p1, p2, p3 := src[:n], src[n:2*n], src[2*n:3*n], src[3*n:4*n]
	p4, p5, p6, p7 := src[4*n:5*n], src[5*n:6*n], src[6*n:7*n], src[7*n:8*n]
	le := binary.LittleEndian
	i := 0
	for ; i+8 <= n; i += 8 {
		w0, w1, w2, w3, w4, w5, w6, w7 := transpose8(le.Uint64(p0[i:]), le.Uint64(p1[i:]), le.Uint64(p2[i:]), le.Uint64(p3[i:]),
			le.Uint64(p4[i:]), le.Uint64(p5[i:]), le.Uint64(p6[i:]), le.Uint64(p7[i:]))
		if zig {
			w0, w1, w2, w3 = unzigzag(w0), unzigzag(w1), unzigzag(w2), unzigzag(w3)
			w4, w5, w6, w7 = unzigzag(w4), unzigzag(w5), unzigzag(w6), unzigzag(w7)
		}
		d := dst[i : i+8 : i+8]
		d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7] = w0, w1, w2, w3, w4, w5, w6, w7
	}
	for ; i < n; i++ {
		dst[i] = uint64(p0[i]) | uint64(p1[i])<<8 | uint64(p2[i])<<16 | uint64(p3[i])<<24 |
			uint64(p4[i])<<32 | uint64(p5[i])<<40 | uint64(p6[i])<<48 | uint64(p7[i])<<56
		if zig {
			dst[i] = unzigzag(dst[i])
		}
	}
}

// encode returns a payload holding src under a lossless codec, in a buffer
// from sharedPool (*p is exactly the payload).
func encode[T elem](c *coder, codec Codec, src []T) *[]byte {
	raw := len(src) * elemSize[T]()
	var p *[]byte
	switch codec {
	case CodecS2:
		b := c.buf(raw)
		shuffle(b, src)
		p = sharedPool.Get(s2.MaxEncodedLen(raw))
		*p = s2.Encode(*p, b)
	case CodecZstd:
		b := c.buf(raw)
		shuffle(b, src)
		p = sharedPool.Get(maxEncodedLen(CodecZstd, raw, len(src)))
		out := c.zenc.EncodeAll(b, (*p)[:0])
		if cap(out) != cap(*p) { // outgrew the buffer (not seen in practice)
			sharedPool.Put(p)
			p = &out
		} else {
			*p = out
		}
	default:
		p = sharedPool.Get(raw)
		putRaw(*p, src)
	}
	return p
}

// decode fills dst from a payload under a lossless codec. The caller has
// checked the payload's length bound and checksum.
func decode[T elem](c *coder, codec Codec, dst []T, payload []byte) error {
	raw := len(dst) * elemSize[T]()
	switch codec {
	case CodecNone:
		if len(payload) != raw {
			return fmt.Errorf("%w: payload of %d bytes for %d elements (%d bytes)", ErrShape, len(payload), len(dst), raw)
		}
		getRaw(dst, payload)
	case CodecS2:
		n, err := s2.DecodedLen(payload)
		if err != nil {
			return fmt.Errorf("%w: s2 header: %v", ErrShape, err)
		}
		if n != raw {
			return fmt.Errorf("%w: s2 payload decodes to %d bytes, want %d", ErrShape, n, raw)
		}
		b, err := s2.Decode(c.buf(raw), payload)
		if err != nil {
			return fmt.Errorf("%w: s2: %v", ErrShape, err)
		}
		unshuffle(dst, b)
	case CodecZstd:
		// Capped at raw (the decoder is WithDecodeAllCapLimit): a frame
		// that decodes to more fails as soon as it outgrows the chunk,
		// whatever the scratch buffer's capacity.
		b, err := c.zdec.DecodeAll(payload, c.buf(raw)[:0:raw])
		if err != nil {
			return fmt.Errorf("%w: zstd: %v", ErrShape, err)
		}
		if len(b) != raw {
			return fmt.Errorf("%w: zstd payload decodes to %d bytes, want %d", ErrShape, len(b), raw)
		}
		unshuffle(dst, b)
	default:
		return fmt.Errorf("%w: codec %q is not lossless", ErrShape, codec)
	}
	return nil
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

// ---- lossy float32 codecs ----

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
// (round to nearest even, overflow to infinity, NaN kept).
var (
	f32toF16 = safetensors.Float32ToFloat16
	f16toF32 = safetensors.Float16ToFloat32
)
