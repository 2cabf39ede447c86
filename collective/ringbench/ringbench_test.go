package ringbench

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/internal/gradgen"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// losslessCodecs are the codecs BenchmarkAllReduce measures.
var losslessCodecs = []collective.Codec{collective.CodecNone, collective.CodecS2, collective.CodecZstd}

// BenchmarkAllReduce: go test -run '^$' -bench AllReduce ./collective/ringbench
func BenchmarkAllReduce(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, mib := range []int{1, 4, 16} {
			for _, codec := range losslessCodecs {
				b.Run(fmt.Sprintf("ranks=%d/MiB=%d/%s", n, mib, codec), func(b *testing.B) {
					rings, err := benchRings(n, func(c *collective.Config) { c.Codec = codec })
					if err != nil {
						b.Fatal(err)
					}
					defer closeRings(rings)
					elems := mib << 20 / 8
					src := make([][]int64, n)
					bufs := make([][]int64, n)
					for r := range src {
						src[r], bufs[r] = gradgen.FixedPoint(elems, uint64(r+1)), make([]int64, elems)
					}
					ctx := context.Background()
					b.SetBytes(int64(mib << 20))
					b.ResetTimer()
					for b.Loop() {
						b.StopTimer()
						for r := range bufs {
							copy(bufs[r], src[r])
						}
						b.StartTimer()
						if err := runAll(rings, func(r int, ring *collective.Ring) error {
							return ring.SumInt64(ctx, bufs[r])
						}); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					algbw := float64(mib<<20) * float64(b.N) / b.Elapsed().Seconds()
					b.ReportMetric(algbw*2*float64(n-1)/float64(n)/1e6, "busMB/s")
				})
			}
		}
	}
}

// BenchmarkLoopbackTCP is the raw copy the all-reduce is compared with.
func BenchmarkLoopbackTCP(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, mib := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("ranks=%d/MiB=%d", n, mib), func(b *testing.B) {
				size := mib << 20
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := loopbackRingCopy(context.Background(), n, size*2*(n-1)/n, 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestPrintBenchTable prints Run's tables when COLLECTIVE_BENCH=1.
func TestPrintBenchTable(t *testing.T) {
	if os.Getenv("COLLECTIVE_BENCH") == "" {
		t.Skip("set COLLECTIVE_BENCH=1 to print the benchmark tables")
	}
	if err := Run(context.Background(), os.Stdout, Options{}); err != nil {
		t.Fatal(err)
	}
}
