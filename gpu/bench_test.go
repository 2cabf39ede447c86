package gpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/causalrm/causalrm/nn"
)

// BenchmarkResidentStep times one training step of the paper's reward
// model (d=4096, 256, 64, 1) on a CUDA GPU as a single process runs it:
// forward, row-wise backward, partial gradient and Adam on the device, the
// logits and maxima to the host. Skipped without a GPU.
func BenchmarkResidentStep(b *testing.B) {
	d, err := OpenCUDA(0, "")
	if err != nil {
		b.Skipf("no CUDA device: %v", err)
	}
	defer d.Close()
	const n, dim = 16384, 4096
	x, xexp := quantizedData(n, dim, 1)
	for _, batch := range []int{512, 8192} {
		for _, exact := range []bool{true, false} {
			name := fmt.Sprintf("batch%d/fast", batch)
			if exact {
				name = fmt.Sprintf("batch%d/exact", batch)
			}
			b.Run(name, func(b *testing.B) {
				m, _ := nn.New(nn.DefaultConfig(dim), 1)
				r, err := d.Runner(m, exact, xexp, batch)
				if err != nil {
					b.Fatal(err)
				}
				res := r.(nn.Resident)
				res.Keep()
				opt := nn.NewAdam(len(m.Params), 5e-4, 1e-6)
				rng := rand.New(rand.NewPCG(1, 2))
				rows := randomRows(rng, n, batch)
				dldf := make([]float64, batch)
				P := len(m.Params)
				for i := 0; b.Loop(); i++ {
					f := r.Forward(x, rows)
					for k, v := range f {
						dldf[k] = v*1e-3 - float64(k%2)
					}
					if exact {
						mx := r.Maxima(dldf)
						if err := r.Partial(mx, nil); err != nil {
							b.Fatal(err)
						}
						if err := res.Step(opt, mx, 1/float64(batch)); err != nil {
							b.Fatal(err)
						}
					} else {
						r.PartialFast(dldf, make([]float32, 0, P))
						if err := res.Step(opt, nil, 1/float64(batch)); err != nil {
							b.Fatal(err)
						}
					}
				}
				if err := r.Err(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(batch)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}
