package imadd

import (
	"testing"
	"time"
)

// BenchmarkMadd6x16 is the micro-kernel from L1 (128 pairs, 8 KiB of B):
// the ceiling of the integer GEMM on this core, in int16 multiply-adds
// (GMAC/s) at a flush every kb pairs.
func BenchmarkMadd6x16(b *testing.B) {
	if !Available {
		b.Skip("no AVX2")
	}
	const k2 = 128
	a := make([]int16, k2*2*MR)
	bb := make([]int16, k2*2*NR)
	c := make([]int64, MR*NR)
	for i := range a {
		a[i] = int16(i%7 - 3)
	}
	for i := range bb {
		bb[i] = int16(i%5 - 2)
	}
	for _, kb := range []int{2, 8, 64, 128} {
		b.Run("kb"+string(rune('0'+kb/100))+string(rune('0'+kb/10%10))+string(rune('0'+kb%10)), func(b *testing.B) {
			start := time.Now()
			for i := 0; i < b.N; i++ {
				Madd6x16(a, bb, c, NR, k2, kb, 3)
			}
			b.ReportMetric(float64(b.N)*k2*2*MR*NR/time.Since(start).Seconds()/1e9, "GMAC/s")
		})
	}
}
