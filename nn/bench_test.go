package nn

import (
	"math/rand/v2"
	"testing"
	"time"
)

// benchStep times one full training step of the paper's model (d=4096,
// 256, 64, batch 512) without the reduction (a single holder).
func benchStep(b *testing.B, exact bool) {
	cfg := DefaultConfig(4096)
	m, _ := New(cfg, 1)
	n := 2048
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, n*4096)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	exps := ColumnExps(4096, x)
	QuantizeX(x, 4096, exps)
	e, _ := NewEngine(m, exact, exps, 512)
	opt := NewAdam(cfg.NumParams(), 5e-4, 1e-6)
	w := make([]float64, 512)
	for i := range w {
		w[i] = rng.NormFloat64()
	}
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
	cfg := DefaultConfig(4096)
	m, _ := New(cfg, 1)
	n := 2048
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, n*4096)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	exps := ColumnExps(4096, x)
	QuantizeX(x, 4096, exps)
	e, _ := NewEngine(m, true, exps, 512)
	opt := NewAdam(cfg.NumParams(), 5e-4, 1e-6)
	w := make([]float64, 512)
	for i := range w {
		w[i] = rng.NormFloat64()
	}
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
