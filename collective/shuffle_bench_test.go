package collective

import (
	"testing"

	"github.com/causalrm/causalrm/internal/gradgen"
)

func BenchmarkShuffleInt64(b *testing.B) {
	v := gradgen.FixedPoint(32768, 1)
	dst := make([]byte, 8*len(v))
	b.SetBytes(int64(len(dst)))
	for b.Loop() {
		shuffle(dst, v)
	}
}

func BenchmarkUnshuffleInt64(b *testing.B) {
	v := gradgen.FixedPoint(32768, 1)
	src := make([]byte, 8*len(v))
	shuffle(src, v)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		unshuffle(v, src)
	}
}

func BenchmarkEncodeFP16(b *testing.B) {
	v := gradgen.Float32(65536, 1)
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		sharedPool.Put(encodeLossy(CodecFP16, v))
	}
}

func BenchmarkEncodeInt8(b *testing.B) {
	v := gradgen.Float32(65536, 1)
	b.SetBytes(int64(4 * len(v)))
	for b.Loop() {
		sharedPool.Put(encodeLossy(CodecInt8, v))
	}
}
