package collective

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

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

func zigzag(u uint64) uint64 { return u<<1 ^ uint64(int64(u)>>63) }

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
