package collective

import "testing"

func BenchmarkShuffleInt64(b *testing.B) {
	v := FixedPointGradient(32768, 1)
	dst := make([]byte, 8*len(v))
	b.SetBytes(int64(len(dst)))
	for b.Loop() {
		shuffle(dst, v)
	}
}

func BenchmarkUnshuffleInt64(b *testing.B) {
	v := FixedPointGradient(32768, 1)
	src := make([]byte, 8*len(v))
	shuffle(src, v)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		unshuffle(v, src)
	}
}
