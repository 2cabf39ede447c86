package nn

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkIntPack is packSide alone: the paper's X (512 x 4096, 15 bits,
// one piece) and W1 (256 x 4096, 25 bits, three pieces), one thread.
func BenchmarkIntPack(b *testing.B) {
	defer SetThreads(Threads())
	SetThreads(1)
	rng := rand.New(rand.NewPCG(1, 2))
	x := intOperand(rng, 512*4096, XBits, 0)
	w := intOperand(rng, 256*4096, 25, 0)
	p, _ := planInt(XBits, 25)
	dx := make([]int16, 516*4096)
	dw := make([]int16, 3*256*4096)
	b.Run("x", func(b *testing.B) {
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			packSide(dx, x, 4096, false, 512, 4096, p.a, intMR)
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/(512*4096), "cpu-ns/elem")
	})
	b.Run("w", func(b *testing.B) {
		cpu0 := cpuTime()
		for i := 0; i < b.N; i++ {
			packSide(dw, w, 4096, false, 256, 4096, p.b, intNR)
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N)/(256*4096), "cpu-ns/elem")
	})
}
