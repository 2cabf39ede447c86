package gpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/causalrm/causalrm/nn"
)

// BenchmarkResidentStep times one training step of the paper's reward
// model (d=4096, 256, 64, 1) on a CUDA GPU as a single process runs it,
// after warm-up steps: forward, row-wise backward, partial gradient and
// Adam on the device, the logits and maxima to the host. It also reports
// each phase's share (the stream synchronised after each, which costs a
// little). Skipped without a GPU.
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
				rows := randomRows(rand.New(rand.NewPCG(1, 2)), n, batch)
				dldf := make([]float64, batch)
				var phase [4]time.Duration
				step := func(timed bool) {
					t0 := time.Now()
					lap := func(i int) {
						if timed {
							if err := d.sync(); err != nil {
								b.Fatal(err)
							}
							t1 := time.Now()
							phase[i] += t1.Sub(t0)
							t0 = t1
						}
					}
					f := r.Forward(x, rows)
					lap(0)
					for k, v := range f {
						dldf[k] = v*1e-3 - float64(k%2)
					}
					var mx []float64
					if exact {
						mx = r.Maxima(dldf)
						lap(1)
						if err := r.Partial(mx, nil); err != nil {
							b.Fatal(err)
						}
					} else {
						r.PartialFast(dldf, nil)
					}
					lap(2)
					if err := res.Step(opt, mx, 1/float64(batch)); err != nil {
						b.Fatal(err)
					}
					lap(3)
				}
				for range 5 {
					step(false)
				}
				if err := d.sync(); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					step(false)
					if err := d.sync(); err != nil { // the step's work is done before the clock stops
						b.Fatal(err)
					}
				}
				if err := d.sync(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(batch)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
				const k = 20
				for range k {
					step(true)
				}
				for i, p := range []string{"fwd", "maxima", "partial", "adam"} {
					b.ReportMetric(float64(phase[i].Microseconds())/k, p+"-µs")
				}
				if err := r.Err(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// BenchmarkGEMMShapes times cuBLAS on the exact step's two big products at
// batch 8192 (forward: 8192x256 from 8192x4096 and 256x4096; weight
// gradient: 256x4096 over 8192 rows), in float64 and float32, with each
// layout that computes them. Skipped without a GPU.
func BenchmarkGEMMShapes(b *testing.B) {
	d, err := OpenCUDA(0, "")
	if err != nil {
		b.Skipf("no CUDA device: %v", err)
	}
	defer d.Close()
	const m, out, in = 8192, 256, 4096
	bk := d.b
	buf := func(n, w int) Ptr {
		p, err := bk.Alloc(n * w)
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	A8, W8, C8 := buf(m*in, 8), buf(out*in, 8), buf(m*in, 8)
	A4, W4, C4 := buf(m*in, 4), buf(out*in, 4), buf(m*in, 4)
	D8, D4 := buf(m*in, 8), buf(m*in, 4) // outputs
	type shape struct {
		name         string
		tA, tB       bool
		M, N, K      int
		lda, ldb     int
		a, b, a4, b4 Ptr
	}
	shapes := []shape{
		{"fwd_NT", false, true, m, out, in, in, in, A8, W8, A4, W4},    // z = x W^T (as run)
		{"fwdT_NT", false, true, out, m, in, in, in, W8, A8, W4, A4},   // z^T = W x^T
		{"wgrad_TN", true, false, out, in, m, out, in, C8, A8, C4, A4}, // dW = dz^T x (as run)
		{"wgradT_TN", true, false, in, out, m, in, out, A8, C8, A4, C4},
	}
	for _, s := range shapes {
		for _, f64 := range []bool{true, false} {
			name := s.name + "/f32"
			if f64 {
				name = s.name + "/f64"
			}
			b.Run(name, func(b *testing.B) {
				run := func() {
					var err error
					if f64 {
						err = bk.Dgemm(s.tA, s.tB, s.M, s.N, s.K, s.a, s.lda, s.b, s.ldb, D8, s.N)
					} else {
						err = bk.Sgemm(s.tA, s.tB, s.M, s.N, s.K, s.a4, s.lda, s.b4, s.ldb, D4, s.N)
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				for range 3 {
					run()
				}
				d.sync()
				for b.Loop() {
					run()
					if err := d.sync(); err != nil {
						b.Fatal(err)
					}
				}
				if err := d.sync(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(2*float64(m)*out*in*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
			})
		}
	}
}
