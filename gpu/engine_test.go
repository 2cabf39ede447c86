package gpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/causalrm/causalrm/nn"
)

// testBackends are the backends the engine tests run on: the host
// emulation always, a CUDA GPU where one is found (cuda_test.go).
func testBackends(t *testing.T) map[string]*Device {
	t.Helper()
	h, err := NewHost()
	if err != nil {
		t.Fatal(err)
	}
	devs := map[string]*Device{"host": NewDevice(h, nil)}
	if d := cudaForTest(t); d != nil {
		devs["cuda"] = d
	}
	return devs
}

// quantizedData makes n rows of dimension d on their column grids, with
// columns of very different scales.
func quantizedData(n, d int, seed uint64) ([]float32, []int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Pow(2, float64(i%d%7-3)))
	}
	exps := nn.ColumnExps(d, x)
	nn.QuantizeX(x, d, exps)
	return x, exps
}

// randomRows picks m of n rows (with repeats, in any order).
func randomRows(rng *rand.Rand, n, m int) []int32 {
	r := make([]int32, m)
	for i := range r {
		r[i] = int32(rng.IntN(n))
	}
	return r
}

// TestExactStepMatchesCPU runs exact steps (forward, maxima, partial,
// gradient, Adam) on each backend beside the CPU engine and requires the
// same bits everywhere, over batches of 0, 1 and many rows.
func TestExactStepMatchesCPU(t *testing.T) {
	const n, d, batch = 300, 37, 128
	x, xexp := quantizedData(n, d, 1)
	for name, dev := range testBackends(t) {
		t.Run(name, func(t *testing.T) {
			cfg := nn.Config{Dims: []int{d, 24, 9, 1}, Slope: 0.01}
			cpuM, _ := nn.New(cfg, 5)
			gpuM := cpuM.Clone()
			cpu, err := nn.NewEngine(cpuM, true, xexp, batch)
			if err != nil {
				t.Fatal(err)
			}
			r, err := dev.Runner(gpuM, true, xexp, batch)
			if err != nil {
				t.Fatal(err)
			}
			optC, optG := nn.NewAdam(len(cpuM.Params), 1e-2, 1e-6), nn.NewAdam(len(gpuM.Params), 1e-2, 1e-6)
			rng := rand.New(rand.NewPCG(3, 3))
			P := len(cpuM.Params)
			for step, m := range []int{batch, 1, 0, 77, batch, batch} {
				rows := randomRows(rng, n, m)
				fc, fg := cpu.Forward(x, rows), r.Forward(x, rows)
				if err := r.Err(); err != nil {
					t.Fatal(err)
				}
				sameBits(t, step, "logits", fc, fg)
				dldf := make([]float64, m)
				for i, f := range fc {
					dldf[i] = 1/(1+math.Exp(-f)) - float64(rows[i]%2) // a BCE derivative
				}
				mc, mg := cpu.Maxima(dldf), r.Maxima(dldf)
				sameBits(t, step, "maxima", mc, mg)
				pc, pg := make([]int64, P), make([]int64, P)
				for i := range pg {
					pg[i] = -1 // every element must be written
				}
				if err := cpu.Partial(mc, pc); err != nil {
					t.Fatal(err)
				}
				if err := r.Partial(mc, pg); err != nil {
					t.Fatal(err)
				}
				for i := range pc {
					if pc[i] != pg[i] {
						t.Fatalf("step %d: partial gradient element %d: cpu %d, %s %d", step, i, pc[i], name, pg[i])
					}
				}
				if m == 0 {
					continue
				}
				gc, gg := make([]float32, P), make([]float32, P)
				if err := cpu.Grad(pc, mc, 1/float64(m), gc); err != nil {
					t.Fatal(err)
				}
				if err := r.Grad(pg, mc, 1/float64(m), gg); err != nil {
					t.Fatal(err)
				}
				optC.Update(cpuM.Params, gc)
				optG.Update(gpuM.Params, gg)
				cpu.Touch()
				r.Touch()
			}
			for i := range cpuM.Params {
				if math.Float32bits(cpuM.Params[i]) != math.Float32bits(gpuM.Params[i]) {
					t.Fatalf("parameter %d after training: cpu %v, %s %v", i, cpuM.Params[i], name, gpuM.Params[i])
				}
			}
		})
	}
}

func sameBits(t *testing.T, step int, what string, want, got []float64) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("step %d: %s: %d values, want %d", step, what, len(got), len(want))
	}
	for i := range want {
		if math.Float64bits(want[i]) != math.Float64bits(got[i]) {
			t.Fatalf("step %d: %s[%d] = %v (%#x), want %v (%#x)", step, what, i, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
		}
	}
}

// TestFastStepCloseToCPU: fast mode makes no bit promise across devices,
// but computes the same function to float32 rounding.
func TestFastStepCloseToCPU(t *testing.T) {
	const n, d = 200, 29
	x, _ := quantizedData(n, d, 2)
	for name, dev := range testBackends(t) {
		t.Run(name, func(t *testing.T) {
			cfg := nn.Config{Dims: []int{d, 16, 8, 1}, Slope: 0.01}
			mc, _ := nn.New(cfg, 9)
			cpu, _ := nn.NewEngine(mc, false, nil, 64)
			r, err := dev.Runner(mc.Clone(), false, nil, 64)
			if err != nil {
				t.Fatal(err)
			}
			rows := randomRows(rand.New(rand.NewPCG(1, 1)), n, 64)
			fc, fg := cpu.Forward(x, rows), r.Forward(x, rows)
			if e := relErr(fg, fc); e > 1e-5 {
				t.Fatalf("logits: relative error %g", e)
			}
			dldf := make([]float64, len(rows))
			for i := range dldf {
				dldf[i] = float64(i%5) - 2
			}
			P := len(mc.Params)
			gc, gg := make([]float32, P), make([]float32, P)
			cpu.PartialFast(dldf, gc)
			r.PartialFast(dldf, gg)
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			if e := relErr(f64s(gg), f64s(gc)); e > 1e-5 {
				t.Fatalf("gradient: relative error %g", e)
			}
		})
	}
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func relErr(got, want []float64) float64 {
	num, den := 0.0, 0.0
	for i := range want {
		num += (got[i] - want[i]) * (got[i] - want[i])
		den += want[i] * want[i]
	}
	return math.Sqrt(num / math.Max(den, 1e-300))
}
