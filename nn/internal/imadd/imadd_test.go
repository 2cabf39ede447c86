//go:build unix

package imadd

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: the machine these run on
// is shared, and the wall clock counts time other processes held the core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMadd6x16 is the micro-kernel from L1 (128 pairs, 8 KiB of B):
// the ceiling of the integer GEMM on this core, in int16 multiply-adds
// (GMAC/s, GMAC per CPU-second) at a flush every kb pairs. One VPMADDWD is
// 16 MACs; a float64 FMA on 4 lanes is 4.
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
		b.Run(fmt.Sprintf("kb%03d", kb), func(b *testing.B) {
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				Madd6x16(a, bb, c, NR, k2, kb, 3)
			}
			macs := float64(b.N) * k2 * 2 * MR * NR
			b.ReportMetric(macs/time.Since(start).Seconds()/1e9, "GMAC/s")
			if cpu := (cpuTime() - cpu0).Seconds(); cpu > 0 {
				b.ReportMetric(macs/cpu/1e9, "GMAC/cpu-s")
			}
		})
	}
}
