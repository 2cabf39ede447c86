package nn

import (
	"math/rand/v2"
	"testing"
	"time"
)

// benchStep times one full training step of the paper's model (d=4096,
// 256, 64, batch 512) without the reduction (a single holder).
// benchSetup is the paper's model over 2048 random rows at d=4096 with an
// engine (batch 512), an optimizer and per-row loss derivatives.
type benchSetup struct {
	cfg Config
	m   *MLP
	x   []float32
	n   int
	e   *Engine
	opt *Adam
	w   []float64
	rng *rand.Rand
}

func newBenchSetup(exact bool) *benchSetup {
	s := &benchSetup{cfg: DefaultConfig(4096), n: 2048, rng: rand.New(rand.NewPCG(1, 1))}
	s.m, _ = New(s.cfg, 1)
	s.x = make([]float32, s.n*4096)
	for i := range s.x {
		s.x[i] = float32(s.rng.NormFloat64())
	}
	exps := ColumnExps(4096, s.x)
	QuantizeX(s.x, 4096, exps)
	s.e, _ = NewEngine(s.m, exact, exps, 512)
	s.opt = NewAdam(s.cfg.NumParams(), 5e-4, 1e-6)
	s.w = make([]float64, 512)
	for i := range s.w {
		s.w[i] = s.rng.NormFloat64()
	}
	return s
}

func benchStep(b *testing.B, exact bool) {
	s := newBenchSetup(exact)
	cfg, m, n, x, e, opt, w, rng := s.cfg, s.m, s.n, s.x, s.e, s.opt, s.w, s.rng
	part := make([]int64, cfg.NumParams())
	p32 := make([]float32, cfg.NumParams())
	grad := make([]float32, cfg.NumParams())
	rows := make([]int32, 512)
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for i := range rows {
			rows[i] = int32(rng.IntN(n))
		}
		e.Forward(x, rows)
		if exact {
			mx := e.Maxima(w)
			if err := e.Partial(mx, part); err != nil {
				b.Fatal(err)
			}
			if err := e.Grad(part, mx, 1.0/512, grad); err != nil {
				b.Fatal(err)
			}
		} else {
			e.PartialFast(w, p32)
			copy(grad, p32)
		}
		opt.Update(m.Params, grad)
		e.Touch()
	}
	b.ReportMetric(float64(512*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkStepExact(b *testing.B) { benchStep(b, true) }
func BenchmarkStepFast(b *testing.B)  { benchStep(b, false) }

// BenchmarkStepPhases splits one exact step of the paper's model into its
// phases (ms per step each), to see where the time outside the GEMMs goes.
func BenchmarkStepPhases(b *testing.B) {
	s := newBenchSetup(true)
	cfg, m, n, x, e, opt, w, rng := s.cfg, s.m, s.n, s.x, s.e, s.opt, s.w, s.rng
	part := make([]int64, cfg.NumParams())
	grad := make([]float32, cfg.NumParams())
	rows := make([]int32, 512)
	var tq, tf, tm, tp, tg, ta time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for i := range rows {
			rows[i] = int32(rng.IntN(n))
		}
		t0 := time.Now()
		e.quantWeights()
		t1 := time.Now()
		e.Forward(x, rows)
		t2 := time.Now()
		mx := e.Maxima(w)
		t3 := time.Now()
		if err := e.Partial(mx, part); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		if err := e.Grad(part, mx, 1.0/512, grad); err != nil {
			b.Fatal(err)
		}
		t5 := time.Now()
		opt.Update(m.Params, grad)
		e.Touch()
		t6 := time.Now()
		tq, tf, tm, tp, tg, ta = tq+t1.Sub(t0), tf+t2.Sub(t1), tm+t3.Sub(t2), tp+t4.Sub(t3), tg+t5.Sub(t4), ta+t6.Sub(t5)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(per(tq), "quant-ms")
	b.ReportMetric(per(tf), "fwd-ms")
	b.ReportMetric(per(tm), "maxima-ms")
	b.ReportMetric(per(tp), "partial-ms")
	b.ReportMetric(per(tg), "grad-ms")
	b.ReportMetric(per(ta), "adam-ms")
}

// BenchmarkAdam is one update of the paper's reward model (1.07M
// parameters), the per-step optimizer cost every replica pays.
func BenchmarkAdam(b *testing.B) {
	const n = 4096*256 + 256 + 256*64 + 64 + 64 + 1
	p, g := make([]float32, n), make([]float32, n)
	for i := range p {
		p[i], g[i] = float32(i%97)*1e-3, float32(i%89-44)*1e-4
	}
	a := NewAdam(n, 5e-4, 1e-6)
	b.SetBytes(int64(n) * 4)
	for b.Loop() {
		a.Update(p, g)
	}
}
